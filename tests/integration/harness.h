/* Integration test harness: starts a real parleyd from the build tree with
 * its own temporary directory (config, store, control socket) and free
 * ports, waits until it answers on its control socket, runs parleyctl
 * against it, and stops it. Paths come from PARLEY_BUILDDIR and
 * PARLEY_SRCDIR (set by tests/run-tests.sh; default "."). */
#ifndef PL_HARNESS_H
#define PL_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

struct ph_server {
	pid_t pid;
	char dir[256];          /* temporary directory, removed by ph_server_cleanup */
	char config_path[300];
	char storage_path[300];
	char socket_path[300];
	char log_path[300];     /* parleyd's stderr */
	int c2s_port;           /* a free port for the STARTTLS client listener */
	int c2s_tls_port;       /* a free port for direct TLS */
};

/* Creates the temporary directory and writes a config whose <parley> body
 * is the standard one (log debug to stderr, storage and control socket in
 * the directory, durability none unless extra overrides, host localhost,
 * the build tree's modules) followed by `extra_xml` (may be NULL).
 * Use ph_server_write_config to write a whole file of your own instead. */
int ph_server_init(struct ph_server *s, const char *extra_xml);
/* Overwrites the config file with exactly `xml`. */
int ph_server_write_config(struct ph_server *s, const char *xml);
/* The standard config text (caller frees), with `storage_extra` added to
 * the <storage> element's attributes and `extra_xml` appended. */
char *ph_standard_config(const struct ph_server *s, const char *storage_extra,
			 const char *extra_xml);

/* A copy of `config` (caller frees) with `attributes` inserted into the
 * first start tag that begins with "<element", e.g. ("c2s",
 * "ping-idle=\"1s\"") or ("module name=\"roster\"", "max-items=\"5\""). */
char *ph_config_with_attributes(const char *config, const char *element,
				const char *attributes);

/* Starts parleyd -c config (plus extra argv, NULL-terminated, may be NULL)
 * and waits up to 10 s for the control socket to answer. Returns 0, or -1
 * if the daemon exited or never answered (its log is printed as diag). */
int ph_server_start(struct ph_server *s, const char *const *extra_args);
/* SIGTERM and wait up to 10 s (then SIGKILL). Returns the exit status
 * (0 for a clean shutdown), or -signal if it died of a signal. */
int ph_server_stop(struct ph_server *s);
/* SIGKILL, as a crash would. */
void ph_server_kill(struct ph_server *s);
/* Removes the temporary directory (after stop). */
void ph_server_cleanup(struct ph_server *s);
/* The daemon's log so far (caller frees). */
char *ph_server_log(const struct ph_server *s);

/* Runs a program, feeding stdin_text (may be NULL: /dev/null), capturing
 * stdout and stderr (caller frees; may pass NULL to discard). Returns the
 * exit status, or -signal, or -1000 on timeout (timeout_ms). */
int ph_run(const char *const *argv, const char *stdin_text, char **out, char **err,
	   int timeout_ms);
/* Runs parleyd with the given arguments (NULL-terminated) the same way. */
int ph_run_parleyd(const char *const *args, const char *stdin_text, char **out,
		   char **err, int timeout_ms);
/* Runs "parleyctl -s <socket> args..." the same way. */
int ph_ctl(const struct ph_server *s, const char *const *args, const char *stdin_text,
	   char **out, char **err);

/* Creates user@localhost with the password "<user>-secret", the
 * convention of the integration tests. */
void ph_add_user(const struct ph_server *s, const char *user);
/* Creates user@domain with the password "<user>-secret" (for tests with
 * hosts other than localhost, e.g. two federated servers). */
void ph_add_user_at(const struct ph_server *s, const char *user, const char *domain);
/* A copy of `text` (caller frees) with the first `from` replaced by `to`. */
char *ph_replace(const char *text, const char *from, const char *to);
/* How many times `text` occurs in the daemon's log so far. */
int ph_log_count(const struct ph_server *s, const char *text);
/* Polls the daemon's log until it contains `text` (true) or timeout_ms. */
bool ph_wait_log(const struct ph_server *s, const char *text, int timeout_ms);
/* The resident memory of a process in KiB, or -1. */
long ph_rss_kib(pid_t pid);

/* Paths of the build tree. */
const char *ph_builddir(void);
const char *ph_srcdir(void);
/* A free TCP port on 127.0.0.1 (bound and released). */
int ph_free_port(void);
/* Polls cond(arg) every 10 ms until it returns true or timeout_ms passes. */
bool ph_wait_for(bool (*cond)(void *arg), void *arg, int timeout_ms);

#endif
