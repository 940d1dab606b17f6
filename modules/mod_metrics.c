/* mod_metrics: Prometheus/OpenMetrics text on GET /metrics of the HTTP
 * listener, for Grafana (etc/grafana-dashboard.json): client sessions per
 * transport (live and hibernating), every named counter of the core and
 * the modules (logins, archived messages, resumptions, duplicates
 * dropped, pushes...), the store (map size and use, commits, write sets),
 * and the process (resident memory, open files, start time). A scrape
 * reads what is already counted: one buffer, no walk over accounts or
 * archives. By default only loopback may scrape; `allow="any"` opens it
 * (behind a proxy or a firewall). */
#include "c2s.h"
#include "counters.h"
#include "http.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"
#include "store/store.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum allow { ALLOW_LOOPBACK, ALLOW_ANY };
static const char *const allow_names[] = { "loopback", "any", NULL };

struct metrics_conf {
	int allow;
	char *path;
};

static const struct pl_option metrics_options[] = {
	{ "allow", PL_OPT_ENUM, "loopback", 0, 0, allow_names, offsetof(struct metrics_conf, allow),
	  "who may scrape: loopback addresses only, or anyone who reaches the HTTP listener" },
	{ "path", PL_OPT_STRING, "/metrics", 0, 0, NULL, offsetof(struct metrics_conf, path),
	  "the URL path" },
	{ NULL }
};

static struct metrics_conf conf;
static struct pl_module *self;

static void metric(struct pl_buf *out, const char *name, const char *type, const char *help)
{
	pl_buf_printf(out, "# TYPE %s %s\n# HELP %s %s\n", name, type, name, help);
}

static void each_transport(void *arg, const char *transport, size_t sessions, size_t hibernating)
{
	struct pl_buf *out = arg;
	pl_buf_printf(out, "parley_sessions{transport=\"%s\",state=\"live\"} %zu\n", transport,
		      sessions);
	pl_buf_printf(out, "parley_sessions{transport=\"%s\",state=\"hibernating\"} %zu\n", transport,
		      hibernating);
}

/* "archived-messages" -> "parley_archived_messages". */
static void metric_name(const char *counter, char *out, size_t size)
{
	size_t n = (size_t)snprintf(out, size, "parley_");
	for (const char *p = counter; *p && n + 1 < size; p++)
		out[n++] = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
	out[n] = 0;
}

static long process_resident_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, resident = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * sysconf(_SC_PAGESIZE);
}

static long open_files(void)
{
	DIR *d = opendir("/proc/self/fd");
	long n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 2; /* . and .. */
}

static void render(struct pl_buf *into)
{
	metric(into, "parley_sessions", "gauge",
	       "Bound client sessions by transport; hibernating ones wait for a XEP-0198 resumption.");
	pl_c2s_each_transport(each_transport, into);
	metric(into, "parley_router_sessions", "gauge", "Sessions in the routing table.");
	pl_buf_printf(into, "parley_router_sessions %zu\n", pl_router_session_count());
	for (size_t i = 0; i < pl_counters_count(); i++) {
		char name[160];
		metric_name(pl_counter_name_at(i), name, sizeof(name));
		pl_buf_printf(into, "# TYPE %s counter\n%s_total %" PRIu64 "\n", name, name,
			      pl_counter_value_at(i));
	}
	struct pl_store_stats stats = { 0 };
	if (pl_server.store)
		pl_store_stats(pl_server.store, &stats);
	metric(into, "parley_store_map_bytes", "gauge", "Size of the LMDB map.");
	pl_buf_printf(into, "parley_store_map_bytes %" PRIu64 "\n", stats.map_size);
	metric(into, "parley_store_used_bytes", "gauge", "Pages in use in the LMDB map.");
	pl_buf_printf(into, "parley_store_used_bytes %" PRIu64 "\n", stats.used_bytes);
	metric(into, "parley_store_commits", "counter", "LMDB transactions committed (group commits).");
	pl_buf_printf(into, "parley_store_commits_total %" PRIu64 "\n", stats.commits);
	metric(into, "parley_store_writes", "counter", "Write sets committed (many per transaction).");
	pl_buf_printf(into, "parley_store_writes_total %" PRIu64 "\n", stats.writes);
	metric(into, "parley_process_resident_memory_bytes", "gauge", "Resident set size.");
	pl_buf_printf(into, "parley_process_resident_memory_bytes %ld\n", process_resident_bytes());
	metric(into, "parley_process_open_fds", "gauge", "Open file descriptors.");
	pl_buf_printf(into, "parley_process_open_fds %ld\n", open_files());
	metric(into, "parley_process_start_time_seconds", "gauge", "Start time, unix seconds.");
	pl_buf_printf(into, "parley_process_start_time_seconds %lld\n", (long long)pl_server.started);
	pl_buf_puts(into, "# EOF\n");
}

static int on_headers(struct pl_http_request *r, void *userdata)
{
	if (conf.allow == ALLOW_LOOPBACK && !pl_http_peer_is_loopback(r)) {
		pl_module_log(self, 2, "%s may not read the metrics (allow=\"loopback\")",
			      pl_http_peer_address(r));
		return 403;
	}
	(void)userdata;
	return 0;
}

/* Reused between scrapes (network thread); freed at unload. */
static struct pl_buf out;

static void on_complete(struct pl_http_request *r, void *userdata)
{
	pl_buf_reset(&out);
	render(&out);
	pl_http_add_header(r, "Cache-Control", "no-store");
	pl_http_respond(r, 200, "application/openmetrics-text; version=1.0.0; charset=utf-8", out.data,
			out.len);
	(void)userdata;
	if (out.cap > (1 << 20))
		pl_buf_free(&out);
}

static const struct pl_http_handler handler = { on_headers, NULL, on_complete, NULL, 1, false };

static int metrics_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct metrics_conf *)conf_ptr;
	self = m;
	if (!conf.path || conf.path[0] != '/')
		return pl_error(error, -EINVAL, "path must start with '/'");
	if (pl_http_route(m, "GET", conf.path, &handler, NULL) != 0)
		return pl_error(error, -EEXIST, "the path %s is taken", conf.path);
	return 0;
}

static void metrics_unload(struct pl_module *m)
{
	pl_buf_free(&out);
	(void)m;
}

PL_MODULE(metrics, .version = "0.1", .options = metrics_options,
	  .conf_size = sizeof(struct metrics_conf), .load = metrics_load, .unload = metrics_unload);
