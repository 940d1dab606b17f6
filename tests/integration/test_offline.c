/* Offline storage (XEP-0160) as a queue that loses nothing: messages to
 * an offline user survive a restart, arrive in order with a delay stamp
 * at the next initial presence, and leave the queue only after the
 * receiving session stayed up for the grace period; a session that drops
 * earlier gets them again. Transient messages are not kept, and a full
 * queue bounces with resource-constraint instead of losing anything. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct raw_client *login(const struct ph_server *s, const char *user, const char *resource)
{
	char password[128];
	snprintf(password, sizeof(password), "%s-secret", user);
	return raw_client_new_session(s->c2s_tls_port, user, password, resource);
}

/* Positions of the bodies in the order they arrived. */
static bool arrived_in_order(struct raw_client *c, const char *const *bodies, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		char *m = raw_client_wait(c, "<message", 5000);
		bool right = m && strstr(m, bodies[i]) && strstr(m, "urn:xmpp:delay");
		if (!right)
			diag("message %zu: %s", i, m ? m : "(none)");
		free(m);
		if (!right)
			return false;
	}
	return true;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, "durability=\"fsync\"", NULL);
	char *patched = ph_config_with_attributes(config, "module name=\"offline\"", "max-messages=\"6\"");
	ph_server_write_config(&s, patched);
	free(patched);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with fsync durability"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	struct raw_client *alice = login(&s, "alice", "desk");
	if (!ok(alice != NULL, "alice logs in; bob is offline"))
		return done_testing();
	raw_client_send(alice, "<presence/>");
	static const char *const bodies[] = { "first", "second", "third", "fourth via a gone resource" };
	raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>first</body></message>");
	raw_client_send(alice, "<message to='bob@localhost'><body>second</body></message>");
	raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>third</body></message>");
	raw_client_send(alice, "<message to='bob@localhost/gone' type='chat'><body>fourth via a gone resource</body></message>");
	raw_client_send(alice, "<message to='bob@localhost' type='headline'><body>news</body></message>");
	raw_client_send(alice, "<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
	raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>ephemeral</body>"
			       "<no-store xmlns='urn:xmpp:hints'/></message>");
	raw_client_send(alice, "<message to='nobody@localhost' type='chat' id='x1'><body>?</body></message>");
	char *answer = raw_client_wait(alice, "id='x1'", 5000);
	has_str(answer, "<service-unavailable", "a message to a user that does not exist bounces");
	free(answer);
	raw_client_send(alice, "<message to='bob@localhost' type='groupchat' id='g1'><body>?</body></message>");
	answer = raw_client_wait(alice, "id='g1'", 5000);
	has_str(answer, "<service-unavailable", "a groupchat message to an offline user bounces");
	free(answer);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "type='error'"), 0, "the messages for bob are accepted without error");

	/* A restart in between: the queue is on disk. */
	raw_client_free(alice);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ok(ph_server_start(&s, NULL) == 0, "and starts again");

	struct raw_client *bob = login(&s, "bob", "phone");
	raw_client_sync(bob);
	is_int(raw_client_count(bob, "<message"), 0, "nothing before bob's initial presence");
	raw_client_send(bob, "<presence/>");
	ok(arrived_in_order(bob, bodies, 4), "bob gets the four messages in order, with delay stamps");
	raw_client_sync(bob);
	is_int(raw_client_count(bob, "news"), 0, "not the headline");
	is_int(raw_client_count(bob, "composing"), 0, "not the bare chat state");
	is_int(raw_client_count(bob, "ephemeral"), 0, "not the no-store message");

	/* Bob drops before the grace period: the messages stay queued. */
	raw_client_free(bob);
	if (!ok(ph_wait_log(&s, "left before the grace period", 5000),
		"the server notes that bob left too early")) {
		char *l = ph_server_log(&s);
		diag("%s", l);
		free(l);
	}
	bob = login(&s, "bob", "laptop");
	raw_client_send(bob, "<presence/>");
	ok(arrived_in_order(bob, bodies, 4), "so bob's next login gets them again, in order");
	ok(ph_wait_log(&s, "delivered and safe", 5000),
	   "bob stays up for the grace period: they are safe");
	raw_client_free(bob);
	bob = login(&s, "bob", "tablet");
	raw_client_send(bob, "<presence/>");
	raw_client_sync(bob);
	is_int(raw_client_count(bob, "<message"), 0, "and are not delivered a third time");
	raw_client_free(bob);

	/* Quota: max-messages=6, then resource-constraint. */
	alice = login(&s, "alice", "desk");
	for (int i = 0; i < 6; i++)
		raw_client_send(alice, "<message to='bob@localhost' type='chat' id='q%d'><body>q%d</body></message>", i, i);
	raw_client_send(alice, "<message to='bob@localhost' type='chat' id='q6'><body>q6</body></message>");
	answer = raw_client_wait(alice, "id='q6'", 5000);
	has_str(answer, "<resource-constraint", "the seventh message to a full queue bounces");
	free(answer);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "type='error'"), 0, "the six before it were accepted");
	char *log = ph_server_log(&s);
	has_str(log, "offline queue full", "the refusal is logged");
	free(log);
	raw_client_free(alice);
	bob = login(&s, "bob", "phone");
	raw_client_send(bob, "<presence/>");
	static const char *const quota_bodies[] = { "q0", "q1", "q2", "q3", "q4", "q5" };
	ok(arrived_in_order(bob, quota_bodies, 6), "bob gets the six");
	raw_client_free(bob);

	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
