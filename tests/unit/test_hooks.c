/* Hook dispatch and the feature registry: priority order, ties in
 * registration order, HANDLED stopping the chain, error results passed
 * through, and removal of everything a module attached. */
#include "hooks.h"
#include "../tap.h"

#include <string.h>

/* Fake module handles: the registry only compares the pointers. */
static char module_a_storage, module_b_storage;
#define MODULE_A ((struct pl_module *)&module_a_storage)
#define MODULE_B ((struct pl_module *)&module_b_storage)

static char trace[64];

static int record(struct pl_event *event, void *userdata)
{
	const char *tag = userdata;
	strncat(trace, tag, sizeof(trace) - strlen(trace) - 1);
	if (strcmp(tag, "H") == 0)
		return PL_HANDLED;
	if (strcmp(tag, "E") == 0)
		return PL_HOOK_ERROR(PL_ERR_NOT_ALLOWED);
	return PL_CONTINUE;
}

int main(void)
{
	is_int(pl_hooks_fire("nothing-attached", NULL), PL_CONTINUE,
	       "an event with no handler continues");
	pl_hook(MODULE_A, "ev", record, "1", 0);
	pl_hook(MODULE_B, "ev", record, "2", 10);
	pl_hook(MODULE_A, "ev", record, "3", 0);
	pl_hook(MODULE_B, "ev", record, "4", -5);
	trace[0] = '\0';
	is_int(pl_hooks_fire("ev", NULL), PL_CONTINUE, "all handlers continue");
	is_str(trace, "2134", "higher priority first, ties in registration order");

	pl_hook(MODULE_B, "ev", record, "H", 0);
	trace[0] = '\0';
	is_int(pl_hooks_fire("ev", NULL), PL_HANDLED, "HANDLED is returned");
	is_str(trace, "213H", "HANDLED stops the chain");

	pl_hook(MODULE_A, "err", record, "E", 0);
	pl_hook(MODULE_A, "err", record, "1", -1);
	trace[0] = '\0';
	int result = pl_hooks_fire("err", NULL);
	ok(PL_HOOK_IS_ERROR(result), "an error result is recognised");
	is_int(PL_HOOK_ERROR_CONDITION(result), PL_ERR_NOT_ALLOWED, "with its condition");
	is_str(trace, "E", "an error stops the chain");

	is_int(pl_hook(MODULE_A, "", record, NULL, 0), -22, "an empty event name is refused");

	pl_feature(MODULE_A, "urn:b");
	pl_feature(MODULE_B, "urn:a");
	pl_feature(MODULE_B, "urn:b");
	pl_identity(MODULE_A, "server", "im", "Parley");
	const char **features;
	size_t count = pl_features_list(&features);
	is_int(count, 2, "features are de-duplicated");
	ok(count == 2 && strcmp(features[0], "urn:a") == 0 && strcmp(features[1], "urn:b") == 0,
	   "features are sorted");
	const struct pl_identity *identities;
	is_int(pl_identities_list(&identities), 1, "one identity");

	pl_hooks_remove_module(MODULE_A);
	trace[0] = '\0';
	pl_hooks_fire("ev", NULL);
	is_str(trace, "2H", "module A's handlers are gone, B's remain");
	ok(!pl_hooks_has("err"), "an event whose only handlers were removed has none");
	count = pl_features_list(&features);
	ok(count == 2, "urn:b stays while module B still declares it");
	is_int(pl_identities_list(&identities), 0, "module A's identity is gone");
	pl_hooks_remove_module(MODULE_B);
	is_int(pl_features_list(&features), 0, "no features once both modules are gone");
	pl_hooks_shutdown();
	return done_testing();
}
