/* XEP-0191 blocking between two real users who are contacts: once alice
 * blocks bob, nothing of bob reaches her (messages bounce as if she did
 * not exist, presence vanishes silently), she cannot write to him by
 * mistake (not-acceptable with <blocked/>), bob sees her go offline, the
 * list survives a restart, and unblocking restores it all. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct raw_client *online(const struct ph_server *s, const char *user, const char *resource)
{
	char password[128];
	snprintf(password, sizeof(password), "%s-secret", user);
	struct raw_client *c = raw_client_new_session(s->c2s_tls_port, user, password, resource);
	if (!c)
		return NULL;
	raw_client_send(c, "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
	free(raw_client_wait(c, "id='roster'", 5000));
	raw_client_send(c, "<iq type='get' id='blocklist'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
	free(raw_client_wait(c, "id='blocklist'", 5000));
	raw_client_send(c, "<presence><status>%s/%s online</status></presence>", user, resource);
	raw_client_sync(c);
	return c;
}

/* Mutual subscription, done the way clients do it. */
static void befriend(struct raw_client *a, const char *a_bare, struct raw_client *b,
		     const char *b_bare)
{
	raw_client_send(a, "<presence to='%s' type='subscribe'/>", b_bare);
	free(raw_client_wait(b, "type='subscribe'", 5000));
	raw_client_send(b, "<presence to='%s' type='subscribed'/>", a_bare);
	raw_client_send(b, "<presence to='%s' type='subscribe'/>", a_bare);
	free(raw_client_wait(a, "type='subscribe'", 5000));
	raw_client_send(a, "<presence to='%s' type='subscribed'/>", b_bare);
	raw_client_sync(a);
	raw_client_sync(b);
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	struct raw_client *alice = online(&s, "alice", "desk");
	struct raw_client *alice_phone = online(&s, "alice", "phone");
	struct raw_client *bob = online(&s, "bob", "laptop");
	if (!ok(alice && alice_phone && bob, "alice (two devices) and bob are online"))
		return done_testing();
	befriend(alice, "alice@localhost", bob, "bob@localhost");
	raw_client_send(bob, "<presence><status>bob before</status></presence>");
	ok(raw_client_seen(alice, "bob before", 5000), "as contacts, alice sees bob's presence");
	raw_client_discard(alice);
	raw_client_discard(alice_phone);
	raw_client_discard(bob);

	raw_client_send(alice, "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>"
			       "<item jid='bob@localhost'/></block></iq>");
	char *answer = raw_client_wait(alice, "id='b1'", 5000);
	has_str(answer, "type='result'", "alice blocks bob");
	free(answer);
	char *push = raw_client_wait(alice_phone, "<block", 5000);
	has_str(push, "jid='bob@localhost'", "her other device gets the block pushed");
	free(push);
	char *gone = raw_client_wait(bob, "type='unavailable'", 5000);
	ok(gone && strstr(gone, "from='alice@localhost/"), "bob sees alice go offline");
	free(gone);

	raw_client_send(bob, "<message to='alice@localhost' type='chat' id='m1'><body>hello?</body></message>");
	answer = raw_client_wait(bob, "id='m1'", 5000);
	has_str(answer, "<service-unavailable", "bob's message bounces with service-unavailable");
	free(answer);
	raw_client_send(bob, "<presence><status>bob after</status></presence>");
	raw_client_send(bob, "<iq type='get' id='q1' to='alice@localhost/desk'>"
			     "<query xmlns='jabber:iq:version'/></iq>");
	answer = raw_client_wait(bob, "id='q1'", 5000);
	has_str(answer, "<service-unavailable", "bob's IQ to alice's device bounces too");
	free(answer);
	raw_client_sync(bob);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "hello?"), 0, "alice does not get bob's message");
	is_int(raw_client_count(alice, "bob after"), 0, "nor his presence");
	is_int(raw_client_count(alice, "jabber:iq:version"), 0, "nor his IQ");
	is_int(raw_client_count(bob, "type='error'"), 0, "and bob gets no error for the presence");

	raw_client_send(alice, "<message to='bob@localhost' type='chat' id='m2'><body>oops</body></message>");
	answer = raw_client_wait(alice, "id='m2'", 5000);
	has_str(answer, "<not-acceptable", "alice writing to bob gets not-acceptable");
	has_str(answer, "urn:xmpp:blocking:errors", "with <blocked/>");
	free(answer);
	raw_client_sync(alice);
	raw_client_sync(bob);
	is_int(raw_client_count(bob, "oops"), 0, "and bob does not get it");

	/* Errors in the command itself. */
	raw_client_send(alice, "<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'/></iq>");
	answer = raw_client_wait(alice, "id='b2'", 5000);
	has_str(answer, "<bad-request", "a block without items is a bad-request");
	free(answer);
	raw_client_send(alice, "<iq type='set' id='b3'><block xmlns='urn:xmpp:blocking'>"
			       "<item jid='@@'/></block></iq>");
	answer = raw_client_wait(alice, "id='b3'", 5000);
	has_str(answer, "<jid-malformed", "a malformed JID is jid-malformed");
	free(answer);

	/* The list is on disk. */
	raw_client_free(alice);
	raw_client_free(alice_phone);
	raw_client_free(bob);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ok(ph_server_start(&s, NULL) == 0, "and starts again");
	alice = online(&s, "alice", "desk");
	bob = online(&s, "bob", "laptop");
	raw_client_send(alice, "<iq type='get' id='l1'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
	answer = raw_client_wait(alice, "id='l1'", 5000);
	has_str(answer, "jid='bob@localhost'", "after a restart bob is still blocked");
	free(answer);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "bob/laptop online"), 0,
	       "and alice's login did not show her bob's presence");
	raw_client_send(bob, "<message to='alice@localhost/desk' type='chat' id='m3'><body>again</body></message>");
	answer = raw_client_wait(bob, "id='m3'", 5000);
	has_str(answer, "<service-unavailable", "bob's messages still bounce");
	free(answer);

	/* Unblocking restores the conversation. */
	raw_client_send(alice, "<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'>"
			       "<item jid='bob@localhost'/></unblock></iq>");
	answer = raw_client_wait(alice, "id='u1'", 5000);
	has_str(answer, "type='result'", "alice unblocks bob");
	free(answer);
	push = raw_client_wait(alice, "<unblock", 5000);
	has_str(push, "jid='bob@localhost'", "and gets the unblock pushed");
	free(push);
	raw_client_send(bob, "<message to='alice@localhost' type='chat'><body>friends again</body></message>");
	ok(raw_client_seen(alice, "friends again", 5000), "bob's messages arrive again");

	/* Domains, and unblocking everything at once. */
	raw_client_send(alice, "<iq type='set' id='b4'><block xmlns='urn:xmpp:blocking'>"
			       "<item jid='localhost'/></block></iq>");
	free(raw_client_wait(alice, "id='b4'", 5000));
	raw_client_send(bob, "<message to='alice@localhost' type='chat' id='m4'><body>domain</body></message>");
	answer = raw_client_wait(bob, "id='m4'", 5000);
	has_str(answer, "<service-unavailable", "blocking a domain blocks its users");
	free(answer);
	raw_client_send(alice, "<iq type='set' id='u2'><unblock xmlns='urn:xmpp:blocking'/></iq>");
	answer = raw_client_wait(alice, "id='u2'", 5000);
	has_str(answer, "type='result'", "an unblock without items unblocks everything");
	free(answer);
	raw_client_send(alice, "<iq type='get' id='l2'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
	answer = raw_client_wait(alice, "id='l2'", 5000);
	ok(answer && !strstr(answer, "<item"), "the list is empty");
	free(answer);
	raw_client_send(bob, "<message to='alice@localhost' type='chat'><body>domain ok</body></message>");
	ok(raw_client_seen(alice, "domain ok", 5000), "and messages flow");

	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
