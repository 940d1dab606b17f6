/* XMPP over WebSocket (RFC 7395) with a raw WebSocket client: the
 * opening handshake (the xmpp subprotocol or a refusal, version,
 * origin), the framing (<open/>, one element per message with its
 * namespaces, <close/>), SASL (SCRAM over ws:// from loopback, PLAIN
 * only over wss://), bind, messages both ways with a TCP client, stream
 * management resumed across transports (WebSocket -> TCP and TCP ->
 * WebSocket), fragmented messages and pings, and hostile frames (over
 * the stanza size, binary, unmasked), each closed with the right code
 * while a bystander stays served. A second server checks that plain
 * ws:// from a non-loopback address gets no SASL unless
 * consider-secure says a TLS proxy is in front. */
#include "harness.h"
#include "raw_client.h"
#include "ws_client.h"
#include "http_client.h"
#include "../tap.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_SM "urn:xmpp:sm:3"

static int http_port, https_port;

static struct ws_client *ws_connect(const char *protocol, const char *extra, int *status)
{
	return ws_client_connect("127.0.0.1", http_port, false, protocol, extra, status);
}

/* A non-loopback IPv4 address of this machine, or false. */
static bool outside_address(char *out, size_t len)
{
	struct ifaddrs *list;
	if (getifaddrs(&list) != 0)
		return false;
	bool found = false;
	for (struct ifaddrs *i = list; i && !found; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
			continue;
		struct in_addr a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
		if ((ntohl(a.s_addr) >> 24) == 127)
			continue;
		inet_ntop(AF_INET, &a, out, (socklen_t)len);
		found = true;
	}
	freeifaddrs(list);
	return found;
}

static void handshakes(void)
{
	/* The example of RFC 6455 1.3, so that client and server cannot
	 * share a mistake. */
	struct http_client *h = http_client_connect(http_port, false);
	http_client_sendf(h, "GET /xmpp-websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
			     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n");
	struct http_response r = http_client_read(h, 5000);
	is_int(r.status, 101, "the upgrade of RFC 6455 1.3 gets 101");
	char *accept = http_response_header(&r, "Sec-WebSocket-Accept");
	is_str(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "with the Sec-WebSocket-Accept of RFC 6455 1.3");
	free(accept);
	http_response_free(&r);
	http_client_free(h);

	int status;
	struct ws_client *w = ws_connect(NULL, NULL, &status);
	ok(!w && status == 400, "an upgrade without a subprotocol is refused with 400 (got %d)", status);
	ws_client_free(w);
	w = ws_connect("chat", NULL, &status);
	ok(!w && status == 400, "an upgrade with only another subprotocol is refused with 400");
	ws_client_free(w);
	w = ws_connect("xmpp", "Origin: https://evil.example\r\n", &status);
	ok(!w && status == 403, "an origin outside cors-origins is refused with 403");
	ws_client_free(w);
	w = ws_connect("chat, xmpp", "Origin: https://good.example\r\n", &status);
	ok(w != NULL, "xmpp among several subprotocols, from an allowed origin: 101, right Accept, protocol xmpp");
	ws_client_free(w);
}

static void framing_and_login(const struct ph_server *s, struct raw_client *alice)
{
	int status;
	struct ws_client *w = ws_connect("xmpp", NULL, &status);
	ws_client_send(w, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>");
	char *open = ws_client_wait(w, NULL, 5000);
	has_str(open, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'", "the server answers with <open/> in the framing namespace");
	has_str(open, "from='localhost'", "from the host");
	has_str(open, "version='1.0'", "version 1.0");
	free(open);
	char *features = ws_client_wait(w, NULL, 5000);
	has_str(features, "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>",
		"features come in a message of their own that declares the stream prefix");
	ok(features && !strstr(features, "starttls"), "no STARTTLS over WebSocket");
	ok(features && strstr(features, "SCRAM-SHA-1") && !strstr(features, "PLAIN"),
	   "SCRAM offered to ws:// from loopback, PLAIN not (no TLS)");
	free(features);
	char *result = ws_client_auth_plain(w, "bob", "bob-secret");
	has_str(result, "<failure", "PLAIN over plain ws:// fails");
	has_str(result, "encryption-required", "with encryption-required");
	free(result);
	result = ws_client_auth_scram(w, "bob", "bob-secret");
	has_str(result, "<success", "SCRAM-SHA-1 over ws:// succeeds");
	free(result);
	features = ws_client_open(w, "localhost");
	has_str(features, "urn:ietf:params:xml:ns:xmpp-bind", "after the restart <open/>: bind is offered");
	has_str(features, "urn:xmpp:sm:3", "and stream management");
	free(features);
	ws_client_send(w, "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
			  "<resource>web</resource></bind></iq>");
	char *bound = ws_client_wait(w, "id='b'", 5000);
	has_str(bound, "<iq xmlns='jabber:client' type='result' id='b'>", "the bind result declares jabber:client");
	has_str(bound, "<jid>bob@localhost/web</jid>", "bob is bound as bob@localhost/web");
	free(bound);

	raw_client_send(alice, "<message to='bob@localhost/web' type='chat' id='m1'><body>hello web</body></message>");
	char *m = ws_client_wait(w, "hello web", 5000);
	has_str(m, "<message xmlns='jabber:client'", "a message from a TCP client reaches the WebSocket client, namespaced");
	has_str(m, "from='alice@localhost/tcp'", "stamped with the sender");
	free(m);
	ws_client_send(w, "<message xmlns='jabber:client' to='alice@localhost/tcp' type='chat'><body>hello tcp</body></message>");
	m = raw_client_wait(alice, "hello tcp", 5000);
	has_str(m, "from='bob@localhost/web'", "and one from the WebSocket client reaches the TCP client");
	free(m);

	/* A fragmented message with a ping between its fragments. */
	const char *text = "<message xmlns='jabber:client' to='alice@localhost/tcp' type='chat'><body>in three pieces</body></message>";
	size_t third = strlen(text) / 3;
	ws_client_frame(w, 1, false, text, third);
	ws_client_frame(w, 9, true, "are you there", 13);
	ws_client_frame(w, 0, false, text + third, third);
	ws_client_frame(w, 0, true, text + 2 * third, strlen(text) - 2 * third);
	m = raw_client_wait(alice, "in three pieces", 5000);
	ok(m != NULL, "a message in three fragments, with a ping between them, arrives whole");
	free(m);
	ok(ws_client_wait_pongs(w, 1, 5000), "the ping got its pong");

	/* RFC 7395 3.6: a clean close. */
	ws_client_send(w, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
	char *close = ws_client_wait(w, "<close", 5000);
	has_str(close, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>", "<close/> is answered with <close/>");
	free(close);
	is_int(ws_client_wait_close(w, 5000), 1000, "then a WebSocket close frame 1000");
	ok(ws_client_wait_eof(w, 5000), "and the connection closes");
	ws_client_free(w);
	ok(raw_client_sync(alice), "alice's TCP stream is unaffected");
}

/* WebSocket -> TCP: bob's WebSocket session is resumed over TCP with
 * the message he never acknowledged; then TCP -> WebSocket. */
static void resumption(const struct ph_server *s, struct raw_client *alice)
{
	int status;
	struct ws_client *w = ws_connect("xmpp", NULL, &status);
	char *jid = ws_client_login(w, "bob", "bob-secret", "phone");
	is_str(jid, "bob@localhost/phone", "bob logs in over WebSocket with SCRAM");
	free(jid);
	ws_client_send(w, "<enable xmlns='" NS_SM "' resume='true'/>");
	char *enabled = ws_client_wait(w, "<enabled", 5000);
	has_str(enabled, "resume='true'", "stream management with resumption is enabled");
	char previd[64] = "";
	const char *id = enabled ? strstr(enabled, "id='") : NULL;
	if (id)
		sscanf(id + 4, "%63[^']", previd);
	free(enabled);
	raw_client_send(alice, "<message to='bob@localhost/phone' type='chat'><body>unacked one</body></message>");
	char *m = ws_client_wait(w, "unacked one", 5000);
	ok(m != NULL, "bob gets a message and does not acknowledge it");
	free(m);
	ws_client_free(w); /* the connection breaks: no <close/>, no close frame */
	ok(ph_wait_log(s, "bob@localhost/phone waits", 5000), "the session hibernates");

	struct raw_client *t = raw_client_connect(s->c2s_tls_port, true);
	free(raw_client_open(t, "localhost"));
	free(raw_client_auth_plain(t, NULL, "bob", "bob-secret"));
	free(raw_client_open(t, "localhost"));
	raw_client_send(t, "<resume xmlns='" NS_SM "' previd='%s' h='0'/>", previd);
	char *resumed = raw_client_wait(t, "<resumed", 5000);
	has_str(resumed, "<resumed", "the WebSocket session is resumed over TCP");
	free(resumed);
	m = raw_client_wait(t, "unacked one", 5000);
	ok(m != NULL, "and the unacknowledged message is sent again, over TCP");
	free(m);
	raw_client_send(alice, "<message to='bob@localhost/phone' type='chat'><body>after resume</body></message>");
	ok(raw_client_seen(t, "after resume", 5000), "new messages reach the resumed session");
	raw_client_send(t, "<a xmlns='" NS_SM "' h='2'/>");
	raw_client_sync(t);
	raw_client_free(t); /* and breaks again */
	ok(ph_wait_log(s, "bob@localhost/phone waits", 5000), "it hibernates again");

	w = ws_connect("xmpp", NULL, &status);
	free(ws_client_open(w, "localhost"));
	free(ws_client_auth_scram(w, "bob", "bob-secret"));
	free(ws_client_open(w, "localhost"));
	ws_client_send(w, "<resume xmlns='" NS_SM "' previd='%s' h='2'/>", previd);
	resumed = ws_client_wait(w, "<resumed", 5000);
	has_str(resumed, "<resumed xmlns='urn:xmpp:sm:3'", "and resumed over WebSocket again (TCP -> WebSocket)");
	free(resumed);
	raw_client_send(alice, "<message to='bob@localhost/phone' type='chat'><body>back on the web</body></message>");
	m = ws_client_wait(w, "back on the web", 5000);
	has_str(m, "xmlns='jabber:client'", "messages flow to the WebSocket again");
	free(m);
	ws_client_free(w);
}

static void hostile(const struct ph_server *s, struct raw_client *alice)
{
	int status;
	struct ws_client *w = ws_connect("xmpp", NULL, &status);
	char *jid = ws_client_login(w, "carol", "carol-secret", "x");
	ok(jid != NULL, "carol is logged in over WebSocket");
	free(jid);
	char big[5000];
	memset(big, 'a', sizeof(big));
	ws_client_frame(w, 1, true, big, sizeof(big));
	char *error = ws_client_wait(w, "stream:error", 5000);
	has_str(error, "<policy-violation", "a message over max-stanza-size: stream error policy-violation");
	free(error);
	is_int(ws_client_wait_close(w, 5000), 1009, "then close code 1009 (message too big)");
	ok(ws_client_wait_eof(w, 5000), "and the connection closes");
	ws_client_free(w);

	w = ws_connect("xmpp", NULL, &status);
	free(ws_client_open(w, "localhost"));
	ws_client_frame(w, 2, true, "<presence/>", 11);
	error = ws_client_wait(w, "stream:error", 5000);
	has_str(error, "unsupported-stanza-type", "a binary message: a stream error");
	free(error);
	is_int(ws_client_wait_close(w, 5000), 1003, "and close code 1003 (unsupported data)");
	ws_client_free(w);

	w = ws_connect("xmpp", NULL, &status);
	ws_client_frame_unmasked(w, 1, "<open/>", 7);
	is_int(ws_client_wait_close(w, 5000), 1002, "an unmasked client frame: close code 1002 (protocol error)");
	ws_client_free(w);

	w = ws_connect("xmpp", NULL, &status);
	free(ws_client_open(w, "localhost"));
	ws_client_send(w, "<message><body>unclosed");
	error = ws_client_wait(w, "stream:error", 5000);
	has_str(error, "not-well-formed", "a message that is not one whole element: not-well-formed");
	free(error);
	ws_client_free(w);

	ok(raw_client_sync(alice), "the TCP bystander is served throughout");
}

/* Plain ws:// from a non-loopback address: no SASL; with
 * consider-secure, SASL (PLAIN too) as over TLS. */
static void outside(void)
{
	char address[64];
	if (!outside_address(address, sizeof(address))) {
		ok(1, "# SKIP no non-loopback IPv4 address on this machine");
		ok(1, "# SKIP no non-loopback IPv4 address on this machine");
		ok(1, "# SKIP no non-loopback IPv4 address on this machine");
		return;
	}
	for (int secure = 0; secure <= 1; secure++) {
		struct ph_server s;
		int port = ph_free_port();
		char extra[300];
		snprintf(extra, sizeof(extra), "<http address=\"*\" port=\"%d\" consider-secure=\"%s\"/>",
			 port, secure ? "true" : "false");
		ph_server_init(&s, extra);
		if (ph_server_start(&s, NULL) != 0) {
			ok(0, "parleyd starts");
			continue;
		}
		ph_add_user(&s, "dave");
		int status;
		struct ws_client *w = ws_client_connect(address, port, false, "xmpp", NULL, &status);
		char *features = w ? ws_client_open(w, "localhost") : NULL;
		if (!secure) {
			ok(features && !strstr(features, "<mechanisms"),
			   "ws:// from %s: no SASL mechanisms offered", address);
			char *result = w ? ws_client_auth_plain(w, "dave", "dave-secret") : NULL;
			has_str(result, "<policy-violation", "and <auth/> is a policy-violation");
			free(result);
		} else {
			char *result = w ? ws_client_auth_plain(w, "dave", "dave-secret") : NULL;
			has_str(result, "<success", "with consider-secure, PLAIN over ws:// from %s succeeds", address);
			free(result);
		}
		free(features);
		ws_client_free(w);
		ph_server_stop(&s);
		ph_server_cleanup(&s);
	}
}

/* What an idle logged-in WebSocket session costs (reported, not judged:
 * a figure for the notes, and a check that a hundred log in). */
static void idle_memory(const struct ph_server *s)
{
	enum { USERS = 4, PER = 25 };
	static struct ws_client *w[USERS * PER];
	for (int u = 0; u < USERS; u++) {
		char name[16];
		snprintf(name, sizeof(name), "idle%d", u);
		ph_add_user(s, name);
	}
	long before = ph_rss_kib(s->pid);
	int bound = 0;
	for (int i = 0; i < USERS * PER; i++) {
		char name[16], password[32], resource[16];
		snprintf(name, sizeof(name), "idle%d", i / PER);
		snprintf(password, sizeof(password), "%s-secret", name);
		snprintf(resource, sizeof(resource), "r%d", i);
		int status;
		w[i] = ws_connect("xmpp", NULL, &status);
		char *jid = w[i] ? ws_client_login(w[i], name, password, resource) : NULL;
		if (jid)
			bound++;
		free(jid);
	}
	is_int(bound, USERS * PER, "a hundred WebSocket sessions log in");
	long after = ph_rss_kib(s->pid);
	diag("parleyd RSS %ld KiB before, %ld KiB with %d idle WebSocket sessions (%.1f KiB each)",
	     before, after, USERS * PER, (double)(after - before) / (USERS * PER));
	for (int i = 0; i < USERS * PER; i++)
		ws_client_free(w[i]);
}

int main(void)
{
	struct ph_server s;
	http_port = ph_free_port();
	do
		https_port = ph_free_port();
	while (https_port == http_port);
	ph_server_init(&s, NULL);
	char extra[300];
	snprintf(extra, sizeof(extra),
		 "<http address=\"127.0.0.1\" port=\"%d\" tls-port=\"%d\" cors-origins=\"https://good.example\"/>",
		 http_port, https_port);
	char *config = ph_standard_config(&s, NULL, extra);
	char *limited = ph_config_with_attributes(config, "c2s", "max-stanza-size=\"4096\"");
	ph_server_write_config(&s, limited);
	free(config);
	free(limited);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with WebSocket on its HTTP listener"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	ph_add_user(&s, "carol");
	struct raw_client *alice = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "tcp");
	if (!ok(alice != NULL, "alice is online over TCP"))
		return done_testing();

	handshakes();
	framing_and_login(&s, alice);

	/* PLAIN over wss:// */
	int status;
	struct ws_client *w = ws_client_connect("127.0.0.1", https_port, true, "xmpp", NULL, &status);
	ok(w != NULL, "wss:// handshake");
	char *features = w ? ws_client_open(w, "localhost") : NULL;
	has_str(features, "<mechanism>PLAIN</mechanism>", "PLAIN is offered over wss://");
	has_str(features, "SCRAM-SHA-256-PLUS", "and SCRAM with channel binding");
	free(features);
	char *result = w ? ws_client_auth_plain(w, "carol", "carol-secret") : NULL;
	has_str(result, "<success", "PLAIN over wss:// succeeds");
	free(result);
	ws_client_free(w);

	resumption(&s, alice);
	hostile(&s, alice);
	idle_memory(&s);
	char *out = NULL;
	const char *status_args[] = { "status", NULL };
	ph_ctl(&s, status_args, NULL, &out, NULL);
	has_str(out, "websocket-connections", "parleyctl status counts WebSocket connections");
	free(out);
	raw_client_free(alice);
	is_int(ph_server_stop(&s), 0, "parleyd stops cleanly");
	ph_server_cleanup(&s);
	outside();
	return done_testing();
}
