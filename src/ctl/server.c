/* The control socket's server side. One request per connection: a line of
 * percent-encoded fields, answered with "ok" or "error <message>" plus
 * body lines, then the connection closes once the answer is flushed.
 * Requests that wait for the store (adduser, passwd, deluser, backup) keep
 * a small request object. The connection outlives a plain EOF (the answer
 * may still be wanted after a half-close), but if it fails or the server
 * stops first, the request is orphaned and its completion only logs and
 * frees it. Runs on the network thread. */
#include "ctl/ctl.h"
#include "autoconfig.h"
#include "accounts.h"
#include "counters.h"
#include "hooks.h"
#include "ctl/protocol.h"
#include "jid.h"
#include "log.h"
#include "module.h"
#include "server.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

/* Idle clients are dropped after this; a request waiting for the store is
 * exempt, since a backup of a large store may take longer. */
#define CTL_IDLE_SECONDS 30

struct ctl_connection {
	struct bufferevent *bev;        /* owned */
	struct ctl_request *pending;    /* waiting for the store, or NULL */
	struct ctl_connection *prev, *next;
	bool answered;
	bool stop_when_flushed; /* `stop`: the answer goes out before the loop ends */
};

/* Outlives its connection when the client hangs up first. */
struct ctl_request {
	struct ctl_connection *connection; /* NULL once orphaned */
	char *subject;                     /* JID or path, for messages */
	const char *verb;                  /* a string literal */
};

static struct evconnlistener *listener;
static struct event *accept_retry; /* re-enables the listener after EMFILE */
static char *socket_path;
static struct ctl_connection *connections;

static void free_connection(struct ctl_connection *c)
{
	if (c->pending)
		c->pending->connection = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		connections = c->next;
	if (c->next)
		c->next->prev = c->prev;
	bufferevent_free(c->bev);
	free(c);
}

static void on_flushed(struct bufferevent *bev, void *arg)
{
	struct ctl_connection *c = arg;
	if (c->answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		if (c->stop_when_flushed)
			pl_server_request_stop();
		free_connection(c);
	}
}

static void answer(struct ctl_connection *c, const char *head, const char *body)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	evbuffer_add_printf(out, "%s\n", head);
	if (body && *body)
		evbuffer_add(out, body, strlen(body));
	c->answered = true;
	/* Reading stays on (see on_event); the idle timeout now bounds only
	 * the flush. */
	struct timeval idle = { CTL_IDLE_SECONDS, 0 };
	bufferevent_set_timeouts(c->bev, NULL, &idle);
	bufferevent_enable(c->bev, EV_WRITE);
}

static void answer_error(struct ctl_connection *c, const char *fmt, ...) PL_PRINTF(2, 3);
static void answer_error(struct ctl_connection *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *message = pl_vasprintf(fmt, ap);
	va_end(ap);
	/* The answer's first line (and the log line) must stay one line
	 * whatever the message quotes back from the request. */
	for (char *p = message; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	/* Refusals are logged too: the log alone should tell an operator
	 * what was asked and what came of it. */
	pl_log(PL_LOG_INFO, "ctl", "refused: %s", message);
	char *head = pl_asprintf("error %s", message);
	answer(c, head, NULL);
	free(head);
	free(message);
}

/* The answer for a failed store request (a new string). */
static char *status_message(int status, const char *verb, const char *subject)
{
	if (strcmp(verb, "backup") == 0) {
		if (status == -EEXIST)
			return pl_asprintf("%s exists", subject);
		return pl_asprintf("backup to %s failed: %s", subject, strerror(-status));
	}
	switch (status) {
	case -EEXIST:
		return pl_asprintf("user %s already exists", subject);
	case -ENOENT:
		return pl_asprintf("no such user %s", subject);
	case -EINVAL:
		return pl_asprintf("the password is empty or not allowed (SASLprep)");
	case -ENOSPC:
		return pl_asprintf("the store is full (raise <storage max-map-size>)");
	default:
		return pl_asprintf("%s %s failed: %s", verb, subject, strerror(-status));
	}
}

static void on_request_done(void *arg, int status)
{
	struct ctl_request *r = arg;
	struct ctl_connection *c = r->connection;
	const char *gone = c ? "" : " (the client had gone)";
	if (status == 0) {
		pl_log(PL_LOG_INFO, "ctl", "%s %s: done%s", r->verb, r->subject, gone);
		if (c) {
			c->pending = NULL;
			answer(c, "ok", NULL);
		}
	} else {
		char *message = status_message(status, r->verb, r->subject);
		if (c) {
			c->pending = NULL;
			answer_error(c, "%s", message); /* logs it */
		} else {
			pl_log(PL_LOG_INFO, "ctl", "%s %s: %s%s", r->verb, r->subject, message, gone);
		}
		free(message);
	}
	free(r->subject);
	free(r);
}

static struct ctl_request *new_request(struct ctl_connection *c, const char *verb,
				       const char *subject)
{
	struct ctl_request *r = pl_calloc(1, sizeof(*r));
	r->connection = c;
	r->verb = verb;
	/* Only for messages and the log, so control characters (a path may
	 * hold any) are masked rather than allowed to forge log lines. */
	r->subject = pl_strdup(subject);
	for (char *p = r->subject; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	c->pending = r;
	/* No idle timeout while the store works. */
	bufferevent_set_timeouts(c->bev, NULL, NULL);
	return r;
}

/* Normalises an account JID: localpart required, no resource, a local
 * host. NULL (and the connection answered) when it does not qualify. */
static char *account_jid(struct ctl_connection *c, const char *text)
{
	struct pl_jid jid;
	enum pl_jid_error e = pl_jid_parse(text, &jid);
	if (e != PL_JID_OK) {
		answer_error(c, "invalid JID '%s': %s", text, pl_jid_strerror(e));
		return NULL;
	}
	char *bare = NULL;
	if (!jid.local || jid.resource)
		answer_error(c, "invalid JID '%s': an account is user@host, without a resource",
			     text);
	else if (strlen(jid.bare) > PL_ACCOUNT_MAX_JID)
		answer_error(c, "invalid JID '%s': longer than %d bytes", text, PL_ACCOUNT_MAX_JID);
	else if (!pl_server_find_host(jid.domain))
		answer_error(c, "%s: %s is not a host of this server", jid.bare, jid.domain);
	else
		bare = pl_strdup(jid.bare);
	pl_jid_free(&jid);
	return bare;
}

static void run_account_command(struct ctl_connection *c, char **fields, int count)
{
	const char *verb = strcmp(fields[0], "adduser") == 0  ? "adduser"
			   : strcmp(fields[0], "passwd") == 0 ? "passwd"
							      : "deluser";
	bool needs_password = strcmp(verb, "deluser") != 0;
	if (count != (needs_password ? 3 : 2)) {
		answer_error(c, "usage: %s JID%s", verb, needs_password ? " PASSWORD" : "");
		return;
	}
	char *bare = account_jid(c, fields[1]);
	if (!bare)
		return;
	struct ctl_request *r = new_request(c, verb, bare);
	int rc;
	if (strcmp(verb, "adduser") == 0)
		rc = pl_accounts_create(bare, fields[2], on_request_done, r);
	else if (strcmp(verb, "passwd") == 0)
		rc = pl_accounts_set_password(bare, fields[2], on_request_done, r);
	else
		rc = pl_accounts_delete(bare, on_request_done, r);
	free(bare);
	/* Refused at once: the completion will never run, so run it here. */
	if (rc != 0)
		on_request_done(r, rc);
}

static void collect_user(void *arg, const char *bare_jid)
{
	struct pl_buf *body = arg;
	pl_buf_printf(body, "%s\n", bare_jid);
}

static void run_users(struct ctl_connection *c, char **fields, int count)
{
	char *domain = NULL;
	if (count > 2) {
		answer_error(c, "usage: users [HOST]");
		return;
	}
	if (count == 2) {
		domain = pl_jid_prep_domain(fields[1]);
		if (!domain || !pl_server_find_host(domain)) {
			answer_error(c, "%s is not a host of this server", fields[1]);
			free(domain);
			return;
		}
	}
	struct pl_buf body = { 0 };
	int rc = pl_accounts_list(domain, collect_user, &body);
	if (rc == 0)
		answer(c, "ok", body.data);
	else
		answer_error(c, "cannot list users: %s", strerror(-rc));
	pl_buf_free(&body);
	free(domain);
}

static void run_status(struct ctl_connection *c)
{
	struct pl_buf body = { 0 };
	struct pl_store_stats stats = { 0 };
	if (pl_server.store)
		pl_store_stats(pl_server.store, &stats);
	pl_buf_printf(&body, "version: %s\n", PACKAGE_VERSION);
	pl_buf_printf(&body, "pid: %ld\n", (long)getpid());
	long long uptime = pl_server.started ? (long long)(time(NULL) - pl_server.started) : 0;
	pl_buf_printf(&body, "uptime: %lld\n", uptime < 0 ? 0 : uptime);
	pl_buf_puts(&body, "hosts:");
	for (size_t i = 0; i < pl_server.host_count; i++)
		pl_buf_printf(&body, " %s", pl_server.hosts[i].name);
	pl_buf_printf(&body, "\nsessions: %llu\n", (unsigned long long)pl_server.session_count);
	pl_buf_printf(&body, "users: %llu\n", (unsigned long long)pl_accounts_count());
	pl_buf_puts(&body, "modules:");
	for (size_t i = 0; i < pl_modules_count(); i++)
		pl_buf_printf(&body, " %s", pl_modules_name_at(i));
	pl_buf_printf(&body, "\nstore-path: %s\n",
		      pl_server.core.storage_path ? pl_server.core.storage_path : "");
	pl_buf_printf(&body, "store-map-size: %llu\n", (unsigned long long)stats.map_size);
	pl_buf_printf(&body, "store-used: %llu\n", (unsigned long long)stats.used_bytes);
	pl_buf_printf(&body, "store-commits: %llu\n", (unsigned long long)stats.commits);
	for (size_t i = 0; i < pl_counters_count(); i++)
		pl_buf_printf(&body, "%s: %llu\n", pl_counter_name_at(i),
			      (unsigned long long)pl_counter_value_at(i));
	answer(c, "ok", body.data);
	pl_buf_free(&body);
}

static void run_backup(struct ctl_connection *c, char **fields, int count)
{
	if (count != 2 || fields[1][0] != '/') {
		answer_error(c, "usage: backup FILE (an absolute path)");
		return;
	}
	struct stat st;
	if (lstat(fields[1], &st) == 0) {
		answer_error(c, "%s exists", fields[1]);
		return;
	}
	if (!pl_server.store) {
		answer_error(c, "the store is not open");
		return;
	}
	struct ctl_request *r = new_request(c, "backup", fields[1]);
	int rc = pl_store_backup(pl_server.store, fields[1], on_request_done, r);
	if (rc != 0)
		on_request_done(r, rc);
}

/* Logs a command without its password, with control characters masked so
 * a request cannot forge log lines. */
static void log_command(char **fields, int count)
{
	struct pl_buf line = { 0 };
	/* adduser and passwd carry the password in fields[2]: never beyond [1]. */
	for (int i = 0; i < count && i < 2; i++) {
		if (i)
			pl_buf_puts(&line, " ");
		for (const unsigned char *p = (const unsigned char *)fields[i]; *p; p++) {
			char byte = (*p < 0x20 || *p == 0x7f) ? '?' : (char)*p;
			pl_buf_append(&line, &byte, 1);
		}
	}
	pl_log(PL_LOG_INFO, "ctl", "command: %s", line.data);
	pl_buf_free(&line);
}

void pl_ctl_command_done(void *request, int status, const char *body)
{
	struct ctl_request *r = request;
	if (status == 0 && body && r->connection) {
		struct ctl_connection *c = r->connection;
		c->pending = NULL;
		pl_log(PL_LOG_INFO, "ctl", "%s %s: done", r->verb, r->subject);
		answer(c, "ok", body);
		free(r->subject);
		free(r);
		return;
	}
	on_request_done(r, status);
}

void pl_ctl_command_done_status(void *request, int status)
{
	pl_ctl_command_done(request, status, NULL);
}

/* Verbs the core does not know go to the modules ("ctl/<verb>"). */
static void run_module_command(struct ctl_connection *c, char **fields, int count)
{
	char *event = pl_asprintf("ctl/%s", fields[0]);
	if (!pl_hooks_has(event)) {
		answer_error(c, "unknown command '%s' (try: adduser, passwd, deluser, users, "
				"status, backup, reload, stop, or a module's)", fields[0]);
		free(event);
		return;
	}
	/* The verb must outlive this call: it is one of the hook's names. */
	struct ctl_request *r = new_request(c, "module command", count > 1 ? fields[1] : fields[0]);
	struct pl_ctl_command command = { fields, count, NULL, r };
	int result = pl_hooks_fire(event, &command);
	free(event);
	if (command.usage || result != PL_HANDLED) {
		c->pending = NULL;
		free(r->subject);
		free(r);
		answer_error(c, "%s", command.usage ? command.usage : "the command was not taken");
		free(command.usage);
	}
}

static bool no_arguments(struct ctl_connection *c, const char *verb, int count)
{
	if (count == 1)
		return true;
	answer_error(c, "usage: %s (no arguments)", verb);
	return false;
}

static void dispatch(struct ctl_connection *c, char **fields, int count)
{
	const char *verb = fields[0];
	log_command(fields, count);
	if (strcmp(verb, "adduser") == 0 || strcmp(verb, "passwd") == 0 ||
	    strcmp(verb, "deluser") == 0) {
		run_account_command(c, fields, count);
	} else if (strcmp(verb, "users") == 0) {
		run_users(c, fields, count);
	} else if (strcmp(verb, "status") == 0) {
		if (no_arguments(c, verb, count))
			run_status(c);
	} else if (strcmp(verb, "backup") == 0) {
		run_backup(c, fields, count);
	} else if (strcmp(verb, "reload") == 0) {
		if (!no_arguments(c, verb, count))
			return;
		char *error = NULL;
		if (pl_server_reload(&error) == 0)
			answer(c, "ok", NULL);
		else
			answer_error(c, "%s", error ? error : "reload failed (see the log)");
		free(error);
	} else if (strcmp(verb, "stop") == 0) {
		if (!no_arguments(c, verb, count))
			return;
		c->stop_when_flushed = true;
		answer(c, "ok", NULL);
	} else {
		run_module_command(c, fields, count);
	}
}

static void handle_request(struct ctl_connection *c, const char *line, size_t line_len)
{
	if (line_len > PL_CTL_MAX_REQUEST) {
		answer_error(c, "request too long");
		return;
	}
	char **fields;
	int count = pl_ctl_split(line, line_len, &fields);
	if (count < 0)
		answer_error(c, "malformed request (bad %%-escape or control character)");
	else if (count == 0)
		answer_error(c, "empty request");
	else
		dispatch(c, fields, count);
	if (count > 0)
		pl_ctl_free_fields(fields, count);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct ctl_connection *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	if (c->answered || c->pending) {
		/* One request per connection: more input is dropped unread, but
		 * reading goes on so that a hang-up is still noticed. */
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	size_t line_len;
	char *line = evbuffer_readln(in, &line_len, EVBUFFER_EOL_CRLF);
	if (!line) {
		if (evbuffer_get_length(in) > PL_CTL_MAX_REQUEST) {
			evbuffer_drain(in, evbuffer_get_length(in));
			answer_error(c, "request too long");
		}
		return;
	}
	handle_request(c, line, line_len);
	free(line);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_connection *c = arg;
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
		/* EOF may be a half-close (`echo status | socat - UNIX:...`):
		 * a last line without its newline still counts, and an answer
		 * still goes out. If the client is gone altogether, writing the
		 * answer fails and frees the connection then. */
		struct evbuffer *in = bufferevent_get_input(bev);
		size_t rest = evbuffer_get_length(in);
		if (!c->answered && !c->pending && rest > 0) {
			/* (The input buffer is frozen at its end: no appending a
			 * newline to it.) on_read left at most the maximum here. */
			const char *line = (const char *)evbuffer_pullup(in, (ssize_t)rest);
			handle_request(c, line, rest);
			evbuffer_drain(in, rest);
		}
		if (c->answered || c->pending) {
			bufferevent_disable(bev, EV_READ);
			if (c->answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
				on_flushed(bev, c);
			return;
		}
	}
	/* A client that asked to stop and hung up before reading "ok" still
	 * meant it. */
	if (c->stop_when_flushed)
		pl_server_request_stop();
	if (what & BEV_EVENT_TIMEOUT)
		pl_log(PL_LOG_DEBUG, "ctl", "dropping an idle control connection");
	free_connection(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *address,
		      int address_len, void *arg)
{
	struct event_base *base = evconnlistener_get_base(l);
	struct ctl_connection *c = pl_calloc(1, sizeof(*c));
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		evutil_closesocket(fd);
		free(c);
		return;
	}
	c->next = connections;
	if (connections)
		connections->prev = c;
	connections = c;
	struct timeval idle = { CTL_IDLE_SECONDS, 0 };
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	bufferevent_setcb(c->bev, on_read, on_flushed, on_event, c);
	bufferevent_enable(c->bev, EV_READ);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	if (listener)
		evconnlistener_enable(listener);
}

/* accept() failing for want of descriptors would fail again at once on a
 * level-triggered listener: pause it for a second instead of spinning. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	int error = EVUTIL_SOCKET_ERROR();
	pl_log(PL_LOG_WARN, "ctl", "accept on the control socket: %s; retrying in 1 s",
	       evutil_socket_error_to_string(error));
	evconnlistener_disable(l);
	struct timeval second = { 1, 0 };
	if (accept_retry)
		event_add(accept_retry, &second);
}

/* True when a live process accepts connections at the address. */
static bool someone_listens(const struct sockaddr_un *address)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool answered = fd >= 0 &&
			connect(fd, (const struct sockaddr *)address, sizeof(*address)) == 0;
	if (fd >= 0)
		close(fd);
	return answered;
}

int pl_ctl_server_start(struct event_base *base, const char *path, char **error)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(address.sun_path))
		return pl_error(error, -ENAMETOOLONG,
				"control socket path too long (at most %zu bytes): %s",
				sizeof(address.sun_path) - 1, path);
	memcpy(address.sun_path, path, strlen(path) + 1);
	struct stat st;
	if (lstat(path, &st) == 0) {
		/* Only ever replace a socket: a path that names a regular file
		 * is a configuration mistake, and deleting it would lose data. */
		if (!S_ISSOCK(st.st_mode))
			return pl_error(error, -EEXIST,
					"control socket %s exists and is not a socket", path);
		if (someone_listens(&address))
			return pl_error(error, -EADDRINUSE,
					"another parleyd is already listening on %s", path);
		/* Left behind by a daemon that was killed: safe to replace. */
		if (unlink(path) != 0 && errno != ENOENT)
			return pl_error(error, -errno, "cannot remove the stale control socket %s: %s",
					path, strerror(errno));
		pl_log(PL_LOG_INFO, "ctl", "replaced the stale control socket %s", path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return pl_error(error, -errno, "control socket: %s", strerror(errno));
	/* The umask closes the window between bind() and chmod() in which
	 * another user could connect. */
	mode_t old_mask = umask(077);
	int rc = bind(fd, (struct sockaddr *)&address, sizeof(address));
	int bind_errno = errno;
	umask(old_mask);
	if (rc != 0) {
		close(fd);
		return pl_error(error, -bind_errno, "cannot bind the control socket %s: %s", path,
				strerror(bind_errno));
	}
	if (chmod(path, 0600) != 0) {
		int chmod_errno = errno;
		close(fd);
		unlink(path);
		return pl_error(error, -chmod_errno, "cannot chmod the control socket %s: %s", path,
				strerror(chmod_errno));
	}
	listener = evconnlistener_new(base, on_accept, NULL,
				      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16, fd);
	if (!listener) {
		close(fd);
		unlink(path);
		return pl_error(error, -EIO, "cannot listen on the control socket %s", path);
	}
	evconnlistener_set_error_cb(listener, on_accept_error);
	accept_retry = evtimer_new(base, on_accept_retry, NULL);
	socket_path = pl_strdup(path);
	return 0;
}

void pl_ctl_server_stop(void)
{
	/* In-flight requests are orphaned here; the store's shutdown still
	 * runs their completions, which then only free them. */
	while (connections)
		free_connection(connections);
	if (accept_retry) {
		event_free(accept_retry);
		accept_retry = NULL;
	}
	if (listener) {
		evconnlistener_free(listener);
		listener = NULL;
	}
	if (socket_path) {
		unlink(socket_path);
		free(socket_path);
		socket_path = NULL;
	}
}
