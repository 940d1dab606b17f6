/* HTTP/1.1 connections: net/conn.c delivers bytes, http_parser (the
 * Node.js parser Debian ships) cuts them into requests, and this file
 * applies the limits, finds the route and talks to its handler. One
 * request is handled at a time per connection: once a request is
 * complete the parser is paused, so pipelined bytes wait in the
 * connection's input buffer (not in our memory) until the answer is
 * written. Every refusal is a status line, a log line and, where the
 * stream can no longer be trusted (bad syntax, limits), a close. */
#include "http.h"
#include "counters.h"
#include "log.h"
#include "net/conn.h"
#include "net/listener.h"
#include "server.h"
#include "util.h"
#include "xml/xnode.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <http_parser.h>

struct route {
	struct pl_module *module;       /* NULL for the core's own */
	char *method, *path;            /* owned */
	const struct pl_http_handler *handler;
	void *userdata;
};

struct header {
	char *name, *value;             /* owned */
};

struct http_conn;

/* One request; owned by its connection until answered (or aborted). */
struct pl_http_request {
	struct http_conn *hc;
	char method[16];
	char *path, *query;             /* owned */
	struct header *headers;         /* owned */
	size_t header_count, header_cap;
	struct header *response;        /* owned; headers to send */
	size_t response_count, response_cap;
	const struct route *route;      /* NULL: answered by the core */
	uint64_t body_bytes, max_body;
	bool complete;                  /* the whole request was read */
	bool keep_alive;
	int status;                     /* early answer decided while parsing */
	bool handler_owned;             /* on_headers accepted it: on_abort if unanswered */
	void *data;
};

struct http_conn {
	struct pl_conn *conn;           /* owned by the conn layer; gone after on_close */
	http_parser parser;
	struct pl_http_request *request; /* the one being read or answered; owned */
	struct pl_buf url;               /* request target as it arrives */
	struct pl_buf field, value;      /* the header being read */
	bool in_value;
	size_t header_bytes;
	unsigned requests;
	bool secure;
	bool waiting;                    /* request complete, answer pending */
	bool closing;
	bool upgraded;                   /* pl_http_upgrade took the conn */
	struct http_conn *prev, *next;
};

static const struct pl_option http_options[] = {
	{ "address", PL_OPT_STRING, "*", 0, 0, NULL, offsetof(struct pl_http_conf, address),
	  "listen address" },
	{ "port", PL_OPT_INT, "0", 0, 65535, NULL, offsetof(struct pl_http_conf, port),
	  "plain HTTP port, 0 for none" },
	{ "tls-port", PL_OPT_INT, "0", 0, 65535, NULL, offsetof(struct pl_http_conf, tls_port),
	  "HTTPS port, 0 for none" },
	{ "max-header-size", PL_OPT_SIZE, "16KiB", 1024, 1 << 20, NULL,
	  offsetof(struct pl_http_conf, max_header_size), "request line and headers" },
	{ "max-body-size", PL_OPT_SIZE, "1MiB", 1024, (int64_t)1 << 40, NULL,
	  offsetof(struct pl_http_conf, max_body_size), "request body, unless a route says" },
	{ "max-requests", PL_OPT_INT, "1000", 1, 1000000000, NULL,
	  offsetof(struct pl_http_conf, max_requests), "per connection" },
	{ "idle-timeout", PL_OPT_DURATION, "60s", 1000, 86400000, NULL,
	  offsetof(struct pl_http_conf, idle_timeout_ms), "between and during requests" },
	{ "consider-secure", PL_OPT_BOOL, "false", 0, 0, NULL,
	  offsetof(struct pl_http_conf, consider_secure),
	  "plain HTTP counts as secure: a TLS-terminating proxy is in front" },
	{ "cors-origins", PL_OPT_STRING, "*", 0, 0, NULL,
	  offsetof(struct pl_http_conf, cors_origins), "space-separated origins, or *" },
	{ "bosh-inactivity", PL_OPT_DURATION, "60s", 1000, 3600000, NULL,
	  offsetof(struct pl_http_conf, bosh_inactivity_ms),
	  "a BOSH session with no request for this long is over (XEP-0124 inactivity)" },
	{ "websocket-url", PL_OPT_STRING, NULL, 0, 0, NULL,
	  offsetof(struct pl_http_conf, websocket_url), "public WebSocket URL (XEP-0156)" },
	{ "bosh-url", PL_OPT_STRING, NULL, 0, 0, NULL, offsetof(struct pl_http_conf, bosh_url),
	  "public BOSH URL (XEP-0156)" },
	{ NULL }
};

static struct pl_http_conf conf;
static bool conf_loaded;
static struct event_base *loop;
static struct pl_listener *plain_listener, *tls_listener;
static struct route *routes;
static size_t route_count, route_cap;
static struct http_conn *conns;

/* ---- routes ------------------------------------------------------------------ */

int pl_http_route(struct pl_module *m, const char *method, const char *path,
		  const struct pl_http_handler *handler, void *userdata)
{
	for (size_t i = 0; i < route_count; i++)
		if (strcmp(routes[i].method, method) == 0 && strcmp(routes[i].path, path) == 0)
			return -EEXIST;
	pl_grow((void **)&routes, &route_cap, route_count + 1, sizeof(*routes));
	routes[route_count++] = (struct route){ m, pl_strdup(method), pl_strdup(path), handler,
						userdata };
	return 0;
}

static void free_route(struct route *r)
{
	free(r->method);
	free(r->path);
}

void pl_http_unroute_module(struct pl_module *m)
{
	size_t kept = 0;
	for (size_t i = 0; i < route_count; i++) {
		if (m && routes[i].module == m)
			free_route(&routes[i]);
		else
			routes[kept++] = routes[i];
	}
	route_count = kept;
}

/* A registered path ending in "/" + "*" is a prefix route: it serves
 * every path below it ("/upload/" + "*" takes "/upload/a/b", not
 * "/upload" nor "/uploads/a"). Exact routes win over prefix routes. */
static bool route_matches(const struct route *route, const char *path, bool prefix)
{
	size_t n = strlen(route->path);
	bool is_prefix = n >= 2 && route->path[n - 2] == '/' && route->path[n - 1] == '*';
	if (!prefix)
		return !is_prefix && strcmp(route->path, path) == 0;
	return is_prefix && strncmp(route->path, path, n - 1) == 0 && path[n - 1] != '\0';
}

static bool path_matches(const struct route *route, const char *path)
{
	return route_matches(route, path, false) || route_matches(route, path, true);
}

static const struct route *find_route(const char *method, const char *path, bool *path_known)
{
	*path_known = false;
	for (int prefix = 0; prefix < 2; prefix++) {
		for (size_t i = 0; i < route_count; i++) {
			if (!route_matches(&routes[i], path, prefix))
				continue;
			*path_known = true;
			if (strcmp(routes[i].method, method) == 0)
				return &routes[i];
		}
		if (*path_known)
			return NULL;
	}
	return NULL;
}

/* "GET, POST, OPTIONS" for the Allow and Access-Control-Allow-Methods
 * headers (caller frees). */
static char *methods_of(const char *path)
{
	struct pl_buf out = { 0 };
	for (size_t i = 0; i < route_count; i++)
		if (path_matches(&routes[i], path))
			pl_buf_printf(&out, "%s, ", routes[i].method);
	pl_buf_puts(&out, "OPTIONS");
	return pl_buf_take(&out);
}

static bool path_has_cors(const char *path)
{
	for (size_t i = 0; i < route_count; i++)
		if (path_matches(&routes[i], path) && routes[i].handler->cors)
			return true;
	return false;
}

/* ---- configuration ------------------------------------------------------------- */

const struct pl_http_conf *pl_http_config(void)
{
	return &conf;
}

bool pl_http_origin_allowed(const char *origin)
{
	const char *list = conf.cors_origins ? conf.cors_origins : "*";
	size_t origin_len = origin ? strlen(origin) : 0;
	for (const char *p = list; *p;) {
		p += strspn(p, " \t");
		size_t n = strcspn(p, " \t");
		if (n == 1 && *p == '*')
			return true;
		if (origin && n == origin_len && strncasecmp(p, origin, n) == 0)
			return true;
		p += n;
	}
	return false;
}

/* ---- requests ------------------------------------------------------------------ */

const char *pl_http_method(const struct pl_http_request *r)
{
	return r->method;
}

const char *pl_http_path(const struct pl_http_request *r)
{
	return r->path ? r->path : "/";
}

const char *pl_http_query(const struct pl_http_request *r)
{
	return r->query ? r->query : "";
}

const char *pl_http_header(const struct pl_http_request *r, const char *name)
{
	for (size_t i = 0; i < r->header_count; i++)
		if (strcasecmp(r->headers[i].name, name) == 0)
			return r->headers[i].value;
	return NULL;
}

const char *pl_http_peer_address(const struct pl_http_request *r)
{
	return pl_conn_peer_address(r->hc->conn);
}

bool pl_http_peer_is_loopback(const struct pl_http_request *r)
{
	return pl_conn_peer_is_loopback(r->hc->conn);
}

bool pl_http_is_secure(const struct pl_http_request *r)
{
	return r->hc->secure || conf.consider_secure;
}

void pl_http_set_data(struct pl_http_request *r, void *data)
{
	r->data = data;
}

void *pl_http_get_data(const struct pl_http_request *r)
{
	return r->data;
}

void pl_http_add_header(struct pl_http_request *r, const char *name, const char *value)
{
	pl_grow((void **)&r->response, &r->response_cap, r->response_count + 1,
		sizeof(*r->response));
	r->response[r->response_count++] = (struct header){ pl_strdup(name), pl_strdup(value) };
}

static void free_request(struct pl_http_request *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->header_count; i++) {
		free(r->headers[i].name);
		free(r->headers[i].value);
	}
	free(r->headers);
	for (size_t i = 0; i < r->response_count; i++) {
		free(r->response[i].name);
		free(r->response[i].value);
	}
	free(r->response);
	free(r->path);
	free(r->query);
	free(r);
}

const char *pl_http_reason(int status)
{
	switch (status) {
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 426: return "Upgrade Required";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

/* CORS (Fetch standard): a cross-origin request from an allowed origin
 * gets the origin echoed, so that browsers hand the answer to the page. */
static void add_cors(struct pl_http_request *r)
{
	const char *origin = pl_http_header(r, "Origin");
	if (!origin || !path_has_cors(pl_http_path(r)) || !pl_http_origin_allowed(origin))
		return;
	pl_http_add_header(r, "Access-Control-Allow-Origin", origin);
	pl_http_add_header(r, "Vary", "Origin");
}

static void write_head(struct http_conn *hc, struct pl_http_request *r, int status,
		       const char *content_type, size_t len, bool with_length)
{
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "HTTP/1.1 %d %s\r\n", status, pl_http_reason(status));
	for (size_t i = 0; r && i < r->response_count; i++)
		pl_buf_printf(&out, "%s: %s\r\n", r->response[i].name, r->response[i].value);
	if (content_type)
		pl_buf_printf(&out, "Content-Type: %s\r\n", content_type);
	if (with_length)
		pl_buf_printf(&out, "Content-Length: %zu\r\n", len);
	if (status != 101 && (!r || !r->keep_alive))
		pl_buf_puts(&out, "Connection: close\r\n");
	pl_buf_puts(&out, "\r\n");
	pl_conn_write(hc->conn, out.data, out.len);
	pl_buf_free(&out);
}

static void finish_request(struct http_conn *hc, bool keep_alive)
{
	free_request(hc->request);
	hc->request = NULL;
	hc->waiting = false;
	if (!keep_alive) {
		hc->closing = true;
		pl_conn_close_after_flush(hc->conn);
		return;
	}
	pl_conn_set_idle_timeout(hc->conn, conf.idle_timeout_ms);
	/* The next request may already be buffered (pipelining). */
	http_parser_pause(&hc->parser, 0);
	pl_conn_kick_input(hc->conn);
}

void pl_http_respond(struct pl_http_request *r, int status, const char *content_type,
		     const char *body, size_t len)
{
	struct http_conn *hc = r->hc;
	if (!r->complete)
		r->keep_alive = false; /* the rest of the body was not read */
	add_cors(r);
	write_head(hc, r, status, body ? content_type : NULL, body ? len : 0, true);
	if (body && len && strcmp(r->method, "HEAD") != 0)
		pl_conn_write(hc->conn, body, len);
	pl_log(PL_LOG_DEBUG, "http", "%s: %s %s -> %d", pl_conn_peer_address(hc->conn), r->method,
	       pl_http_path(r), status);
	pl_counter_add(pl_counter(status < 400 ? "http-requests" : "http-errors"), 1);
	finish_request(hc, r->keep_alive);
}

void pl_http_respond_file(struct pl_http_request *r, int status, const char *content_type,
			  int fd, uint64_t offset, uint64_t len)
{
	struct http_conn *hc = r->hc;
	/* Keep-alive waits for the next request under the idle timeout, a
	 * read timeout that a long download (the client sends nothing) would
	 * trip; a large file closes after it instead, under the flush limit,
	 * which only needs the transfer to progress. */
	if (!r->complete || (len > 256 * 1024 && strcmp(r->method, "HEAD") != 0))
		r->keep_alive = false;
	add_cors(r);
	write_head(hc, r, status, content_type, (size_t)len, true);
	if (len && strcmp(r->method, "HEAD") != 0)
		pl_conn_write_file(hc->conn, fd, offset, len);
	else
		close(fd);
	pl_log(PL_LOG_DEBUG, "http", "%s: %s %s -> %d (file, %llu bytes)",
	       pl_conn_peer_address(hc->conn), r->method, pl_http_path(r), status,
	       (unsigned long long)len);
	pl_counter_add(pl_counter(status < 400 ? "http-requests" : "http-errors"), 1);
	finish_request(hc, r->keep_alive);
}

struct pl_conn *pl_http_upgrade(struct pl_http_request *r)
{
	struct http_conn *hc = r->hc;
	write_head(hc, r, 101, NULL, 0, false);
	struct pl_conn *conn = hc->conn;
	hc->upgraded = true;
	free_request(r);
	hc->request = NULL;
	hc->waiting = false;
	return conn;
}

/* An answer decided by the core (errors, preflights); closes unless the
 * request was read whole and allows keep-alive. */
static void answer(struct http_conn *hc, int status, const char *why)
{
	struct pl_http_request *r = hc->request;
	pl_log(status >= 500 ? PL_LOG_WARN : PL_LOG_INFO, "http", "%s: %s %s: %d %s%s%s",
	       pl_conn_peer_address(hc->conn), r ? r->method : "-", r ? pl_http_path(r) : "-",
	       status, pl_http_reason(status), why ? ": " : "", why ? why : "");
	char body[160];
	int n = snprintf(body, sizeof(body), "%d %s\n", status, pl_http_reason(status));
	if (!r) {
		write_head(hc, NULL, status, "text/plain; charset=utf-8", (size_t)n, true);
		pl_conn_write(hc->conn, body, (size_t)n);
		hc->closing = true;
		pl_conn_close_after_flush(hc->conn);
		return;
	}
	r->status = status;
	if (r->handler_owned && r->route->handler->on_abort) {
		/* The core answers instead of the handler (a refused body). */
		r->handler_owned = false;
		r->route->handler->on_abort(r, r->route->userdata);
	}
	pl_http_respond(r, status, "text/plain; charset=utf-8", body, (size_t)n);
}

/* ---- parser callbacks ------------------------------------------------------------ */

static struct http_conn *conn_of(http_parser *p)
{
	return p->data;
}

static bool over_header_limit(struct http_conn *hc, size_t more)
{
	hc->header_bytes += more;
	return hc->header_bytes > conf.max_header_size;
}

static int on_message_begin(http_parser *p)
{
	struct http_conn *hc = conn_of(p);
	hc->request = pl_calloc(1, sizeof(*hc->request));
	hc->request->hc = hc;
	hc->header_bytes = 0;
	pl_buf_reset(&hc->url);
	pl_buf_reset(&hc->field);
	pl_buf_reset(&hc->value);
	hc->in_value = false;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct http_conn *hc = conn_of(p);
	if (over_header_limit(hc, len))
		return -1;
	pl_buf_append(&hc->url, at, len);
	return 0;
}

static void end_header(struct http_conn *hc)
{
	if (!hc->field.len)
		return;
	struct pl_http_request *r = hc->request;
	char *name = pl_strndup(hc->field.data, hc->field.len);
	char *value = pl_strndup(hc->value.data ? hc->value.data : "", hc->value.len);
	for (size_t i = 0; i < r->header_count; i++) {
		if (strcasecmp(r->headers[i].name, name) == 0) {
			char *joined = pl_asprintf("%s, %s", r->headers[i].value, value);
			free(r->headers[i].value);
			r->headers[i].value = joined;
			free(name);
			free(value);
			goto done;
		}
	}
	pl_grow((void **)&r->headers, &r->header_cap, r->header_count + 1, sizeof(*r->headers));
	r->headers[r->header_count++] = (struct header){ name, value };
done:
	pl_buf_reset(&hc->field);
	pl_buf_reset(&hc->value);
	hc->in_value = false;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_conn *hc = conn_of(p);
	if (over_header_limit(hc, len))
		return -1;
	if (hc->in_value)
		end_header(hc);
	pl_buf_append(&hc->field, at, len);
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_conn *hc = conn_of(p);
	if (over_header_limit(hc, len))
		return -1;
	hc->in_value = true;
	pl_buf_append(&hc->value, at, len);
	return 0;
}

static int headers_complete(http_parser *p);

/* Returns 1 to tell http_parser there is no body to read (the answer is
 * already decided: the connection closes after it, since the body, if
 * any, was not read), 0 to read it. */
static int on_headers_complete(http_parser *p)
{
	int skip = headers_complete(p);
	if (skip)
		conn_of(p)->request->keep_alive = false;
	return skip;
}

static int headers_complete(http_parser *p)
{
	struct http_conn *hc = conn_of(p);
	struct pl_http_request *r = hc->request;
	end_header(hc);
	snprintf(r->method, sizeof(r->method), "%s", http_method_str((enum http_method)p->method));
	struct http_parser_url u;
	http_parser_url_init(&u);
	const char *url = hc->url.data ? hc->url.data : "";
	if (http_parser_parse_url(url, hc->url.len, 0, &u) != 0) {
		r->status = 400;
		return 1;
	}
	if (u.field_set & (1 << UF_PATH))
		r->path = pl_strndup(url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
	if (u.field_set & (1 << UF_QUERY))
		r->query = pl_strndup(url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
	hc->requests++;
	r->keep_alive = http_should_keep_alive(p) && hc->requests < (unsigned)conf.max_requests &&
			!p->upgrade;
	if (p->http_major != 1) {
		r->status = 505;
		return 1;
	}
	if (p->http_minor >= 1 && !pl_http_header(r, "Host")) {
		r->status = 400; /* RFC 9112 3.2 */
		return 1;
	}
	if (strcmp(r->method, "OPTIONS") == 0) {
		r->status = -1; /* a preflight, answered at message end */
		return 0;
	}
	bool path_known;
	const char *method = strcmp(r->method, "HEAD") == 0 ? "GET" : r->method;
	r->route = find_route(method, pl_http_path(r), &path_known);
	if (!r->route) {
		r->status = path_known ? 405 : 404;
		return 0;
	}
	r->max_body = r->route->handler->max_body ? r->route->handler->max_body
						  : conf.max_body_size;
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > r->max_body) {
		r->status = 413;
		return 1;
	}
	if (r->route->handler->on_headers) {
		int status = r->route->handler->on_headers(r, r->route->userdata);
		if (status) {
			r->status = status;
			return 1;
		}
	}
	r->handler_owned = true;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct http_conn *hc = conn_of(p);
	struct pl_http_request *r = hc->request;
	if (r->status)
		return 0; /* answered anyway: discard */
	r->body_bytes += len;
	/* Stop reading at once: the rest of a refused body is not worth
	 * receiving (the error path answers r->status and closes). */
	if (r->body_bytes > r->max_body) {
		r->status = 413;
		return -1;
	}
	if (r->route->handler->on_body) {
		int status = r->route->handler->on_body(r, at, len, r->route->userdata);
		if (status) {
			r->status = status;
			return -1;
		}
	}
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct http_conn *hc = conn_of(p);
	hc->request->complete = true;
	hc->waiting = true;
	/* One request at a time: the rest waits in the input buffer. */
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

/* A complete request whose answer the core or the route decides. */
static void dispatch(struct http_conn *hc)
{
	struct pl_http_request *r = hc->request;
	if (r->status == -1) {
		/* CORS preflight (Fetch standard 3.2.2). */
		const char *origin = pl_http_header(r, "Origin");
		bool path_known;
		find_route("", pl_http_path(r), &path_known);
		if (!path_known) {
			answer(hc, 404, NULL);
			return;
		}
		char *methods = methods_of(pl_http_path(r));
		if (origin && path_has_cors(pl_http_path(r))) {
			if (!pl_http_origin_allowed(origin)) {
				free(methods);
				answer(hc, 403, "origin not allowed");
				return;
			}
			pl_http_add_header(r, "Access-Control-Allow-Methods", methods);
			const char *asked = pl_http_header(r, "Access-Control-Request-Headers");
			pl_http_add_header(r, "Access-Control-Allow-Headers",
					   asked ? asked : "Content-Type");
			pl_http_add_header(r, "Access-Control-Max-Age", "86400");
		}
		pl_http_add_header(r, "Allow", methods);
		free(methods);
		pl_http_respond(r, 204, NULL, NULL, 0);
		return;
	}
	if (r->status) {
		if (r->status == 405) {
			char *methods = methods_of(pl_http_path(r));
			pl_http_add_header(r, "Allow", methods);
			free(methods);
		}
		answer(hc, r->status, NULL);
		return;
	}
	/* The answer may come later (long polling): no idle timeout meanwhile;
	 * the handler owns the wait. */
	pl_conn_set_idle_timeout(hc->conn, 0);
	r->route->handler->on_complete(r, r->route->userdata);
}

/* ---- connection events ------------------------------------------------------------ */

static void unlink_conn(struct http_conn *hc)
{
	if (hc->prev)
		hc->prev->next = hc->next;
	else if (conns == hc)
		conns = hc->next;
	if (hc->next)
		hc->next->prev = hc->prev;
	hc->prev = hc->next = NULL;
}

static void free_conn(struct http_conn *hc)
{
	unlink_conn(hc);
	free_request(hc->request);
	pl_buf_free(&hc->url);
	pl_buf_free(&hc->field);
	pl_buf_free(&hc->value);
	free(hc);
}

static size_t on_data(struct pl_conn *conn, const char *data, size_t len, void *userdata)
{
	struct http_conn *hc = userdata;
	if (hc->closing)
		return len;
	if (hc->waiting)
		return 0;
	size_t used = http_parser_execute(&hc->parser, &settings, data, len);
	enum http_errno error = HTTP_PARSER_ERRNO(&hc->parser);
	if (error != HPE_OK && error != HPE_PAUSED) {
		bool too_big = error == HPE_HEADER_OVERFLOW || hc->header_bytes > conf.max_header_size;
		if (hc->request && !hc->request->complete)
			hc->request->keep_alive = false;
		if (hc->request && hc->request->status > 0)
			answer(hc, hc->request->status, "while reading the body");
		else if (too_big)
			answer(hc, 431, "headers over the limit");
		else
			answer(hc, 400, http_errno_name(error));
		return len;
	}
	if (hc->waiting) {
		dispatch(hc);
		if (hc->upgraded) {
			/* The new owner installed its callbacks: it reads the rest. */
			free_conn(hc);
			return used;
		}
		return used;
	}
	return used;
}

static void on_close(struct pl_conn *conn, enum pl_conn_close_reason reason, void *userdata)
{
	struct http_conn *hc = userdata;
	if (reason == PL_CONN_TIMEOUT)
		pl_log(PL_LOG_DEBUG, "http", "%s: idle connection closed", pl_conn_peer_address(conn));
	struct pl_http_request *r = hc->request;
	if (r && r->handler_owned && r->route->handler->on_abort)
		r->route->handler->on_abort(r, r->route->userdata);
	free_conn(hc);
}

static const struct pl_conn_callbacks callbacks = { on_data, on_close };

static void accept_connection(int fd, const struct sockaddr *peer, socklen_t peer_len, bool tls)
{
	struct http_conn *hc = pl_calloc(1, sizeof(*hc));
	hc->conn = pl_conn_new(loop, fd, peer, peer_len, tls ? PL_TLS_ALPN_HTTP : PL_TLS_ALPN_NONE,
			       &callbacks, hc);
	if (!hc->conn) {
		free(hc);
		return;
	}
	hc->secure = tls;
	http_parser_init(&hc->parser, HTTP_REQUEST);
	hc->parser.data = hc;
	pl_conn_set_idle_timeout(hc->conn, conf.idle_timeout_ms);
	hc->next = conns;
	if (conns)
		conns->prev = hc;
	conns = hc;
}

static void on_accept_plain(int fd, const struct sockaddr *peer, socklen_t len, void *arg)
{
	accept_connection(fd, peer, len, false);
}

static void on_accept_tls(int fd, const struct sockaddr *peer, socklen_t len, void *arg)
{
	accept_connection(fd, peer, len, true);
}

/* ---- XEP-0156: where browsers find the WebSocket (and BOSH) endpoints ---- */

/* The public URL of a path: configured, or made from the Host the client
 * used (which is what it can reach). NULL when Host is unusable. */
static char *public_url(struct pl_http_request *r, const char *configured, const char *path)
{
	if (configured)
		return pl_strdup(configured);
	const char *host = pl_http_header(r, "Host");
	if (!host || !*host || strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					      "0123456789.-:[]") != strlen(host))
		return NULL;
	bool ws = strcmp(path, "/xmpp-websocket") == 0;
	bool secure = pl_http_is_secure(r);
	return pl_asprintf("%s://%s%s", ws ? (secure ? "wss" : "ws") : (secure ? "https" : "http"),
			   host, path);
}

struct link {
	const char *rel;
	char *href; /* owned */
};

static size_t discovery_links(struct pl_http_request *r, struct link *links)
{
	size_t n = 0;
	char *url = public_url(r, conf.websocket_url, "/xmpp-websocket");
	if (url)
		links[n++] = (struct link){ "urn:xmpp:alt-connections:websocket", url };
	bool known;
	if (find_route("POST", "/http-bind", &known)) {
		url = public_url(r, conf.bosh_url, "/http-bind");
		if (url)
			links[n++] = (struct link){ "urn:xmpp:alt-connections:xbosh", url };
	}
	return n;
}

static void on_host_meta(struct pl_http_request *r, void *userdata)
{
	bool json = userdata != NULL;
	struct link links[2];
	size_t n = discovery_links(r, links);
	struct pl_buf out = { 0 };
	if (json)
		pl_buf_puts(&out, "{\"links\":[");
	else
		pl_buf_puts(&out, "<?xml version='1.0' encoding='utf-8'?>\n"
				  "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n");
	for (size_t i = 0; i < n; i++) {
		/* The hrefs are configured text or a checked Host: no quote or
		 * markup characters unless configured, which are escaped. */
		if (json) {
			pl_buf_printf(&out, "%s{\"rel\":\"%s\",\"href\":\"", i ? "," : "", links[i].rel);
			for (const char *p = links[i].href; *p; p++) {
				if (*p == '"' || *p == '\\')
					pl_buf_puts(&out, "\\");
				pl_buf_append(&out, p, 1);
			}
			pl_buf_puts(&out, "\"}");
		} else {
			pl_buf_printf(&out, "  <Link rel='%s' href='", links[i].rel);
			pl_xml_escape(&out, links[i].href, strlen(links[i].href));
			pl_buf_puts(&out, "'/>\n");
		}
		free(links[i].href);
	}
	pl_buf_puts(&out, json ? "]}\n" : "</XRD>\n");
	pl_http_respond(r, 200, json ? "application/json" : "application/xrd+xml; charset=utf-8",
			out.data, out.len);
	pl_buf_free(&out);
}

static const struct pl_http_handler host_meta_handler = {
	.on_complete = on_host_meta,
	.cors = true,
};

int pl_http_start(struct event_base *base, const struct pl_config *config, char **error)
{
	pl_http_route(NULL, "GET", "/.well-known/host-meta", &host_meta_handler, NULL);
	pl_http_route(NULL, "GET", "/.well-known/host-meta.json", &host_meta_handler, (void *)1);
	loop = base;
	int rc = pl_options_apply(http_options, &conf, pl_config_find(config, "http", NULL),
				  config->path, "<http>", error);
	conf_loaded = true;
	if (rc)
		return rc;
	if (conf.port > 0 &&
	    (rc = pl_listener_open(base, conf.address, (int)conf.port, on_accept_plain, NULL,
				   &plain_listener, error)) != 0)
		return rc;
	if (conf.tls_port > 0 &&
	    (rc = pl_listener_open(base, conf.address, (int)conf.tls_port, on_accept_tls, NULL,
				   &tls_listener, error)) != 0)
		return rc;
	if (conf.port > 0 || conf.tls_port > 0)
		pl_log(PL_LOG_INFO, "http", "listening on %s port %lld (HTTP) and %lld (HTTPS)",
		       conf.address, (long long)conf.port, (long long)conf.tls_port);
	return 0;
}

void pl_http_stop(void)
{
	pl_listener_close(plain_listener);
	pl_listener_close(tls_listener);
	plain_listener = tls_listener = NULL;
	while (conns) {
		struct http_conn *hc = conns;
		struct pl_http_request *r = hc->request;
		if (r && r->handler_owned && r->route->handler->on_abort)
			r->route->handler->on_abort(r, r->route->userdata);
		pl_conn_free(hc->conn);
		free_conn(hc);
	}
	for (size_t i = 0; i < route_count; i++)
		free_route(&routes[i]);
	free(routes);
	routes = NULL;
	route_count = route_cap = 0;
	if (conf_loaded)
		pl_options_free(http_options, &conf);
	conf_loaded = false;
}
