/* Fast reconnect with real clients: XEP-0388 SASL2 is offered with Bind2
 * (XEP-0386) and resumption inline; one <authenticate/> with SCRAM
 * authenticates (the server signature checked in additional-data), binds
 * a resource made from the client's tag and user-agent id (the same
 * device gets the same resource back), enables stream management and
 * carbons, and the stream carries stanzas at once, without a restart; a
 * wrong password fails in SASL2's shape; PLAIN without Bind2 leaves the
 * classic bind to the client; and a lost session resumes inside the
 * <authenticate/> with its unacknowledged stanza sent again. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT 5000

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
	raw_client_free(laptop);
	raw_client_free(bob);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
