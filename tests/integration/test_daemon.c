/* parleyd's life cycle with a real daemon: clean start and stop, the
 * pidfile, refusal of broken configurations with file and line, a second
 * daemon on the same store, SIGHUP reload, a full store map, and a
 * valgrind run that must show no leak. */
#include "harness.h"
#include "../tap.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *text = calloc(1, 65536);
	size_t n = fread(text, 1, 65535, f);
	text[n] = '\0';
	fclose(f);
	return text;
}

static void test_start_stop(void)
{
	struct ph_server s;
	char pidfile[400];
	ph_server_init(&s, NULL);
	snprintf(pidfile, sizeof(pidfile), "%s/parleyd.pid", s.dir);
	char extra[500];
	snprintf(extra, sizeof(extra), "  <server pidfile=\"%s\"/>\n", pidfile);
	char *config = ph_standard_config(&s, NULL, extra);
	ph_server_write_config(&s, config);
	free(config);

	ok(ph_server_start(&s, NULL) == 0, "parleyd starts and answers on its control socket");
	char *pid_text = read_file(pidfile);
	ok(pid_text && atol(pid_text) == (long)s.pid, "the pidfile holds the daemon's pid");
	free(pid_text);
	struct stat st;
	ok(stat(s.socket_path, &st) == 0 && (st.st_mode & 0777) == 0600,
	   "the control socket has mode 0600");
	char crt[400];
	snprintf(crt, sizeof(crt), "%s/certs/localhost.crt", s.storage_path);
	ok(access(crt, R_OK) == 0, "a self-signed certificate for localhost was made on first start");
	is_int(ph_server_stop(&s), 0, "SIGTERM stops parleyd with exit status 0");
	ok(access(pidfile, F_OK) != 0, "the pidfile is removed at shutdown");
	char *log = ph_server_log(&s);
	has_str(log, "started", "the log says it started");
	has_str(log, "stopped", "the log says it stopped");
	has_str(log, "loaded version", "the log names the loaded module");
	free(log);
	ph_server_cleanup(&s);
}

static void expect_refused(const char *label, const char *xml, const char *needle)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	ph_server_write_config(&s, xml);
	char *err = NULL;
	const char *args[] = { "-c", s.config_path, NULL };
	int status = ph_run_parleyd(args, NULL, NULL, &err, 10000);
	ok(status != 0, "%s: parleyd refuses to start (status %d)", label, status);
	has_str(err, needle, "%s: the error says what is wrong", label);
	has_str(err, s.config_path, "%s: the error names the file", label);
	free(err);
	ph_server_cleanup(&s);
}

static void test_bad_configs(void)
{
	expect_refused("unclosed element", "<parley>\n  <log level=\"info\">\n</parley>\n",
		       ":3");
	expect_refused("unknown element",
		       "<parley>\n  <host name=\"localhost\"/>\n  <colour value=\"red\"/>\n</parley>\n",
		       ":3");
	expect_refused("bad enum value",
		       "<parley>\n  <host name=\"localhost\"/>\n"
		       "  <storage durability=\"maybe\"/>\n</parley>\n",
		       ":3");
	expect_refused("DOCTYPE", "<?xml version=\"1.0\"?>\n<!DOCTYPE parley [\n"
		       "<!ENTITY a \"aaaaaaaaaa\">\n]>\n<parley><host name=\"&a;\"/></parley>\n",
		       "DOCTYPE");

	struct ph_server s;
	ph_server_init(&s, NULL);
	char *err = NULL;
	const char *args[] = { "-c", "/nonexistent/parley.xml", NULL };
	ok(ph_run_parleyd(args, NULL, NULL, &err, 10000) != 0, "a missing config file is refused");
	has_str(err, "/nonexistent/parley.xml", "the error names the missing file");
	free(err);

	char *out = NULL;
	const char *check_good[] = { "--check-config", s.config_path, NULL };
	is_int(ph_run_parleyd(check_good, NULL, &out, NULL, 10000), 0,
	       "--check-config accepts the test configuration");
	has_str(out, "configuration OK", "--check-config says OK");
	free(out);

	char *config = ph_standard_config(&s, NULL, NULL);
	char *bad = strstr(config, "<module name=\"version\"/>");
	memcpy(bad, "<module name=\"versiom\"/>", strlen("<module name=\"versiom\"/>"));
	ph_server_write_config(&s, config);
	free(config);
	err = NULL;
	ok(ph_run_parleyd(check_good, NULL, NULL, &err, 10000) != 0,
	   "--check-config refuses a missing module");
	has_str(err, "versiom", "the error names the missing module");
	free(err);
	ph_server_cleanup(&s);
}

static void test_second_daemon(void)
{
	struct ph_server first, second;
	ph_server_init(&first, NULL);
	ok(ph_server_start(&first, NULL) == 0, "first daemon starts");
	/* The second daemon shares the first one's store but has its own socket. */
	ph_server_init(&second, NULL);
	snprintf(second.storage_path, sizeof(second.storage_path), "%s", first.storage_path);
	char *config = ph_standard_config(&second, NULL, NULL);
	ph_server_write_config(&second, config);
	free(config);
	char *err = NULL;
	const char *args[] = { "-c", second.config_path, NULL };
	int status = ph_run_parleyd(args, NULL, NULL, &err, 10000);
	ok(status != 0, "a second parleyd on the same store is refused");
	has_str(err, "in use", "it says the store is in use");
	free(err);
	char *out = NULL;
	const char *status_args[] = { "status", NULL };
	is_int(ph_ctl(&first, status_args, NULL, &out, NULL), 0,
	       "the first daemon still answers");
	free(out);
	is_int(ph_server_stop(&first), 0, "first daemon stops cleanly");
	ph_server_cleanup(&first);
	ph_server_cleanup(&second);
}

struct log_wait {
	const struct ph_server *server;
	const char *needle;
};

static bool log_contains(void *arg)
{
	struct log_wait *w = arg;
	char *log = ph_server_log(w->server);
	bool found = strstr(log, w->needle) != NULL;
	free(log);
	return found;
}

static void test_reload(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	ok(ph_server_start(&s, NULL) == 0, "daemon starts for the reload test");

	char *config = ph_standard_config(&s, NULL, NULL);
	char *level = strstr(config, "level=\"debug\"");
	memcpy(level, "level=\"warn\" ", 13);
	ph_server_write_config(&s, config);
	free(config);
	kill(s.pid, SIGHUP);
	struct log_wait wait = { &s, "(log level warn)" };
	ok(ph_wait_for(log_contains, &wait, 5000), "SIGHUP reloads the log level");

	ph_server_write_config(&s, "<parley><broken></parley>");
	kill(s.pid, SIGHUP);
	wait.needle = "keeping the running configuration";
	ok(ph_wait_for(log_contains, &wait, 5000),
	   "a broken file on reload is logged and the running configuration kept");
	const char *status_args[] = { "status", NULL };
	is_int(ph_ctl(&s, status_args, NULL, NULL, NULL), 0, "the daemon still answers after it");
	is_int(ph_server_stop(&s), 0, "and stops cleanly");
	ph_server_cleanup(&s);
}

static void test_full_map(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, "map-size=\"64KiB\" max-map-size=\"256KiB\"", NULL);
	ph_server_write_config(&s, config);
	free(config);
	ok(ph_server_start(&s, NULL) == 0, "daemon starts with a tiny store map");

	int added = 0, status = 0;
	char *err = NULL;
	for (int i = 0; i < 5000; i++) {
		char jid[64];
		snprintf(jid, sizeof(jid), "user%04d@localhost", i);
		const char *args[] = { "adduser", jid, NULL };
		free(err);
		err = NULL;
		status = ph_ctl(&s, args, "secret-password\n", NULL, &err);
		if (status != 0)
			break;
		added++;
	}
	ok(added > 10 && status == 1, "adduser works until the store is full (%d users), then fails",
	   added);
	has_str(err, "full", "the error says the store is full");
	free(err);
	const char *status_args[] = { "status", NULL };
	is_int(ph_ctl(&s, status_args, NULL, NULL, NULL), 0, "the daemon still answers when full");
	is_int(ph_server_stop(&s), 0, "a full store still shuts down cleanly");
	ok(ph_server_start(&s, NULL) == 0, "and starts again");
	char *out = NULL;
	const char *users_args[] = { "users", NULL };
	ph_ctl(&s, users_args, NULL, &out, NULL);
	ok(out && strstr(out, "user0000@localhost") && strstr(out, "user0010@localhost"),
	   "users added before the store filled up are all still there");
	free(out);
	ph_server_stop(&s);
	ph_server_cleanup(&s);
}

static void test_valgrind(void)
{
	if (getenv("PARLEY_SKIP_VALGRIND")) {
		ok(1, "# SKIP valgrind run (PARLEY_SKIP_VALGRIND: sanitizer build)");
		return;
	}
	if (system("valgrind --version > /dev/null 2>&1") != 0) {
		ok(1, "# SKIP valgrind is not installed");
		return;
	}
	struct ph_server s;
	ph_server_init(&s, NULL);
	char parleyd[512], log_option[400];
	snprintf(parleyd, sizeof(parleyd), "%s/src/parleyd", ph_builddir());
	snprintf(log_option, sizeof(log_option), "--log-file=%s/valgrind.log", s.dir);
	/* The harness starts argv[0] = parleyd; run valgrind through a small
	 * wrapper config instead: start valgrind ourselves. */
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(s.log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		setenv("PARLEY_NO_DLCLOSE", "1", 1);
		execlp("valgrind", "valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect",
		       "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
		       log_option, parleyd, "-c", s.config_path, (char *)NULL);
		_exit(127);
	}
	s.pid = pid;
	struct ph_server *server = &s;
	bool up = false;
	for (int i = 0; i < 3000 && !up; i++) {
		const char *status_args[] = { "status", NULL };
		up = access(s.socket_path, F_OK) == 0 &&
		     ph_ctl(server, status_args, NULL, NULL, NULL) == 0;
		if (!up)
			usleep(20000);
	}
	ok(up, "parleyd starts under valgrind");
	const char *add[] = { "adduser", "leakcheck@localhost", NULL };
	is_int(ph_ctl(&s, add, "a password\n", NULL, NULL), 0, "adduser under valgrind");
	const char *del[] = { "deluser", "leakcheck@localhost", NULL };
	is_int(ph_ctl(&s, del, NULL, NULL, NULL), 0, "deluser under valgrind");
	int status = ph_server_stop(&s);
	char path[400];
	snprintf(path, sizeof(path), "%s/valgrind.log", s.dir);
	char *report = read_file(path);
	ok(status == 0, "valgrind reports no leak and no error at shutdown (status %d)", status);
	if (status != 0 && report)
		diag("%s", report);
	free(report);
	ph_server_cleanup(&s);
}

int main(void)
{
	test_start_stop();
	test_bad_configs();
	test_second_daemon();
	test_reload();
	test_full_map();
	test_valgrind();
	return done_testing();
}
