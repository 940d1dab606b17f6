/* XEP-0357 push with a real app server (a client of the server stands in
 * for it): a phone enables push and its stream dies (XEP-0198
 * hibernation): a message for it publishes a summary notification to the
 * app server, with the count, the sender, the secret from the
 * publish-options and no body (include-body is off); a live device
 * needs none, a sleeping phone gets one while the laptop is online, an
 * account with no session at all and a friend request too; a group chat
 * mention of an absent member wakes it; transient app-server errors keep
 * the registration, permanent ones remove it (logged); disable stops
 * them; registrations survive a restart; min-interval spaces them. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT 5000
#define APP "pushsvc@localhost/app"

static struct raw_client *login(const struct ph_server *s, const char *user, const char *resource)
{
	char password[128];
	snprintf(password, sizeof(password), "%s-secret", user);
	struct raw_client *c = raw_client_new_session(s->c2s_tls_port, user, password, resource);
	if (c) {
		raw_client_send(c, "<presence/>");
		raw_client_sync(c);
		raw_client_discard(c);
	}
	return c;
}

static bool iq_ok(struct raw_client *c, const char *payload)
{
	static int n;
	char id[24];
	snprintf(id, sizeof(id), "q%d", ++n);
	raw_client_send(c, "<iq type='set' id='%s'>%s</iq>", id, payload);
	char needle[32];
	snprintf(needle, sizeof(needle), "id='%s'", id);
	char *answer = raw_client_wait(c, needle, WAIT);
	bool yes = answer && strstr(answer, "type='result'");
	if (!yes)
		diag("%s", answer ? answer : "(no answer)");
	free(answer);
	return yes;
}

static const char *enable_push =
	"<enable xmlns='urn:xmpp:push:0' jid='" APP "' node='phone-node'>"
	"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
	"<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
	"<field var='secret'><value>s3cr3t</value></field></x></enable>";

/* A phone: logs in, enables push and resumable stream management, then
 * its connection dies (the session hibernates). */
static void sleeping_phone(const struct ph_server *s)
{
	struct raw_client *phone = login(s, "alice", "phone");
	iq_ok(phone, enable_push);
	raw_client_send(phone, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
	raw_client_seen(phone, "<enabled", WAIT);
	raw_client_free(phone);
}

/* The next push notification the app server receives (caller frees), or
 * NULL; `answer` is what the app server replies with ("" for a result). */
static char *next_push(struct raw_client *app, const char *error)
{
	char *push = raw_client_wait(app, "urn:xmpp:push:0", WAIT);
	if (!push)
		return NULL;
	char id[64] = "";
	const char *p = strstr(push, " id='");
	if (p)
		sscanf(p + 5, "%63[^']", id);
	if (error && *error)
		raw_client_send(app, "<iq type='error' id='%s' to='alice@localhost'>%s</iq>", id, error);
	else
		raw_client_send(app, "<iq type='result' id='%s' to='alice@localhost'/>", id);
	raw_client_sync(app);
	return push;
}

static void say(struct raw_client *from, const char *to, const char *body)
{
	raw_client_send(from, "<message to='%s' type='chat'><body>%s</body></message>", to, body);
	raw_client_sync(from);
}

static int pushes_now(struct raw_client *app)
{
	raw_client_sync(app);
	return raw_client_count(app, "urn:xmpp:push:0");
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, "durability=\"fsync\"", NULL);
	char *patched = ph_config_with_attributes(config, "c2s", "resumption-timeout=\"60s\"");
	ph_server_write_config(&s, patched);
	free(patched);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with push"))
		return done_testing();
	const char *users[] = { "alice", "bob", "pushsvc" };
	for (size_t i = 0; i < 3; i++)
		ph_add_user(&s, users[i]);
	struct raw_client *app = login(&s, "pushsvc", "app");
	struct raw_client *bob = login(&s, "bob", "b");
	if (!ok(app && bob, "the app server and bob are online"))
		return done_testing();

	struct raw_client *probe = login(&s, "alice", "probe");
	raw_client_send(probe, "<iq type='get' id='d1' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
	char *answer = raw_client_wait(probe, "id='d1'", WAIT);
	has_str(answer, "var='urn:xmpp:push:0'", "the account advertises push");
	free(answer);
	raw_client_free(probe);

	sleeping_phone(&s);
	say(bob, "alice@localhost", "wake up");
	char *push = next_push(app, NULL);
	has_str(push, "<publish node='phone-node'>", "a message for the sleeping phone is pushed to its node");
	has_str(push, "from='alice@localhost'", "from the user's account");
	has_str(push, "urn:xmpp:push:summary", "as a summary");
	has_str(push, "<field var='message-count'><value>1</value>", "counting one message");
	has_str(push, "<value>bob@localhost/b</value>", "naming the sender");
	ok(push && !strstr(push, "wake up"), "without the body (include-body is off)");
	has_str(push, "<value>s3cr3t</value>", "with the publish-options secret");
	free(push);
	say(bob, "alice@localhost", "second");
	push = next_push(app, NULL);
	has_str(push, "<field var='message-count'><value>2</value>", "the next one counts two");
	free(push);

	/* The phone comes back live: no push. */
	struct raw_client *phone = login(&s, "alice", "phone");
	say(bob, "alice@localhost/phone", "you are here");
	ok(raw_client_seen(phone, "you are here", WAIT), "a live phone gets the message");
	ok(pushes_now(app) == 0, "and no push is sent");
	/* The laptop is online, the phone sleeps: the phone is pushed. */
	raw_client_send(phone, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
	raw_client_seen(phone, "<enabled", WAIT);
	raw_client_free(phone);
	struct raw_client *laptop = login(&s, "alice", "laptop");
	say(bob, "alice@localhost", "to all devices");
	ok(raw_client_seen(laptop, "to all devices", WAIT), "the laptop gets the message");
	push = next_push(app, NULL);
	ok(push != NULL, "and the sleeping phone is woken");
	free(push);
	raw_client_free(laptop);

	/* Group chat: a mention of an absent member. */
	raw_client_send(bob, "<presence to='team@conference.localhost/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
	ok(raw_client_seen(bob, "code='201'", WAIT), "bob creates a room");
	raw_client_send(bob, "<iq type='set' id='cfg' to='team@conference.localhost'><query xmlns='http://jabber.org/protocol/muc#owner'>"
			     "<x xmlns='jabber:x:data' type='submit'/></query></iq>");
	ok(raw_client_seen(bob, "id='cfg'", WAIT), "accepts the defaults");
	raw_client_send(bob, "<iq type='set' id='mem' to='team@conference.localhost'><query xmlns='http://jabber.org/protocol/muc#admin'>"
			     "<item jid='alice@localhost' affiliation='member'/></query></iq>");
	ok(raw_client_seen(bob, "id='mem'", WAIT), "and makes alice a member");
	raw_client_discard(app);
	raw_client_send(bob, "<message to='team@conference.localhost' type='groupchat'><body>lunch?</body></message>");
	ok(raw_client_seen(bob, "lunch?", WAIT) && pushes_now(app) == 0,
	   "a group message that does not mention alice wakes nobody");
	raw_client_send(bob, "<message to='team@conference.localhost' type='groupchat'><body>Alice: lunch?</body></message>");
	push = next_push(app, NULL);
	has_str(push, "team@conference.localhost/Bob", "a mention of alice (absent member) pushes her phone");
	free(push);

	/* Errors from the app server. */
	say(bob, "alice@localhost", "transient");
	push = next_push(app, "<error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>");
	ok(push != NULL, "a push the app server refuses for now (wait)");
	free(push);
	ok(ph_wait_log(&s, "failed for node phone-node (wait resource-constraint): kept", WAIT),
	   "keeps the registration, and says so in the log");
	say(bob, "alice@localhost", "permanent");
	push = next_push(app, "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>");
	ok(push != NULL, "the next push is refused for good (cancel)");
	free(push);
	ok(ph_wait_log(&s, "refused node phone-node (cancel item-not-found): registration removed", WAIT),
	   "which removes the registration, logged");
	say(bob, "alice@localhost", "nobody pushes this");
	ok(pushes_now(app) == 0, "so nothing is pushed any more");

	/* Enable again, then disable. */
	sleeping_phone(&s);
	struct raw_client *tablet = login(&s, "alice", "tablet");
	ok(iq_ok(tablet, "<disable xmlns='urn:xmpp:push:0' jid='" APP "' node='phone-node'/>"),
	   "push is disabled (from another device)");
	raw_client_free(tablet);
	say(bob, "alice@localhost", "after disable");
	ok(pushes_now(app) == 0, "nothing is pushed after disable");

	/* Friend requests, offline, restart, min-interval. */
	sleeping_phone(&s);
	raw_client_free(app);
	raw_client_free(bob);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	config = ph_standard_config(&s, "durability=\"fsync\"", NULL);
	/* The standard config's min-interval="0" becomes an hour. */
	char *at = strstr(config, "min-interval=\"0\"");
	if (at) {
		*at = 0;
		patched = malloc(strlen(config) + strlen(at + 16) + 32);
		sprintf(patched, "%smin-interval=\"1h\"%s", config, at + 16);
		ph_server_write_config(&s, patched);
		free(patched);
	}
	free(config);
	ok(ph_server_start(&s, NULL) == 0, "and starts again (min-interval 1h)");
	app = login(&s, "pushsvc", "app");
	bob = login(&s, "bob", "b");
	raw_client_send(bob, "<presence to='alice@localhost' type='subscribe'/>");
	push = next_push(app, NULL);
	has_str(push, "pending-subscription-count", "a friend request for alice (offline) is pushed: the registration survived");
	free(push);
	say(bob, "alice@localhost", "soon after");
	ok(pushes_now(app) == 0, "within min-interval nothing more is pushed");
	raw_client_free(app);
	raw_client_free(bob);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
