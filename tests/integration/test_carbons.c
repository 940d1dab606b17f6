/* XEP-0280 carbons between a user's phone and laptop: what one device
 * receives or sends, the other sees as a <received/> or <sent/> copy,
 * unless it did not enable carbons, the message is private, or it is not
 * a conversation message; and nobody gets a message twice. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct raw_client *online(const struct ph_server *s, const char *user, const char *resource,
				 int priority)
{
	char password[128];
	snprintf(password, sizeof(password), "%s-secret", user);
	struct raw_client *c = raw_client_new_session(s->c2s_tls_port, user, password, resource);
	if (c) {
		raw_client_send(c, "<presence><priority>%d</priority></presence>", priority);
		raw_client_sync(c);
	}
	return c;
}

static bool enable_carbons(struct raw_client *c)
{
	raw_client_send(c, "<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
	char *answer = raw_client_wait(c, "id='carbons'", 5000);
	bool done = answer && strstr(answer, "type='result'");
	free(answer);
	return done;
}

static void settle(struct raw_client **clients, size_t n)
{
	for (size_t i = 0; i < n; i++)
		raw_client_sync(clients[i]);
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	struct raw_client *phone = online(&s, "alice", "phone", 5);
	struct raw_client *laptop = online(&s, "alice", "laptop", 1);
	struct raw_client *tablet = online(&s, "alice", "tablet", 0);
	struct raw_client *bob = online(&s, "bob", "b", 0);
	struct raw_client *all[] = { phone, laptop, tablet, bob };
	if (!ok(phone && laptop && tablet && bob, "alice (three devices) and bob are online"))
		return done_testing();
	ok(enable_carbons(phone), "alice's phone enables carbons");
	ok(enable_carbons(laptop), "so does her laptop (the tablet does not)");
	settle(all, 4);
	for (size_t i = 0; i < 4; i++)
		raw_client_discard(all[i]);

	raw_client_send(bob, "<message to='alice@localhost/phone' type='chat'><body>to the phone</body></message>");
	settle(all, 4);
	ok(raw_client_count(phone, "to the phone") == 1 && raw_client_count(phone, "<received") == 0,
	   "the phone gets bob's message itself");
	char *copy = raw_client_wait(laptop, "to the phone", 100);
	has_str(copy, "<received xmlns='urn:xmpp:carbons:2'", "the laptop gets a <received/> copy");
	has_str(copy, "urn:xmpp:forward:0", "with the original forwarded");
	has_str(copy, "from='alice@localhost'", "from alice's bare JID");
	free(copy);
	is_int(raw_client_count(tablet, "to the phone"), 0, "the tablet, without carbons, gets nothing");

	raw_client_send(phone, "<message to='bob@localhost' type='chat'><body>from the phone</body></message>");
	settle(all, 4);
	copy = raw_client_wait(laptop, "from the phone", 100);
	has_str(copy, "<sent xmlns='urn:xmpp:carbons:2'", "what the phone sends, the laptop sees as <sent/>");
	free(copy);
	is_int(raw_client_count(phone, "<sent"), 0, "the phone gets no copy of its own message");
	is_int(raw_client_count(bob, "from the phone"), 1, "bob gets the message once");

	raw_client_send(bob, "<message to='alice@localhost'><body>normal to bare</body></message>");
	settle(all, 4);
	ok(raw_client_count(phone, "normal to bare") == 1 && raw_client_count(phone, "<received") == 0,
	   "a normal message to the bare JID goes to the phone (highest priority)");
	copy = raw_client_wait(laptop, "normal to bare", 100);
	has_str(copy, "<received", "and the laptop gets a copy");
	free(copy);

	raw_client_send(bob, "<message to='alice@localhost' type='chat'><body>chat to bare</body></message>");
	settle(all, 4);
	is_int(raw_client_count(phone, "chat to bare"), 1, "a chat to the bare JID reaches the phone once");
	is_int(raw_client_count(laptop, "chat to bare"), 1, "and the laptop once (no copy on top)");
	is_int(raw_client_count(laptop, "<received"), 0, "as the message itself, not a carbon");

	raw_client_send(bob, "<message to='alice@localhost/phone' type='chat'><body>secret</body>"
			     "<private xmlns='urn:xmpp:carbons:2'/></message>");
	raw_client_send(bob, "<message to='alice@localhost/phone' type='chat'><body>no copy</body>"
			     "<no-copy xmlns='urn:xmpp:hints'/></message>");
	raw_client_send(bob, "<message to='alice@localhost/phone' type='headline'><body>headline</body></message>");
	settle(all, 4);
	is_int(raw_client_count(laptop, "secret"), 0, "a private message is not copied");
	is_int(raw_client_count(laptop, "no copy"), 0, "nor one with the no-copy hint");
	is_int(raw_client_count(laptop, "headline"), 0, "nor a headline");

	raw_client_send(laptop, "<iq type='set' id='off'><disable xmlns='urn:xmpp:carbons:2'/></iq>");
	free(raw_client_wait(laptop, "id='off'", 5000));
	raw_client_send(bob, "<message to='alice@localhost/phone' type='chat'><body>after disable</body></message>");
	settle(all, 4);
	is_int(raw_client_count(laptop, "after disable"), 0, "after disabling, the laptop gets no copies");

	for (size_t i = 0; i < 4; i++)
		raw_client_free(all[i]);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
