/* The integration test harness: a real parleyd per test, in its own
 * temporary directory, on free ports, driven through its control socket
 * and raw sockets. Waiting is always "poll a condition until a deadline",
 * never a fixed sleep. */
#include "harness.h"
#include "../tap.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *ph_builddir(void)
{
	const char *dir = getenv("PARLEY_BUILDDIR");
	return dir && *dir ? dir : ".";
}

const char *ph_srcdir(void)
{
	const char *dir = getenv("PARLEY_SRCDIR");
	return dir && *dir ? dir : ".";
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool ph_wait_for(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		if (cond(arg))
			return true;
		if (now_ms() >= deadline)
			return false;
		poll(NULL, 0, 10);
	}
}

int ph_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = { .sin_family = AF_INET,
				    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return ntohs(addr.sin_port);
}

char *ph_standard_config(const struct ph_server *s, const char *storage_extra,
			 const char *extra_xml)
{
	const char *format =
		"<parley>\n"
		"  <log level=\"debug\" target=\"stderr\"/>\n"
		"  <storage path=\"%s\" %s/>\n"
		"  <control socket=\"%s\"/>\n"
		"  <host name=\"localhost\"/>\n"
		"  <c2s address=\"127.0.0.1\" port=\"%d\" tls-port=\"%d\"/>\n"
		"  <modules path=\"%s/modules/.libs\">\n"
		"    <module name=\"admin\" admin=\"admin@localhost\"/>\n"
		"    <module name=\"blocking\"/>\n"
		"    <module name=\"carbons\"/>\n"
		"    <module name=\"dedup\"/>\n"
		"    <module name=\"disco\"/>\n"
		"    <module name=\"last\"/>\n"
		"    <module name=\"mam\"/>\n"
		"    <module name=\"muc\"/>\n"
		"    <module name=\"offline\" delivery-grace=\"1s\"/>\n"
		"    <module name=\"ping\"/>\n"
		"    <module name=\"pep\" max-item-size=\"4KiB\"/>\n"
		"    <module name=\"private\"/>\n"
		"    <module name=\"push\" min-interval=\"0\"/>\n"
		"    <module name=\"register\" open=\"true\" per-address-per-hour=\"3\"/>\n"
		"    <module name=\"roster\"/>\n"
		"    <module name=\"search\"/>\n"
		"    <module name=\"time\"/>\n"
		"    <module name=\"vcard\"/>\n"
		"    <module name=\"version\"/>\n"
		"  </modules>\n"
		"%s"
		"</parley>\n";
	const char *storage = storage_extra ? storage_extra : "durability=\"none\"";
	int n = snprintf(NULL, 0, format, s->storage_path, storage, s->socket_path, s->c2s_port,
			 s->c2s_tls_port, ph_builddir(), extra_xml ? extra_xml : "");
	char *text = malloc((size_t)n + 1);
	snprintf(text, (size_t)n + 1, format, s->storage_path, storage, s->socket_path, s->c2s_port,
		 s->c2s_tls_port, ph_builddir(), extra_xml ? extra_xml : "");
	return text;
}

char *ph_config_with_attributes(const char *config, const char *element,
				const char *attributes)
{
	char tag[128];
	snprintf(tag, sizeof(tag), "<%s", element);
	const char *at = strstr(config, tag);
	if (!at)
		return strdup(config);
	size_t prefix = (size_t)(at - config) + strlen(tag);
	size_t size = strlen(config) + strlen(attributes) + 2;
	char *patched = malloc(size);
	snprintf(patched, size, "%.*s %s%s", (int)prefix, config, attributes, config + prefix);
	return patched;
}

int ph_server_write_config(struct ph_server *s, const char *xml)
{
	FILE *f = fopen(s->config_path, "w");
	if (!f)
		return -1;
	fputs(xml, f);
	return fclose(f) == 0 ? 0 : -1;
}

int ph_server_init(struct ph_server *s, const char *extra_xml)
{
	memset(s, 0, sizeof(*s));
	s->pid = -1;
	snprintf(s->dir, sizeof(s->dir), "/tmp/parley-test-XXXXXX");
	if (!mkdtemp(s->dir))
		return -1;
	snprintf(s->config_path, sizeof(s->config_path), "%s/parley.xml", s->dir);
	snprintf(s->storage_path, sizeof(s->storage_path), "%s/store", s->dir);
	snprintf(s->socket_path, sizeof(s->socket_path), "%s/ctl.sock", s->dir);
	snprintf(s->log_path, sizeof(s->log_path), "%s/parleyd.log", s->dir);
	s->c2s_port = ph_free_port();
	do
		s->c2s_tls_port = ph_free_port();
	while (s->c2s_tls_port == s->c2s_port);
	char *config = ph_standard_config(s, NULL, extra_xml);
	int rc = ph_server_write_config(s, config);
	free(config);
	return rc;
}

static bool control_socket_answers(void *arg)
{
	const struct ph_server *s = arg;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(s->socket_path) >= sizeof(addr.sun_path))
		return false;
	memcpy(addr.sun_path, s->socket_path, strlen(s->socket_path) + 1);
	bool up = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
	if (fd >= 0)
		close(fd);
	return up;
}

static bool child_exited(pid_t pid, int *status)
{
	return waitpid(pid, status, WNOHANG) == pid;
}

char *ph_server_log(const struct ph_server *s)
{
	FILE *f = fopen(s->log_path, "r");
	if (!f)
		return strdup("");
	size_t cap = 4096, len = 0;
	char *text = malloc(cap);
	size_t n;
	while ((n = fread(text + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len - 1 == 0)
			text = realloc(text, cap *= 2);
	}
	text[len] = '\0';
	fclose(f);
	return text;
}

static void print_log(const struct ph_server *s)
{
	char *log = ph_server_log(s);
	diag("parleyd log:\n%s", log);
	free(log);
}

static pid_t spawn(const char *const *argv, int stdin_fd, int stdout_fd, int stderr_fd)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	dup2(stdin_fd, 0);
	dup2(stdout_fd, 1);
	dup2(stderr_fd, 2);
	execv(argv[0], (char *const *)argv);
	fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

int ph_server_start(struct ph_server *s, const char *const *extra_args)
{
	char parleyd[512];
	snprintf(parleyd, sizeof(parleyd), "%s/src/parleyd", ph_builddir());
	const char *argv[32] = { parleyd, "-c", s->config_path };
	size_t argc = 3;
	for (size_t i = 0; extra_args && extra_args[i] && argc < 30; i++)
		argv[argc++] = extra_args[i];
	argv[argc] = NULL;

	int log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	int null_fd = open("/dev/null", O_RDONLY);
	s->pid = spawn(argv, null_fd, log_fd, log_fd);
	close(log_fd);
	close(null_fd);
	if (s->pid < 0)
		return -1;

	long long deadline = now_ms() + 10000;
	int status;
	while (now_ms() < deadline) {
		if (child_exited(s->pid, &status)) {
			diag("parleyd exited during start-up (status %d)", status);
			print_log(s);
			s->pid = -1;
			return -1;
		}
		if (control_socket_answers(s))
			return 0;
		poll(NULL, 0, 10);
	}
	diag("parleyd did not answer on %s within 10 s", s->socket_path);
	print_log(s);
	return -1;
}

static int decode_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return -WTERMSIG(status);
	return -1;
}

int ph_server_stop(struct ph_server *s)
{
	if (s->pid <= 0)
		return -1;
	kill(s->pid, SIGTERM);
	long long deadline = now_ms() + 10000;
	int status = 0;
	while (!child_exited(s->pid, &status)) {
		if (now_ms() >= deadline) {
			diag("parleyd did not stop within 10 s of SIGTERM; killing it");
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &status, 0);
			s->pid = -1;
			return -1000;
		}
		poll(NULL, 0, 10);
	}
	s->pid = -1;
	int result = decode_status(status);
	if (result != 0) {
		/* The end of the log says why (a sanitizer report, a leak...). */
		char *log = ph_server_log(s);
		size_t len = log ? strlen(log) : 0;
		diag("parleyd exited with %d; the end of its log:\n%s", result,
		     log ? log + (len > 4000 ? len - 4000 : 0) : "(none)");
		free(log);
	}
	return result;
}

void ph_server_kill(struct ph_server *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	s->pid = -1;
}

void ph_server_cleanup(struct ph_server *s)
{
	if (s->pid > 0)
		ph_server_kill(s);
	if (s->dir[0] && !getenv("PARLEY_KEEP_TEST_DIRS")) {
		char command[600];
		snprintf(command, sizeof(command), "rm -rf '%s'", s->dir);
		if (system(command) != 0)
			diag("could not remove %s", s->dir);
	}
}

/* Reads a pipe into a growing string until EOF. */
struct capture {
	int fd;
	char *data;
	size_t len, cap;
	bool open;
};

static void capture_read(struct capture *c)
{
	if (c->cap - c->len < 4096) {
		c->cap = c->cap ? c->cap * 2 : 8192;
		c->data = realloc(c->data, c->cap);
	}
	ssize_t n = read(c->fd, c->data + c->len, c->cap - c->len - 1);
	if (n <= 0) {
		c->open = false;
		close(c->fd);
		return;
	}
	c->len += (size_t)n;
}

int ph_run(const char *const *argv, const char *stdin_text, char **out, char **err,
	   int timeout_ms)
{
	int in_pipe[2], out_pipe[2], err_pipe[2];
	if (pipe(in_pipe) || pipe(out_pipe) || pipe(err_pipe))
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		close(in_pipe[1]);
		close(out_pipe[0]);
		close(err_pipe[0]);
		dup2(in_pipe[0], 0);
		dup2(out_pipe[1], 1);
		dup2(err_pipe[1], 2);
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(in_pipe[0]);
	close(out_pipe[1]);
	close(err_pipe[1]);
	if (stdin_text) {
		size_t len = strlen(stdin_text);
		/* Small inputs fit in the pipe buffer, so this cannot block. */
		if (write(in_pipe[1], stdin_text, len) != (ssize_t)len)
			diag("short write to the child's stdin");
	}
	close(in_pipe[1]);

	struct capture captures[2] = { { .fd = out_pipe[0], .open = true },
				       { .fd = err_pipe[0], .open = true } };
	long long deadline = now_ms() + timeout_ms;
	bool timed_out = false;
	while (captures[0].open || captures[1].open) {
		struct pollfd fds[2];
		int n = 0;
		for (int i = 0; i < 2; i++)
			if (captures[i].open)
				fds[n++] = (struct pollfd){ .fd = captures[i].fd, .events = POLLIN };
		long long left = deadline - now_ms();
		if (left <= 0) {
			timed_out = true;
			kill(pid, SIGKILL);
			break;
		}
		if (poll(fds, (nfds_t)n, (int)left) <= 0)
			continue;
		for (int i = 0; i < 2; i++)
			for (int j = 0; j < n; j++)
				if (captures[i].open && fds[j].fd == captures[i].fd && fds[j].revents)
					capture_read(&captures[i]);
	}
	for (int i = 0; i < 2; i++) {
		if (captures[i].open)
			close(captures[i].fd);
		if (!captures[i].data)
			captures[i].data = calloc(1, 1);
		captures[i].data[captures[i].len] = '\0';
	}
	int status;
	waitpid(pid, &status, 0);
	if (out)
		*out = captures[0].data;
	else
		free(captures[0].data);
	if (err)
		*err = captures[1].data;
	else
		free(captures[1].data);
	return timed_out ? -1000 : decode_status(status);
}

int ph_run_parleyd(const char *const *args, const char *stdin_text, char **out, char **err,
		   int timeout_ms)
{
	char parleyd[512];
	snprintf(parleyd, sizeof(parleyd), "%s/src/parleyd", ph_builddir());
	const char *argv[32] = { parleyd };
	size_t argc = 1;
	for (size_t i = 0; args && args[i] && argc < 31; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;
	return ph_run(argv, stdin_text, out, err, timeout_ms);
}

int ph_ctl(const struct ph_server *s, const char *const *args, const char *stdin_text,
	   char **out, char **err)
{
	char parleyctl[512];
	snprintf(parleyctl, sizeof(parleyctl), "%s/src/parleyctl", ph_builddir());
	const char *argv[32] = { parleyctl, "-s", s->socket_path };
	size_t argc = 3;
	for (size_t i = 0; args && args[i] && argc < 31; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;
	return ph_run(argv, stdin_text, out, err, 20000);
}

void ph_add_user(const struct ph_server *s, const char *user)
{
	char jid[128], password[128];
	snprintf(jid, sizeof(jid), "%s@localhost", user);
	snprintf(password, sizeof(password), "%s-secret\n", user);
	const char *args[] = { "adduser", jid, NULL };
	ph_ctl(s, args, password, NULL, NULL);
}

void ph_add_user_at(const struct ph_server *s, const char *user, const char *domain)
{
	char jid[256], password[128];
	snprintf(jid, sizeof(jid), "%s@%s", user, domain);
	snprintf(password, sizeof(password), "%s-secret\n", user);
	const char *args[] = { "adduser", jid, NULL };
	ph_ctl(s, args, password, NULL, NULL);
}

char *ph_replace(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	if (!at)
		return strdup(text);
	size_t size = strlen(text) - strlen(from) + strlen(to) + 1;
	char *out = malloc(size);
	snprintf(out, size, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
	return out;
}

int ph_log_count(const struct ph_server *s, const char *text)
{
	char *log = ph_server_log(s);
	int count = 0;
	for (const char *at = log; at && (at = strstr(at, text)) != NULL; at += strlen(text))
		count++;
	free(log);
	return count;
}

struct log_wait {
	const struct ph_server *server;
	const char *text;
};

static bool log_contains(void *arg)
{
	struct log_wait *w = arg;
	char *log = ph_server_log(w->server);
	bool found = log && strstr(log, w->text);
	free(log);
	return found;
}

bool ph_wait_log(const struct ph_server *s, const char *text, int timeout_ms)
{
	struct log_wait w = { s, text };
	return ph_wait_for(log_contains, &w, timeout_ms);
}

long ph_rss_kib(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	long kib = -1;
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			kib = atol(line + 6);
	if (f)
		fclose(f);
	return kib;
}
