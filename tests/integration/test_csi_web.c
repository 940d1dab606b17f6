/* XEP-0352 client state indication over the web transports: the CSI
 * code is the c2s session's, shared by every transport, and this proves
 * it for a WebSocket client (RFC 7395) and a BOSH client (XEP-0206) as
 * test_csi does for TCP: inactive, neither gets a TCP contact's presence
 * flood or chat state, a message brings the latest held presence and the
 * chat state just before it, in order, and becoming active brings the
 * latest presence and not the one it replaced. Barriers are stream
 * management <r/>/<a/> round trips (an IQ would flush what CSI holds). */
#include "harness.h"
#include "http_client.h"
#include "raw_client.h"
#include "ws_client.h"
#include "../tap.h"

#include <openssl/evp.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY "<body xmlns='http://jabber.org/protocol/httpbind' "
#define R "<r xmlns='urn:xmpp:sm:3'/>"

static int http_port;
static char sid[64];
static unsigned long long rid = 1000;

/* One BOSH request with these payloads; the answer's body (caller
 * frees) or NULL. */
__attribute__((format(printf, 1, 2)))
static char *bosh(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *payload = NULL;
	if (vasprintf(&payload, fmt, ap) < 0)
		payload = NULL;
	va_end(ap);
	char *body = NULL;
	int n = asprintf(&body, BODY "xmlns:xmpp='urn:xmpp:xbosh' rid='%llu' sid='%s'>%s</body>", ++rid,
			 sid, payload ? payload : "");
	free(payload);
	struct http_client *h = n > 0 ? http_client_connect(http_port, false) : NULL;
	if (h)
		http_client_sendf(h, "POST /http-bind HTTP/1.1\r\nHost: localhost\r\n"
				     "Content-Type: text/xml; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s",
				  n, body);
	free(body);
	if (!h)
		return NULL;
	struct http_response r = http_client_read(h, 15000);
	char *answer = r.status == 200 ? strdup(r.body) : NULL;
	http_response_free(&r);
	http_client_free(h);
	return answer;
}

/* Polls (each request held until something comes, wait 10) until the
 * answers together contain needle; returns them all (caller frees). */
static char *bosh_until(const char *needle)
{
	size_t len = 0;
	char *all = calloc(1, 1);
	for (int i = 0; i < 5 && !strstr(all, needle); i++) {
		char *a = bosh("%s", "");
		if (!a)
			break;
		all = realloc(all, len + strlen(a) + 1);
		strcpy(all + len, a);
		len += strlen(a);
		free(a);
	}
	return all;
}

static bool bosh_login(const char *user, const char *resource)
{
	struct http_client *h = http_client_connect(http_port, false);
	char body[300];
	int n = snprintf(body, sizeof(body), BODY "xmlns:xmpp='urn:xmpp:xbosh' rid='%llu' to='localhost' "
						"wait='10' hold='1' ver='1.6' xmpp:version='1.0'/>", rid);
	if (!h)
		return false;
	http_client_sendf(h, "POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s",
			  n, body);
	struct http_response r = http_client_read(h, 15000);
	const char *at = r.body ? strstr(r.body, " sid='") : NULL;
	if (at)
		snprintf(sid, sizeof(sid), "%.*s", (int)strcspn(at + 6, "'"), at + 6);
	http_response_free(&r);
	http_client_free(h);
	if (!at)
		return false;
	char raw[100], encoded[200];
	n = snprintf(raw, sizeof(raw), "%c%s%c%s-secret", 0, user, 0, user);
	EVP_EncodeBlock((unsigned char *)encoded, (unsigned char *)raw, n);
	char *a = bosh("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", encoded);
	bool success = a && strstr(a, "<success");
	free(a);
	/* The restart: an empty body with xmpp:restart. */
	h = http_client_connect(http_port, false);
	n = snprintf(body, sizeof(body), BODY "xmlns:xmpp='urn:xmpp:xbosh' rid='%llu' sid='%s' "
						"to='localhost' xmpp:restart='true'/>", ++rid, sid);
	if (h)
		http_client_sendf(h, "POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s",
				  n, body);
	r = h ? http_client_read(h, 15000) : (struct http_response){ .status = -1 };
	bool features = r.body && strstr(r.body, "urn:ietf:params:xml:ns:xmpp-bind");
	http_response_free(&r);
	http_client_free(h);
	a = bosh("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
		 "<resource>%s</resource></bind></iq>", resource);
	bool bound = a && strstr(a, "</jid>");
	free(a);
	return success && features && bound;
}

/* The WebSocket client's next stanza, skipping <r/> and <a/>. */
static char *ws_next(struct ws_client *w)
{
	for (;;) {
		char *e = ws_client_wait(w, NULL, 5000);
		if (!e || (strncmp(e, "<r ", 3) != 0 && strncmp(e, "<a ", 3) != 0))
			return e;
		free(e);
	}
}

static bool ws_barrier(struct ws_client *w)
{
	ws_client_send(w, R);
	char *a = ws_client_wait(w, "<a xmlns", 5000);
	free(a);
	return a != NULL;
}

/* Drops what came before a barrier. */
static void ws_discard(struct ws_client *w)
{
	ws_barrier(w);
	for (char *e; (e = ws_client_wait(w, NULL, 0));)
		free(e);
}

/* a before b before c in text. */
static bool in_order(const char *text, const char *a, const char *b, const char *c)
{
	const char *pa = text ? strstr(text, a) : NULL;
	const char *pb = text ? strstr(text, b) : NULL;
	const char *pc = text ? strstr(text, c) : NULL;
	return pa && pb && pc && pa < pb && pb < pc;
}

int main(void)
{
	struct ph_server s;
	http_port = ph_free_port();
	char extra[300];
	snprintf(extra, sizeof(extra),
		 "<http address=\"127.0.0.1\" port=\"%d\" consider-secure=\"true\"/>", http_port);
	ph_server_init(&s, extra);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with an HTTP listener"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	ph_add_user(&s, "carol");
	struct raw_client *alice = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "tcp");
	if (alice) {
		raw_client_send(alice, "<presence/>");
		raw_client_sync(alice);
	}
	int status;
	struct ws_client *bob = ws_client_connect("127.0.0.1", http_port, false, "xmpp", NULL, &status);
	char *jid = bob ? ws_client_login(bob, "bob", "bob-secret", "ws") : NULL;
	free(jid);
	bool carol = bosh_login("carol", "bosh");
	if (!ok(alice && jid && carol, "alice is online over TCP, bob over WebSocket, carol over BOSH"))
		return done_testing();

	/* Both subscribe to alice's presence and enable stream management. */
	char *m;
	ws_client_send(bob, "<presence/>");
	ws_client_send(bob, "<presence to='alice@localhost' type='subscribe'/>");
	m = bosh("<presence xmlns='jabber:client'/><presence xmlns='jabber:client' to='alice@localhost' "
		 "type='subscribe'/>");
	free(m);
	free(raw_client_wait(alice, "type='subscribe'", 5000));
	free(raw_client_wait(alice, "type='subscribe'", 5000));
	raw_client_send(alice, "<presence to='bob@localhost' type='subscribed'/>");
	raw_client_send(alice, "<presence to='carol@localhost' type='subscribed'/>");
	m = ws_client_wait(bob, "type='subscribed'", 5000);
	ok(m != NULL, "bob (WebSocket) is subscribed to alice");
	free(m);
	m = bosh_until("type='subscribed'");
	has_str(m, "type='subscribed'", "carol (BOSH) is subscribed to alice");
	free(m);
	raw_client_sync(alice);
	ws_client_send(bob, "<enable xmlns='urn:xmpp:sm:3'/>");
	free(ws_client_wait(bob, "<enabled", 5000));
	m = bosh("<enable xmlns='urn:xmpp:sm:3'/>" R);
	has_str(m, "<enabled", "stream management over BOSH (for <r/> barriers)");
	free(m);

	ws_discard(bob);
	ws_client_send(bob, "<inactive xmlns='urn:xmpp:csi:0'/>");
	m = bosh("<inactive xmlns='urn:xmpp:csi:0'/>" R);
	has_str(m, "<a xmlns", "carol says she is inactive");
	free(m);
	ok(ws_barrier(bob), "so does bob");
	for (int i = 1; i <= 5; i++)
		raw_client_send(alice, "<presence><status>mood %d</status></presence>", i);
	raw_client_send(alice, "<message to='bob@localhost' type='chat'>"
			       "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
	raw_client_send(alice, "<message to='carol@localhost' type='chat'>"
			       "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
	raw_client_sync(alice);
	ok(ws_barrier(bob), "a barrier over WebSocket");
	is_int(ws_client_count(bob, "mood"), 0, "WebSocket: inactive bob gets none of alice's presence updates");
	is_int(ws_client_count(bob, "composing"), 0, "nor her chat state");
	m = bosh(R);
	has_str(m, "<a xmlns", "a barrier over BOSH");
	ok(m && !strstr(m, "mood") && !strstr(m, "composing"),
	   "BOSH: inactive carol gets neither the presence updates nor the chat state");
	free(m);

	raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>call bob</body></message>");
	raw_client_send(alice, "<message to='carol@localhost' type='chat'><body>call carol</body></message>");
	char *first = ws_next(bob), *second = ws_next(bob), *third = ws_next(bob);
	has_str(first, "mood 5", "WebSocket: a message arrives at once, after the latest held presence");
	has_str(second, "composing", "then the held chat state");
	has_str(third, "call bob", "then the message");
	free(first);
	free(second);
	free(third);
	m = bosh_until("call carol");
	ok(in_order(m, "mood 5", "composing", "call carol"),
	   "BOSH: the same: the latest presence, the chat state, the message, in order");
	ok(m && !strstr(m, "mood 4"), "and not the older presences");
	free(m);
	ok(ws_barrier(bob), "a barrier over WebSocket");
	is_int(ws_client_count(bob, "mood 4"), 0, "WebSocket: the older presences never come");

	raw_client_send(alice, "<presence><status>mood 6</status></presence>");
	raw_client_send(alice, "<presence><status>mood 7</status></presence>");
	raw_client_sync(alice);
	ok(ws_barrier(bob), "a barrier over WebSocket");
	is_int(ws_client_count(bob, "mood"), 0, "still inactive over WebSocket: nothing");
	m = bosh(R);
	ok(m && !strstr(m, "mood"), "still inactive over BOSH: nothing");
	free(m);
	ws_client_send(bob, "<active xmlns='urn:xmpp:csi:0'/>");
	m = ws_client_wait(bob, "mood 7", 5000);
	ok(m != NULL, "WebSocket: becoming active delivers the latest presence");
	free(m);
	ok(ws_barrier(bob), "a barrier over WebSocket");
	is_int(ws_client_count(bob, "mood 6"), 0, "and not the one it replaced");
	m = bosh("<active xmlns='urn:xmpp:csi:0'/>" R);
	ok(m && strstr(m, "mood 7") && !strstr(m, "mood 6"),
	   "BOSH: becoming active delivers the latest presence and not the one it replaced");
	free(m);
	raw_client_send(alice, "<presence><status>mood 8</status></presence>");
	m = ws_client_wait(bob, "mood 8", 5000);
	ok(m != NULL, "active again, updates flow at once over WebSocket");
	free(m);
	m = bosh_until("mood 8");
	has_str(m, "mood 8", "and over BOSH");
	free(m);

	ws_client_free(bob);
	raw_client_free(alice);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
