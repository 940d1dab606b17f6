/* parleyd: start-up, signals and shutdown. Start-up is strict: a bad
 * configuration, a store locked by another parleyd or a module that fails
 * to load stops the daemon with one clear message before anything is
 * served. Shutdown (SIGTERM/SIGINT, or `parleyctl stop`) unloads modules,
 * flushes the store's pending writes and frees everything, so that
 * valgrind sees no leak. SIGHUP reloads what can change at run time. */
#include "autoconfig.h" /* PACKAGE_VERSION */
#include "config.h"
#include "accounts.h"
#include "bosh.h"
#include "c2s.h"
#include "http.h"
#include "websocket.h"
#include "component.h"
#include "s2s.h"
#include "counters.h"
#include "router.h"
#include "ctl/ctl.h"
#include "hooks.h"
#include "log.h"
#include "module.h"
#include "server.h"
#include "util.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <getopt.h>
#include <libxml/parser.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
	fprintf(out,
		"usage: parleyd [-c FILE] [-M DIR]\n"
		"       parleyd --check-config [FILE] [-M DIR]\n"
		"  -c, --config FILE      configuration file (default: the embedded default:\n"
		"                         host localhost, storage ./var/parley)\n"
		"  -M, --module-path DIR  load modules from DIR (overrides <modules path>)\n"
		"      --check-config     validate the configuration and its modules' options, then exit\n"
		"  -V, --version          print the version\n"
		"  -h, --help             this text\n");
}

static const char *module_dir(void)
{
	if (pl_server.module_path_override)
		return pl_server.module_path_override;
	if (pl_server.core.module_path)
		return pl_server.core.module_path;
	return PL_MODULE_DIR;
}

static int load_configuration(const char *path, char **error)
{
	int rc;
	if (path)
		rc = pl_config_load_file(path, &pl_server.config, error);
	else
		rc = pl_config_load_memory(pl_config_embedded_default,
					   strlen(pl_config_embedded_default),
					   "(embedded default)", &pl_server.config, error);
	if (rc)
		return rc;
	return pl_core_conf_load(pl_server.config, &pl_server.core, error);
}

static void on_signal(evutil_socket_t signal_number, short events, void *arg)
{
	if (signal_number == SIGHUP) {
		char *error = NULL;
		pl_log(PL_LOG_INFO, "core", "SIGHUP: reloading the configuration");
		if (pl_server_reload(&error) != 0)
			free(error);
		return;
	}
	pl_log(PL_LOG_INFO, "core", "%s: shutting down",
	       signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
	pl_server_request_stop();
}

static int write_pidfile(const char *path, char **error)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return pl_error(error, -errno, "cannot write pidfile %s: %s", path, strerror(errno));
	char text[32];
	int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	ssize_t written = write(fd, text, (size_t)n);
	close(fd);
	if (written != n)
		return pl_error(error, -EIO, "cannot write pidfile %s", path);
	return 0;
}

static void check_drained(evutil_socket_t fd, short what, void *arg)
{
	int64_t *deadline = arg;
	if ((pl_c2s_idle() && pl_s2s_idle() && pl_component_idle()) || pl_now_ms() >= *deadline)
		event_base_loopbreak(pl_server.base);
}

/* Sends <system-shutdown/> to every client, server and component and
 * lets the loop run until they are gone or two seconds passed, so the
 * errors reach them (and no connection is freed with callbacks still
 * pending in the loop). */
static void drain_streams(void)
{
	bool busy = pl_c2s_begin_shutdown();
	busy = pl_s2s_begin_shutdown() || busy;
	busy = pl_component_begin_shutdown() || busy;
	if (!busy)
		return;
	int64_t deadline = pl_now_ms() + 2000;
	struct event *tick = event_new(pl_server.base, -1, EV_PERSIST, check_drained, &deadline);
	struct timeval every = { 0, 20000 };
	event_add(tick, &every);
	event_base_dispatch(pl_server.base);
	event_free(tick);
}

/* Everything start-up made, in reverse; safe on a partial start-up. */
static void shut_down(struct event **signals, size_t signal_count)
{
	/* A second SIGTERM while the store flushes must not kill us halfway:
	 * once the loop is done, shutdown runs to the end. Freeing the signal
	 * events restores the default handlers, so ignore after that. */
	for (size_t i = 0; i < signal_count; i++)
		if (signals[i]) {
			event_free(signals[i]);
			signals[i] = NULL;
		}
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	pl_ctl_server_stop();
	pl_s2s_stop();
	pl_bosh_stop();
	pl_c2s_stop();
	pl_http_stop();
	pl_component_stop();
	pl_accounts_shutdown();
	/* The store before the modules: writes still in flight end with a
	 * completion (and hooks) that may run module code. A module's unload
	 * must therefore not write to the store. */
	if (pl_server.store) {
		pl_store_destroy(pl_server.store);
		pl_server.store = NULL;
	}
	pl_modules_unload_all();
	pl_server_free_hosts();
	pl_router_shutdown();
	pl_hooks_shutdown();
	pl_counters_shutdown();
	for (size_t i = 0; i < signal_count; i++)
		if (signals[i])
			event_free(signals[i]);
	if (pl_server.core.pidfile && pl_server.started)
		unlink(pl_server.core.pidfile);
	pl_core_conf_free(&pl_server.core);
	pl_config_free(pl_server.config);
	pl_server.config = NULL;
	if (pl_server.base)
		event_base_free(pl_server.base);
	pl_server.base = NULL;
	free(pl_server.config_path);
	free(pl_server.module_path_override);
	libevent_global_shutdown();
	xmlCleanupParser();
}

int main(int argc, char **argv)
{
	enum { OPT_CHECK_CONFIG = 1000 };
	static const struct option long_options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "module-path", required_argument, NULL, 'M' },
		{ "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL;
	bool check_only = false;
	int option;
	while ((option = getopt_long(argc, argv, "c:M:Vh", long_options, NULL)) != -1) {
		switch (option) {
		case 'c':
			config_path = optarg;
			break;
		case 'M':
			free(pl_server.module_path_override);
			pl_server.module_path_override = pl_strdup(optarg);
			break;
		case OPT_CHECK_CONFIG:
			check_only = true;
			break;
		case 'V':
			printf("parleyd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (check_only && !config_path && optind < argc)
		config_path = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "parleyd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	char *error = NULL;
	struct event *signals[4] = { NULL };
	int status = 1;
	if (config_path)
		pl_server.config_path = pl_strdup(config_path);

	if (load_configuration(config_path, &error) != 0) {
		fprintf(stderr, "parleyd: %s\n", error);
		goto out;
	}
	if (check_only) {
		if (pl_modules_check_all(pl_server.config, module_dir(), &error) != 0) {
			fprintf(stderr, "parleyd: %s\n", error);
			goto out;
		}
		printf("%s: configuration OK\n", pl_server.config->path);
		status = 0;
		goto out;
	}
	if (pl_log_open(pl_server.core.log_target, (enum pl_log_level)pl_server.core.log_level,
			&error) != 0) {
		fprintf(stderr, "parleyd: %s\n", error);
		goto out;
	}

	signal(SIGPIPE, SIG_IGN);
	/* Every client is a descriptor: use all the system allows us. */
	struct rlimit files;
	if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
		files.rlim_cur = files.rlim_max;
		setrlimit(RLIMIT_NOFILE, &files);
	}
	if (evthread_use_pthreads() != 0)
		pl_fatal("libevent has no pthreads support");
	pl_server.base = event_base_new();
	if (!pl_server.base)
		pl_fatal("cannot create the event loop");
	/* Handlers first: a SIGTERM during start-up must still shut down
	 * cleanly rather than kill the process with its store open. */
	const int handled[] = { SIGTERM, SIGINT, SIGHUP };
	for (size_t i = 0; i < PL_ARRAY_LEN(handled); i++) {
		signals[i] = evsignal_new(pl_server.base, handled[i], on_signal, NULL);
		event_add(signals[i], NULL);
	}

	struct pl_store_config store_config = {
		.path = pl_server.core.storage_path,
		.map_size = pl_server.core.map_size,
		.max_map_size = pl_server.core.max_map_size,
		.durability = (enum pl_store_durability)pl_server.core.durability,
		.max_spaces = 128,
	};
	if (pl_store_create(pl_server.base, &store_config, &pl_server.store, &error) != 0) {
		pl_log(PL_LOG_ERROR, "core", "%s", error);
		goto out;
	}
	if (pl_accounts_init(pl_server.store, (uint32_t)pl_server.core.scram_iterations) != 0) {
		pl_log(PL_LOG_ERROR, "core", "cannot open the accounts store");
		goto out;
	}
	pl_router_init();
	if (pl_server_load_hosts(pl_server.config, &error) != 0 ||
	    pl_modules_load_all(pl_server.config, module_dir(), &error) != 0 ||
	    pl_c2s_start(pl_server.base, pl_server.config, &error) != 0 ||
	    pl_websocket_start(pl_server.config, &error) != 0 ||
	    pl_bosh_start(pl_server.base, pl_server.config, &error) != 0 ||
	    pl_http_start(pl_server.base, pl_server.config, &error) != 0 ||
	    pl_component_start(pl_server.base, pl_server.config, &error) != 0 ||
	    pl_s2s_start(pl_server.base, pl_server.config, &error) != 0) {
		pl_log(PL_LOG_ERROR, "core", "%s", error);
		goto out;
	}
	/* The pidfile is written only once the store lock is ours, so a second
	 * parleyd that is refused never overwrites the running one's pid. */
	if (pl_server.core.pidfile && write_pidfile(pl_server.core.pidfile, &error) != 0) {
		pl_log(PL_LOG_ERROR, "core", "%s", error);
		goto out;
	}
	/* Last: an answering control socket means parleyd is ready. */
	if (pl_ctl_server_start(pl_server.base, pl_server.core.control_socket, &error) != 0) {
		pl_log(PL_LOG_ERROR, "core", "%s", error);
		goto out;
	}
	pl_server.started = time(NULL);

	struct pl_buf hosts = { 0 };
	for (size_t i = 0; i < pl_server.host_count; i++)
		pl_buf_printf(&hosts, "%s%s", i ? " " : "", pl_server.hosts[i].name);
	pl_log(PL_LOG_INFO, "core",
	       "parleyd %s started (pid %ld): hosts %s; store %s; control socket %s; config %s",
	       PACKAGE_VERSION, (long)getpid(), hosts.data, pl_server.core.storage_path,
	       pl_server.core.control_socket, pl_server.config->path);
	pl_buf_free(&hosts);

	event_base_dispatch(pl_server.base);
	pl_log(PL_LOG_INFO, "core", "stopping");
	drain_streams();
	status = 0;

out:
	free(error);
	shut_down(signals, PL_ARRAY_LEN(signals));
	if (status == 0 && !check_only)
		pl_log(PL_LOG_INFO, "core", "stopped");
	pl_log_close();
	return status;
}
