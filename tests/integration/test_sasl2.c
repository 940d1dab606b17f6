/* Fast reconnect with real clients: XEP-0388 SASL2 is offered with Bind2
 * (XEP-0386) and resumption inline; one <authenticate/> with SCRAM
 * authenticates (the server signature checked in additional-data), binds
 * a resource made from the client's tag and user-agent id (the same
 * device gets the same resource back), enables stream management and
 * carbons, and the stream carries stanzas at once, without a restart; a
 * wrong password fails in SASL2's shape; PLAIN without Bind2 leaves the
 * classic bind to the client; and a lost session resumes inside the
 * <authenticate/> with its unacknowledged stanza sent again. XEP-0484
 * FAST: a token asked for at login lets the next connection authenticate,
 * bind and enable everything in one round trip (HT-SHA-256-NONE and
 * -ENDP, the server's own hash checked), a replayed count or a wrong
 * token fails, and a new password ends the token. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT 5000

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *bind2 =
	"<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>Test</software>"
	"<device>Phone</device></user-agent>"
	"<bind xmlns='urn:xmpp:bind:0'><tag>Test</tag><enable xmlns='urn:xmpp:sm:3' resume='true'/>"
	"<enable xmlns='urn:xmpp:carbons:2'/></bind>";

static struct raw_client *connect_open(const struct ph_server *s, char **features)
{
	struct raw_client *c = raw_client_connect(s->c2s_tls_port, true);
	*features = c ? raw_client_open(c, "localhost") : NULL;
	return c;
}

static char *attribute(const char *xml, const char *pattern, char *out, size_t size)
{
	const char *p = xml ? strstr(xml, pattern) : NULL;
	if (!p)
		return NULL;
	p += strlen(pattern);
	size_t n = strcspn(p, "'<");
	if (n >= size)
		n = size - 1;
	memcpy(out, p, n);
	out[n] = 0;
	return out;
}


/* The Hashed Token initial response: "alice" NUL HMAC(token, "Initiator" || cb). */
static char *ht_response(const char *user, const char *token_b64, const unsigned char *cb,
			 size_t cb_len, unsigned char responder[32])
{
	unsigned char token[128];
	int token_len = EVP_DecodeBlock(token, (const unsigned char *)token_b64, (int)strlen(token_b64));
	/* EVP_DecodeBlock counts the padding bytes in: 32 random bytes are 44 chars, "=" once. */
	if (token_len > 0 && token_b64[strlen(token_b64) - 1] == '=')
		token_len -= token_b64[strlen(token_b64) - 2] == '=' ? 2 : 1;
	unsigned char input[256];
	unsigned int len;
	memcpy(input, "Initiator", 9);
	memcpy(input + 9, cb, cb_len);
	unsigned char initiator[32];
	HMAC(EVP_sha256(), token, token_len, input, 9 + cb_len, initiator, &len);
	memcpy(input, "Responder", 9);
	memcpy(input + 9, cb, cb_len);
	HMAC(EVP_sha256(), token, token_len, input, 9 + cb_len, responder, &len);
	unsigned char raw[128];
	size_t user_len = strlen(user);
	memcpy(raw, user, user_len);
	raw[user_len] = 0;
	memcpy(raw + user_len + 1, initiator, 32);
	char *out = malloc(256);
	EVP_EncodeBlock((unsigned char *)out, raw, (int)(user_len + 33));
	return out;
}

static char *fast_login(const struct ph_server *s, const char *mechanism, const char *token,
			const char *extra, bool *responder_ok, struct raw_client **client)
{
	char *features;
	struct raw_client *c = connect_open(s, &features);
	free(features);
	unsigned char cb[128];
	int cb_len = 0;
	if (strcmp(mechanism, "HT-SHA-256-ENDP") == 0)
		cb_len = raw_client_binding(c, "tls-server-end-point", cb);
	unsigned char responder[32];
	char *initial = ht_response("alice", token, cb, cb_len > 0 ? (size_t)cb_len : 0, responder);
	raw_client_send(c, "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='%s'><initial-response>%s"
			   "</initial-response><user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'/>%s</authenticate>",
			mechanism, initial, extra ? extra : "");
	free(initial);
	char *answer = raw_client_wait(c, "urn:xmpp:sasl:2", WAIT);
	char expected[64];
	EVP_EncodeBlock((unsigned char *)expected, responder, 32);
	char data[128] = "";
	attribute(answer, "<additional-data>", data, sizeof(data));
	*responder_ok = strcmp(data, expected) == 0;
	*client = c;
	return answer;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, NULL, NULL);
	char *patched = ph_config_with_attributes(config, "c2s", "resumption-timeout=\"60s\"");
	ph_server_write_config(&s, patched);
	free(patched);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");

	char *features;
	struct raw_client *phone = connect_open(&s, &features);
	has_str(features, "<authentication xmlns='urn:xmpp:sasl:2'>", "SASL2 is offered");
	has_str(features, "<mechanism>SCRAM-SHA-256</mechanism>", "with SCRAM");
	has_str(features, "<bind xmlns='urn:xmpp:bind:0'>", "Bind2 inline");
	has_str(features, "<feature var='urn:xmpp:carbons:2'/>", "which can enable carbons");
	has_str(features, "<feature var='urn:xmpp:sm:3'/>", "and stream management");
	has_str(features, "<sm xmlns='urn:xmpp:sm:3'/>", "and resumption inline");
	free(features);

	char *success = raw_client_auth_scram2(phone, "SCRAM-SHA-256", "alice", "alice-secret", bind2);
	has_str(success, "<success xmlns='urn:xmpp:sasl:2'>", "one <authenticate/> succeeds (server signature verified)");
	char resource_jid[256] = "";
	attribute(success, "<authorization-identifier>", resource_jid, sizeof(resource_jid));
	ok(strncmp(resource_jid, "alice@localhost/Test.", 21) == 0,
	   "bound to a resource made from the tag: %s", resource_jid);
	has_str(success, "<bound xmlns='urn:xmpp:bind:0'>", "Bind2 answered");
	has_str(success, "resume='true'", "stream management enabled with resumption inline");
	char previd[64] = "";
	attribute(success, "<enabled xmlns='urn:xmpp:sm:3' id='", previd, sizeof(previd));
	ok(*previd != 0, "with a resumption id");
	free(success);
	ok(raw_client_sync(phone), "the stream carries stanzas at once, without a restart");
	raw_client_send(phone, "<presence/>");
	raw_client_sync(phone);

	/* Carbons are on: a message to alice's other device is copied here. */
	struct raw_client *laptop = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "laptop");
	struct raw_client *bob = raw_client_new_session(s.c2s_tls_port, "bob", "bob-secret", "b");
	raw_client_send(laptop, "<presence/>");
	raw_client_sync(laptop);
	raw_client_send(bob, "<message to='alice@localhost/laptop' type='chat'><body>for the laptop</body></message>");
	ok(raw_client_seen(laptop, "for the laptop", WAIT), "bob writes to alice's laptop");
	char *carbon = raw_client_wait(phone, "for the laptop", WAIT);
	has_str(carbon, "<received xmlns='urn:xmpp:carbons:2'>", "the phone gets a carbon (enabled inline)");
	free(carbon);

	/* Same device again: same resource, the old session is replaced. */
	struct raw_client *again = connect_open(&s, &features);
	free(features);
	success = raw_client_auth_scram2(again, "SCRAM-SHA-1", "alice", "alice-secret", bind2);
	char again_jid[256] = "", again_previd[64] = "";
	attribute(success, "<authorization-identifier>", again_jid, sizeof(again_jid));
	attribute(success, "<enabled xmlns='urn:xmpp:sm:3' id='", again_previd, sizeof(again_previd));
	ok(strcmp(again_jid, resource_jid) == 0, "the same user-agent id binds the same resource");
	free(success);
	ok(raw_client_seen(phone, "<conflict", WAIT), "and the old session ends with a conflict");
	raw_client_free(phone);

	/* Wrong password. */
	struct raw_client *wrong = connect_open(&s, &features);
	free(features);
	char *failure = raw_client_auth_scram2(wrong, "SCRAM-SHA-256", "alice", "not-it", bind2);
	has_str(failure, "<failure xmlns='urn:xmpp:sasl:2'>", "a wrong password fails in SASL2's shape");
	has_str(failure, "not-authorized", "not-authorized");
	free(failure);
	raw_client_free(wrong);

	/* PLAIN without Bind2: the client binds the classic way, same stream. */
	struct raw_client *plain = connect_open(&s, &features);
	free(features);
	raw_client_send(plain, "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>"
			       "<initial-response>AGJvYgBib2Itc2VjcmV0</initial-response></authenticate>");
	success = raw_client_wait(plain, "<success", WAIT);
	has_str(success, "<authorization-identifier>bob@localhost</authorization-identifier>",
		"PLAIN over SASL2 without Bind2: the bare JID");
	free(success);
	raw_client_send(plain, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
			       "<resource>classic</resource></bind></iq>");
	char *bound = raw_client_wait(plain, "id='b1'", WAIT);
	has_str(bound, "bob@localhost/classic", "then a classic bind on the same stream");
	free(bound);
	raw_client_free(plain);

	/* Resume inside the <authenticate/>. */
	raw_client_send(bob, "<message to='%s' type='chat'><body>while you sleep</body></message>", again_jid);
	ok(raw_client_seen(again, "while you sleep", WAIT), "a message reaches the device");
	raw_client_free(again); /* it dies without acknowledging it */
	struct raw_client *back = connect_open(&s, &features);
	free(features);
	char resume_inline[1024];
	snprintf(resume_inline, sizeof(resume_inline), "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>",
		 again_previd);
	success = raw_client_auth_scram2(back, "SCRAM-SHA-256", "alice", "alice-secret", resume_inline);
	has_str(success, "<resumed xmlns='urn:xmpp:sm:3'", "the session resumes inside the authentication");
	char resumed_jid[256] = "";
	attribute(success, "<authorization-identifier>", resumed_jid, sizeof(resumed_jid));
	ok(strcmp(resumed_jid, again_jid) == 0, "as the same resource");
	free(success);
	ok(raw_client_seen(back, "while you sleep", WAIT), "and the unacknowledged message comes again");
	raw_client_free(back);
	struct raw_client *stale = connect_open(&s, &features);
	free(features);
	snprintf(resume_inline, sizeof(resume_inline),
		 "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>%s", previd, bind2);
	success = raw_client_auth_scram2(stale, "SCRAM-SHA-256", "alice", "alice-secret", resume_inline);
	has_str(success, "<failed xmlns='urn:xmpp:sm:3'>", "resuming a replaced session fails inline");
	has_str(success, "<bound xmlns='urn:xmpp:bind:0'>", "and Bind2 binds a fresh session in the same step");
	free(success);
	raw_client_free(stale);
	/* FAST (XEP-0484). */
	char *fast_features;
	struct raw_client *first = connect_open(&s, &fast_features);
	has_str(fast_features, "<fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-NONE</mechanism>"
			       "<mechanism>HT-SHA-256-ENDP</mechanism></fast>", "FAST mechanisms are offered inline");
	free(fast_features);
	char token_request[1024];
	snprintf(token_request, sizeof(token_request), "%s<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>",
		 bind2);
	success = raw_client_auth_scram2(first, "SCRAM-SHA-256", "alice", "alice-secret", token_request);
	char token[128] = "";
	attribute(success, " token='", token, sizeof(token));
	has_str(success, "<token xmlns='urn:xmpp:fast:0' expiry='", "a login with a password gets a FAST token");
	ok(strlen(token) == 44, "of 32 random bytes");
	free(success);
	raw_client_free(first);
	bool responder_ok = false;
	struct raw_client *quick = NULL;
	char fast_extra[1024];
	snprintf(fast_extra, sizeof(fast_extra), "<fast xmlns='urn:xmpp:fast:0' count='1'/>%s",
		 strstr(bind2, "<bind"));
	success = fast_login(&s, "HT-SHA-256-NONE", token, fast_extra, &responder_ok, &quick);
	has_str(success, "<success xmlns='urn:xmpp:sasl:2'>", "the token authenticates in one round trip (HT-SHA-256-NONE)");
	ok(responder_ok, "and the server proves it knows the token too");
	has_str(success, "<bound xmlns='urn:xmpp:bind:0'>", "bound in the same round trip");
	has_str(success, "resume='true'", "with resumable stream management");
	free(success);
	ok(raw_client_sync(quick), "the stream is ready at once");
	raw_client_free(quick);
	success = fast_login(&s, "HT-SHA-256-NONE", token, fast_extra, &responder_ok, &quick);
	has_str(success, "not-authorized", "the same count again is a replay: refused");
	free(success);
	raw_client_free(quick);
	snprintf(fast_extra, sizeof(fast_extra), "<fast xmlns='urn:xmpp:fast:0' count='2'/>");
	success = fast_login(&s, "HT-SHA-256-ENDP", token, fast_extra, &responder_ok, &quick);
	has_str(success, "<success xmlns='urn:xmpp:sasl:2'>", "HT-SHA-256-ENDP binds the token to the TLS channel");
	ok(responder_ok, "with the server's hash over the same binding");
	free(success);
	raw_client_free(quick);
	success = fast_login(&s, "HT-SHA-256-NONE", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", NULL,
			     &responder_ok, &quick);
	has_str(success, "not-authorized", "a wrong token is refused");
	free(success);
	raw_client_free(quick);
	/* One round trip after TLS: the stream header and the FAST
	 * <authenticate/> (with Bind2) go in one write; the next thing the
	 * client waits for is <success/>. */
	long long t0 = now_ms();
	struct raw_client *classic = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "classic");
	raw_client_send(classic, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
	raw_client_seen(classic, "<enabled", WAIT);
	raw_client_send(classic, "<iq type='set' id='cc'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
	raw_client_seen(classic, "id='cc'", WAIT);
	long long classic_ms = now_ms() - t0;
	raw_client_free(classic);
	t0 = now_ms();
	struct raw_client *piped = raw_client_connect(s.c2s_tls_port, true);
	unsigned char no_cb[1];
	unsigned char responder[32];
	char *initial = ht_response("alice", token, no_cb, 0, responder);
	raw_client_send(piped, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
			       "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
			       "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'><initial-response>%s"
			       "</initial-response><user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'/>"
			       "<fast xmlns='urn:xmpp:fast:0' count='3'/>%s</authenticate>",
			initial, strstr(bind2, "<bind"));
	free(initial);
	success = raw_client_wait(piped, "<success", WAIT);
	long long fast_ms = now_ms() - t0;
	has_str(success, "<bound xmlns='urn:xmpp:bind:0'>",
		"pipelined stream header + FAST + Bind2: bound, carbons and resumable SM after one round trip");
	diag("connect to ready on loopback TLS: SASL1 (open, PLAIN, restart, bind, enable SM, carbons) %lld ms; "
	     "SASL2+FAST+Bind2 pipelined %lld ms", classic_ms, fast_ms);
	free(success);
	raw_client_free(piped);

	const char *passwd[] = { "passwd", "alice@localhost", NULL };
	ok(ph_ctl(&s, passwd, "alice-new-secret\n", NULL, NULL) == 0, "alice's password is changed");
	success = fast_login(&s, "HT-SHA-256-NONE", token, NULL, &responder_ok, &quick);
	has_str(success, "not-authorized", "and her FAST token is no longer accepted");
	free(success);
	raw_client_free(quick);

	raw_client_free(laptop);
	raw_client_free(bob);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
