/* The module loader. A module is a shared object mod_<name>.so exporting
 * `pl_module_def`; loading checks the ABI number and the name, loads the
 * modules it requires first (detecting cycles), parses its options from
 * its <module name="..."> section through the same typed option tables the
 * core uses, runs check() and load(). Start-up stops at the first module
 * that fails, with a message naming it. Unloading goes in reverse order;
 * the core detaches everything the module attached through the API. */
#include "module.h"
#include "hooks.h"
#include "http.h"
#include "log.h"
#include "server.h"
#include "util.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pl_module {
	char *name;                       /* owned */
	const struct pl_module_def *def;  /* inside the shared object */
	void *handle;                     /* dlopen handle, closed at unload */
	void *conf;                       /* owned; strings inside freed by pl_options_free */
	bool loading;                     /* on the requires chain: cycle detection */
	bool loaded;
};

/* Load order; unload walks it backwards. */
static struct pl_module **modules;
static size_t module_count, module_cap;

static bool valid_module_name(const char *name)
{
	if (!*name || strlen(name) > 64)
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return false;
	return true;
}

static struct pl_module *find_module(const char *name)
{
	for (size_t i = 0; i < module_count; i++)
		if (strcmp(modules[i]->name, name) == 0)
			return modules[i];
	return NULL;
}

static void free_module(struct pl_module *m)
{
	if (m->def && m->conf)
		pl_options_free(m->def->options, m->conf);
	free(m->conf);
	/* Under valgrind, keep the object mapped so leak reports can name
	 * the module's functions. */
	if (m->handle && !getenv("PARLEY_NO_DLCLOSE"))
		dlclose(m->handle);
	free(m->name);
	free(m);
}

/* Opens mod_<name>.so and checks that it is a module of this ABI. */
static int open_module(const char *name, const char *dir, struct pl_module **out, char **error)
{
	if (!valid_module_name(name))
		return pl_error(error, -EINVAL,
				"module '%s': invalid name (use lower-case letters, digits and '_')",
				name);
	char *path = pl_asprintf("%s/mod_%s.so", dir, name);
	if (access(path, R_OK) != 0) {
		int code = pl_error(error, -ENOENT, "module '%s': cannot read %s: %s",
				    name, path, strerror(errno));
		free(path);
		return code;
	}
	void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!handle) {
		int code = pl_error(error, -ENOEXEC, "module '%s': cannot load %s: %s",
				    name, path, dlerror());
		free(path);
		return code;
	}
	const struct pl_module_def *def = dlsym(handle, "pl_module_def");
	int code = 0;
	if (!def)
		code = pl_error(error, -ENOEXEC,
				"module '%s': %s is not a Parley module (no pl_module_def symbol)",
				name, path);
	else if (def->abi != PL_MODULE_ABI)
		code = pl_error(error, -ENOEXEC,
				"module '%s' was built for module ABI %u, this parleyd has ABI %u: rebuild it",
				name, def->abi, PL_MODULE_ABI);
	else if (!def->name || strcmp(def->name, name) != 0)
		code = pl_error(error, -ENOEXEC, "module '%s': %s calls itself '%s'",
				name, path, def->name ? def->name : "(null)");
	free(path);
	if (code) {
		dlclose(handle);
		return code;
	}
	struct pl_module *m = pl_calloc(1, sizeof(*m));
	m->name = pl_strdup(name);
	m->def = def;
	m->handle = handle;
	*out = m;
	return 0;
}

/* Parses the module's options from its section (defaults when it has
 * none) and runs its cross-option check. */
static int configure_module(struct pl_module *m, const struct pl_config *config, char **error)
{
	const struct pl_config_section *section = pl_config_find(config, "module", m->name);
	m->conf = pl_calloc(1, m->def->conf_size ? m->def->conf_size : 1);
	if (m->def->options) {
		char *what = pl_asprintf("<module name=\"%s\">", m->name);
		int rc = pl_options_apply(m->def->options, m->conf, section, config->path,
					  what, error);
		free(what);
		if (rc)
			return rc;
	} else if (section && section->entry_count > 0) {
		return pl_error(error, -EINVAL, "%s:%d: module '%s' takes no options",
				config->path, section->entries[0].line, m->name);
	}
	if (m->def->check) {
		char *reason = NULL;
		int rc = m->def->check(m->conf, &reason);
		if (rc) {
			pl_error(error, rc < 0 ? rc : -EINVAL, "%s:%d: module '%s': %s",
				 config->path, section ? section->line : 0, m->name,
				 reason ? reason : "invalid options");
			free(reason);
			return rc < 0 ? rc : -EINVAL;
		}
	}
	return 0;
}

static void append_module(struct pl_module *m)
{
	pl_grow((void **)&modules, &module_cap, module_count + 1, sizeof(*modules));
	modules[module_count++] = m;
}

static int load_one(const char *name, const struct pl_config *config, const char *dir,
		    char **error)
{
	struct pl_module *existing = find_module(name);
	if (existing) {
		if (existing->loading)
			return pl_error(error, -ELOOP,
					"module '%s' requires itself through its dependencies", name);
		return 0;
	}
	struct pl_module *m;
	int rc = open_module(name, dir, &m, error);
	if (rc)
		return rc;
	/* Listed before its dependencies load so a cycle finds it; moved to
	 * the end once loaded so unload order is the reverse of load order. */
	m->loading = true;
	append_module(m);

	for (const char *const *req = m->def->requires; req && *req; req++) {
		rc = load_one(*req, config, dir, error);
		if (rc) {
			char *inner = *error;
			*error = NULL;
			pl_error(error, rc, "module '%s' requires '%s': %s", name, *req,
				 inner ? inner : "failed");
			free(inner);
			goto fail;
		}
	}
	rc = configure_module(m, config, error);
	if (rc)
		goto fail;
	if (m->def->load) {
		char *reason = NULL;
		rc = m->def->load(m, m->conf, &reason);
		if (rc) {
			pl_error(error, rc < 0 ? rc : -EINVAL, "module '%s' failed to load: %s",
				 name, reason ? reason : strerror(rc < 0 ? -rc : rc));
			free(reason);
			pl_hooks_remove_module(m);
			pl_http_unroute_module(m);
			rc = rc < 0 ? rc : -EINVAL;
			goto fail;
		}
	}
	m->loading = false;
	m->loaded = true;
	/* Move to the end: after its dependencies. */
	for (size_t i = 0; i < module_count; i++) {
		if (modules[i] == m) {
			memmove(&modules[i], &modules[i + 1],
				(module_count - i - 1) * sizeof(*modules));
			modules[module_count - 1] = m;
			break;
		}
	}
	pl_log(PL_LOG_INFO, "modules", "loaded %s %s", name,
	       m->def->version ? m->def->version : "");
	return 0;

fail:
	for (size_t i = 0; i < module_count; i++) {
		if (modules[i] == m) {
			memmove(&modules[i], &modules[i + 1],
				(module_count - i - 1) * sizeof(*modules));
			module_count--;
			break;
		}
	}
	free_module(m);
	return rc;
}

int pl_modules_load_all(const struct pl_config *config, const char *dir, char **error)
{
	for (const struct pl_config_section *s = pl_config_next(config, "module", NULL); s;
	     s = pl_config_next(config, "module", s)) {
		int rc = load_one(s->name ? s->name : "", config, dir, error);
		if (rc) {
			pl_modules_unload_all();
			return rc;
		}
	}
	return 0;
}

int pl_modules_check_all(const struct pl_config *config, const char *dir, char **error)
{
	int rc = 0;
	for (const struct pl_config_section *s = pl_config_next(config, "module", NULL);
	     s && rc == 0; s = pl_config_next(config, "module", s)) {
		struct pl_module *m;
		rc = open_module(s->name ? s->name : "", dir, &m, error);
		if (rc)
			break;
		rc = configure_module(m, config, error);
		for (const char *const *req = m->def->requires; rc == 0 && req && *req; req++)
			if (!pl_config_find(config, "module", *req)) {
				struct pl_module *dependency;
				rc = open_module(*req, dir, &dependency, error);
				if (rc == 0)
					free_module(dependency);
			}
		free_module(m);
	}
	return rc;
}

void pl_modules_unload_all(void)
{
	while (module_count > 0) {
		struct pl_module *m = modules[--module_count];
		if (m->loaded && m->def->unload)
			m->def->unload(m);
		pl_hooks_remove_module(m);
		pl_http_unroute_module(m);
		pl_log(PL_LOG_DEBUG, "modules", "unloaded %s", m->name);
		free_module(m);
	}
	free(modules);
	modules = NULL;
	module_cap = 0;
}

size_t pl_modules_count(void)
{
	return module_count;
}

const char *pl_modules_name_at(size_t index)
{
	return index < module_count ? modules[index]->name : NULL;
}

const char *pl_module_name(const struct pl_module *m)
{
	return m->name;
}

struct pl_store_space *pl_store_open(struct pl_module *m, const char *name)
{
	if (!pl_server.store)
		return NULL;
	char *full = pl_asprintf("%s.%s", m->name, name);
	struct pl_store_space *space = pl_store_space(pl_server.store, full);
	free(full);
	return space;
}

void pl_module_log(struct pl_module *m, int level, const char *fmt, ...)
{
	if (level < PL_LOG_ERROR || level > PL_LOG_DEBUG || level > (int)pl_log_threshold)
		return;
	va_list ap;
	va_start(ap, fmt);
	char *message = pl_vasprintf(fmt, ap);
	va_end(ap);
	pl_log_write((enum pl_log_level)level, m->name, NULL, "%s", message);
	free(message);
}
