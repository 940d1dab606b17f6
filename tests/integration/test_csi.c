/* XEP-0352 client state indication: a phone that says it is inactive gets
 * no presence flood (only the latest presence of each contact is kept),
 * still gets messages at once (held stanzas go out just before them, in
 * order), and gets the latest presences when it becomes active again. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct raw_client *online(const struct ph_server *s, const char *user)
{
	char password[128];
	snprintf(password, sizeof(password), "%s-secret", user);
	struct raw_client *c = raw_client_new_session(s->c2s_tls_port, user, password, "r");
	if (c) {
		raw_client_send(c, "<presence/>");
		raw_client_sync(c);
	}
	return c;
}

/* A barrier that does not count as a request (IQ answers are urgent and
 * would flush what is held): a stream-management ack round trip, which
 * goes out after everything already written to the client. */
static bool barrier(struct raw_client *c)
{
	raw_client_send(c, "<r xmlns='urn:xmpp:sm:3'/>");
	char *a = raw_client_wait(c, "<a xmlns", 5000);
	free(a);
	return a != NULL;
}

/* The next stanza, skipping stream-management requests and answers. */
static char *next_stanza(struct raw_client *c)
{
	for (;;) {
		char *e = raw_client_wait(c, NULL, 5000);
		if (!e || (strncmp(e, "<r ", 3) != 0 && strncmp(e, "<a ", 3) != 0))
			return e;
		free(e);
	}
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	struct raw_client *alice = online(&s, "alice");
	struct raw_client *bob = online(&s, "bob");
	if (!ok(alice && bob, "alice and bob are online"))
		return done_testing();
	/* Bob subscribes to alice's presence. */
	raw_client_send(bob, "<presence to='alice@localhost' type='subscribe'/>");
	free(raw_client_wait(alice, "type='subscribe'", 5000));
	raw_client_send(alice, "<presence to='bob@localhost' type='subscribed'/>");
	ok(raw_client_seen(bob, "type='subscribed'", 5000), "bob is subscribed to alice");
	raw_client_sync(bob);
	raw_client_send(bob, "<enable xmlns='urn:xmpp:sm:3'/>");
	free(raw_client_wait(bob, "<enabled", 5000));
	raw_client_discard(bob);

	raw_client_send(bob, "<inactive xmlns='urn:xmpp:csi:0'/>");
	for (int i = 1; i <= 5; i++)
		raw_client_send(alice, "<presence><status>mood %d</status></presence>", i);
	raw_client_send(alice, "<message to='bob@localhost' type='chat'>"
			       "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
	raw_client_sync(alice);
	barrier(bob);
	is_int(raw_client_count(bob, "mood"), 0, "inactive bob gets none of alice's five presence updates");
	is_int(raw_client_count(bob, "composing"), 0, "nor her chat state");

	raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>call me</body></message>");
	char *first = next_stanza(bob);
	has_str(first, "mood 5", "a message arrives at once, after the held presence (the latest only)");
	free(first);
	char *second = next_stanza(bob);
	has_str(second, "composing", "then the held chat state");
	free(second);
	char *third = next_stanza(bob);
	has_str(third, "call me", "then the message");
	free(third);
	raw_client_sync(bob);
	is_int(raw_client_count(bob, "mood"), 0, "the four older presences never come");

	raw_client_send(alice, "<presence><status>mood 6</status></presence>");
	raw_client_send(alice, "<presence><status>mood 7</status></presence>");
	raw_client_sync(alice);
	barrier(bob);
	is_int(raw_client_count(bob, "mood"), 0, "still inactive: nothing");
	raw_client_send(bob, "<active xmlns='urn:xmpp:csi:0'/>");
	ok(raw_client_seen(bob, "mood 7", 5000), "becoming active delivers the latest presence");
	raw_client_sync(bob);
	is_int(raw_client_count(bob, "mood 6"), 0, "and not the one it replaced");
	raw_client_send(alice, "<presence><status>mood 8</status></presence>");
	ok(raw_client_seen(bob, "mood 8", 5000), "active again, updates flow at once");

	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
