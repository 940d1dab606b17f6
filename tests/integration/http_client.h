/* A blocking HTTP/1.1 client for integration tests, over plain TCP or
 * TLS (no certificate check, ALPN "http/1.1"), written from RFC 9112
 * rather than from the server's code: it sends bytes exactly as a test
 * writes them (so malformed requests can be sent) and reads responses
 * one at a time (status line, headers, Content-Length body). The
 * WebSocket test client (ws_client.h) runs on the same connection. */
#ifndef PL_HTTP_CLIENT_H
#define PL_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct http_client;

struct http_response {
	int status;        /* -1: no complete response before timeout/close */
	char *head;        /* status line and headers, NUL-terminated; owned */
	char *body;        /* NUL-terminated; owned */
	size_t body_len;
};

struct http_client *http_client_connect(int port, bool tls);
/* The same to another IPv4 address of this machine. */
struct http_client *http_client_connect_to(const char *ipv4, int port, bool tls);
void http_client_free(struct http_client *c);
/* Writes all of data; false on error. */
bool http_client_send(struct http_client *c, const void *data, size_t len);
bool http_client_sendf(struct http_client *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Reads the next response within timeout_ms. */
struct http_response http_client_read(struct http_client *c, int timeout_ms);
void http_response_free(struct http_response *r);
/* A header's value (case-insensitive name), owned by the caller; NULL if absent. */
char *http_response_header(const struct http_response *r, const char *name);
/* Waits up to timeout_ms for the server to close; true if it did.
 * Anything that arrives meanwhile is dropped. */
bool http_client_wait_closed(struct http_client *c, int timeout_ms);

/* Low level, for the WebSocket client: reads at least one byte into
 * the internal buffer (false on timeout or close), and takes bytes from it. */
bool http_client_fill(struct http_client *c, int timeout_ms);
size_t http_client_buffered(const struct http_client *c);
const unsigned char *http_client_data(const struct http_client *c);
void http_client_consume(struct http_client *c, size_t n);
bool http_client_eof(const struct http_client *c);

#endif
