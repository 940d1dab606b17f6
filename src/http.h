/* The HTTP/1.1 front end (configured by <http>): listeners, plain and
 * TLS (ALPN "http/1.1"), parsed by http_parser on the connections of
 * net/conn.c, with keep-alive, limits (header bytes, body bytes per
 * route, requests per connection, idle time) and a route table that the
 * core and modules register paths on. Bodies reach handlers in chunks as
 * they arrive, never buffered whole here. CORS headers and OPTIONS
 * preflights are answered per route against the configured allowed
 * origins. A handler may answer later (long polling): the connection
 * reads nothing more until it has. WebSocket takes a connection over
 * with pl_http_upgrade. Network thread only. */
#ifndef PL_HTTP_H
#define PL_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct event_base;
struct pl_module;
struct pl_conn;
struct pl_http_request;

struct pl_http_handler {
	/* The request line and headers are in. Return 0 to receive the body,
	 * or an HTTP status to answer with at once (with no body). May be
	 * NULL. */
	int (*on_headers)(struct pl_http_request *r, void *userdata);
	/* The next piece of the body; a non-zero HTTP status stops reading
	 * and answers with it. May be NULL (the body is discarded). */
	int (*on_body)(struct pl_http_request *r, const char *data, size_t len, void *userdata);
	/* The whole request is in: answer with pl_http_respond, now or later,
	 * or take the connection with pl_http_upgrade. */
	void (*on_complete)(struct pl_http_request *r, void *userdata);
	/* The request ends without the handler's answer (its connection
	 * closed, during the body or during a long poll, or the core refused
	 * the body): free what the handler keeps for it; the request is
	 * freed when this returns. May be NULL. */
	void (*on_abort)(struct pl_http_request *r, void *userdata);
	/* The largest body accepted (413 beyond); 0: <http max-body-size>. */
	uint64_t max_body;
	/* Answer CORS (Access-Control-*) and OPTIONS preflights here. */
	bool cors;
};

/* Registers handler (borrowed: static storage) for method and an exact
 * path ("/http-bind"; the query is not part of it), or a prefix: a path
 * ending in a slash and a star serves every path below it ("/upload/"
 * then "*"); exact routes win. Routes of a module go away when it
 * unloads. 0, or -EEXIST. */
int pl_http_route(struct pl_module *m, const char *method, const char *path,
		  const struct pl_http_handler *handler, void *userdata);
/* Removes every route of m (the module loader calls it at unload). */
void pl_http_unroute_module(struct pl_module *m);

/* ---- the request ----------------------------------------------------------- */
const char *pl_http_method(const struct pl_http_request *r);
const char *pl_http_path(const struct pl_http_request *r);
/* The query string without '?', or "". */
const char *pl_http_query(const struct pl_http_request *r);
/* A header's value (the name is case-insensitive); repeated headers are
 * joined with ", " as RFC 9110 5.3 allows. NULL when absent. */
const char *pl_http_header(const struct pl_http_request *r, const char *name);
const char *pl_http_peer_address(const struct pl_http_request *r);
bool pl_http_peer_is_loopback(const struct pl_http_request *r);
/* TLS, or <http consider-secure="true"> (a TLS-terminating proxy). */
bool pl_http_is_secure(const struct pl_http_request *r);
/* A handler's per-request pointer (not freed here). */
void pl_http_set_data(struct pl_http_request *r, void *data);
void *pl_http_get_data(const struct pl_http_request *r);

/* ---- answering ------------------------------------------------------------- */
/* Adds a response header (copied) for the coming pl_http_respond. */
void pl_http_add_header(struct pl_http_request *r, const char *name, const char *value);
/* Sends the answer (body copied; content_type may be NULL when there is
 * no body) and ends the request: r is gone after this. */
void pl_http_respond(struct pl_http_request *r, int status, const char *content_type,
		     const char *body, size_t len);
/* The same with the body taken from a file: len bytes of fd from offset,
 * sent as the socket drains (sendfile, or mapped pages under TLS) so a
 * large file never sits in memory. Takes fd (closed when sent). */
void pl_http_respond_file(struct pl_http_request *r, int status, const char *content_type,
			  int fd, uint64_t offset, uint64_t len);
/* From on_complete of a GET with "Upgrade": sends "101 Switching
 * Protocols" with the headers added so far, and hands the connection to
 * the caller, who must install its callbacks (pl_conn_set_callbacks)
 * before returning; bytes that followed the request reach them. r is
 * gone after this. */
struct pl_conn *pl_http_upgrade(struct pl_http_request *r);

/* The reason phrase of a status ("Not Found"). */
const char *pl_http_reason(int status);

/* ---- the listener ---------------------------------------------------------- */
struct pl_http_conf {
	char *address;
	int64_t port;              /* plain HTTP, 0 for none */
	int64_t tls_port;          /* HTTPS, 0 for none */
	uint64_t max_header_size;  /* request line + headers */
	uint64_t max_body_size;    /* default per route */
	int64_t max_requests;      /* per connection, then Connection: close */
	int64_t idle_timeout_ms;   /* between requests and while one arrives */
	bool consider_secure;      /* a proxy in front terminates TLS */
	char *cors_origins;         /* space-separated: "*" or exact origins */
	int64_t bosh_inactivity_ms; /* a BOSH session without requests ends */
	char *websocket_url;       /* public URLs for XEP-0156 (NULL: from Host) */
	char *bosh_url;
};
/* The <http> settings in force (defaults when there is no <http>). */
const struct pl_http_conf *pl_http_config(void);
/* Whether an Origin may use the CORS routes (and open WebSockets). */
bool pl_http_origin_allowed(const char *origin);

/* Opens the listeners of <http> (none without the element). */
int pl_http_start(struct event_base *base, const struct pl_config *config, char **error);
/* Closes the listeners and every connection; frees the routes. */
void pl_http_stop(void);

#endif
