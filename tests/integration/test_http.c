/* The HTTP/1.1 listener with raw sockets: routes (404, 405 with Allow),
 * XEP-0156 host-meta in XRD and JSON with the URLs the client can reach,
 * CORS answers and preflights against the allowed origins, keep-alive
 * and pipelining, the per-connection request limit, the idle timeout,
 * and hostile input (a malformed request line, headers and a body over
 * the limits, an unsupported HTTP version) each answered with its status
 * and a close, while a bystander connection keeps being served. HTTPS
 * on the TLS port too. */
#include "harness.h"
#include "http_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int http_port, https_port;

static struct http_response get(struct http_client *c, const char *path, const char *extra)
{
	http_client_sendf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n", path, http_port,
			  extra ? extra : "");
	return http_client_read(c, 5000);
}

static void header_is(const struct http_response *r, const char *name, const char *expected,
		      const char *what)
{
	char *value = http_response_header(r, name);
	is_str(value, expected, "%s", what);
	free(value);
}

int main(void)
{
	struct ph_server s;
	http_port = ph_free_port();
	do
		https_port = ph_free_port();
	while (https_port == http_port);
	char extra[600];
	snprintf(extra, sizeof(extra),
		 "<http address=\"127.0.0.1\" port=\"%d\" tls-port=\"%d\" max-header-size=\"2KiB\" "
		 "max-body-size=\"4KiB\" max-requests=\"3\" idle-timeout=\"2s\" "
		 "cors-origins=\"https://good.example https://other.example\"/>",
		 http_port, https_port);
	ph_server_init(&s, extra);
	/* mod_upload registers a prefix route ("/upload/" and a star). */
	char *config = ph_standard_config(&s, NULL, extra);
	char *patched = ph_replace(config, "<module name=\"version\"/>",
				   "<module name=\"version\"/><module name=\"upload\"/>");
	ph_server_write_config(&s, patched);
	free(config);
	free(patched);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with an <http> listener"))
		return done_testing();

	struct http_client *bystander = http_client_connect(http_port, false);
	struct http_response r = get(bystander, "/.well-known/host-meta", NULL);
	is_int(r.status, 200, "host-meta answers 200");
	header_is(&r, "Content-Type", "application/xrd+xml; charset=utf-8", "as an XRD document");
	char expected[200];
	snprintf(expected, sizeof(expected),
		 "<Link rel='urn:xmpp:alt-connections:websocket' href='ws://127.0.0.1:%d/xmpp-websocket'/>",
		 http_port);
	has_str(r.body, expected, "listing the WebSocket URL made from the Host the client used");
	has_str(r.body, "xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'", "in the XRD namespace");
	snprintf(expected, sizeof(expected),
		 "<Link rel='urn:xmpp:alt-connections:xbosh' href='http://127.0.0.1:%d/http-bind'/>",
		 http_port);
	has_str(r.body, expected, "and the BOSH URL");
	http_response_free(&r);

	r = get(bystander, "/.well-known/host-meta.json", "Origin: https://good.example\r\n");
	is_int(r.status, 200, "host-meta.json answers 200 on the same connection (keep-alive)");
	header_is(&r, "Content-Type", "application/json", "as JSON");
	snprintf(expected, sizeof(expected),
		 "{\"rel\":\"urn:xmpp:alt-connections:websocket\",\"href\":\"ws://127.0.0.1:%d/xmpp-websocket\"}",
		 http_port);
	has_str(r.body, expected, "with the WebSocket link");
	header_is(&r, "Access-Control-Allow-Origin", "https://good.example",
		  "an allowed origin is echoed in Access-Control-Allow-Origin");
	http_response_free(&r);
	http_client_free(bystander);

	/* CORS */
	struct http_client *c = http_client_connect(http_port, false);
	r = get(c, "/.well-known/host-meta", "Origin: https://evil.example\r\n");
	is_int(r.status, 200, "a request from another origin is answered");
	header_is(&r, "Access-Control-Allow-Origin", NULL, "without CORS headers, so the browser hides it");
	http_response_free(&r);
	http_client_sendf(c, "OPTIONS /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n"
			     "Origin: https://other.example\r\nAccess-Control-Request-Method: GET\r\n"
			     "Access-Control-Request-Headers: content-type\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 204, "a preflight from an allowed origin gets 204");
	header_is(&r, "Access-Control-Allow-Origin", "https://other.example", "with the origin allowed");
	header_is(&r, "Access-Control-Allow-Methods", "GET, OPTIONS", "the route's methods");
	header_is(&r, "Access-Control-Allow-Headers", "content-type", "the headers asked for");
	http_response_free(&r);
	http_client_sendf(c, "OPTIONS /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n"
			     "Origin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 403, "a preflight from an origin not allowed gets 403");
	header_is(&r, "Connection", "close", "and it was the third request: Connection: close (max-requests)");
	http_response_free(&r);
	ok(http_client_wait_closed(c, 5000), "the server closes after max-requests");
	http_client_free(c);

	/* Routes */
	c = http_client_connect(http_port, false);
	r = get(c, "/nowhere", NULL);
	is_int(r.status, 404, "an unknown path gets 404");
	http_response_free(&r);
	http_client_sendf(c, "DELETE /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 405, "a known path with another method gets 405");
	header_is(&r, "Allow", "GET, OPTIONS", "with Allow");
	http_response_free(&r);
	http_client_free(c);

	/* Prefix routes: "/upload/" + star serves every path below it. */
	c = http_client_connect(http_port, false);
	http_client_sendf(c, "DELETE /upload/a/b/c HTTP/1.1\r\nHost: x\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 405, "a path under a prefix route is known (405 for another method)");
	header_is(&r, "Allow", "PUT, GET, OPTIONS", "with the prefix route's methods");
	http_response_free(&r);
	http_client_sendf(c, "OPTIONS /upload/x HTTP/1.1\r\nHost: x\r\nOrigin: https://good.example\r\n"
			     "Access-Control-Request-Method: PUT\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 204, "a preflight under the prefix is answered");
	header_is(&r, "Access-Control-Allow-Origin", "https://good.example", "with the prefix route's CORS");
	http_response_free(&r);
	http_client_free(c);
	c = http_client_connect(http_port, false);
	http_client_sendf(c, "DELETE /upload HTTP/1.1\r\nHost: x\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 404, "the prefix itself without a slash is not under it");
	http_response_free(&r);
	http_client_sendf(c, "DELETE /uploads/a HTTP/1.1\r\nHost: x\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 404, "nor is a path that only starts with the same letters");
	http_response_free(&r);
	http_client_sendf(c, "DELETE /upload/ HTTP/1.1\r\nHost: x\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 404, "nor the bare prefix with its slash");
	http_response_free(&r);
	http_client_free(c);

	/* Pipelining: two requests in one write, two answers in order. */
	c = http_client_connect(http_port, false);
	http_client_sendf(c, "GET /.well-known/host-meta.json HTTP/1.1\r\nHost: a\r\n\r\n"
			     "GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 200, "the first of two pipelined requests is answered");
	http_response_free(&r);
	r = http_client_read(c, 5000);
	is_int(r.status, 404, "then the second");
	http_response_free(&r);
	ok(http_client_wait_closed(c, 10000), "an idle keep-alive connection is closed after idle-timeout");
	http_client_free(c);

	/* Hostile input */
	c = http_client_connect(http_port, false);
	http_client_sendf(c, "GARBAGE\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 400, "a malformed request line gets 400");
	http_response_free(&r);
	ok(http_client_wait_closed(c, 5000), "and a close");
	http_client_free(c);

	c = http_client_connect(http_port, false);
	char big[4000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	http_client_sendf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
	r = http_client_read(c, 5000);
	is_int(r.status, 431, "headers over max-header-size get 431");
	http_response_free(&r);
	ok(http_client_wait_closed(c, 5000), "and a close");
	http_client_free(c);

	c = http_client_connect(http_port, false);
	http_client_sendf(c, "GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 413, "a declared body over max-body-size gets 413 before it is sent");
	http_response_free(&r);
	ok(http_client_wait_closed(c, 5000), "and a close");
	http_client_free(c);

	c = http_client_connect(http_port, false);
	http_client_sendf(c, "GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 6; i++)
		http_client_sendf(c, "400\r\n%.1024s\r\n", big);
	r = http_client_read(c, 5000);
	is_int(r.status, 413, "a chunked body growing over max-body-size gets 413 once it does");
	http_response_free(&r);
	http_client_free(c);

	c = http_client_connect(http_port, false);
	http_client_sendf(c, "GET /.well-known/host-meta HTTP/1.1\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 400, "an HTTP/1.1 request without Host gets 400 (RFC 9112 3.2)");
	http_response_free(&r);
	http_client_free(c);

	c = http_client_connect(http_port, false);
	http_client_sendf(c, "GET / HTTP/2.0\r\nHost: x\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 505, "HTTP/2 in an HTTP/1 request line gets 505");
	http_response_free(&r);
	http_client_free(c);

	c = http_client_connect(https_port, true);
	ok(c != NULL, "HTTPS: TLS handshake with ALPN http/1.1");
	if (c) {
		http_client_sendf(c, "GET /.well-known/host-meta.json HTTP/1.1\r\nHost: localhost:%d\r\n\r\n",
				  https_port);
		r = http_client_read(c, 5000);
		is_int(r.status, 200, "host-meta over HTTPS");
		snprintf(expected, sizeof(expected), "wss://localhost:%d/xmpp-websocket", https_port);
		has_str(r.body, expected, "lists a wss:// URL");
		http_response_free(&r);
		http_client_free(c);
	}

	/* 2000 idle connections: accepted, bystanders served, all closed by
	 * the idle timeout. */
	enum { IDLE = 2000 };
	static struct http_client *idle[IDLE];
	long rss_before = ph_rss_kib(s.pid);
	int opened = 0;
	for (int i = 0; i < IDLE; i++)
		if ((idle[i] = http_client_connect(http_port, false)) != NULL)
			opened++;
	is_int(opened, IDLE, "2000 idle HTTP connections are accepted");
	c = http_client_connect(http_port, false);
	r = get(c, "/.well-known/host-meta.json", NULL);
	is_int(r.status, 200, "a bystander is served meanwhile");
	http_response_free(&r);
	http_client_free(c);
	long rss_after = ph_rss_kib(s.pid);
	diag("parleyd RSS %ld KiB before, %ld KiB with %d idle connections (%.1f KiB each)",
	     rss_before, rss_after, IDLE, (double)(rss_after - rss_before) / IDLE);
	int closed = 0;
	for (int i = 0; i < IDLE; i++) {
		if (idle[i] && http_client_wait_closed(idle[i], 15000))
			closed++;
		http_client_free(idle[i]);
	}
	is_int(closed, IDLE, "the idle timeout closes every one of them");

	char *log = ph_server_log(&s);
	has_str(log, "400 Bad Request: HPE_INVALID_METHOD", "refusals are logged with the reason");
	has_str(log, "431 Request Header Fields Too Large", "the header limit too");
	free(log);
	is_int(ph_server_stop(&s), 0, "parleyd stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
