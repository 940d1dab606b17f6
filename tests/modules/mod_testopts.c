/* Test-only module with one option of each type, a cross-option check and
 * a load() that can be told to fail, so the integration tests can prove
 * every error path of the loader with a real parleyd. */
#include "parley/module.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct testopts_conf {
	bool flag;
	int64_t count;
	int64_t interval_ms;
	uint64_t quota;
	char *label;
	int mode;
	struct pl_string_list tags;
	bool fail_load;
};

static const char *const modes[] = { "fast", "safe", NULL };

static const struct pl_option testopts_options[] = {
	{ "flag", PL_OPT_BOOL, "false", 0, 0, NULL, offsetof(struct testopts_conf, flag), NULL },
	{ "count", PL_OPT_INT, "10", 1, 100, NULL, offsetof(struct testopts_conf, count), NULL },
	{ "interval", PL_OPT_DURATION, "5m", 0, 0, NULL,
	  offsetof(struct testopts_conf, interval_ms), NULL },
	{ "quota", PL_OPT_SIZE, "1MiB", 0, 0, NULL, offsetof(struct testopts_conf, quota), NULL },
	{ "label", PL_OPT_STRING, NULL, 0, 0, NULL, offsetof(struct testopts_conf, label), NULL },
	{ "mode", PL_OPT_ENUM, "safe", 0, 0, modes, offsetof(struct testopts_conf, mode), NULL },
	{ "tag", PL_OPT_LIST, NULL, 0, 0, NULL, offsetof(struct testopts_conf, tags), NULL },
	{ "fail-load", PL_OPT_BOOL, "false", 0, 0, NULL,
	  offsetof(struct testopts_conf, fail_load), NULL },
	{ NULL }
};

static int testopts_check(const void *conf_ptr, char **error)
{
	const struct testopts_conf *conf = conf_ptr;
	if (conf->mode == 0 && conf->count > 50) {
		*error = strdup("mode fast allows at most 50 for count");
		return -1;
	}
	return 0;
}

static int on_probe(struct pl_event *event, void *userdata)
{
	return PL_HANDLED;
}

static int testopts_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	const struct testopts_conf *conf = conf_ptr;
	if (conf->fail_load) {
		*error = strdup("told to fail by fail-load");
		return -1;
	}
	pl_hook(m, "test-probe", on_probe, NULL, 0);
	pl_feature(m, "urn:parley:test:opts");
	pl_module_log(m, 2, "count=%lld interval=%lldms quota=%llu mode=%s tags=%zu label=%s",
		      (long long)conf->count, (long long)conf->interval_ms,
		      (unsigned long long)conf->quota, modes[conf->mode], conf->tags.count,
		      conf->label ? conf->label : "(none)");
	return 0;
}

PL_MODULE(testopts, .version = "test", .options = testopts_options,
	  .conf_size = sizeof(struct testopts_conf), .check = testopts_check,
	  .load = testopts_load);
