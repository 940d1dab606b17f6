/* The module API: everything a loadable module (modules/mod_*.c) may use.
 * A module exports one `pl_module_def` (use PL_MODULE), declares typed
 * options that the core validates before load(), and in load() attaches
 * hook handlers, disco features and store key spaces. Everything attached
 * through the API is detached by the core at unload, so unload() frees only
 * the module's private state. Modules never touch sockets or LMDB. */
#ifndef PARLEY_MODULE_H
#define PARLEY_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bumped whenever a struct below or a function signature changes; the
 * loader refuses a module built against another ABI. */
#define PL_MODULE_ABI 1

struct pl_module;

/* ---- typed options ----------------------------------------------------- */

enum pl_option_type {
	PL_OPT_BOOL,     /* bool: true/false/yes/no/on/off/1/0 */
	PL_OPT_INT,      /* int64_t within [min, max] */
	PL_OPT_DURATION, /* int64_t milliseconds: "90s", "5m", "2h", "1d", "250ms"; bare = seconds */
	PL_OPT_SIZE,     /* uint64_t bytes: "512", "64KiB", "10MiB", "1GiB" (KB/MB/GB = 1000^n) */
	PL_OPT_STRING,   /* char *, owned by the core, freed at unload */
	PL_OPT_ENUM,     /* int: index into choices */
	PL_OPT_JID,      /* char *, normalised JID (RFC 7622), owned by the core */
	PL_OPT_LIST,     /* struct pl_string_list: the option may repeat */
};

struct pl_string_list {
	char **items;
	size_t count;
};

/* One option of a config section. min/max bound INT, DURATION (ms) and
 * SIZE (bytes) when max > min; a value out of range is an error, never
 * clamped. `offset` is where the parsed value goes in the section's conf
 * struct (offsetof). The table ends with an entry whose name is NULL. */
struct pl_option {
	const char *name;
	enum pl_option_type type;
	const char *default_value; /* NULL: no default (STRING/JID -> NULL, LIST -> empty) */
	int64_t min, max;
	const char *const *choices; /* ENUM: NULL-terminated */
	size_t offset;
	const char *help;
};

/* ---- hooks --------------------------------------------------------------- */

enum pl_hook_result {
	PL_CONTINUE = 0, /* not mine / done with it: pass to the next handler */
	PL_HANDLED = 1,  /* consumed: stop the chain */
};

/* Stanza error conditions of RFC 6120 section 8.3.3. A handler may return
 * PL_HOOK_ERROR(cond) and the core answers with that stanza error. */
enum pl_stanza_error {
	PL_ERR_BAD_REQUEST = 1,
	PL_ERR_CONFLICT,
	PL_ERR_FEATURE_NOT_IMPLEMENTED,
	PL_ERR_FORBIDDEN,
	PL_ERR_GONE,
	PL_ERR_INTERNAL_SERVER_ERROR,
	PL_ERR_ITEM_NOT_FOUND,
	PL_ERR_JID_MALFORMED,
	PL_ERR_NOT_ACCEPTABLE,
	PL_ERR_NOT_ALLOWED,
	PL_ERR_NOT_AUTHORIZED,
	PL_ERR_POLICY_VIOLATION,
	PL_ERR_RECIPIENT_UNAVAILABLE,
	PL_ERR_REDIRECT,
	PL_ERR_REGISTRATION_REQUIRED,
	PL_ERR_REMOTE_SERVER_NOT_FOUND,
	PL_ERR_REMOTE_SERVER_TIMEOUT,
	PL_ERR_RESOURCE_CONSTRAINT,
	PL_ERR_SERVICE_UNAVAILABLE,
	PL_ERR_SUBSCRIPTION_REQUIRED,
	PL_ERR_UNDEFINED_CONDITION,
	PL_ERR_UNEXPECTED_REQUEST,
};
#define PL_HOOK_ERROR_BASE 0x100
#define PL_HOOK_ERROR(cond) (PL_HOOK_ERROR_BASE | (int)(cond))
#define PL_HOOK_IS_ERROR(result) (((result) & PL_HOOK_ERROR_BASE) != 0)
#define PL_HOOK_ERROR_CONDITION(result) ((enum pl_stanza_error)((result) & 0xff))

/* What a handler receives. Handlers borrow everything in it: to keep a
 * pointer past the return, copy it. `data` is event-specific (documented
 * where the event is fired). */
struct pl_event {
	const char *name;
	void *data;
};

typedef int (*pl_hook_fn)(struct pl_event *event, void *userdata);

/* Attaches fn to the named event. Higher priority runs first; equal
 * priorities run in registration order. Returns 0 or -errno. */
int pl_hook(struct pl_module *m, const char *event, pl_hook_fn fn,
	    void *userdata, int priority);

/* ---- disco --------------------------------------------------------------- */

/* Declares a feature the server advertises in disco#info (XEP-0030). */
void pl_feature(struct pl_module *m, const char *feature_namespace);
/* Declares a server identity (category/type/name) for disco#info. */
void pl_identity(struct pl_module *m, const char *category, const char *type,
		 const char *name);

/* ---- store ----------------------------------------------------------------- */

struct pl_store_space;
/* Opens (creating if needed) the module's key space `<module>.<name>`. */
struct pl_store_space *pl_store_open(struct pl_module *m, const char *name);

/* ---- logging --------------------------------------------------------------- */

/* Logs a line tagged with the module's name. level: 0 error .. 3 debug. */
void pl_module_log(struct pl_module *m, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
const char *pl_module_name(const struct pl_module *m);

/* ---- the definition a module exports --------------------------------------- */

struct pl_module_def {
	uint32_t abi;                     /* PL_MODULE_ABI */
	const char *name;                 /* "version": must match the file mod_version.so */
	const char *version;
	const char *const *requires;      /* modules loaded first; NULL-terminated */
	const struct pl_option *options;  /* parsed into a conf struct of conf_size bytes */
	size_t conf_size;
	/* Cross-option rules, run after the options parsed and before load. */
	int (*check)(const void *conf, char **error);
	/* Attach hooks, features, spaces. Return 0, or -errno and set *error. */
	int (*load)(struct pl_module *m, const void *conf, char **error);
	void (*unload)(struct pl_module *m);
};

#define PL_MODULE(n, ...)                                                          \
	__attribute__((visibility("default"))) const struct pl_module_def pl_module_def = { \
		.abi = PL_MODULE_ABI, .name = #n, __VA_ARGS__                          \
	}

#endif
