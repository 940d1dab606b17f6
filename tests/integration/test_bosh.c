/* XMPP over BOSH (XEP-0124, XEP-0206) with raw HTTP: session creation
 * (sid, wait, hold, requests, ver, xmpp:version, the features), SASL,
 * the xmpp:restart, bind, messages both ways with a TCP client, a long
 * poll woken by a message within `wait` and an empty answer when `wait`
 * is over, requests taken in rid order whatever order they arrive in, a
 * repeated rid answered again without being processed twice, a lost
 * answer recovered by repeating its rid, a request whose connection
 * dropped, pause, terminate, and the binding errors (bad body, unknown
 * sid, rid out of the window) — while a TCP bystander is served; and a
 * stream-managed BOSH session resumed over WebSocket after inactivity. */
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
#include <time.h>
#include <unistd.h>

#define BODY "<body xmlns='http://jabber.org/protocol/httpbind' "

static int http_port;

static struct http_client *post(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *body = NULL;
	int n = vasprintf(&body, fmt, ap);
	va_end(ap);
	struct http_client *h = http_client_connect(http_port, false);
	if (h)
		http_client_sendf(h, "POST /http-bind HTTP/1.1\r\nHost: localhost\r\n"
				     "Content-Type: text/xml; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s",
				  n, body);
	free(body);
	return h;
}

/* The answer's body (caller frees), or NULL; frees the connection. */
static char *reply(struct http_client *h)
{
	if (!h)
		return NULL;
	struct http_response r = http_client_read(h, 15000);
	char *body = r.status == 200 ? strdup(r.body) : NULL;
	http_response_free(&r);
	http_client_free(h);
	return body;
}

#define roundtrip(...) reply(post(__VA_ARGS__))

/* Waits until the server has processed (and so holds) a request. */
static bool processed(const struct ph_server *s, const char *sid, unsigned long long rid)
{
	char text[160];
	snprintf(text, sizeof(text), "session %s: rid %llu processed", sid, rid);
	return ph_wait_log(s, text, 5000);
}

static char *create(const char *hold, const char *wait, char *sid, size_t sid_len)
{
	char *answer = roundtrip(BODY "xmlns:xmpp='urn:xmpp:xbosh' rid='1000' to='localhost' "
				      "xml:lang='en' wait='%s' hold='%s' ver='1.6' xmpp:version='1.0'/>",
				 wait, hold);
	const char *at = answer ? strstr(answer, " sid='") : NULL;
	sid[0] = 0;
	if (at)
		snprintf(sid, sid_len, "%.*s", (int)strcspn(at + 6, "'"), at + 6);
	return answer;
}

static bool login(const char *sid, unsigned long long *rid, const char *user, const char *resource)
{
	char raw[100], encoded[200];
	int n = snprintf(raw, sizeof(raw), "%c%s%c%s-secret", 0, user, 0, user);
	EVP_EncodeBlock((unsigned char *)encoded, (unsigned char *)raw, n);
	char *a = roundtrip(BODY "rid='%llu' sid='%s'><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
				 "mechanism='PLAIN'>%s</auth></body>", ++*rid, sid, encoded);
	bool success = a && strstr(a, "<success");
	free(a);
	a = roundtrip(BODY "xmlns:xmpp='urn:xmpp:xbosh' rid='%llu' sid='%s' to='localhost' "
			   "xmpp:restart='true'/>", ++*rid, sid);
	bool features = a && strstr(a, "urn:ietf:params:xml:ns:xmpp-bind");
	free(a);
	a = roundtrip(BODY "rid='%llu' sid='%s'><iq xmlns='jabber:client' type='set' id='b'>"
			   "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource></bind>"
			   "</iq></body>", ++*rid, sid, resource);
	bool bound = a && strstr(a, "</jid>");
	free(a);
	return success && features && bound;
}

/* The value of attribute name in text, or 0. */
static long long attribute(const char *text, const char *name)
{
	char needle[40];
	snprintf(needle, sizeof(needle), " %s='", name);
	const char *at = text ? strstr(text, needle) : NULL;
	return at ? atoll(at + strlen(needle)) : 0;
}

#define PING "<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"

/* XEP-0124 9: a session whose client asks for acknowledgements. */
static void acknowledgements(const struct ph_server *s, struct raw_client *alice)
{
	char sid[64];
	char *a = roundtrip(BODY "xmlns:xmpp='urn:xmpp:xbosh' rid='1000' to='localhost' wait='60' "
				 "hold='1' ack='1' ver='1.6' xmpp:version='1.0'/>");
	const char *at = a ? strstr(a, " sid='") : NULL;
	snprintf(sid, sizeof(sid), "%.*s", at ? (int)strcspn(at + 6, "'") : 0, at ? at + 6 : "");
	has_str(a, "ack='1000'", "ack='1' at creation: the answer acknowledges the creation rid");
	free(a);
	a = roundtrip(BODY "xmlns:xmpp='urn:xmpp:xbosh' rid='1000' to='localhost' wait='60' hold='1' "
			   "ver='1.6' xmpp:version='1.0'/>");
	ok(a && !strstr(a, " ack="), "without ack='1' a session does not acknowledge");
	free(a);
	unsigned long long rid = 1000;
	ok(login(sid, &rid, "carol", "acks"), "carol logs in over a session with acknowledgements");
	a = roundtrip(BODY "rid='%llu' sid='%s'>" PING "</body>", ++rid, sid);
	ok(a && strstr(a, "<iq") && !strstr(a, " ack="),
	   "an answer to the highest rid received carries no ack");
	free(a);

	struct http_client *held = post(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	ok(processed(s, sid, rid), "a poll is held");
	struct http_client *next = post(BODY "rid='%llu' sid='%s'><message xmlns='jabber:client' "
					     "to='alice@localhost/tcp' type='chat'><body>acked</body></message>"
					     "</body>", ++rid, sid);
	a = reply(held);
	is_int(attribute(a, "ack"), (long long)rid,
	       "the held request, answered after a later one came, acknowledges that later rid");
	free(a);
	ok(raw_client_seen(alice, "acked", 5000), "the later request's message is delivered");
	raw_client_send(alice, "<message to='carol@localhost/acks' type='chat'><body>lost answer</body></message>");
	a = reply(next);
	has_str(a, "lost answer", "the next held request is answered with a message");
	ok(a && !strstr(a, " ack="), "it answers the highest rid: no ack");
	free(a);
	unsigned long long lost = rid;

	/* The client pretends that answer never came; a report is for an
	 * answer sent over a second ago, so time passes first. */
	usleep(1200 * 1000);
	struct http_client *h = post(BODY "rid='%llu' sid='%s' ack='%llu'/>", ++rid, sid, lost - 1);
	struct http_response r = h ? http_client_read(h, 15000) : (struct http_response){ .status = -1 };
	http_client_free(h);
	is_int(attribute(r.body, "report"), (long long)lost,
	       "an ack short of an answer sent long ago: the next answer reports it at once");
	ok(attribute(r.body, "time") >= 1000, "with the time since it was sent (%lld ms)",
	   attribute(r.body, "time"));
	http_response_free(&r);
	/* Requests go on without acknowledging the lost answer, past the
	 * window (requests 2) that would bound an unacknowledging session. */
	for (int i = 0; i < 3; i++) {
		a = roundtrip(BODY "rid='%llu' sid='%s' ack='%llu'>" PING "</body>", ++rid, sid, lost - 1);
		ok(a && strstr(a, "<iq") && !strstr(a, " report="), "request %d answered, reported once", i + 1);
		free(a);
	}
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", lost, sid);
	has_str(a, "lost answer", "an unacknowledged answer is kept: repeating its rid gets it");
	free(a);
	/* Acknowledging everything frees the answers. */
	rid++;
	struct http_client *last = post(BODY "rid='%llu' sid='%s' ack='%llu'/>", rid, sid, rid - 1);
	ok(processed(s, sid, rid), "a request acknowledging every answer is held");
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", lost, sid);
	has_str(a, "condition='item-not-found'", "an acknowledged answer is forgotten: item-not-found");
	free(a);
	a = reply(last);
	has_str(a, "type='terminate'", "and the session is over");
	free(a);
}

/* XEP-0124 11 and 12: more requests at once than 'requests', or empty
 * requests more often than 'polling' (2 s), end the session. */
static void overactivity(const struct ph_server *s, struct raw_client *alice)
{
	char sid[64];
	unsigned long long rid = 1000;
	char *a = create("1", "60", sid, sizeof(sid));
	has_str(a, "polling='2'", "sessions announce polling 2");
	free(a);
	ok(login(sid, &rid, "carol", "busy"), "carol logs in (hold 1, requests 2)");
	struct http_client *held = post(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	ok(processed(s, sid, rid), "a poll is held");
	struct http_client *early = post(BODY "rid='%llu' sid='%s'><message xmlns='jabber:client' "
					      "to='alice@localhost/tcp' type='chat'><body>too many</body>"
					      "</message></body>", rid + 2, sid);
	char early_log[160];
	snprintf(early_log, sizeof(early_log), "session %s: rid %llu early", sid, rid + 2);
	ok(ph_wait_log(s, early_log, 5000), "a request ahead of its turn waits");
	a = roundtrip(BODY "rid='%llu' sid='%s'>" PING "</body>", rid + 1, sid);
	has_str(a, "type='terminate' condition='policy-violation'",
		"a third request while two are unanswered (requests 2): policy-violation");
	free(a);
	ok(ph_wait_log(s, "more simultaneous requests than 'requests' allows", 5000), "and a log line");
	a = reply(held);
	has_str(a, "type='terminate'", "the held request is answered: the session is over");
	free(a);
	a = reply(early);
	has_str(a, "type='terminate'", "so is the early one");
	free(a);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "too many"), 0, "whose payload was never processed");

	/* Long polling: an empty request that fills the last place right
	 * after the one before it. */
	free(create("1", "60", sid, sizeof(sid)));
	rid = 1000;
	ok(login(sid, &rid, "carol", "eager"), "carol logs in again");
	held = post(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	ok(processed(s, sid, rid), "a poll is held");
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	has_str(a, "condition='policy-violation'",
		"a second empty request at once while one is held: policy-violation");
	free(a);
	ok(ph_wait_log(s, "empty requests more often than 'polling' allows", 5000), "and a log line");
	free(reply(held));

	/* The same after the polling interval is fine (timing is the point
	 * here: 3 s for polling 2). */
	free(create("1", "60", sid, sizeof(sid)));
	rid = 1000;
	ok(login(sid, &rid, "carol", "patient"), "carol logs in again");
	held = post(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	ok(processed(s, sid, rid), "a poll is held");
	sleep(3);
	struct http_client *second = post(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	a = reply(held);
	has_str(a, "<body xmlns='http://jabber.org/protocol/httpbind'/>",
		"an empty request after the polling interval releases the held one");
	free(a);
	a = roundtrip(BODY "rid='%llu' sid='%s' type='terminate'/>", ++rid, sid);
	has_str(a, "type='terminate'", "a terminate request is allowed beyond 'requests'");
	ok(!strstr(a ? a : "", "policy-violation"), "without policy-violation");
	free(a);
	free(reply(second));

	/* A polling session (hold 0): two empty polls within polling. */
	free(create("0", "60", sid, sizeof(sid)));
	rid = 1000;
	ok(login(sid, &rid, "carol", "poller"), "carol logs in with a polling session");
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	has_str(a, "<body xmlns='http://jabber.org/protocol/httpbind'/>", "an empty poll gets an empty answer");
	free(a);
	sleep(3);
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	has_str(a, "<body xmlns='http://jabber.org/protocol/httpbind'/>",
		"another one after the polling interval is fine");
	free(a);
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	has_str(a, "condition='policy-violation'", "one more at once: policy-violation");
	free(a);
	ok(ph_wait_log(s, "empty polls more often than 'polling' allows", 5000), "and a log line");
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The c2s stanza rate limit over BOSH: a flooding client's next
 * request waits until its debt is paid, and nothing is lost. */
static void rate_limit(void)
{
	struct ph_server s;
	int saved_port = http_port;
	http_port = ph_free_port();
	char extra[300];
	snprintf(extra, sizeof(extra),
		 "<http address=\"127.0.0.1\" port=\"%d\" consider-secure=\"true\"/>", http_port);
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, NULL, extra);
	char *patched = ph_config_with_attributes(config, "c2s",
						  "max-stanzas-per-second=\"20\" stanza-burst=\"10\"");
	ph_server_write_config(&s, patched);
	free(patched);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "a server with 20 stanzas/s per session starts"))
		return;
	ph_add_user(&s, "dave");
	ph_add_user(&s, "erin");
	struct raw_client *erin = raw_client_new_session(s.c2s_tls_port, "erin", "erin-secret", "tcp");
	char sid[64];
	free(create("1", "10", sid, sizeof(sid)));
	unsigned long long rid = 1000;
	ok(login(sid, &rid, "dave", "flood"), "dave logs in over BOSH");
	/* 60 messages at once: 50 over the burst, 2.5 s of debt. */
	size_t cap = 60 * 120 + 200, len = 0;
	char *flood = malloc(cap);
	for (int i = 1; i <= 60; i++)
		len += (size_t)snprintf(flood + len, cap - len, "<message xmlns='jabber:client' "
					"to='erin@localhost/tcp' type='chat'><body>flood %d</body></message>", i);
	char *a = roundtrip(BODY "rid='%llu' sid='%s'>%s" PING "</body>", ++rid, sid, flood);
	free(flood);
	has_str(a, "<iq", "a request with 60 messages is answered");
	free(a);
	long long answered_ms = now_ms();
	ok(ph_wait_log(&s, "sends more than 20 stanzas/s", 5000), "the c2s rate limit is logged");
	struct http_client *next = post(BODY "rid='%llu' sid='%s'><message xmlns='jabber:client' "
					     "to='erin@localhost/tcp' type='chat'><body>after the pause</body>"
					     "</message>" PING "</body>", ++rid, sid);
	char waits[160];
	snprintf(waits, sizeof(waits), "session %s: rid %llu early: waits", sid, rid);
	ok(ph_wait_log(&s, waits, 5000), "the next request waits for the pause");
	a = reply(next);
	has_str(a, "<iq", "and is processed once it is over");
	free(a);
	long long paused = now_ms() - answered_ms;
	ok(paused >= 2000, "not before the debt is paid (%lld ms)", paused);
	char *m = erin ? raw_client_wait(erin, "after the pause", 10000) : NULL;
	ok(m != NULL, "its message is delivered");
	free(m);
	is_int(erin ? raw_client_count(erin, "<body>flood ") : 0, 60, "after all 60 of the flood: none lost");
	raw_client_free(erin);
	is_int(ph_server_stop(&s), 0, "that server stops cleanly");
	ph_server_cleanup(&s);
	http_port = saved_port;
}

/* Stream management underneath BOSH: a session whose client stops
 * polling hibernates after bosh-inactivity and is resumed over
 * WebSocket with the message it never acknowledged. */
static void resumption(void)
{
	struct ph_server s;
	int saved_port = http_port;
	http_port = ph_free_port();
	char extra[300];
	snprintf(extra, sizeof(extra),
		 "<http address=\"127.0.0.1\" port=\"%d\" consider-secure=\"true\" bosh-inactivity=\"1s\"/>",
		 http_port);
	ph_server_init(&s, extra);
	if (!ok(ph_server_start(&s, NULL) == 0, "a server with bosh-inactivity 1s starts"))
		return;
	ph_add_user(&s, "dave");
	ph_add_user(&s, "erin");
	struct raw_client *erin = raw_client_new_session(s.c2s_tls_port, "erin", "erin-secret", "tcp");
	char sid[64];
	char *a = create("0", "10", sid, sizeof(sid));
	has_str(a, "inactivity='1'", "the session announces the configured inactivity");
	free(a);
	unsigned long long rid = 1000;
	ok(login(sid, &rid, "dave", "phone"), "dave logs in over BOSH");
	a = roundtrip(BODY "rid='%llu' sid='%s'><enable xmlns='urn:xmpp:sm:3' resume='true'/></body>", ++rid, sid);
	char previd[64] = "";
	const char *id = a ? strstr(a, " id='") : NULL;
	if (id)
		sscanf(id + 5, "%63[^']", previd);
	ok(previd[0] != 0, "stream management with resumption is enabled over BOSH");
	free(a);
	raw_client_send(erin, "<message to='dave@localhost/phone' type='chat'><body>keep this safe</body></message>");
	raw_client_sync(erin);
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	has_str(a, "keep this safe", "dave gets a message and does not acknowledge it");
	free(a);
	ok(ph_wait_log(&s, "dave@localhost/phone waits", 10000),
	   "dave stops polling: after bosh-inactivity the session waits to be resumed");
	int status;
	struct ws_client *w = ws_client_connect("127.0.0.1", http_port, false, "xmpp", NULL, &status);
	free(w ? ws_client_open(w, "localhost") : NULL);
	free(w ? ws_client_auth_plain(w, "dave", "dave-secret") : NULL);
	free(w ? ws_client_open(w, "localhost") : NULL);
	if (w)
		ws_client_send(w, "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>", previd);
	char *resumed = w ? ws_client_wait(w, "<resumed", 5000) : NULL;
	has_str(resumed, "<resumed", "the BOSH session is resumed over WebSocket");
	free(resumed);
	char *m = w ? ws_client_wait(w, "keep this safe", 5000) : NULL;
	ok(m != NULL, "and the unacknowledged message is sent again");
	free(m);
	ws_client_free(w);
	raw_client_free(erin);
	is_int(ph_server_stop(&s), 0, "that server stops cleanly");
	ph_server_cleanup(&s);
	http_port = saved_port;
}

int main(void)
{
	struct ph_server s;
	http_port = ph_free_port();
	char extra[300];
	snprintf(extra, sizeof(extra),
		 "<http address=\"127.0.0.1\" port=\"%d\" consider-secure=\"true\"/>", http_port);
	ph_server_init(&s, extra);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with BOSH on its HTTP listener"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	ph_add_user(&s, "carol");
	struct raw_client *alice = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "tcp");
	if (!ok(alice != NULL, "alice is online over TCP"))
		return done_testing();

	char *a = roundtrip("<body rid='1'/>");
	has_str(a, "type='terminate' condition='bad-request'", "a body outside the httpbind namespace: bad-request");
	free(a);
	a = roundtrip(BODY "rid='1' sid='nosuchsession'/>");
	has_str(a, "type='terminate' condition='item-not-found'", "an unknown sid: item-not-found");
	free(a);

	/* A polling session (hold 0): every request is answered at once. */
	char sid[64];
	a = create("0", "10", sid, sizeof(sid));
	ok(sid[0] != 0, "session creation answers with a sid");
	has_str(a, "wait='10'", "the wait asked for");
	has_str(a, "hold='0'", "the hold asked for");
	has_str(a, "requests='1'", "requests = hold + 1");
	has_str(a, "ver='1.11'", "the BOSH version");
	has_str(a, "xmpp:version='1.0'", "xmpp:version (XEP-0206)");
	has_str(a, "from='localhost'", "from the host");
	has_str(a, "<stream:features", "and the stream features in the same answer");
	has_str(a, "<mechanism>PLAIN</mechanism>", "PLAIN offered: consider-secure says TLS is in front");
	free(a);
	unsigned long long rid = 1000;
	ok(login(sid, &rid, "bob", "bosh"), "bob authenticates, restarts (xmpp:restart) and binds over BOSH");

	a = roundtrip(BODY "rid='%llu' sid='%s'><message xmlns='jabber:client' to='alice@localhost/tcp' "
			   "type='chat'><body>hello tcp</body></message></body>", ++rid, sid);
	ok(a != NULL, "a request carrying a message is answered");
	char *m = raw_client_wait(alice, "hello tcp", 5000);
	has_str(m, "from='bob@localhost/bosh'", "the message reaches the TCP client from bob's BOSH resource");
	free(m);
	char *again = roundtrip(BODY "rid='%llu' sid='%s'><message xmlns='jabber:client' to='alice@localhost/tcp' "
				     "type='chat'><body>hello tcp</body></message></body>", rid, sid);
	is_str(again, a, "the same rid again gets the same answer");
	free(a);
	free(again);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "hello tcp"), 0, "and its payload is not processed twice");

	raw_client_send(alice, "<message to='bob@localhost/bosh' type='chat'><body>hello bosh</body></message>");
	raw_client_sync(alice);
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	has_str(a, "<message xmlns='jabber:client'", "the next request carries alice's message, namespaced");
	has_str(a, "hello bosh", "whole");
	free(a);

	a = roundtrip(BODY "rid='%llu' sid='%s'/>", rid + 10, sid);
	has_str(a, "condition='item-not-found'", "a rid beyond the window: item-not-found");
	free(a);
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", rid + 1, sid);
	has_str(a, "condition='item-not-found'", "and the session is over");
	free(a);

	/* Long polling (hold 1). */
	a = create("1", "10", sid, sizeof(sid));
	has_str(a, "requests='2'", "a long-polling session: requests 2");
	free(a);
	rid = 1000;
	ok(login(sid, &rid, "carol", "web"), "carol logs in over BOSH");
	/* rid order: the later request arrives first and waits. */
	struct http_client *later = post(BODY "rid='%llu' sid='%s'><message xmlns='jabber:client' "
					      "to='alice@localhost/tcp' type='chat'><body>second</body>"
					      "</message></body>", rid + 2, sid);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "second"), 0, "a request ahead of its turn is not processed yet");
	a = roundtrip(BODY "rid='%llu' sid='%s'><message xmlns='jabber:client' to='alice@localhost/tcp' "
			   "type='chat'><body>first</body></message></body>", rid + 1, sid);
	free(a);
	rid += 2;
	m = raw_client_wait(alice, "<message", 5000);
	has_str(m, "first", "once the missing rid comes, the first message goes first (hold 1)");
	free(m);
	m = raw_client_wait(alice, "<message", 5000);
	has_str(m, "second", "then the second");
	free(m);

	/* Not empty: an empty request right after another while one is
	 * held would be overactivity (XEP-0124 11). */
	struct http_client *poll = post(BODY "rid='%llu' sid='%s'><iq xmlns='jabber:client' type='get' "
					     "id='p1'><ping xmlns='urn:xmpp:ping'/></iq></body>", ++rid, sid);
	a = reply(later);
	ok(a != NULL, "a new request releases the one held before it (hold 1)");
	free(a);
	/* The poll is held now: its arrival released `later`. */
	raw_client_send(alice, "<message to='carol@localhost/web' type='chat'><body>wake up</body></message>");
	a = reply(poll);
	has_str(a, "wake up", "a held request is answered with a message that arrives within wait");
	free(a);

	/* A lost answer: the client repeats the rid on a new connection. */
	poll = post(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	ok(processed(&s, sid, rid), "a poll is held");
	raw_client_send(alice, "<message to='carol@localhost/web' type='chat'><body>do not lose me</body></message>");
	raw_client_sync(alice);
	http_client_free(poll); /* the answer is gone with the connection */
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", rid, sid);
	has_str(a, "do not lose me", "repeating the rid recovers the answer lost with its connection");
	free(a);

	/* A held request whose connection drops: the next one gets what came. */
	poll = post(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	ok(processed(&s, sid, rid), "another poll is held");
	http_client_free(poll);
	raw_client_send(alice, "<message to='carol@localhost/web' type='chat'><body>still here</body></message>");
	raw_client_sync(alice);
	/* Whether the server answered it before it saw the connection go or
	 * not, the client repeating the rid gets the message. */
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", rid, sid);
	has_str(a, "still here", "a held request dropped by its connection: repeating it gets the message");
	free(a);

	/* XEP-0124 10: pause. */
	poll = post(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	ok(processed(&s, sid, rid), "a poll is held before the pause");
	a = roundtrip(BODY "rid='%llu' sid='%s' pause='30'/>", ++rid, sid);
	has_str(a, "<body xmlns='http://jabber.org/protocol/httpbind'/>", "a pause request is answered at once");
	free(a);
	a = reply(poll);
	ok(a != NULL, "and so is the request held before it");
	free(a);
	raw_client_send(alice, "<message to='carol@localhost/web' type='chat'><body>during the pause</body></message>");
	raw_client_sync(alice);
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	has_str(a, "during the pause", "after the pause the session is there with what came meanwhile");
	free(a);

	a = roundtrip(BODY "rid='%llu' sid='%s' type='terminate'><presence xmlns='jabber:client' "
			   "type='unavailable'/></body>", ++rid, sid);
	has_str(a, "type='terminate'", "terminate is answered with terminate");
	free(a);
	a = roundtrip(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	has_str(a, "condition='item-not-found'", "the session is gone after terminate");
	free(a);

	/* wait is over: an empty answer. */
	a = create("1", "1", sid, sizeof(sid));
	has_str(a, "maxpause='120'", "sessions offer a pause of up to 120 s");
	free(a);
	a = roundtrip(BODY "rid='1001' sid='%s'/>", sid);
	has_str(a, "<body xmlns='http://jabber.org/protocol/httpbind'/>", "an empty answer once wait is over");
	free(a);

	a = roundtrip(BODY "rid='1002' sid='%s' pause='500'/>", sid);
	has_str(a, "condition='policy-violation'", "a pause beyond maxpause: policy-violation");
	free(a);

	struct http_client *h = http_client_connect(http_port, false);
	if (!ok(h != NULL, "the HTTP listener still answers"))
		return done_testing();
	http_client_sendf(h, "OPTIONS /http-bind HTTP/1.1\r\nHost: x\r\nOrigin: https://web.example\r\n"
			     "Access-Control-Request-Method: POST\r\n\r\n");
	struct http_response r = http_client_read(h, 5000);
	is_int(r.status, 204, "CORS preflight for /http-bind");
	char *methods = http_response_header(&r, "Access-Control-Allow-Methods");
	is_str(methods, "POST, OPTIONS", "allows POST");
	free(methods);
	http_response_free(&r);
	http_client_free(h);

	acknowledgements(&s, alice);
	overactivity(&s, alice);

	/* What an idle logged-in BOSH session costs (a figure for the notes). */
	enum { USERS = 4, PER = 25 };
	for (int u = 0; u < USERS; u++) {
		char name[16];
		snprintf(name, sizeof(name), "idle%d", u);
		ph_add_user(&s, name);
	}
	long before = ph_rss_kib(s.pid);
	int bound = 0;
	for (int i = 0; i < USERS * PER; i++) {
		char name[16], resource[16];
		snprintf(name, sizeof(name), "idle%d", i / PER);
		snprintf(resource, sizeof(resource), "r%d", i);
		free(create("0", "60", sid, sizeof(sid)));
		rid = 1000;
		if (login(sid, &rid, name, resource))
			bound++;
	}
	is_int(bound, USERS * PER, "a hundred BOSH sessions log in");
	long after = ph_rss_kib(s.pid);
	diag("parleyd RSS %ld KiB before, %ld KiB with %d idle BOSH sessions (%.1f KiB each)",
	     before, after, USERS * PER, (double)(after - before) / (USERS * PER));

	ok(raw_client_sync(alice), "the TCP bystander is served throughout");
	char *status = NULL;
	const char *status_args[] = { "status", NULL };
	ph_ctl(&s, status_args, NULL, &status, NULL);
	has_str(status, "bosh-sessions", "parleyctl status counts BOSH sessions");
	has_str(status, "http-requests", "and HTTP requests");
	free(status);
	raw_client_free(alice);
	/* Shutting down with a request held: it gets the stream error. */
	free(create("1", "30", sid, sizeof(sid)));
	rid = 1000;
	ok(login(sid, &rid, "carol", "late"), "carol logs in again");
	struct http_client *held = post(BODY "rid='%llu' sid='%s'/>", ++rid, sid);
	ok(processed(&s, sid, rid), "her poll is held");
	is_int(ph_server_stop(&s), 0, "parleyd stops cleanly");
	a = reply(held);
	has_str(a, "condition='remote-stream-error'", "the held request is answered with the stream error");
	has_str(a, "<system-shutdown", "system-shutdown");
	free(a);
	ph_server_cleanup(&s);
	resumption();
	rate_limit();
	return done_testing();
}
