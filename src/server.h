/* The server's process-wide context: the event loop, the configuration in
 * force, the store and the virtual hosts. There is one parleyd per process,
 * so this is a single global (like nginx's cycle); everything in it is
 * owned and touched by the network thread only. */
#ifndef PL_SERVER_H
#define PL_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "store/store.h"

struct event_base;

/* Core settings, filled from the <log>, <storage>, <control>, <server>
 * and <modules> sections through option tables (see server.c). */
struct pl_core_conf {
	/* <log> */
	int log_level;          /* enum pl_log_level */
	char *log_target;       /* "stderr", "syslog" or a path */
	/* <storage> */
	char *storage_path;
	uint64_t map_size;
	uint64_t max_map_size;
	int durability;         /* enum pl_store_durability */
	/* <control> */
	char *control_socket;   /* NULL: <storage_path>/parleyd.sock */
	/* <server> */
	char *pidfile;          /* NULL: none */
	int64_t scram_iterations;
	/* <modules> */
	char *module_path;      /* NULL: the compiled-in PL_MODULE_DIR */
};

struct pl_host {
	char *name;             /* normalised domain */
	char *certificate;      /* PEM paths; NULL until a self-signed pair is made */
	char *private_key;
};

struct pl_server {
	struct event_base *base;
	struct pl_config *config;       /* owned */
	char *config_path;              /* NULL: embedded default */
	struct pl_core_conf core;       /* owned strings, freed by pl_core_conf_free */
	struct pl_store *store;
	struct pl_host *hosts;
	size_t host_count;
	time_t started;
	uint64_t session_count;         /* live client sessions (grows with c2s) */
	char *module_path_override;     /* -M on the command line, if any */
};

extern struct pl_server pl_server;

extern const struct pl_option pl_core_log_options[];
extern const struct pl_option pl_core_storage_options[];
extern const struct pl_option pl_core_control_options[];
extern const struct pl_option pl_core_server_options[];
extern const struct pl_option pl_core_modules_options[];

/* Reads every core section of config into conf. 0 or -EINVAL + *error. */
int pl_core_conf_load(const struct pl_config *config, struct pl_core_conf *conf,
		      char **error);
void pl_core_conf_free(struct pl_core_conf *conf);

/* The hosts of the configuration; a <host> with no <certificate> gets a
 * self-signed one under <storage>/certs (made on first start). */
int pl_server_load_hosts(const struct pl_config *config, char **error);
void pl_server_free_hosts(void);
const struct pl_host *pl_server_find_host(const char *domain);

/* Re-reads the configuration file and applies what can change at run
 * time (log level and target); logs what needs a restart. 0 or -errno. */
int pl_server_reload(char **error);

/* Asks the event loop to stop (signal handlers, the control socket). */
void pl_server_request_stop(void);

#endif
