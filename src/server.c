/* The server context: the core's own option tables (the same typed tables
 * modules use, so every setting is validated the same way), the virtual
 * hosts with their certificates, configuration reload and the stop
 * request. Everything here runs on the network thread. */
#include "server.h"
#include "jid.h"
#include "log.h"
#include "net/tls_cert.h"
#include "util.h"

#include <errno.h>
#include <event2/event.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct pl_server pl_server;

static const char *const log_levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const durabilities[] = { "fsync", "none", NULL };

const struct pl_option pl_core_log_options[] = {
	{ "level", PL_OPT_ENUM, "info", 0, 0, log_levels,
	  offsetof(struct pl_core_conf, log_level), "least important level logged" },
	{ "target", PL_OPT_STRING, "stderr", 0, 0, NULL,
	  offsetof(struct pl_core_conf, log_target), "stderr, syslog or a file path" },
	{ NULL }
};

const struct pl_option pl_core_storage_options[] = {
	{ "path", PL_OPT_STRING, "./var/parley", 0, 0, NULL,
	  offsetof(struct pl_core_conf, storage_path), "directory of the LMDB store" },
	{ "map-size", PL_OPT_SIZE, "64MiB", 64 * 1024, INT64_MAX, NULL,
	  offsetof(struct pl_core_conf, map_size), "initial LMDB map size" },
	{ "max-map-size", PL_OPT_SIZE, "64GiB", 64 * 1024, INT64_MAX, NULL,
	  offsetof(struct pl_core_conf, max_map_size), "the map grows up to this size" },
	{ "durability", PL_OPT_ENUM, "fsync", 0, 0, durabilities,
	  offsetof(struct pl_core_conf, durability), "fsync, or none for throwaway servers" },
	{ NULL }
};

const struct pl_option pl_core_control_options[] = {
	{ "socket", PL_OPT_STRING, NULL, 0, 0, NULL,
	  offsetof(struct pl_core_conf, control_socket), "parleyctl's UNIX socket" },
	{ NULL }
};

const struct pl_option pl_core_server_options[] = {
	{ "pidfile", PL_OPT_STRING, NULL, 0, 0, NULL,
	  offsetof(struct pl_core_conf, pidfile), "file that holds parleyd's pid" },
	{ "scram-iterations", PL_OPT_INT, "4096", 4096, 1000000, NULL,
	  offsetof(struct pl_core_conf, scram_iterations), "PBKDF2 iterations of new passwords" },
	{ NULL }
};

const struct pl_option pl_core_modules_options[] = {
	{ "path", PL_OPT_STRING, NULL, 0, 0, NULL,
	  offsetof(struct pl_core_conf, module_path), "directory of mod_*.so" },
	{ NULL }
};

static const struct {
	const char *kind;
	const struct pl_option *options;
} core_sections[] = {
	{ "log", pl_core_log_options },
	{ "storage", pl_core_storage_options },
	{ "control", pl_core_control_options },
	{ "server", pl_core_server_options },
	{ "modules", pl_core_modules_options },
};

int pl_core_conf_load(const struct pl_config *config, struct pl_core_conf *conf,
		      char **error)
{
	memset(conf, 0, sizeof(*conf));
	for (size_t i = 0; i < PL_ARRAY_LEN(core_sections); i++) {
		const struct pl_config_section *section =
			pl_config_find(config, core_sections[i].kind, NULL);
		char *what = pl_asprintf("<%s>", core_sections[i].kind);
		int rc = pl_options_apply(core_sections[i].options, conf, section,
					  config->path, what, error);
		free(what);
		if (rc) {
			pl_core_conf_free(conf);
			return rc;
		}
	}
	if (conf->max_map_size < conf->map_size) {
		const struct pl_config_section *storage = pl_config_find(config, "storage", NULL);
		pl_core_conf_free(conf);
		return pl_error(error, -EINVAL,
				"%s:%d: <storage> max-map-size is smaller than map-size",
				config->path, storage ? storage->line : 0);
	}
	if (!conf->control_socket)
		conf->control_socket = pl_asprintf("%s/parleyd.sock", conf->storage_path);
	return 0;
}

void pl_core_conf_free(struct pl_core_conf *conf)
{
	for (size_t i = 0; i < PL_ARRAY_LEN(core_sections); i++)
		pl_options_free(core_sections[i].options, conf);
	memset(conf, 0, sizeof(*conf));
}

void pl_server_free_hosts(void)
{
	for (size_t i = 0; i < pl_server.host_count; i++) {
		free(pl_server.hosts[i].name);
		free(pl_server.hosts[i].certificate);
		free(pl_server.hosts[i].private_key);
	}
	free(pl_server.hosts);
	pl_server.hosts = NULL;
	pl_server.host_count = 0;
}

static const char *section_value(const struct pl_config_section *section, const char *key)
{
	for (size_t i = 0; i < section->entry_count; i++)
		if (strcmp(section->entries[i].key, key) == 0)
			return section->entries[i].value;
	return NULL;
}

int pl_server_load_hosts(const struct pl_config *config, char **error)
{
	pl_server_free_hosts();
	for (const struct pl_config_section *s = pl_config_next(config, "host", NULL); s;
	     s = pl_config_next(config, "host", s)) {
		char *domain = s->name ? pl_jid_prep_domain(s->name) : NULL;
		if (!domain)
			return pl_error(error, -EINVAL, "%s:%d: <host name=\"%s\">: not a valid domain",
					config->path, s->line, s->name ? s->name : "");
		if (pl_server_find_host(domain)) {
			free(domain);
			return pl_error(error, -EINVAL, "%s:%d: host %s is configured twice",
					config->path, s->line, s->name);
		}
		pl_server.hosts = pl_realloc(pl_server.hosts,
					     (pl_server.host_count + 1) * sizeof(*pl_server.hosts));
		struct pl_host *host = &pl_server.hosts[pl_server.host_count++];
		memset(host, 0, sizeof(*host));
		host->name = domain;
		for (size_t c = 0; c < s->child_count; c++) {
			const struct pl_config_section *cert = &s->children[c];
			if (strcmp(cert->kind, "certificate") != 0)
				continue;
			const char *file = section_value(cert, "file");
			const char *key = section_value(cert, "key");
			if (!file || !key)
				return pl_error(error, -EINVAL,
						"%s:%d: <certificate> needs both file and key",
						config->path, cert->line);
			host->certificate = pl_strdup(file);
			host->private_key = pl_strdup(key);
		}
		if (!host->certificate) {
			char *dir = pl_asprintf("%s/certs", pl_server.core.storage_path);
			int rc = pl_tls_ensure_self_signed(dir, host->name, &host->certificate,
							   &host->private_key, error);
			free(dir);
			if (rc)
				return rc;
		}
	}
	if (pl_server.host_count == 0)
		return pl_error(error, -EINVAL, "%s: no <host> configured", config->path);
	return 0;
}

const struct pl_host *pl_server_find_host(const char *domain)
{
	for (size_t i = 0; i < pl_server.host_count; i++)
		if (strcmp(pl_server.hosts[i].name, domain) == 0)
			return &pl_server.hosts[i];
	return NULL;
}

int pl_server_reload(char **error)
{
	if (!pl_server.config_path) {
		pl_log(PL_LOG_INFO, "core", "reload: running on the embedded default, nothing to re-read");
		return 0;
	}
	struct pl_config *config;
	int rc = pl_config_load_file(pl_server.config_path, &config, error);
	if (rc) {
		pl_log(PL_LOG_ERROR, "core", "reload failed, keeping the running configuration: %s",
		       *error);
		return rc;
	}
	struct pl_core_conf conf;
	rc = pl_core_conf_load(config, &conf, error);
	if (rc) {
		pl_log(PL_LOG_ERROR, "core", "reload failed, keeping the running configuration: %s",
		       *error);
		pl_config_free(config);
		return rc;
	}
	if (strcmp(conf.log_target, pl_server.core.log_target) != 0) {
		rc = pl_log_open(conf.log_target, (enum pl_log_level)conf.log_level, error);
		if (rc) {
			pl_log(PL_LOG_ERROR, "core", "reload: %s; keeping the old log target", *error);
			free(*error);
			*error = NULL;
			free(conf.log_target);
			conf.log_target = pl_strdup(pl_server.core.log_target);
		}
	} else {
		char *reopen_error = NULL;
		if (pl_log_reopen(&reopen_error) != 0) {
			pl_log(PL_LOG_ERROR, "core", "reload: %s", reopen_error);
			free(reopen_error);
		}
	}
	pl_log_set_level((enum pl_log_level)conf.log_level);

	/* What the running process cannot change without a restart. */
	if (strcmp(conf.storage_path, pl_server.core.storage_path) != 0 ||
	    conf.map_size != pl_server.core.map_size ||
	    conf.max_map_size != pl_server.core.max_map_size ||
	    conf.durability != pl_server.core.durability)
		pl_log(PL_LOG_WARN, "core", "reload: <storage> changes take effect at restart");
	if (strcmp(conf.control_socket, pl_server.core.control_socket) != 0)
		pl_log(PL_LOG_WARN, "core", "reload: <control> changes take effect at restart");

	/* Keep the sections that need a restart as they are running. */
	struct pl_core_conf applied = pl_server.core;
	applied.log_level = conf.log_level;
	char *old_target = applied.log_target;
	applied.log_target = conf.log_target;
	conf.log_target = old_target;
	pl_server.core = applied;
	pl_core_conf_free(&conf);

	pl_config_free(pl_server.config);
	pl_server.config = config;
	/* Always written, whatever the new level: an operator checking that a
	 * reload happened must find this line even after lowering verbosity. */
	pl_log_write(PL_LOG_INFO, "core", NULL, "reloaded %s (log level %s)", pl_server.config_path,
		     pl_log_level_name(pl_log_threshold));
	return 0;
}

void pl_server_request_stop(void)
{
	if (pl_server.base)
		event_base_loopbreak(pl_server.base);
}
