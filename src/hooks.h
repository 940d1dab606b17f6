/* Named events with prioritised handlers (the core side of pl_hook), and
 * the registry of disco features and identities that modules declare.
 * Everything is recorded with its owning module so that unloading a module
 * removes its handlers, features and identities in one call. */
#ifndef PL_HOOKS_H
#define PL_HOOKS_H

#include "parley/module.h"

/* Runs the handlers of `event` in priority order until one returns
 * something other than PL_CONTINUE; returns that, or PL_CONTINUE. */
int pl_hooks_fire(const char *event, void *data);
bool pl_hooks_has(const char *event);
void pl_hooks_remove_module(struct pl_module *m);
void pl_hooks_shutdown(void);

struct pl_identity {
	char *category, *type, *name;
};
/* Sorted, de-duplicated features (owned by the registry). */
size_t pl_features_list(const char ***features);
size_t pl_identities_list(const struct pl_identity **identities);

#endif
