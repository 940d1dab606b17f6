/* parleyctl and the control socket against a real parleyd: every command
 * and its errors, JSON output, the socket found through -c, raw protocol
 * abuse (unknown commands, over-long and malformed requests, a client
 * that hangs up while its account is being written), the socket's mode,
 * a daemon that is not running, a second daemon on the same socket, and
 * a restart over the stale socket after kill -9 that keeps the accounts
 * (they were acknowledged only once durable). */
#include "harness.h"
#include "../tap.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int ctl(const struct ph_server *s, const char *a, const char *b, const char *input,
	       char **out, char **err)
{
	const char *args[] = { a, b, NULL };
	return ph_ctl(s, args, input, out, err);
}

/* Runs a failing command and checks both its exit status and that its
 * message says what went wrong. */
static void expect_error(const struct ph_server *s, const char *command, const char *arg,
			 const char *input, int expected_status, const char *needle)
{
	char *err = NULL;
	int status = ctl(s, command, arg, input, NULL, &err);
	is_int(status, expected_status, "'%s %s' fails with exit status %d", command,
	       arg ? arg : "", expected_status);
	has_str(err, needle, "'%s %s': the message explains why", command, arg ? arg : "");
	free(err);
}

static bool users_are(const struct ph_server *s, const char *expected)
{
	char *out = NULL;
	int status = ctl(s, "users", NULL, NULL, &out, NULL);
	bool same = status == 0 && out && strcmp(out, expected) == 0;
	if (!same)
		diag("users: exit %d, output \"%s\", expected \"%s\"", status, out ? out : "",
		     expected);
	free(out);
	return same;
}

static int connect_raw(const char *path)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(address.sun_path))
		return -1;
	memcpy(address.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Speaks the protocol by hand: sends `request` (len bytes), half-closes
 * if asked, and returns everything the daemon wrote before closing
 * (caller frees), or NULL if it could not connect or timed out. */
static char *raw_exchange(const struct ph_server *s, const char *request, size_t len,
			  bool half_close)
{
	int fd = connect_raw(s->socket_path);
	if (fd < 0)
		return NULL;
	size_t sent = 0;
	while (sent < len) {
		ssize_t n = send(fd, request + sent, len - sent, MSG_NOSIGNAL);
		if (n <= 0)
			break; /* the daemon may close early, e.g. on an over-long request */
		sent += (size_t)n;
	}
	if (half_close)
		shutdown(fd, SHUT_WR);
	char *answer = calloc(1, 65536);
	size_t got = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 10000) <= 0) {
			diag("no answer within 10 s");
			free(answer);
			answer = NULL;
			break;
		}
		ssize_t n = read(fd, answer + got, 65535 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return answer;
}

static void raw_expect(const struct ph_server *s, const char *request, bool half_close,
		       const char *expected_start, const char *label)
{
	char *answer = raw_exchange(s, request, strlen(request), half_close);
	if (!ok(answer && strncmp(answer, expected_start, strlen(expected_start)) == 0,
		"raw protocol, %s: the expected answer", label))
		diag("got \"%s\", expected it to start with \"%s\"", answer ? answer : "(none)",
		     expected_start);
	free(answer);
}

static char *parleyctl_path(void)
{
	static char path[512];
	snprintf(path, sizeof(path), "%s/src/parleyctl", ph_builddir());
	return path;
}

static void test_status_and_accounts(struct ph_server *s)
{
	char *out = NULL, *err = NULL;
	is_int(ctl(s, "status", NULL, NULL, &out, &err), 0, "status answers");
	has_str(out, "users: 0\n", "status: no users yet");
	has_str(out, "hosts: localhost\n", "status: the host");
	has_str(out, "modules: admin blocking carbons dedup disco roster last mam muc offline ping pep private push register search time vcard version\n",
		"status: the loaded modules, in load order (roster before last, which requires it)");
	has_str(out, "uptime: ", "status: uptime");
	has_str(out, "store-commits: ", "status: store figures");
	has_str(out, "version: ", "status: version");
	free(out);
	free(err);

	is_int(ctl(s, "adduser", "alice@localhost", "wonderland\n", NULL, &err), 0,
	       "adduser alice@localhost with the password on stdin");
	free(err);
	is_int(ctl(s, "adduser", "Bob@LocalHost", "builder\n", NULL, NULL), 0,
	       "adduser with upper case");
	ok(users_are(s, "alice@localhost\nbob@localhost\n"),
	   "users lists both, normalised and sorted");
	is_int(ctl(s, "users", "localhost", NULL, &out, NULL), 0, "users HOST answers");
	has_str(out, "alice@localhost", "users HOST lists the host's users");
	free(out);
	expect_error(s, "users", "nothost.example", NULL, 1, "not a host of this server");

	expect_error(s, "adduser", "alice@localhost", "again\n", 1,
		     "user alice@localhost already exists");
	expect_error(s, "adduser", "ALICE@localhost", "again\n", 1, "already exists");
	expect_error(s, "adduser", "@localhost", "x\n", 2, "invalid JID '@localhost'");
	expect_error(s, "adduser", "alice@", "x\n", 2, "invalid JID 'alice@'");
	expect_error(s, "adduser", "alice@localhost/res", "x\n", 2, "without a resource");
	expect_error(s, "adduser", "localhost", "x\n", 2, "an account is user@host");
	expect_error(s, "adduser", "alice@nothost.example", "x\n", 1,
		     "nothost.example is not a host of this server");
	expect_error(s, "adduser", "carol@localhost", "\n", 1, "password is empty");
	expect_error(s, "adduser", "carol@localhost", NULL, 2, "no password");
	ok(users_are(s, "alice@localhost\nbob@localhost\n"),
	   "refused adduser commands created nobody");

	is_int(ctl(s, "passwd", "alice@localhost", "new password\n", NULL, NULL), 0,
	       "passwd alice@localhost");
	expect_error(s, "passwd", "nobody@localhost", "x\n", 1, "no such user nobody@localhost");
	expect_error(s, "passwd", "alice@localhost", "\n", 1, "password is empty");
	is_int(ctl(s, "deluser", "bob@localhost", NULL, NULL, NULL), 0, "deluser bob");
	expect_error(s, "deluser", "bob@localhost", NULL, 1, "no such user bob@localhost");
	ok(users_are(s, "alice@localhost\n"), "bob is gone, alice stays");

	is_int(ctl(s, "status", NULL, NULL, &out, NULL), 0, "status again");
	has_str(out, "users: 1\n", "status counts the one user");
	free(out);

	char *log = ph_server_log(s);
	ok(log && !strstr(log, "wonderland") && !strstr(log, "new password"),
	   "no password appears in the daemon's log");
	has_str(log, "adduser alice@localhost", "the commands are logged");
	free(log);
}

static void test_backup_reload_json(struct ph_server *s)
{
	char *out = NULL, *err = NULL;
	char backup[400];
	snprintf(backup, sizeof(backup), "%s/backup.mdb", s->dir);
	is_int(ctl(s, "backup", backup, NULL, NULL, &err), 0, "backup FILE");
	if (err && *err)
		diag("stderr: %s", err);
	free(err);
	struct stat st;
	ok(stat(backup, &st) == 0 && st.st_size > 0, "the backup file exists and is not empty");
	expect_error(s, "backup", backup, NULL, 1, "exists");
	char missing_dir[400];
	snprintf(missing_dir, sizeof(missing_dir), "%s/no/such/dir/backup.mdb", s->dir);
	expect_error(s, "backup", missing_dir, NULL, 1, "No such file or directory");

	/* A relative FILE is resolved against parleyctl's directory, not the
	 * daemon's: reach the test directory through "../" from here. */
	char cwd[4096], relative[5000] = "";
	if (getcwd(cwd, sizeof(cwd))) {
		for (const char *p = cwd; *p; p++)
			if (*p == '/' && p[1])
				strcat(relative, "../");
		snprintf(relative + strlen(relative), sizeof(relative) - strlen(relative),
			 "%s/relative.mdb", s->dir + 1);
	}
	is_int(ctl(s, "backup", relative, NULL, NULL, NULL), 0, "backup with a relative FILE");
	snprintf(backup, sizeof(backup), "%s/relative.mdb", s->dir);
	ok(stat(backup, &st) == 0 && st.st_size > 0,
	   "the relative FILE was resolved where parleyctl runs");

	is_int(ctl(s, "reload", NULL, NULL, NULL, NULL), 0, "reload");

	const char *json_status[] = { "--json", "status", NULL };
	is_int(ph_ctl(s, json_status, NULL, &out, NULL), 0, "--json status");
	ok(out && out[0] == '{' && strstr(out, "\"uptime\":") && strstr(out, "\"users\":1") &&
		   strstr(out, "\"hosts\":\"localhost\"") && strstr(out, "}\n"),
	   "--json status is one JSON object, numbers as numbers");
	if (out && !strstr(out, "\"users\":1"))
		diag("got %s", out);
	ok(out && !strstr(out, "\"uptime\":\""), "--json: uptime is not quoted");
	free(out);
	const char *json_users[] = { "--json", "users", NULL };
	is_int(ph_ctl(s, json_users, NULL, &out, NULL), 0, "--json users");
	is_str(out, "{\"users\":[\"alice@localhost\"]}\n", "--json users is {\"users\":[...]}");
	free(out);
	const char *json_error[] = { "--json", "deluser", "nobody@localhost", NULL };
	is_int(ph_ctl(s, json_error, NULL, &out, NULL), 1, "--json with a refused command");
	has_str(out, "{\"error\":\"no such user nobody@localhost\"}",
		"--json prints the error as {\"error\":...}");
	free(out);

	/* -c: the socket is found through the configuration file. */
	const char *via_config[] = { parleyctl_path(), "-c", s->config_path, "status", NULL };
	is_int(ph_run(via_config, NULL, &out, &err, 20000), 0,
	       "parleyctl -c CONFIG finds the daemon's socket");
	has_str(out, "users: 1", "-c: the same daemon answers");
	free(out);
	free(err);
}

static void test_usage_errors(struct ph_server *s)
{
	char *err = NULL;
	const char *unknown[] = { "frobnicate", NULL };
	is_int(ph_ctl(s, unknown, NULL, NULL, &err), 2, "an unknown command is a usage error");
	has_str(err, "unknown command 'frobnicate'", "the unknown command is named");
	free(err);
	const char *too_many[] = { "status", "now", NULL };
	is_int(ph_ctl(s, too_many, NULL, NULL, NULL), 2, "status with an argument: usage error");
	const char *too_few[] = { "adduser", NULL };
	is_int(ph_ctl(s, too_few, NULL, NULL, &err), 2, "adduser without a JID: usage error");
	has_str(err, "adduser JID", "the usage names the argument");
	free(err);
	const char *help[] = { parleyctl_path(), "--help", NULL };
	char *out = NULL;
	is_int(ph_run(help, NULL, &out, NULL, 20000), 0, "--help exits 0");
	has_str(out, "usage: parleyctl", "--help prints the usage");
	free(out);
	const char *version[] = { parleyctl_path(), "--version", NULL };
	is_int(ph_run(version, NULL, &out, NULL, 20000), 0, "--version exits 0");
	has_str(out, "parleyctl ", "--version prints the version");
	free(out);
	const char *both[] = { parleyctl_path(), "-s", s->socket_path, "-c", s->config_path,
			       "status", NULL };
	is_int(ph_run(both, NULL, NULL, NULL, 20000), 2, "-s with -c is a usage error");
}

static void test_raw_protocol(struct ph_server *s)
{
	raw_expect(s, "frobnicate\n", false,
		   "error unknown command 'frobnicate' (try: adduser, passwd, deluser, users, "
		   "status, backup, reload, stop, or a module's)\n",
		   "unknown command");
	raw_expect(s, "status\n", false, "ok\nversion: ", "status");
	raw_expect(s, "status\r\n", false, "ok\nversion: ", "status ended by CRLF");
	raw_expect(s, "status", true, "ok\nversion: ",
		   "status without a newline, then a half-close");
	raw_expect(s, "users\n", true, "ok\nalice@localhost\n", "users, then a half-close");
	raw_expect(s, "adduser a%zz x\n", false, "error malformed request", "a bad escape");
	raw_expect(s, "\n", false, "error empty request", "an empty line");
	raw_expect(s, "adduser alice@localhost\n", false, "error usage: adduser JID PASSWORD",
		   "adduser without a password");
	raw_expect(s, "status now\n", false, "error usage: status", "status with an argument");
	raw_expect(s, "backup relative.mdb\n", false, "error usage: backup FILE (an absolute",
		   "a relative backup path");
	raw_expect(s, "adduser alice@localhost/x pw\n", false, "error invalid JID",
		   "a JID with a resource");

	size_t big_len = 20000;
	char *big = malloc(big_len + 1);
	memset(big, 'a', big_len);
	big[big_len] = '\0';
	char *answer = raw_exchange(s, big, big_len, false);
	ok(answer && strcmp(answer, "error request too long\n") == 0,
	   "raw: a request over %d bytes is refused", 8192);
	free(answer);
	big[9000] = '\n';
	answer = raw_exchange(s, big, 9001, false);
	ok(answer && strcmp(answer, "error request too long\n") == 0,
	   "raw: an over-long request with its newline is refused too");
	free(answer);
	free(big);

	/* A client that hangs up before its adduser completes: the daemon
	 * must still create the user and must not touch the closed
	 * connection (the ASan build would catch it). */
	for (int i = 0; i < 20; i++) {
		int fd = connect_raw(s->socket_path);
		char request[100];
		int n = snprintf(request, sizeof(request), "adduser ghost%d@localhost pw%d\n", i, i);
		if (fd >= 0) {
			if (send(fd, request, (size_t)n, MSG_NOSIGNAL) != n)
				diag("short send");
			close(fd);
		}
	}
	char *out = NULL;
	for (int tries = 0; tries < 200; tries++) {
		free(out);
		out = NULL;
		ctl(s, "users", NULL, NULL, &out, NULL);
		if (out && strstr(out, "ghost19@localhost"))
			break;
		usleep(20000);
	}
	has_str(out, "ghost0@localhost", "adduser completes although the client hung up");
	has_str(out, "ghost19@localhost", "... for every one of the clients that hung up");
	free(out);
	is_int(ctl(s, "status", NULL, NULL, NULL, NULL), 0,
	       "the daemon is healthy after clients hung up mid-request");
	for (int i = 0; i < 20; i++) {
		char jid[64];
		snprintf(jid, sizeof(jid), "ghost%d@localhost", i);
		ctl(s, "deluser", jid, NULL, NULL, NULL);
	}
	ok(users_are(s, "alice@localhost\n"), "the ghosts are deleted again");
}

static void test_socket_file(struct ph_server *s)
{
	struct stat st;
	ok(stat(s->socket_path, &st) == 0 && S_ISSOCK(st.st_mode),
	   "the control socket exists and is a socket");
	is_int(st.st_mode & 07777, 0600, "the control socket has mode 0600");

	/* A second daemon (its own store and ports) configured with the same
	 * control socket must refuse to start rather than steal it. */
	struct ph_server second;
	ph_server_init(&second, NULL);
	memcpy(second.socket_path, s->socket_path, sizeof(second.socket_path));
	char *config = ph_standard_config(&second, NULL, NULL);
	ph_server_write_config(&second, config);
	free(config);
	const char *args[] = { "-c", second.config_path, NULL };
	char *out = NULL, *err = NULL;
	int status = ph_run_parleyd(args, NULL, &out, &err, 15000);
	ok(status != 0 && status != -1000, "a second parleyd on the same socket exits with an error");
	has_str(err, "another parleyd is already listening on", "... and says why");
	free(out);
	free(err);
	is_int(ctl(s, "status", NULL, NULL, NULL, NULL), 0,
	       "the first daemon still answers on its socket");

	/* A regular file where the socket should be is a mistake to report,
	 * never a stale socket to delete. */
	snprintf(second.socket_path, sizeof(second.socket_path), "%s/not-a-socket", second.dir);
	FILE *precious = fopen(second.socket_path, "w");
	if (precious) {
		fputs("precious\n", precious);
		fclose(precious);
	}
	config = ph_standard_config(&second, NULL, NULL);
	ph_server_write_config(&second, config);
	free(config);
	status = ph_run_parleyd(args, NULL, &out, &err, 15000);
	ok(status != 0 && status != -1000, "parleyd refuses a control socket path that is a file");
	has_str(err, "exists and is not a socket", "... and says why");
	free(out);
	free(err);
	struct stat file_st;
	ok(stat(second.socket_path, &file_st) == 0 && S_ISREG(file_st.st_mode) &&
		   file_st.st_size == 9,
	   "the file is left alone");
	ph_server_cleanup(&second);

	char missing[400];
	snprintf(missing, sizeof(missing), "%s/nobody-here.sock", s->dir);
	const char *nobody[] = { parleyctl_path(), "-s", missing, "status", NULL };
	status = ph_run(nobody, NULL, NULL, &err, 20000);
	is_int(status, 3, "parleyctl exits 3 when no daemon runs on the socket");
	has_str(err, "cannot connect to", "the message names the failure");
	has_str(err, "nobody-here.sock: No such file or directory", "... the socket and errno");
	has_str(err, "is parleyd running?", "... and suggests the likely cause");
	free(err);
	const char *nobody_adduser[] = { parleyctl_path(), "-s", missing, "adduser",
					 "zed@localhost", NULL };
	is_int(ph_run(nobody_adduser, "pw\n", NULL, NULL, 20000), 3,
	       "adduser without a daemon exits 3 (before wanting a password)");
}

static void test_kill_and_restart(struct ph_server *s)
{
	char *out = NULL;
	ph_server_kill(s);
	struct stat st;
	ok(lstat(s->socket_path, &st) == 0 && S_ISSOCK(st.st_mode),
	   "kill -9 leaves the stale socket file behind");
	expect_error(s, "status", NULL, NULL, 3, "is parleyd running?");
	if (!ok(ph_server_start(s, NULL) == 0,
		"parleyd restarts over the stale socket after kill -9"))
		return;
	ok(users_are(s, "alice@localhost\n"), "alice survived kill -9");
	is_int(ctl(s, "status", NULL, NULL, &out, NULL), 0, "status after the restart");
	has_str(out, "users: 1\n", "the restarted daemon counts alice");
	free(out);
	is_int(ctl(s, "stop", NULL, NULL, NULL, NULL), 0, "stop");
	is_int(ph_server_stop(s), 0, "parleyd exits 0 after parleyctl stop");
	ok(access(s->socket_path, F_OK) != 0 && errno == ENOENT,
	   "a clean stop removes the socket file");
}

int main(void)
{
	struct ph_server s;
	if (!ok(ph_server_init(&s, NULL) == 0, "the test directory and config are made"))
		return done_testing();
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts")) {
		ph_server_cleanup(&s);
		return done_testing();
	}
	test_status_and_accounts(&s);
	test_backup_reload_json(&s);
	test_usage_errors(&s);
	test_raw_protocol(&s);
	test_socket_file(&s);
	test_kill_and_restart(&s);
	ph_server_cleanup(&s);
	return done_testing();
}
