/* The control socket's server side. One request per connection: a line of
 * percent-encoded fields, answered with "ok" or "error <message>" plus
 * body lines, then the connection closes. Requests that wait for the store
 * (adduser, passwd, deluser, backup) keep a small request object; if the
 * client hangs up first, the request is orphaned and its completion only
 * frees it. Runs on the network thread. */
#include "ctl/ctl.h"
#include "autoconfig.h"
#include "accounts.h"
#include "ctl/protocol.h"
#include "jid.h"
#include "log.h"
#include "module.h"
#include "server.h"
#include "util.h"

#include <errno.h>
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
	const char *verb;
};

static struct evconnlistener *listener;
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
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_enable(c->bev, EV_WRITE);
}

static void answer_error(struct ctl_connection *c, const char *fmt, ...) PL_PRINTF(2, 3);
static void answer_error(struct ctl_connection *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *message = pl_vasprintf(fmt, ap);
	va_end(ap);
	char *head = pl_asprintf("error %s", message);
	answer(c, head, NULL);
	free(head);
	free(message);
}

static const char *status_message(int status, const char *verb, const char *subject,
				  char *buffer, size_t len)
{
	switch (status) {
	case -EEXIST:
		snprintf(buffer, len, "user %s already exists", subject);
		break;
	case -ENOENT:
		snprintf(buffer, len, "no such user %s", subject);
		break;
	case -EINVAL:
		snprintf(buffer, len, "the password is empty or not allowed (SASLprep)");
		break;
	case -ENOSPC:
		snprintf(buffer, len, "the store is full (raise <storage max-map-size>)");
		break;
	default:
		snprintf(buffer, len, "%s %s failed: %s", verb, subject, strerror(-status));
	}
	return buffer;
}

static void on_request_done(void *arg, int status)
{
	struct ctl_request *r = arg;
	if (status == 0)
		pl_log(PL_LOG_INFO, "ctl", "%s %s: done", r->verb, r->subject);
	else
		pl_log(PL_LOG_INFO, "ctl", "%s %s: %s", r->verb, r->subject, strerror(-status));
	if (r->connection) {
		r->connection->pending = NULL;
		if (status == 0) {
			answer(r->connection, "ok", NULL);
		} else {
			char message[300];
			answer_error(r->connection, "%s",
				     status_message(status, r->verb, r->subject, message,
						    sizeof(message)));
		}
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
	r->subject = pl_strdup(subject);
	c->pending = r;
	return r;
}

/* Normalises an account JID: localpart required, no resource, a local host. */
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
	else if (!pl_server_find_host(jid.domain))
		answer_error(c, "%s is not a host of this server", jid.domain);
	else
		bare = pl_strdup(jid.bare);
	pl_jid_free(&jid);
	return bare;
}

static void run_account_command(struct ctl_connection *c, char **fields, int count)
{
	const char *verb = fields[0];
	bool needs_password = strcmp(verb, "deluser") != 0;
	if (count != (needs_password ? 3 : 2)) {
		answer_error(c, "usage: %s JID%s", verb, needs_password ? " PASSWORD" : "");
		return;
	}
	char *bare = account_jid(c, fields[1]);
	if (!bare)
		return;
	pl_log(PL_LOG_INFO, "ctl", "%s %s", verb, bare);
	struct ctl_request *r = new_request(c, strcmp(verb, "adduser") == 0   ? "adduser"
					       : strcmp(verb, "passwd") == 0 ? "passwd"
									      : "deluser",
					    bare);
	int rc;
	if (strcmp(verb, "adduser") == 0)
		rc = pl_accounts_create(bare, fields[2], on_request_done, r);
	else if (strcmp(verb, "passwd") == 0)
		rc = pl_accounts_set_password(bare, fields[2], on_request_done, r);
	else
		rc = pl_accounts_delete(bare, on_request_done, r);
	free(bare);
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
	pl_buf_printf(&body, "uptime: %lld\n",
		      pl_server.started ? (long long)(time(NULL) - pl_server.started) : 0LL);
	pl_buf_puts(&body, "hosts:");
	for (size_t i = 0; i < pl_server.host_count; i++)
		pl_buf_printf(&body, " %s", pl_server.hosts[i].name);
	pl_buf_printf(&body, "\nsessions: %llu\n", (unsigned long long)pl_server.session_count);
	pl_buf_printf(&body, "users: %llu\n", (unsigned long long)pl_accounts_count());
	pl_buf_puts(&body, "modules:");
	for (size_t i = 0; i < pl_modules_count(); i++)
		pl_buf_printf(&body, " %s", pl_modules_name_at(i));
	pl_buf_printf(&body, "\nstore-path: %s\n", pl_server.core.storage_path);
	pl_buf_printf(&body, "store-map-size: %llu\n", (unsigned long long)stats.map_size);
	pl_buf_printf(&body, "store-used: %llu\n", (unsigned long long)stats.used_bytes);
	pl_buf_printf(&body, "store-commits: %llu\n", (unsigned long long)stats.commits);
	answer(c, "ok", body.data);
	pl_buf_free(&body);
}

static void run_backup(struct ctl_connection *c, char **fields, int count)
{
	if (count != 2 || fields[1][0] != '/') {
		answer_error(c, "usage: backup FILE (an absolute path)");
		return;
	}
	if (access(fields[1], F_OK) == 0) {
		answer_error(c, "%s exists", fields[1]);
		return;
	}
	pl_log(PL_LOG_INFO, "ctl", "backup to %s", fields[1]);
	struct ctl_request *r = new_request(c, "backup", fields[1]);
	int rc = pl_store_backup(pl_server.store, fields[1], on_request_done, r);
	if (rc != 0)
		on_request_done(r, rc);
}

static void dispatch(struct ctl_connection *c, char **fields, int count)
{
	const char *verb = fields[0];
	if (strcmp(verb, "adduser") == 0 || strcmp(verb, "passwd") == 0 ||
	    strcmp(verb, "deluser") == 0) {
		run_account_command(c, fields, count);
	} else if (strcmp(verb, "users") == 0) {
		run_users(c, fields, count);
	} else if (strcmp(verb, "status") == 0) {
		run_status(c);
	} else if (strcmp(verb, "backup") == 0) {
		run_backup(c, fields, count);
	} else if (strcmp(verb, "reload") == 0) {
		char *error = NULL;
		pl_log(PL_LOG_INFO, "ctl", "reload");
		if (pl_server_reload(&error) == 0)
			answer(c, "ok", NULL);
		else
			answer_error(c, "%s", error);
		free(error);
	} else if (strcmp(verb, "stop") == 0) {
		pl_log(PL_LOG_INFO, "ctl", "stop requested");
		c->stop_when_flushed = true;
		answer(c, "ok", NULL);
	} else {
		answer_error(c, "unknown command '%s' (try: adduser, passwd, deluser, users, "
				"status, backup, reload, stop)", verb);
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct ctl_connection *c = arg;
	if (c->answered || c->pending)
		return;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t line_len;
	char *line = evbuffer_readln(in, &line_len, EVBUFFER_EOL_LF);
	if (!line) {
		if (evbuffer_get_length(in) > PL_CTL_MAX_REQUEST)
			answer_error(c, "request too long");
		return;
	}
	if (line_len > PL_CTL_MAX_REQUEST) {
		free(line);
		answer_error(c, "request too long");
		return;
	}
	char **fields;
	int count = pl_ctl_split(line, line_len, &fields);
	free(line);
	if (count < 0)
		answer_error(c, "malformed request");
	else if (count == 0)
		answer_error(c, "empty request");
	else
		dispatch(c, fields, count);
	if (count > 0)
		pl_ctl_free_fields(fields, count);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	free_connection(arg);
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
	struct timeval idle = { 30, 0 };
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	bufferevent_setcb(c->bev, on_read, on_flushed, on_event, c);
	bufferevent_enable(c->bev, EV_READ);
}

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
		return pl_error(error, -ENAMETOOLONG, "control socket path too long: %s", path);
	strcpy(address.sun_path, path);
	if (access(path, F_OK) == 0) {
		if (someone_listens(&address))
			return pl_error(error, -EADDRINUSE,
					"another parleyd is already listening on %s", path);
		/* Left behind by a daemon that was killed: safe to replace. */
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return pl_error(error, -errno, "control socket: %s", strerror(errno));
	mode_t old_mask = umask(077);
	int rc = bind(fd, (struct sockaddr *)&address, sizeof(address));
	int bind_errno = errno;
	umask(old_mask);
	if (rc != 0) {
		close(fd);
		return pl_error(error, -bind_errno, "cannot bind the control socket %s: %s", path,
				strerror(bind_errno));
	}
	chmod(path, 0600);
	listener = evconnlistener_new(base, on_accept, NULL,
				      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16, fd);
	if (!listener) {
		close(fd);
		unlink(path);
		return pl_error(error, -EIO, "cannot listen on the control socket %s", path);
	}
	socket_path = pl_strdup(path);
	return 0;
}

void pl_ctl_server_stop(void)
{
	while (connections)
		free_connection(connections);
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
