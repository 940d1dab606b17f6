/* Client streams with a real parleyd and libstrophe clients (the library
 * Profanity uses): STARTTLS and direct TLS logins with SCRAM, a wrong
 * password, messages between two users with the sender stamped by the
 * server, a bounce for an unknown user, an IQ answered by a module; and,
 * over raw sockets, the stream errors a client library would hide. */
#include "harness.h"
#include "../tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct client {
	xmpp_conn_t *conn;
	bool connected, failed;
	char last_body[256];
	char last_from[256];
	char last_error[128];
	int messages;
	char version_name[64];
	char features[2048];   /* disco#info features, space separated */
	bool got_disco;
	bool got_pong;
	char presences[2048];  /* "from:available|unavailable " */
};

static xmpp_ctx_t *ctx;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
	struct client *c = userdata;
	const char *type = xmpp_stanza_get_type(stanza);
	const char *from = xmpp_stanza_get_from(stanza);
	snprintf(c->last_from, sizeof(c->last_from), "%s", from ? from : "");
	if (type && strcmp(type, "error") == 0) {
		xmpp_stanza_t *error = xmpp_stanza_get_child_by_name(stanza, "error");
		xmpp_stanza_t *condition = error ? xmpp_stanza_get_children(error) : NULL;
		snprintf(c->last_error, sizeof(c->last_error), "%s",
			 condition ? xmpp_stanza_get_name(condition) : "?");
	} else {
		char *body = xmpp_message_get_body(stanza);
		snprintf(c->last_body, sizeof(c->last_body), "%s", body ? body : "");
		if (body)
			xmpp_free(ctx, body);
	}
	c->messages++;
	return 1;
}

static int on_version(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
	struct client *c = userdata;
	xmpp_stanza_t *query = xmpp_stanza_get_child_by_name(stanza, "query");
	xmpp_stanza_t *name = query ? xmpp_stanza_get_child_by_name(query, "name") : NULL;
	char *text = name ? xmpp_stanza_get_text(name) : NULL;
	snprintf(c->version_name, sizeof(c->version_name), "%s", text ? text : "(none)");
	if (text)
		xmpp_free(ctx, text);
	return 0;
}

static int on_disco(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
	struct client *c = userdata;
	xmpp_stanza_t *query = xmpp_stanza_get_child_by_name(stanza, "query");
	for (xmpp_stanza_t *f = query ? xmpp_stanza_get_children(query) : NULL; f;
	     f = xmpp_stanza_get_next(f)) {
		const char *name = xmpp_stanza_get_name(f);
		const char *var = xmpp_stanza_get_attribute(f, "var");
		if (name && strcmp(name, "feature") == 0 && var) {
			strncat(c->features, var, sizeof(c->features) - strlen(c->features) - 2);
			strcat(c->features, " ");
		}
	}
	c->got_disco = true;
	return 0;
}

static int on_pong(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
	const char *type = xmpp_stanza_get_type(stanza);
	((struct client *)userdata)->got_pong = type && strcmp(type, "result") == 0;
	return 0;
}

static void send_raw(struct client *c, const char *xml);

struct iq_wait {
	bool done;
	char *text;   /* the whole reply, serialized */
};

static int on_iq_reply(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
	struct iq_wait *w = userdata;
	size_t len;
	xmpp_stanza_to_text(stanza, &w->text, &len);
	w->done = true;
	return 0;
}

/* Sends an IQ (its id must be `id`) and returns the reply as text
 * (caller frees with xmpp_free), or NULL after 5 s. */
static char *iq(struct client *c, const char *id, const char *xml)
{
	struct iq_wait w = { 0 };
	xmpp_id_handler_add(c->conn, on_iq_reply, id, &w);
	send_raw(c, xml);
	long long deadline = now_ms() + 5000;
	while (!w.done && now_ms() < deadline)
		xmpp_run_once(ctx, 20);
	if (!w.done)
		xmpp_id_handler_delete(c->conn, on_iq_reply, id);
	return w.text;
}

/* Which XEP each advertised feature belongs to: an unknown feature fails
 * the test, so a new one cannot be advertised without listing it here and
 * in xep/parley.doap. */
static const struct {
	const char *feature;
	const char *xep;
} feature_xeps[] = {
	{ "http://jabber.org/protocol/commands", "xep-0050" },
	{ "urn:xmpp:reporting:1", "xep-0377" },
	{ "http://jabber.org/protocol/disco#info", "xep-0030" },
	{ "http://jabber.org/protocol/disco#items", "xep-0030" },
	{ "jabber:iq:private", "xep-0049" },
	{ "jabber:iq:last", "xep-0012" },
	{ "jabber:iq:search", "xep-0055" },
	{ "msgoffline", "xep-0160" },
	{ "urn:xmpp:carbons:2", "xep-0280" },
	{ "urn:xmpp:blocking", "xep-0191" },
	{ "jabber:iq:register", "xep-0077" },
	{ "vcard-temp", "xep-0054" },
	{ "jabber:iq:version", "xep-0092" },
	{ "urn:xmpp:time", "xep-0202" },
	{ "urn:xmpp:ping", "xep-0199" },
};

static void check_doap(const char *advertised)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/xep/parley.doap", ph_srcdir());
	FILE *f = fopen(path, "r");
	char *doap = calloc(1, 65536);
	if (f) {
		size_t n = fread(doap, 1, 65535, f);
		doap[n] = '\0';
		fclose(f);
	}
	ok(doap[0] != '\0', "xep/parley.doap is readable");
	char *copy = strdup(advertised);
	for (char *feature = strtok(copy, " "); feature; feature = strtok(NULL, " ")) {
		const char *xep = NULL;
		for (size_t i = 0; i < sizeof(feature_xeps) / sizeof(feature_xeps[0]); i++)
			if (strcmp(feature_xeps[i].feature, feature) == 0)
				xep = feature_xeps[i].xep;
		ok(xep != NULL, "advertised feature %s is known to the DOAP check", feature);
		ok(xep && strstr(doap, xep), "its XEP %s is listed in parley.doap", xep ? xep : "?");
	}
	for (size_t i = 0; i < sizeof(feature_xeps) / sizeof(feature_xeps[0]); i++)
		if (strstr(doap, feature_xeps[i].xep))
			ok(strstr(advertised, feature_xeps[i].feature) != NULL,
			   "parley.doap lists %s, so %s is advertised", feature_xeps[i].xep,
			   feature_xeps[i].feature);
	free(copy);
	free(doap);
}

static int on_presence(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
	struct client *c = userdata;
	const char *from = xmpp_stanza_get_from(stanza);
	const char *type = xmpp_stanza_get_type(stanza);
	char entry[300];
	snprintf(entry, sizeof(entry), "%s:%s ", from ? from : "?", type ? type : "available");
	strncat(c->presences, entry, sizeof(c->presences) - strlen(c->presences) - 1);
	return 1;
}

static int answer_ping(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
	xmpp_stanza_t *result = xmpp_iq_new(ctx, "result", xmpp_stanza_get_id(stanza));
	xmpp_stanza_set_to(result, xmpp_stanza_get_from(stanza));
	xmpp_send(conn, result);
	xmpp_stanza_release(result);
	return 1;
}

static void on_connection(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
			  xmpp_stream_error_t *stream_error, void *userdata)
{
	struct client *c = userdata;
	if (event == XMPP_CONN_CONNECT) {
		c->connected = true;
		xmpp_handler_add(conn, on_message, NULL, "message", NULL, c);
		xmpp_stanza_t *presence = xmpp_presence_new(ctx);
		xmpp_send(conn, presence);
		xmpp_stanza_release(presence);
	} else {
		c->failed = true;
	}
}

static struct client *connect_client(const struct ph_server *s, const char *jid,
				     const char *password, bool direct_tls)
{
	struct client *c = calloc(1, sizeof(*c));
	c->conn = xmpp_conn_new(ctx);
	xmpp_conn_set_jid(c->conn, jid);
	xmpp_conn_set_pass(c->conn, password);
	long flags = XMPP_CONN_FLAG_TRUST_TLS | XMPP_CONN_FLAG_DISABLE_SM;
	flags |= direct_tls ? XMPP_CONN_FLAG_LEGACY_SSL : XMPP_CONN_FLAG_MANDATORY_TLS;
	xmpp_conn_set_flags(c->conn, flags);
	xmpp_connect_client(c->conn, "127.0.0.1",
			    (unsigned short)(direct_tls ? s->c2s_tls_port : s->c2s_port),
			    on_connection, c);
	bool done = false;
	long long deadline = now_ms() + 10000;
	while (!done && now_ms() < deadline) {
		xmpp_run_once(ctx, 20);
		done = c->connected || c->failed;
	}
	return c;
}

static void free_client(struct client *c)
{
	xmpp_disconnect(c->conn);
	for (int i = 0; i < 20; i++)
		xmpp_run_once(ctx, 10);
	xmpp_conn_release(c->conn);
	free(c);
}

static void send_raw(struct client *c, const char *xml)
{
	xmpp_send_raw_string(c->conn, "%s", xml);
}

static bool message_count_reached(struct client *c, int count, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	while (c->messages < count && now_ms() < deadline)
		xmpp_run_once(ctx, 20);
	return c->messages >= count;
}

/* Raw socket: sends `text`, returns what the server answered until it
 * closed the stream (or 3 s). */
static char *raw_exchange(int port, const char *text)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		close(fd);
		return strdup("(cannot connect)");
	}
	if (write(fd, text, strlen(text)) < 0)
		diag("raw write failed");
	char *answer = calloc(1, 65536);
	size_t len = 0;
	long long deadline = now_ms() + 3000;
	while (len < 65535 && now_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 100) <= 0)
			continue;
		ssize_t n = read(fd, answer + len, 65535 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	return answer;
}

static int open_raw(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Direct TLS (the c2s tls-port), raw: sends `text` and collects the
 * answer until `until` appears, the stream closes, or 5 s pass. */
static char *tls_exchange(int port, const char *text, const char *until)
{
	SSL_CTX *tls = SSL_CTX_new(TLS_client_method());
	int fd = open_raw(port);
	SSL *ssl = SSL_new(tls);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	char *answer = calloc(1, 65536);
	size_t len = 0;
	if (fd >= 0 && SSL_connect(ssl) == 1 && SSL_write(ssl, text, (int)strlen(text)) > 0) {
		long long deadline = now_ms() + 5000;
		while (len < 65535 && now_ms() < deadline && !strstr(answer, until) &&
		       !strstr(answer, "</stream:stream>")) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			if (SSL_pending(ssl) == 0 && poll(&p, 1, 100) <= 0)
				continue;
			int n = SSL_read(ssl, answer + len, (int)(65535 - len));
			if (n <= 0)
				break;
			len += (size_t)n;
			answer[len] = '\0';
		}
	}
	SSL_free(ssl);
	SSL_CTX_free(tls);
	if (fd >= 0)
		close(fd);
	return answer;
}

/* base64("authzid\0user\0password") for SASL PLAIN. */
static char *pl_test_plain_auth(const char *authzid, const char *user, const char *password)
{
	unsigned char raw[512];
	size_t a = strlen(authzid), u = strlen(user), p = strlen(password);
	memcpy(raw, authzid, a);
	raw[a] = 0;
	memcpy(raw + a + 1, user, u);
	raw[a + 1 + u] = 0;
	memcpy(raw + a + 2 + u, password, p);
	char *out = calloc(1, 1024);
	EVP_EncodeBlock((unsigned char *)out, raw, (int)(a + u + p + 2));
	return out;
}

static char *register_account(const struct ph_server *s, const char *user, const char *password)
{
	char request[1024];
	snprintf(request, sizeof(request),
		 "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		 "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
		 "<iq type='get' id='rg'><query xmlns='jabber:iq:register'/></iq>"
		 "<iq type='set' id='rs'><query xmlns='jabber:iq:register'><username>%s</username>"
		 "<password>%s</password></query></iq>",
		 user, password);
	return tls_exchange(s->c2s_tls_port, request, "id=\"rs\"");
}

static const char *header_to(const char *to)
{
	static char header[512];
	snprintf(header, sizeof(header),
		 "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		 "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
		 to);
	return header;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with client listeners"))
		return done_testing();
	const char *add_alice[] = { "adduser", "alice@localhost", NULL };
	const char *add_bob[] = { "adduser", "bob@localhost", NULL };
	ph_ctl(&s, add_alice, "alice-secret\n", NULL, NULL);
	ph_ctl(&s, add_bob, "bob-secret\n", NULL, NULL);

	xmpp_initialize();
	ctx = xmpp_ctx_new(NULL, NULL);
	struct client *alice = connect_client(&s, "alice@localhost/phone", "alice-secret", false);
	ok(alice->connected, "alice logs in over STARTTLS with SCRAM");
	has_str(xmpp_conn_get_bound_jid(alice->conn), "alice@localhost/phone",
		"alice is bound to the resource she asked for");
	ok(xmpp_conn_is_secured(alice->conn), "alice's stream is encrypted");
	struct client *bob = connect_client(&s, "bob@localhost", "bob-secret", true);
	ok(bob->connected, "bob logs in over direct TLS (XEP-0368)");
	has_str(xmpp_conn_get_bound_jid(bob->conn), "bob@localhost/",
		"bob gets a server-generated resource");

	struct client *wrong = connect_client(&s, "alice@localhost", "not-her-password", false);
	ok(!wrong->connected && wrong->failed, "a wrong password does not log in");
	free_client(wrong);
	struct client *nobody = connect_client(&s, "nobody@localhost", "x", false);
	ok(!nobody->connected, "an unknown user does not log in");
	free_client(nobody);

	/* Let both initial presences land before messaging. */
	for (int i = 0; i < 10; i++)
		xmpp_run_once(ctx, 10);
	send_raw(alice, "<message to='bob@localhost' type='chat' from='mallory@localhost/x' "
			"id='m1'><body>hello bob</body></message>");
	ok(message_count_reached(bob, 1, 5000), "bob receives alice's message to his bare JID");
	is_str(bob->last_body, "hello bob", "with its body");
	is_str(bob->last_from, "alice@localhost/phone", "stamped with alice's full JID, not the spoofed one");

	char to_full[300];
	snprintf(to_full, sizeof(to_full),
		 "<message to='%s' type='chat' id='m2'><body>to your resource</body></message>",
		 xmpp_conn_get_bound_jid(bob->conn));
	send_raw(alice, to_full);
	ok(message_count_reached(bob, 2, 5000) && strcmp(bob->last_body, "to your resource") == 0,
	   "a message to bob's full JID arrives");

	send_raw(alice, "<message to='nobody@localhost' type='chat' id='m3'><body>?</body></message>");
	ok(message_count_reached(alice, 1, 5000), "a message to an unknown user comes back");
	is_str(alice->last_error, "service-unavailable", "as service-unavailable");
	send_raw(alice, "<message to='someone@elsewhere.example' id='m4'><body>?</body></message>");
	ok(message_count_reached(alice, 2, 5000), "a message to another domain comes back");
	is_str(alice->last_error, "remote-server-not-found", "as remote-server-not-found");

	xmpp_id_handler_add(alice->conn, on_version, "v1", alice);
	send_raw(alice, "<iq type='get' to='localhost' id='v1'><query xmlns='jabber:iq:version'/></iq>");
	long long deadline = now_ms() + 5000;
	while (!alice->version_name[0] && now_ms() < deadline)
		xmpp_run_once(ctx, 20);
	is_str(alice->version_name, "Parley", "mod_version answers the server's version");

	xmpp_id_handler_add(alice->conn, on_disco, "d1", alice);
	send_raw(alice, "<iq type='get' to='localhost' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
	deadline = now_ms() + 5000;
	while (!alice->got_disco && now_ms() < deadline)
		xmpp_run_once(ctx, 20);
	ok(alice->got_disco, "disco#info of the server answers");
	check_doap(alice->features);
	xmpp_id_handler_add(alice->conn, on_pong, "p1", alice);
	send_raw(alice, "<iq type='get' to='localhost' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
	deadline = now_ms() + 5000;
	while (!alice->got_pong && now_ms() < deadline)
		xmpp_run_once(ctx, 20);
	ok(alice->got_pong, "a ping to the server gets a result (XEP-0199)");

	char *reply = iq(alice, "t1", "<iq type='get' to='localhost' id='t1'><time xmlns='urn:xmpp:time'/></iq>");
	ok(reply && strstr(reply, "<tzo>+00:00</tzo>") && strstr(reply, "Z</utc>"),
	   "XEP-0202: the server's time in UTC");
	xmpp_free(ctx, reply);
	reply = iq(alice, "u1", "<iq type='get' to='localhost' id='u1'><unknown xmlns='urn:example:nothing'/></iq>");
	ok(reply && strstr(reply, "type=\"error\"") && strstr(reply, "service-unavailable"),
	   "an IQ nobody handles gets service-unavailable");
	xmpp_free(ctx, reply);

	/* XEP-0049 private storage: saved, read back, isolated per user. */
	reply = iq(alice, "ps1", "<iq type='set' id='ps1'><query xmlns='jabber:iq:private'>"
				 "<prefs xmlns='urn:example:prefs'><colour>blue &amp; green</colour></prefs>"
				 "</query></iq>");
	ok(reply && strstr(reply, "type=\"result\""), "XEP-0049: private XML is stored");
	xmpp_free(ctx, reply);
	reply = iq(alice, "pg1", "<iq type='get' id='pg1'><query xmlns='jabber:iq:private'>"
				 "<prefs xmlns='urn:example:prefs'/></query></iq>");
	ok(reply && strstr(reply, "<colour>blue &amp; green</colour>"), "and read back");
	xmpp_free(ctx, reply);
	reply = iq(bob, "pg2", "<iq type='get' id='pg2'><query xmlns='jabber:iq:private'>"
			       "<prefs xmlns='urn:example:prefs'/></query></iq>");
	ok(reply && !strstr(reply, "blue"), "another user does not see it");
	xmpp_free(ctx, reply);
	reply = iq(bob, "pg3", "<iq type='get' to='alice@localhost' id='pg3'><query xmlns='jabber:iq:private'>"
			       "<prefs xmlns='urn:example:prefs'/></query></iq>");
	ok(reply && strstr(reply, "forbidden"), "asking for another user's private XML is forbidden");
	xmpp_free(ctx, reply);
	reply = iq(alice, "ps2", "<iq type='set' id='ps2'><query xmlns='jabber:iq:private'>"
				 "<x xmlns='jabber:x:data'/></query></iq>");
	ok(reply && strstr(reply, "not-acceptable"), "a jabber: namespace is not-acceptable");
	xmpp_free(ctx, reply);

	/* XEP-0054 vCards: set your own, anyone reads it. */
	reply = iq(alice, "vs1", "<iq type='set' id='vs1'><vCard xmlns='vcard-temp'><NICKNAME>Ali</NICKNAME></vCard></iq>");
	ok(reply && strstr(reply, "type=\"result\""), "XEP-0054: alice sets her vCard");
	xmpp_free(ctx, reply);
	reply = iq(bob, "vg1", "<iq type='get' to='alice@localhost' id='vg1'><vCard xmlns='vcard-temp'/></iq>");
	ok(reply && strstr(reply, "<NICKNAME>Ali</NICKNAME>"), "bob reads alice's vCard");
	xmpp_free(ctx, reply);
	reply = iq(bob, "vs2", "<iq type='set' to='alice@localhost' id='vs2'><vCard xmlns='vcard-temp'><NICKNAME>X</NICKNAME></vCard></iq>");
	ok(reply && strstr(reply, "forbidden"), "bob cannot set alice's vCard");
	xmpp_free(ctx, reply);
	reply = iq(bob, "vg2", "<iq type='get' id='vg2'><vCard xmlns='vcard-temp'/></iq>");
	ok(reply && strstr(reply, "type=\"result\"") && !strstr(reply, "NICKNAME"),
	   "a user without a vCard gets an empty one");
	xmpp_free(ctx, reply);

	/* Raw sockets: stream errors a client library hides. */
	char *answer = raw_exchange(s.c2s_port, header_to("unknown.example"));
	has_str(answer, "<host-unknown", "a stream to an unknown host gets host-unknown");
	free(answer);
	answer = raw_exchange(s.c2s_port,
			      "<stream:stream xmlns='jabber:server' "
			      "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
			      "version='1.0'>");
	has_str(answer, "<invalid-namespace", "jabber:server on the client port gets invalid-namespace");
	free(answer);
	char request[1024];
	snprintf(request, sizeof(request), "%s<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
		 "mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXNlY3JldA==</auth>", header_to("localhost"));
	answer = raw_exchange(s.c2s_port, request);
	has_str(answer, "<required/></starttls>", "STARTTLS is offered as required");
	ok(!strstr(answer, "<mechanism>PLAIN</mechanism>"), "PLAIN is not offered without TLS");
	has_str(answer, "<policy-violation", "authenticating before STARTTLS is a policy-violation");
	ok(!strstr(answer, "<success"), "and does not succeed");
	free(answer);
	snprintf(request, sizeof(request), "%s<message><!-- comment --></message>",
		 header_to("localhost"));
	answer = raw_exchange(s.c2s_port, request);
	has_str(answer, "<restricted-xml", "a comment is restricted-xml");
	free(answer);
	snprintf(request, sizeof(request), "%s<message><body></message>", header_to("localhost"));
	answer = raw_exchange(s.c2s_port, request);
	has_str(answer, "<not-well-formed", "mismatched tags are not-well-formed");
	free(answer);
	snprintf(request, sizeof(request), "<stream:stream xmlns='jabber:client' "
		 "xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>");
	answer = raw_exchange(s.c2s_port, request);
	has_str(answer, "<unsupported-version", "a stream without version 1.0 is refused");
	free(answer);

	/* A 10 MB stanza is refused without the server's memory growing. The
	 * client reads while it writes: once the server has closed, a reset
	 * would discard an answer that was left unread. */
	{
		long before = ph_rss_kib(s.pid);
		int fd = open_raw(s.c2s_port);
		const char *h = header_to("localhost");
		char refusal[16384] = "";
		size_t got = 0;
		if (fd >= 0 && write(fd, h, strlen(h)) > 0 && write(fd, "<message><body>", 15) > 0) {
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
			char *chunk = malloc(65536);
			memset(chunk, 'a', 65536);
			size_t sent = 0;
			long long until = now_ms() + 30000;
			while (!strstr(refusal, "</stream:stream>") && now_ms() < until) {
				struct pollfd p = { .fd = fd, .events = POLLIN };
				if (sent < 10u * 1024 * 1024)
					p.events |= POLLOUT;
				if (poll(&p, 1, 100) <= 0)
					continue;
				if (p.revents & POLLIN) {
					ssize_t n = read(fd, refusal + got, sizeof(refusal) - 1 - got);
					if (n <= 0)
						break;
					got += (size_t)n;
					refusal[got] = 0;
				} else if (p.revents & POLLOUT) {
					ssize_t n = send(fd, chunk, 65536, MSG_NOSIGNAL);
					if (n < 0 && errno != EAGAIN)
						sent = 10u * 1024 * 1024;
					else if (n > 0)
						sent += (size_t)n;
				} else {
					break;
				}
			}
			free(chunk);
		}
		has_str(refusal, "<policy-violation", "a 10 MB stanza gets policy-violation");
		if (fd >= 0)
			close(fd);
		long after = ph_rss_kib(s.pid);
		/* ASan keeps freed memory in quarantine: a looser bound there,
		 * still far below the 10 MB (plus overhead) of a buffered stanza. */
		long allowed = getenv("PARLEY_SANITIZERS") ? 24 * 1024 : 8 * 1024;
		ok(before > 0 && after - before < allowed,
		   "parleyd's memory grew by %ld KiB only (refused early)", after - before);
	}

	/* 2000 idle unauthenticated connections do not stop a real login. */
	{
		struct rlimit files;
		getrlimit(RLIMIT_NOFILE, &files);
		files.rlim_cur = files.rlim_max;
		setrlimit(RLIMIT_NOFILE, &files);
		/* The idle sockets live in a child: libstrophe uses select() and
		 * cannot handle descriptors above FD_SETSIZE in this process. */
		enum { IDLE = 2000 };
		int ready[2], release[2];
		if (pipe(ready) != 0 || pipe(release) != 0)
			return done_testing();
		pid_t holder = fork();
		if (holder == 0) {
			close(ready[0]);
			close(release[1]);
			int opened = 0;
			for (int i = 0; i < IDLE; i++)
				if (open_raw(s.c2s_port) >= 0)
					opened++;
			if (write(ready[1], &opened, sizeof(opened)) != sizeof(opened))
				_exit(1);
			char byte;
			if (read(release[0], &byte, 1) < 0)
				_exit(1);
			_exit(0);
		}
		close(ready[1]);
		close(release[0]);
		int opened = 0;
		if (read(ready[0], &opened, sizeof(opened)) != sizeof(opened))
			opened = -1;
		ok(opened == IDLE, "%d idle unauthenticated connections are open", opened);
		struct client *second = connect_client(&s, "bob@localhost/second", "bob-secret", true);
		ok(second->connected, "a real login still succeeds next to them");
		free_client(second);
		close(release[1]);
		close(ready[0]);
		waitpid(holder, NULL, 0);
	}

	/* SASL over raw direct TLS, where a client library cannot hide it. */
	{
		char *plain_ok = pl_test_plain_auth("", "alice", "alice-secret");
		char *plain_other = pl_test_plain_auth("bob@localhost", "alice", "alice-secret");
		char *sasl_request = malloc(4096);
		snprintf(sasl_request, 4096, "%s<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
			 header_to("localhost"), plain_ok);
		answer = tls_exchange(s.c2s_tls_port, sasl_request, "</success>");
		has_str(answer, "<mechanism>SCRAM-SHA-256-PLUS</mechanism>", "inside TLS, -PLUS mechanisms are offered");
		has_str(answer, "<mechanism>PLAIN</mechanism>", "and PLAIN");
		has_str(answer, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'", "PLAIN with the right password succeeds");
		free(answer);
		snprintf(sasl_request, 4096, "%s<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
			 header_to("localhost"), plain_other);
		answer = tls_exchange(s.c2s_tls_port, sasl_request, "</failure>");
		has_str(answer, "<invalid-authzid/>", "PLAIN with bob's authzid and alice's password is invalid-authzid");
		ok(!strstr(answer, "<success"), "and does not log in as bob");
		free(answer);
		snprintf(sasl_request, 4096, "%s<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>",
			 header_to("localhost"));
		answer = tls_exchange(s.c2s_tls_port, sasl_request, "</failure>");
		has_str(answer, "<invalid-mechanism/>", "an unknown mechanism is invalid-mechanism");
		free(answer);
		snprintf(sasl_request, 4096, "%s<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!notbase64</auth>",
			 header_to("localhost"));
		answer = tls_exchange(s.c2s_tls_port, sasl_request, "</failure>");
		has_str(answer, "<incorrect-encoding/>", "bad base64 is incorrect-encoding");
		free(answer);
		free(sasl_request);
		free(plain_ok);
		free(plain_other);
	}

	/* XEP-0077 in-band registration, over direct TLS before logging in. */
	answer = register_account(&s, "erin", "erin-secret");
	has_str(answer, "<register xmlns='http://jabber.org/features/iq-register'/>",
		"the iq-register stream feature is advertised when registration is open");
	has_str(answer, "<instructions>", "the registration form is offered");
	ok(strstr(answer, "id='rs'") && strstr(answer, "type='result' id='rs'") != NULL,
	   "erin registers in-band");
	free(answer);
	const char *users_args[] = { "users", NULL };
	char *users = NULL;
	ph_ctl(&s, users_args, NULL, &users, NULL);
	has_str(users, "erin@localhost", "the account exists");
	free(users);
	answer = register_account(&s, "erin", "other");
	has_str(answer, "<conflict", "registering an existing name is a conflict");
	free(answer);
	answer = register_account(&s, "bad@name", "x");
	has_str(answer, "<jid-malformed", "an invalid username is jid-malformed");
	free(answer);
	answer = register_account(&s, "frank", "frank-secret");
	ok(strstr(answer, "type='result' id='rs'") != NULL, "a second registration from this address");
	free(answer);
	answer = register_account(&s, "gina", "gina-secret");
	ok(strstr(answer, "type='result' id='rs'") != NULL, "a third one");
	free(answer);
	answer = register_account(&s, "harry", "harry-secret");
	has_str(answer, "<resource-constraint", "the fourth within the hour is refused (per-address-per-hour=3)");
	free(answer);
	struct client *erin = connect_client(&s, "erin@localhost", "erin-secret", false);
	ok(erin->connected, "erin logs in with the password she registered");
	reply = iq(erin, "pw1", "<iq type='set' id='pw1'><query xmlns='jabber:iq:register'>"
				"<username>erin</username><password>new-secret</password></query></iq>");
	ok(reply && strstr(reply, "type=\"result\""), "erin changes her password in-band");
	xmpp_free(ctx, reply);
	free_client(erin);
	erin = connect_client(&s, "erin@localhost", "new-secret", true);
	ok(erin->connected, "and logs in with the new one");
	free_client(erin);

	/* The bystanders still work after all those errors. */
	send_raw(bob, "<message to='alice@localhost/phone' type='chat' id='m5'><body>still here</body></message>");
	ok(message_count_reached(alice, 3, 5000) && strcmp(alice->last_body, "still here") == 0,
	   "bob and alice still talk after the bad streams");

	/* Directed presence: the recipient learns when the sender goes away. */
	struct client *dora = connect_client(&s, "alice@localhost/laptop", "alice-secret", false);
	ok(dora->connected, "alice logs in a second resource");
	xmpp_handler_add(bob->conn, on_presence, NULL, "presence", NULL, bob);
	snprintf(to_full, sizeof(to_full), "<presence to='%s'/>", xmpp_conn_get_bound_jid(bob->conn));
	send_raw(dora, to_full);
	deadline = now_ms() + 5000;
	while (!strstr(bob->presences, "alice@localhost/laptop:available") && now_ms() < deadline)
		xmpp_run_once(ctx, 20);
	has_str(bob->presences, "alice@localhost/laptop:available", "bob receives alice's directed presence");
	free_client(dora);
	deadline = now_ms() + 5000;
	while (!strstr(bob->presences, "alice@localhost/laptop:unavailable") && now_ms() < deadline)
		xmpp_run_once(ctx, 20);
	has_str(bob->presences, "alice@localhost/laptop:unavailable",
		"and her unavailable presence when that session ends");

	/* A second login on alice's resource replaces the first. */
	struct client *alice2 = connect_client(&s, "alice@localhost/phone", "alice-secret", false);
	ok(alice2->connected, "a second login with the same resource succeeds");
	deadline = now_ms() + 5000;
	while (!alice->failed && now_ms() < deadline)
		xmpp_run_once(ctx, 20);
	ok(alice->failed, "and the first session is closed (conflict)");

	free_client(alice2);
	free_client(alice);
	free_client(bob);
	xmpp_ctx_free(ctx);

	is_int(ph_server_stop(&s), 0, "parleyd stops cleanly with clients connected earlier");
	char *log = ph_server_log(&s);
	has_str(log, "stream error host-unknown", "stream errors are logged");
	has_str(log, "authentication failed", "authentication failures are logged");
	has_str(log, "failure 2 from this address, answering in 1000 ms",
		"repeated failures from one address back off (500 ms, then 1000 ms)");
	free(log);
	ph_server_cleanup(&s);

	/* Server pings (XEP-0199): a client that answers stays, a silent one is
	 * dropped. A server of its own with one-second timers. */
	struct ph_server k;
	ph_server_init(&k, NULL);
	char *config = ph_standard_config(&k, NULL, NULL);
	char *c2s_element = strstr(config, "<c2s ");
	char *patched = malloc(strlen(config) + 96);
	snprintf(patched, strlen(config) + 96,
		 "%.*s<c2s ping-idle=\"1s\" ping-timeout=\"1s\" max-bytes-per-second=\"1KiB\" %s",
		 (int)(c2s_element - config), config, c2s_element + 5);
	ph_server_write_config(&k, patched);
	free(patched);
	free(config);
	ok(ph_server_start(&k, NULL) == 0, "a server with one-second pings starts");
	ph_ctl(&k, add_alice, "alice-secret\n", NULL, NULL);
	ph_ctl(&k, add_bob, "bob-secret\n", NULL, NULL);
	ctx = xmpp_ctx_new(NULL, NULL);
	struct client *answering = connect_client(&k, "alice@localhost/a", "alice-secret", false);
	xmpp_handler_add(answering->conn, answer_ping, "urn:xmpp:ping", "iq", "get", answering);
	struct client *silent = connect_client(&k, "bob@localhost/b", "bob-secret", false);
	/* libstrophe answers nothing by itself: bob's client stays silent. */
	deadline = now_ms() + 8000;
	while (!silent->failed && now_ms() < deadline)
		xmpp_run_once(ctx, 20);
	ok(silent->failed, "a client that does not answer the server's ping is disconnected");
	ok(answering->connected && !answering->failed, "a client that answers stays connected");
	free_client(answering);
	free_client(silent);
	xmpp_ctx_free(ctx);

	/* The read limit (1 KiB/s here): 8 KiB of whitespace before a stanza
	 * that gets an answer hold that answer back for seconds, on this
	 * connection only. */
	{
		int fd = open_raw(k.c2s_port);
		const char *h = header_to("localhost");
		char *flood = malloc(8192 + 256);
		memset(flood, ' ', 8192);
		strcpy(flood + 8192, "<iq type='get' id='late'><query xmlns='jabber:iq:register'/></iq>");
		long long sent_at = now_ms();
		bool wrote = fd >= 0 && write(fd, h, strlen(h)) > 0 &&
			     write(fd, flood, strlen(flood)) == (ssize_t)strlen(flood);
		char reply_text[8192] = "";
		size_t got = 0;
		long long answered_at = 0;
		while (wrote && now_ms() - sent_at < 20000 && !answered_at) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			if (poll(&p, 1, 100) <= 0)
				continue;
			ssize_t n = read(fd, reply_text + got, sizeof(reply_text) - 1 - got);
			if (n <= 0)
				break;
			got += (size_t)n;
			reply_text[got] = 0;
			if (strstr(reply_text, "id='late'") || strstr(reply_text, "</stream:stream>"))
				answered_at = now_ms();
		}
		ok(answered_at > 0, "the limited connection is still served");
		ok(answered_at - sent_at >= 3000,
		   "but only after the limit let its bytes in (%lld ms for 8 KiB at 1 KiB/s)",
		   answered_at - sent_at);
		free(flood);
		if (fd >= 0)
			close(fd);
	}
	is_int(ph_server_stop(&k), 0, "that server stops cleanly");
	log = ph_server_log(&k);
	has_str(log, "stream error connection-timeout", "the dead connection is logged");
	free(log);
	ph_server_cleanup(&k);
	xmpp_shutdown();
	return done_testing();
}
