/* Federation between two real parleyd instances on loopback, a.localhost
 * and b.localhost, each with a <remote route> to the other's s2s port.
 *
 * Part 1, self-signed certificates and Server Dialback over TLS:
 * messages and IQs both ways, stanzas queued while the stream is set up
 * arrive in order, errors from the remote server come back, an
 * unreachable domain bounces every queued stanza with
 * remote-server-not-found and a silent one with remote-server-timeout, a
 * raw remote server that authenticated a.localhost by dialback (with the
 * key A's configured secret gives) may send from a.localhost but gets
 * invalid-from for another domain and not-authorized before
 * authenticating, a wrong dialback key is refused, an idle stream
 * closes and is made again by the next stanza, and with XEP-0198 on the
 * stream a stanza the peer never acknowledged bounces when the
 * connection dies (a raw TLS peer of the test's own plays that server).
 * Part 2, the default policy (valid certificates only) refuses the
 * self-signed peer: the stanza bounces.
 * Part 3, certificates from a CA the test makes and both servers trust
 * (ca-file): SASL EXTERNAL both ways; a.localhost's certificate names it
 * with a DNS-ID, b.localhost's only with an XmppAddr (neither in the CN);
 * with bidi="false" so that each side makes its own stream. Then the
 * same with XEP-0288 (the default): a's stream to b is bidirectional,
 * b's answers go back over it and b never connects to a.
 * Part 4, RFC 6121 across the two servers: offline storage and archiving
 * of a remote sender's message, the subscription handshake to 'both',
 * presence broadcast, probes at login and unavailable at logout.
 * Part 5, DNS: a.test finds b.test through SRV records served by a tiny
 * DNS responder of the test's own (UDP, loopback only, answers a fixed
 * table), tries them in priority order (a dead port first, then the
 * direct TLS one), and a domain without any record bounces. */
#include "harness.h"
#include "dns_responder.h"
#include "raw_client.h"
#include "../tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

struct side {
	struct ph_server server;
	const char *domain;
	int s2s_port, s2s_tls_port;
};

static char *config_for(struct side *self, const struct side *other, const char *s2s_attributes,
			const char *host_xml, const char *extra)
{
	char s2s[2048];
	snprintf(s2s, sizeof(s2s),
		 "  <s2s address=\"127.0.0.1\" port=\"%d\" tls-port=\"%d\" %s/>\n"
		 "  <remote name=\"%s\" route=\"127.0.0.1:%d\"/>\n%s",
		 self->s2s_port, self->s2s_tls_port, s2s_attributes, other->domain, other->s2s_port,
		 extra ? extra : "");
	char *config = ph_standard_config(&self->server, NULL, s2s);
	char host[512];
	if (!host_xml) {
		snprintf(host, sizeof(host), "<host name=\"%s\"/>", self->domain);
		host_xml = host;
	}
	char *patched = ph_replace(config, "<host name=\"localhost\"/>", host_xml);
	free(config);
	return patched;
}

static struct raw_client *login(const struct side *side, const char *user, const char *resource)
{
	struct raw_client *c = raw_client_connect(side->server.c2s_tls_port, true);
	char password[64];
	snprintf(password, sizeof(password), "%s-secret", user);
	if (c && !raw_client_login(c, side->domain, user, password, resource)) {
		raw_client_free(c);
		return NULL;
	}
	return c;
}

/* XEP-0220 2.4 with A's configured secret. */
static void dialback_key(const char *secret, const char *receiving, const char *originating,
			 const char *id, char out[65])
{
	unsigned char hashed[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)secret, strlen(secret), hashed);
	char text[512];
	snprintf(text, sizeof(text), "%s %s %s", receiving, originating, id);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	HMAC(EVP_sha256(), hashed, sizeof(hashed), (const unsigned char *)text, strlen(text), mac,
	     &len);
	for (unsigned int i = 0; i < len; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

static bool attribute(const char *element, const char *name, char *out, size_t size)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), " %s='", name);
	const char *at = element ? strstr(element, pattern) : NULL;
	char quote = '\'';
	if (!at) {
		snprintf(pattern, sizeof(pattern), " %s=\"", name);
		at = element ? strstr(element, pattern) : NULL;
		quote = '"';
	}
	if (!at)
		return false;
	at += strlen(pattern);
	size_t len = strcspn(at, quote == '\'' ? "'" : "\"");
	if (len + 1 > size)
		return false;
	memcpy(out, at, len);
	out[len] = '\0';
	return true;
}

/* A raw remote server connected to b's direct TLS s2s port, claiming
 * `from`; returns the stream id B gave it. */
static struct raw_client *raw_server_from(const struct side *b, const char *from, char *id,
					  size_t id_size)
{
	struct raw_client *c = raw_client_connect(b->s2s_tls_port, true);
	if (!c)
		return NULL;
	raw_client_send(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
			   "xmlns:stream='http://etherx.jabber.org/streams' "
			   "xmlns:db='jabber:server:dialback' from='%s' to='%s' "
			   "version='1.0'>",
			from, b->domain);
	char *header = raw_client_wait(c, "<stream:stream", 5000);
	bool have = attribute(header, "id", id, id_size);
	free(header);
	char *features = raw_client_wait(c, "<stream:features", 5000);
	free(features);
	if (!have) {
		raw_client_free(c);
		return NULL;
	}
	return c;
}

static struct raw_client *raw_server(const struct side *b, char *id, size_t id_size)
{
	return raw_server_from(b, "a.localhost", id, id_size);
}

static bool no_unauthenticated_streams(void *arg)
{
	const char *args[] = { "s2s", NULL };
	char *out = NULL;
	ph_ctl(arg, args, NULL, &out, NULL);
	bool none = out && !strstr(out, "not authenticated");
	free(out);
	return none;
}

/* A listening socket that never answers: connections hang in the backlog. */
static int silent_listener(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, 8) != 0 ||
	    getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
		return -1;
	*port = ntohs(addr.sin_port);
	return fd;
}

/* ---- a raw remote server that a.localhost connects to ---------------------- */

struct raw_peer {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	char buf[65536];
	size_t len;
};

static bool peer_send(struct raw_peer *p, const char *text)
{
	size_t len = strlen(text);
	if (p->ssl)
		return SSL_write(p->ssl, text, (int)len) == (int)len;
	return write(p->fd, text, len) == (ssize_t)len;
}

/* Reads until `needle` arrived, then drops everything up to its end. */
static bool peer_wait(struct raw_peer *p, const char *needle, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms;) {
		p->buf[p->len] = '\0';
		char *at = strstr(p->buf, needle);
		if (at) {
			size_t end = (size_t)(at - p->buf) + strlen(needle);
			memmove(p->buf, p->buf + end, p->len - end);
			p->len -= end;
			return true;
		}
		if (!(p->ssl && SSL_pending(p->ssl) > 0)) {
			struct pollfd poll_fd = { .fd = p->fd, .events = POLLIN };
			if (poll(&poll_fd, 1, 100) <= 0) {
				waited += 100;
				continue;
			}
		}
		ssize_t n = p->ssl ? SSL_read(p->ssl, p->buf + p->len, (int)(sizeof(p->buf) - 1 - p->len))
				   : read(p->fd, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
		if (n <= 0)
			return false;
		p->len += (size_t)n;
	}
	return false;
}

/* Plays raw.localhost for a.localhost's outgoing stream: STARTTLS (with
 * a's own self-signed certificate: a allows dialback for it), dialback
 * (it simply says valid: it is the receiving server) and XEP-0198. */
static bool peer_accept(struct raw_peer *p, int listener, const struct side *a, bool bidi)
{
	memset(p, 0, sizeof(*p));
	p->fd = -1;
	struct pollfd poll_fd = { .fd = listener, .events = POLLIN };
	if (poll(&poll_fd, 1, 10000) <= 0)
		return false;
	p->fd = accept(listener, NULL, NULL);
	if (p->fd < 0 || !peer_wait(p, "version='1.0'>", 5000))
		return false;
	peer_send(p, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
		     "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
		     "id='raw1' from='raw.localhost' to='a.localhost' version='1.0'><stream:features>"
		     "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
		     "</stream:features>");
	if (!peer_wait(p, "<starttls", 5000))
		return false;
	peer_send(p, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
	p->len = 0;
	char cert[512], key[512];
	snprintf(cert, sizeof(cert), "%s/certs/a.localhost.crt", a->server.storage_path);
	snprintf(key, sizeof(key), "%s/certs/a.localhost.key", a->server.storage_path);
	p->ctx = SSL_CTX_new(TLS_server_method());
	if (SSL_CTX_use_certificate_file(p->ctx, cert, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(p->ctx, key, SSL_FILETYPE_PEM) != 1)
		return false;
	p->ssl = SSL_new(p->ctx);
	SSL_set_fd(p->ssl, p->fd);
	if (SSL_accept(p->ssl) != 1 || !peer_wait(p, "version='1.0'>", 5000))
		return false;
	peer_send(p, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
		     "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
		     "id='raw2' from='raw.localhost' to='a.localhost' version='1.0'><stream:features>"
		     "<dialback xmlns='urn:xmpp:features:dialback'/><sm xmlns='urn:xmpp:sm:3'/>");
	peer_send(p, bidi ? "<bidi xmlns='urn:xmpp:features:bidi'/></stream:features>"
			  : "</stream:features>");
	/* XEP-0288: <bidi/> comes before authentication. */
	if (bidi && !peer_wait(p, "<bidi xmlns='urn:xmpp:bidi'/>", 5000))
		return false;
	if (!peer_wait(p, "</db:result>", 5000))
		return false;
	return peer_send(p, "<db:result from='raw.localhost' to='a.localhost' type='valid'/>");
}

/* The connection dies: no close_notify, no </stream:stream>. */
static void peer_drop(struct raw_peer *p)
{
	if (p->ssl)
		SSL_free(p->ssl);
	if (p->ctx)
		SSL_CTX_free(p->ctx);
	if (p->fd >= 0)
		close(p->fd);
}

static bool start_pair(struct side *a, struct side *b, const char *a_attributes,
		       const char *b_attributes, const char *a_host, const char *b_host,
		       const char *a_extra)
{
	char *config = config_for(a, b, a_attributes, a_host, a_extra);
	ph_server_write_config(&a->server, config);
	free(config);
	config = config_for(b, a, b_attributes, b_host, NULL);
	ph_server_write_config(&b->server, config);
	free(config);
	return ph_server_start(&a->server, NULL) == 0 && ph_server_start(&b->server, NULL) == 0;
}

static void dialback_part(struct side *a, struct side *b)
{
	int dead_port = ph_free_port();
	int silent_port = 0, raw_port = 0;
	int silent_fd = silent_listener(&silent_port);
	int raw_fd = silent_listener(&raw_port);
	char extra[768];
	snprintf(extra, sizeof(extra),
		 "  <remote name=\"dead.localhost\" route=\"127.0.0.1:%d\"/>\n"
		 "  <remote name=\"silent.localhost\" route=\"127.0.0.1:%d\"/>\n"
		 "  <remote name=\"refused.localhost\" authentication=\"refuse\"/>\n"
		 "  <remote name=\"raw.localhost\" route=\"127.0.0.1:%d\"/>\n",
		 dead_port, silent_port, raw_port);
	bool started = start_pair(a, b,
				  "authentication=\"dialback\" dialback-secret=\"a-secret\" "
				  "idle-timeout=\"1s\" negotiation-timeout=\"1s\" connect-timeout=\"1s\"",
				  "authentication=\"dialback\" max-streams-per-domain=\"2\" "
				  "max-unauthenticated=\"4\"",
				  NULL, NULL, extra);
	if (!ok(started, "a.localhost and b.localhost start with federation (dialback allowed)"))
		return;
	ph_add_user_at(&a->server, "alice", "a.localhost");
	ph_add_user_at(&b->server, "bob", "b.localhost");
	struct raw_client *alice = login(a, "alice", "desk");
	struct raw_client *bob = login(b, "bob", "phone");
	if (!ok(alice && bob, "alice@a.localhost and bob@b.localhost log in"))
		return;
	raw_client_send(alice, "<presence/>");
	raw_client_send(bob, "<presence/>");
	raw_client_sync(alice);
	raw_client_sync(bob);

	/* Five messages in one go: queued while the stream is set up. */
	raw_client_send(alice,
			"<message to='bob@b.localhost' type='chat' id='q1'><body>one</body></message>"
			"<message to='bob@b.localhost' type='chat' id='q2'><body>two</body></message>"
			"<message to='bob@b.localhost/phone' type='chat' id='q3'><body>three</body></message>"
			"<message to='bob@b.localhost' type='chat' id='q4'><body>four</body></message>"
			"<message to='bob@b.localhost' type='chat' id='q5'><body>five</body></message>");
	static const char *const bodies[] = { "one", "two", "three", "four", "five" };
	bool in_order = true;
	for (size_t i = 0; i < 5; i++) {
		char *m = raw_client_wait(bob, "<message", 10000);
		if (!m || !strstr(m, bodies[i]) || !strstr(m, "from='alice@a.localhost/desk'")) {
			diag("message %zu: %s", i, m ? m : "(none)");
			in_order = false;
		}
		free(m);
	}
	ok(in_order, "bob gets alice's five queued messages, in order, from her full JID");
	ok(ph_wait_log(&a->server, "a.localhost -> b.localhost authenticated with dialback", 5000),
	   "a's outgoing stream authenticated with dialback");
	ok(ph_wait_log(&b->server, "incoming stream from a.localhost authenticated with dialback", 5000),
	   "b verified a.localhost with a's authoritative server");
	ok(ph_wait_log(&a->server, "authenticated with dialback; sending 5 queued stanzas with stream management", 5000),
	   "the stream uses XEP-0198 (b offers it)");

	/* And back. */
	raw_client_send(bob, "<message to='alice@a.localhost/desk' type='chat' id='r1'><body>hello alice</body></message>");
	char *answer = raw_client_wait(alice, "hello alice", 10000);
	has_str(answer, "from='bob@b.localhost/phone'", "alice gets bob's answer");
	free(answer);

	/* IQs both ways: to a remote user, and to the remote server itself. */
	raw_client_send(alice, "<iq to='bob@b.localhost/phone' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>");
	answer = raw_client_wait(bob, "id='v1'", 10000);
	has_str(answer, "from='alice@a.localhost/desk'", "bob gets alice's IQ");
	free(answer);
	raw_client_send(bob, "<iq to='alice@a.localhost/desk' type='result' id='v1'><query xmlns='jabber:iq:version'><name>bobclient</name></query></iq>");
	answer = raw_client_wait(alice, "id='v1'", 10000);
	has_str(answer, "<name>bobclient</name>", "and alice bob's result");
	free(answer);
	raw_client_send(bob, "<iq to='a.localhost' type='get' id='v2'><query xmlns='jabber:iq:version'/></iq>");
	answer = raw_client_wait(bob, "id='v2'", 10000);
	has_str(answer, "type='result'", "bob asks a.localhost's version and gets a result");
	has_str(answer, "from='a.localhost'", "from a.localhost");
	free(answer);

	/* parleyctl s2s lists the streams. */
	const char *s2s_args[] = { "s2s", NULL };
	char *listing = NULL;
	is_int(ph_ctl(&a->server, s2s_args, NULL, &listing, NULL), 0, "parleyctl s2s answers");
	has_str(listing, "out a.localhost -> b.localhost: ready, dialback, TLS",
		"it lists the outgoing stream with its authentication and TLS");
	has_str(listing, "from b.localhost: b.localhost by dialback, TLS",
		"and the incoming one");
	free(listing);

	/* Errors from the remote server come back to the sender. */
	raw_client_send(alice, "<message to='nobody@b.localhost' type='chat' id='e1'><body>?</body></message>");
	answer = raw_client_wait(alice, "id='e1'", 10000);
	has_str(answer, "<service-unavailable", "a message to a user b does not have bounces from b");
	has_str(answer, "from='nobody@b.localhost'", "from the address alice wrote to");
	free(answer);

	/* Unreachable: every queued stanza bounces. */
	raw_client_send(alice,
			"<message to='x@dead.localhost' type='chat' id='d1'><body>1</body></message>"
			"<message to='y@dead.localhost' type='chat' id='d2'><body>2</body></message>"
			"<iq to='dead.localhost' type='get' id='d3'><ping xmlns='urn:xmpp:ping'/></iq>");
	int bounced = 0;
	for (int i = 1; i <= 3; i++) {
		char needle[16];
		snprintf(needle, sizeof(needle), "id='d%d'", i);
		answer = raw_client_wait(alice, needle, 10000);
		if (answer && strstr(answer, "<remote-server-not-found"))
			bounced++;
		else
			diag("d%d: %s", i, answer ? answer : "(none)");
		free(answer);
	}
	is_int(bounced, 3, "all three stanzas to an unreachable server bounce with remote-server-not-found");

	/* A server that accepts the connection but never speaks. */
	raw_client_send(alice, "<message to='x@silent.localhost' type='chat' id='t1'><body>?</body></message>");
	answer = raw_client_wait(alice, "id='t1'", 15000);
	has_str(answer, "<remote-server-timeout", "a silent server: remote-server-timeout");
	free(answer);

	/* Refused by policy. */
	raw_client_send(alice, "<message to='x@refused.localhost' type='chat' id='p1'><body>?</body></message>");
	answer = raw_client_wait(alice, "id='p1'", 10000);
	has_str(answer, "<remote-server-not-found", "a refused domain bounces at once");
	free(answer);

	/* Limits on incoming streams: two per remote domain, four not yet
	 * authenticated in all (b's only authenticated stream is a's now). */
	char id[128];
	struct raw_client *c1 = raw_server_from(b, "c.localhost", id, sizeof(id));
	struct raw_client *c2 = raw_server_from(b, "c.localhost", id, sizeof(id));
	ok(c1 && c2, "two streams from c.localhost are accepted");
	struct raw_client *c3 = raw_client_connect(b->s2s_tls_port, true);
	if (c3)
		raw_client_send(c3, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
				    "xmlns:stream='http://etherx.jabber.org/streams' from='c.localhost' "
				    "to='b.localhost' version='1.0'>");
	answer = c3 ? raw_client_wait(c3, "<stream:error", 5000) : NULL;
	has_str(answer, "<policy-violation", "a third from the same domain: policy-violation");
	free(answer);
	/* Accepted in order: x and y are b's by the time z comes. */
	struct raw_client *x = raw_client_connect(b->s2s_port, false);
	struct raw_client *y = raw_client_connect(b->s2s_port, false);
	struct raw_client *z = raw_client_connect(b->s2s_port, false);
	if (z)
		raw_client_send(z, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
				   "xmlns:stream='http://etherx.jabber.org/streams' to='b.localhost' "
				   "version='1.0'>");
	answer = z ? raw_client_wait(z, "<stream:stream", 3000) : NULL;
	ok(x && y && z && !answer && raw_client_closed(z),
	   "a fifth unauthenticated stream is closed at once");
	free(answer);
	ok(ph_wait_log(&b->server, "unauthenticated incoming streams: refusing", 5000),
	   "and b says why");
	raw_client_free(c1);
	raw_client_free(c2);
	raw_client_free(c3);
	raw_client_free(x);
	raw_client_free(y);
	raw_client_free(z);
	ok(ph_wait_for(no_unauthenticated_streams, &b->server, 10000),
	   "b forgets the closed streams");

	/* A raw remote server: not-authorized before authentication. */
	struct raw_client *mallory = raw_server(b, id, sizeof(id));
	ok(mallory != NULL, "a raw server opens a stream to b over direct TLS");
	if (mallory) {
		raw_client_send(mallory, "<message from='x@a.localhost' to='bob@b.localhost'><body>early</body></message>");
		answer = raw_client_wait(mallory, "<stream:error", 5000);
		has_str(answer, "<not-authorized", "a stanza before authentication: not-authorized");
		free(answer);
		raw_client_free(mallory);
	}
	/* A wrong dialback key. */
	mallory = raw_server(b, id, sizeof(id));
	if (mallory) {
		raw_client_send(mallory, "<db:result from='a.localhost' to='b.localhost'>00ff</db:result>");
		answer = raw_client_wait(mallory, "<db:result", 10000);
		has_str(answer, "type='invalid'", "a wrong dialback key is invalid");
		free(answer);
		raw_client_free(mallory);
	}
	/* The right key (A's configured secret): authenticated as a.localhost. */
	mallory = raw_server(b, id, sizeof(id));
	if (mallory) {
		char key[65];
		dialback_key("a-secret", "b.localhost", "a.localhost", id, key);
		raw_client_send(mallory, "<db:result from='a.localhost' to='b.localhost'>%s</db:result>", key);
		answer = raw_client_wait(mallory, "<db:result", 10000);
		has_str(answer, "type='valid'", "the key a's secret gives is valid");
		free(answer);
		raw_client_send(mallory, "<message from='carol@a.localhost/x' to='bob@b.localhost/phone' type='chat'><body>from carol</body></message>");
		answer = raw_client_wait(bob, "from carol", 10000);
		ok(answer != NULL, "it may send from a.localhost");
		free(answer);
		raw_client_send(mallory, "<message from='eve@evil.localhost' to='bob@b.localhost/phone' type='chat'><body>spoofed</body></message>");
		answer = raw_client_wait(mallory, "<stream:error", 10000);
		has_str(answer, "<invalid-from", "but a 'from' at another domain is invalid-from");
		free(answer);
		raw_client_sync(bob);
		is_int(raw_client_count(bob, "spoofed"), 0, "and the spoofed message never reaches bob");
		raw_client_free(mallory);
	}
	/* A stanza for a domain b does not serve. */
	mallory = raw_server(b, id, sizeof(id));
	if (mallory) {
		char key[65];
		dialback_key("a-secret", "b.localhost", "a.localhost", id, key);
		raw_client_send(mallory, "<db:result from='a.localhost' to='b.localhost'>%s</db:result>", key);
		answer = raw_client_wait(mallory, "<db:result", 10000);
		free(answer);
		raw_client_send(mallory, "<message from='carol@a.localhost' to='x@elsewhere.localhost'><body>relay?</body></message>");
		answer = raw_client_wait(mallory, "<stream:error", 10000);
		has_str(answer, "<host-unknown", "a stanza for a domain b does not serve: host-unknown");
		free(answer);
		raw_client_free(mallory);
	}

	/* XEP-0198 on the stream: acknowledged stanzas are done, a stanza the
	 * peer never acknowledged bounces when the connection dies. */
	raw_client_send(alice, "<message to='x@raw.localhost' type='chat' id='u0'><body>acked</body></message>");
	struct raw_peer peer;
	bool accepted = peer_accept(&peer, raw_fd, a, false);
	ok(accepted, "a connects to the raw peer and authenticates with dialback");
	ok(accepted && peer_wait(&peer, "<enable xmlns='urn:xmpp:sm:3'/>", 5000), "and enables stream management");
	ok(accepted && peer_wait(&peer, "acked", 5000), "the first message arrives");
	ok(accepted && peer_wait(&peer, "<r xmlns='urn:xmpp:sm:3'/>", 5000), "with a request for an ack");
	if (accepted) {
		peer_send(&peer, "<enabled xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='1'/>");
		raw_client_send(alice, "<message to='x@raw.localhost' type='chat' id='u1'><body>never acked</body></message>");
		ok(peer_wait(&peer, "never acked", 5000), "the second message arrives, and is not acknowledged");
	}
	peer_drop(&peer);
	answer = raw_client_wait(alice, "id='u1'", 10000);
	has_str(answer, "<remote-server-timeout", "when the connection dies it bounces to alice");
	free(answer);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "id='u0'"), 0, "the acknowledged one does not");

	/* XEP-0288 with the raw peer: a asks for both directions; the peer's
	 * stanzas come back on a's own stream, from its domain only. */
	raw_client_send(alice, "<message to='x@raw.localhost' type='chat' id='b0'><body>bidi out</body></message>");
	accepted = peer_accept(&peer, raw_fd, a, true);
	ok(accepted, "the raw peer offers XEP-0288 and a sends <bidi/> before dialback");
	ok(accepted && peer_wait(&peer, "<body>bidi out</body>", 5000), "alice's message arrives");
	if (accepted) {
		peer_send(&peer, "<message from='x@raw.localhost/r' to='alice@a.localhost/desk' type='chat'>"
				 "<body>back on your stream</body></message>");
		answer = raw_client_wait(alice, "back on your stream", 10000);
		has_str(answer, "from='x@raw.localhost/r'", "the peer's answer on a's outgoing stream reaches alice");
		free(answer);
		peer_send(&peer, "<message from='m@evil.localhost' to='alice@a.localhost/desk' type='chat'>"
				 "<body>spoofed</body></message>");
		ok(peer_wait(&peer, "<invalid-from", 5000),
		   "a stanza from another domain on it gets the stream error invalid-from");
	}
	peer_drop(&peer);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "spoofed"), 0, "and does not reach alice");
	raw_client_discard(alice);
	close(raw_fd);

	/* Idle streams close; the next stanza opens a new one. */
	ok(ph_wait_log(&a->server, "a.localhost -> b.localhost idle: closing", 10000),
	   "a's idle stream to b closes after idle-timeout");
	int streams_before = ph_log_count(&a->server, "new stream a.localhost -> b.localhost");
	raw_client_send(alice, "<message to='bob@b.localhost' type='chat' id='late'><body>after idle</body></message>");
	answer = raw_client_wait(bob, "after idle", 10000);
	ok(answer != NULL, "a message after the idle close is delivered");
	free(answer);
	ok(ph_log_count(&a->server, "new stream a.localhost -> b.localhost") > streams_before,
	   "over a new stream");

	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&a->server), 0, "a stops cleanly");
	is_int(ph_server_stop(&b->server), 0, "b stops cleanly");
	if (silent_fd >= 0)
		close(silent_fd);
}

/* Default policy: valid certificates only; the self-signed peer is refused. */
static void strict_part(struct side *a, struct side *b)
{
	bool started = start_pair(a, b, "", "", NULL, NULL, NULL);
	if (!ok(started, "both restart with the default policy (valid certificates only)"))
		return;
	struct raw_client *alice = login(a, "alice", "desk");
	raw_client_send(alice, "<message to='bob@b.localhost' type='chat' id='s1'><body>strict</body></message>");
	char *answer = raw_client_wait(alice, "id='s1'", 15000);
	has_str(answer, "<remote-server-not-found", "a self-signed peer is refused: the message bounces");
	free(answer);
	ok(ph_wait_log(&a->server, "certificate is not valid", 5000), "and a says why");
	raw_client_free(alice);
	is_int(ph_server_stop(&a->server), 0, "a stops cleanly");
	is_int(ph_server_stop(&b->server), 0, "b stops cleanly");
}

static bool make_certificates(const char *dir)
{
	char script[4096];
	snprintf(script, sizeof(script),
		 "set -e; cd '%s';"
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
		 " -subj /CN=TestCA -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE"
		 " -addext keyUsage=critical,keyCertSign 2>/dev/null;"
		 "printf 'subjectAltName=DNS:a.localhost\\nextendedKeyUsage=serverAuth,clientAuth\\n'"
		 " > a.localhost.ext;"
		 "printf 'subjectAltName=otherName:1.3.6.1.5.5.7.8.5;UTF8:b.localhost\\n"
		 "extendedKeyUsage=serverAuth,clientAuth\\n' > b.localhost.ext;"
		 "for h in a.localhost b.localhost; do"
		 " openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=server-$h"
		 "  -keyout $h.key -out $h.csr 2>/dev/null;"
		 " openssl x509 -req -in $h.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
		 "  -extfile $h.ext -out $h.pem 2>/dev/null;"
		 "done",
		 dir);
	const char *argv[] = { "/bin/sh", "-c", script, NULL };
	return ph_run(argv, NULL, NULL, NULL, 30000) == 0;
}

/* The value of `name: N` in parleyctl status output, -1 when absent. */
static long status_counter(const struct ph_server *s, const char *name)
{
	const char *args[] = { "status", NULL };
	char *out = NULL;
	ph_ctl(s, args, NULL, &out, NULL);
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\n%s: ", name);
	const char *at = out ? strstr(out, pattern) : NULL;
	long value = at ? strtol(at + strlen(pattern), NULL, 10) : -1;
	free(out);
	return value;
}

static void external_part(struct side *a, struct side *b, bool bidi)
{
	const char *dir = a->server.dir;
	if (!ok(make_certificates(dir), "a test CA and certificates for both domains are made"))
		return;
	char a_host[1024], b_host[1024], attributes[600];
	snprintf(a_host, sizeof(a_host),
		 "<host name=\"a.localhost\"><certificate file=\"%s/a.localhost.pem\" key=\"%s/a.localhost.key\"/></host>",
		 dir, dir);
	snprintf(b_host, sizeof(b_host),
		 "<host name=\"b.localhost\"><certificate file=\"%s/b.localhost.pem\" key=\"%s/b.localhost.key\"/></host>",
		 dir, dir);
	snprintf(attributes, sizeof(attributes), "ca-file=\"%s/ca.pem\"%s", dir,
		 bidi ? "" : " bidi=\"false\"");
	int dialbacks_before = ph_log_count(&a->server, "with dialback") +
			       ph_log_count(&b->server, "with dialback");
	bool started = start_pair(a, b, attributes, attributes, a_host, b_host, NULL);
	if (!ok(started, "both start with CA-signed certificates and the CA trusted"))
		return;
	struct raw_client *alice = login(a, "alice", "desk");
	struct raw_client *bob = login(b, "bob", "phone");
	raw_client_send(alice, "<presence/>");
	raw_client_send(bob, "<presence/>");
	raw_client_sync(alice);
	raw_client_sync(bob);
	raw_client_send(alice, "<message to='bob@b.localhost/phone' type='chat'><body>signed hello</body></message>");
	char *answer = raw_client_wait(bob, "signed hello", 10000);
	has_str(answer, "from='alice@a.localhost/desk'", "bob gets alice's message");
	free(answer);
	raw_client_send(bob, "<message to='alice@a.localhost/desk' type='chat'><body>signed reply</body></message>");
	answer = raw_client_wait(alice, "signed reply", 10000);
	ok(answer != NULL, "alice gets bob's reply");
	free(answer);
	if (bidi) {
		const char *s2s_args[] = { "s2s", NULL };
		char *listing = NULL;
		ph_ctl(&b->server, s2s_args, NULL, &listing, NULL);
		has_str(listing, "out b.localhost -> a.localhost: ready, SASL EXTERNAL, TLS, bidirectional over the incoming stream",
			"XEP-0288: b's way to a is a's stream, bidirectional");
		free(listing);
		listing = NULL;
		ph_ctl(&a->server, s2s_args, NULL, &listing, NULL);
		has_str(listing, "out a.localhost -> b.localhost: ready, SASL EXTERNAL, TLS, bidirectional",
			"a asked for both directions on its stream");
		free(listing);
		is_int(status_counter(&b->server, "s2s-streams-out"), -1, "b never opened a stream of its own");
		is_int(status_counter(&a->server, "s2s-streams-in"), -1, "and a accepted none");
		is_int(status_counter(&b->server, "s2s-auth-external"), 1,
		       "one authentication (a's, by SASL EXTERNAL) for both directions");
		raw_client_send(bob, "<iq to='alice@a.localhost/desk' type='get' id='bv'><ping xmlns='urn:xmpp:ping'/></iq>");
		answer = raw_client_wait(alice, "id='bv'", 10000);
		has_str(answer, "from='bob@b.localhost/phone'", "an IQ from bob reaches alice the same way");
		free(answer);
		raw_client_send(alice, "<iq to='bob@b.localhost/phone' type='result' id='bv'/>");
		answer = raw_client_wait(bob, "id='bv'", 10000);
		has_str(answer, "type='result'", "and her answer comes back");
		free(answer);
		raw_client_free(alice);
		raw_client_free(bob);
		is_int(ph_server_stop(&a->server), 0, "a stops cleanly");
		is_int(ph_server_stop(&b->server), 0, "b stops cleanly");
		return;
	}
	ok(ph_wait_log(&a->server, "a.localhost -> b.localhost authenticated with SASL EXTERNAL", 5000),
	   "a -> b authenticated with SASL EXTERNAL");
	ok(ph_wait_log(&b->server, "incoming stream from a.localhost authenticated with SASL EXTERNAL", 5000),
	   "b accepted a.localhost's certificate");
	ok(ph_wait_log(&b->server, "b.localhost -> a.localhost authenticated with SASL EXTERNAL", 5000),
	   "b -> a authenticated with SASL EXTERNAL too");
	is_int(ph_log_count(&a->server, "with dialback") + ph_log_count(&b->server, "with dialback"),
	       dialbacks_before, "no dialback was needed");
	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&a->server), 0, "a stops cleanly");
	is_int(ph_server_stop(&b->server), 0, "b stops cleanly");
}

static bool offline_stored(void *arg)
{
	const char *args[] = { "status", NULL };
	char *out = NULL;
	ph_ctl(arg, args, NULL, &out, NULL);
	bool stored = out && strstr(out, "offline-stored: ") &&
		      strstr(out, "offline-stored: 0") == NULL;
	free(out);
	return stored;
}

static void presence_part(struct side *a, struct side *b)
{
	bool started = start_pair(a, b, "authentication=\"dialback\"", "authentication=\"dialback\"",
				  NULL, NULL, NULL);
	if (!ok(started, "both start again for contacts and presence"))
		return;
	struct raw_client *alice = login(a, "alice", "desk");
	raw_client_send(alice, "<presence/>");
	raw_client_sync(alice);

	/* bob is offline: stored at b, then archived and delivered. */
	raw_client_send(alice, "<message to='bob@b.localhost' type='chat' id='off1'><body>while you were away</body></message>");
	ok(ph_wait_for(offline_stored, &b->server, 10000), "b stores it for offline bob");
	struct raw_client *bob = login(b, "bob", "phone");
	raw_client_send(bob, "<presence/>");
	char *answer = raw_client_wait(bob, "while you were away", 10000);
	has_str(answer, "urn:xmpp:delay", "bob gets the remote sender's message from offline storage");
	has_str(answer, "from='alice@a.localhost/desk'", "from alice");
	free(answer);
	raw_client_send(bob, "<iq type='set' id='mam1'><query xmlns='urn:xmpp:mam:2' queryid='f1'/></iq>");
	answer = raw_client_wait(bob, "while you were away", 10000);
	has_str(answer, "queryid='f1'", "and finds it in his archive (MAM)");
	free(answer);
	answer = raw_client_wait(bob, "id='mam1'", 10000);
	has_str(answer, "type='result'", "the archive query completes");
	free(answer);

	/* alice subscribes to bob; bob approves. */
	raw_client_send(alice, "<presence to='bob@b.localhost' type='subscribe'/>");
	answer = raw_client_wait(bob, "type='subscribe'", 10000);
	has_str(answer, "from='alice@a.localhost'", "bob gets alice's subscription request from her bare JID");
	free(answer);
	raw_client_send(bob, "<presence to='alice@a.localhost' type='subscribed'/>");
	answer = raw_client_wait(alice, "type='subscribed'", 10000);
	has_str(answer, "from='bob@b.localhost'", "alice learns that bob approved");
	free(answer);
	answer = raw_client_wait(alice, "<presence from='bob@b.localhost/phone'", 10000);
	ok(answer && !strstr(answer, "type="), "and gets bob's current presence");
	free(answer);
	/* And back: bob subscribes to alice. */
	raw_client_send(bob, "<presence to='alice@a.localhost' type='subscribe'/>");
	answer = raw_client_wait(alice, "type='subscribe'", 10000);
	has_str(answer, "from='bob@b.localhost'", "alice gets bob's request");
	free(answer);
	raw_client_send(alice, "<presence to='bob@b.localhost' type='subscribed'/>");
	answer = raw_client_wait(bob, "type='subscribed'", 10000);
	ok(answer != NULL, "bob learns that alice approved");
	free(answer);
	answer = raw_client_wait(bob, "<presence from='alice@a.localhost/desk'", 10000);
	ok(answer != NULL, "and gets alice's presence");
	free(answer);
	raw_client_send(alice, "<iq type='get' id='ro1'><query xmlns='jabber:iq:roster'/></iq>");
	answer = raw_client_wait(alice, "id='ro1'", 10000);
	has_str(answer, "subscription='both'", "alice's roster: bob with subscription both");
	free(answer);
	raw_client_send(bob, "<iq type='get' id='ro2'><query xmlns='jabber:iq:roster'/></iq>");
	answer = raw_client_wait(bob, "id='ro2'", 10000);
	has_str(answer, "subscription='both'", "bob's roster: alice with subscription both");
	free(answer);

	/* Broadcast. */
	raw_client_send(bob, "<presence><show>away</show><status>lunch</status></presence>");
	answer = raw_client_wait(alice, "<status>lunch</status>", 10000);
	has_str(answer, "from='bob@b.localhost/phone'", "bob's presence change reaches alice");
	free(answer);

	/* Probes: a new login of alice learns bob's presence from b. */
	raw_client_free(alice);
	answer = raw_client_wait(bob, "type='unavailable'", 10000);
	has_str(answer, "from='alice@a.localhost/desk'", "bob sees alice go offline");
	free(answer);
	alice = login(a, "alice", "laptop");
	raw_client_send(alice, "<presence/>");
	answer = raw_client_wait(alice, "<status>lunch</status>", 10000);
	has_str(answer, "from='bob@b.localhost/phone'", "alice's new login probes b and gets bob's presence");
	free(answer);
	answer = raw_client_wait(bob, "<presence from='alice@a.localhost/laptop'", 10000);
	ok(answer != NULL, "and bob sees alice come online");
	free(answer);

	raw_client_free(bob);
	answer = raw_client_wait(alice, "type='unavailable'", 10000);
	has_str(answer, "from='bob@b.localhost/phone'", "alice sees bob go offline");
	free(answer);
	raw_client_free(alice);
	is_int(ph_server_stop(&a->server), 0, "a stops cleanly");
	is_int(ph_server_stop(&b->server), 0, "b stops cleanly");
}

static void dns_part(struct side *a, struct side *b)
{
	int dead_port = ph_free_port();
	const struct dns_record records[] = {
		{ "_xmpp-server._tcp.b.test", 33, 0, 0, dead_port, "xmpp.b.test" },
		{ "_xmpp-server._tcp.b.test", 33, 10, 0, b->s2s_port, "xmpp.b.test" },
		{ "_xmpps-server._tcp.b.test", 33, 5, 0, b->s2s_tls_port, "xmpp.b.test" },
		{ "xmpp.b.test", 1, 0, 0, 0, NULL },
		{ "_xmpp-server._tcp.a.test", 33, 0, 0, a->s2s_port, "a.test" },
		{ "a.test", 1, 0, 0, 0, NULL },
	};
	struct dns_responder dns;
	if (!ok(dns_start(&dns, records, sizeof(records) / sizeof(records[0])),
		"a DNS responder for the test domains listens on loopback"))
		return;
	a->domain = "a.test";
	b->domain = "b.test";
	char attributes[256];
	snprintf(attributes, sizeof(attributes), "authentication=\"dialback\" dns-server=\"127.0.0.1:%d\"",
		 dns.port);
	/* No routes: config_for writes one for the other domain, so give
	 * each a route to a name nobody asks for instead. */
	struct side nobody_a = { .domain = "unused-a.test", .s2s_port = 1 };
	struct side nobody_b = { .domain = "unused-b.test", .s2s_port = 1 };
	char *config = config_for(a, &nobody_a, attributes, NULL, NULL);
	ph_server_write_config(&a->server, config);
	free(config);
	config = config_for(b, &nobody_b, attributes, NULL, NULL);
	ph_server_write_config(&b->server, config);
	free(config);
	bool started = ph_server_start(&a->server, NULL) == 0 && ph_server_start(&b->server, NULL) == 0;
	if (!ok(started, "a.test and b.test start with DNS pointed at the responder")) {
		dns_stop(&dns);
		return;
	}
	ph_add_user_at(&a->server, "alice", "a.test");
	ph_add_user_at(&b->server, "bob", "b.test");
	struct raw_client *alice = login(a, "alice", "desk");
	struct raw_client *bob = login(b, "bob", "phone");
	raw_client_send(bob, "<presence/>");
	raw_client_sync(bob);
	raw_client_send(alice, "<message to='bob@b.test' type='chat'><body>found you in DNS</body></message>");
	char *answer = raw_client_wait(bob, "found you in DNS", 15000);
	has_str(answer, "from='alice@a.test/desk'", "a message to b.test is delivered through SRV records");
	free(answer);
	char dead[128], direct[128];
	snprintf(dead, sizeof(dead), "cannot connect to 127.0.0.1 port %d", dead_port);
	snprintf(direct, sizeof(direct), "connected to 127.0.0.1 port %d (direct TLS)", b->s2s_tls_port);
	ok(ph_wait_log(&a->server, dead, 5000), "the priority 0 target (a dead port) is tried first");
	ok(ph_wait_log(&a->server, direct, 5000),
	   "then the _xmpps-server target at priority 5, with direct TLS, before priority 10");
	raw_client_send(bob, "<message to='alice@a.test/desk' type='chat'><body>and back</body></message>");
	answer = raw_client_wait(alice, "and back", 15000);
	ok(answer != NULL, "and b.test finds a.test the same way");
	free(answer);
	raw_client_send(alice, "<message to='x@nowhere.test' type='chat' id='nx'><body>?</body></message>");
	answer = raw_client_wait(alice, "id='nx'", 15000);
	has_str(answer, "<remote-server-not-found", "a domain without any DNS record bounces");
	free(answer);
	ok(atomic_load(&dns.queries) > 0, "the answers came from the test's responder");
	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&a->server), 0, "a.test stops cleanly");
	is_int(ph_server_stop(&b->server), 0, "b.test stops cleanly");
	dns_stop(&dns);
}

int main(void)
{
	struct side a = { .domain = "a.localhost" }, b = { .domain = "b.localhost" };
	ph_server_init(&a.server, NULL);
	ph_server_init(&b.server, NULL);
	a.s2s_port = ph_free_port();
	a.s2s_tls_port = ph_free_port();
	b.s2s_port = ph_free_port();
	b.s2s_tls_port = ph_free_port();
	dialback_part(&a, &b);
	strict_part(&a, &b);
	external_part(&a, &b, false);
	external_part(&a, &b, true);
	presence_part(&a, &b);
	dns_part(&a, &b);
	ph_server_cleanup(&a.server);
	ph_server_cleanup(&b.server);
	return done_testing();
}
