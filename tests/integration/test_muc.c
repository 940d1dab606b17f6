/* XEP-0045 group chat with real clients: the service is discoverable;
 * rooms are created locked (reserved) or instant; joins see the others,
 * themselves (110, 100, 170, 201), history within their limits and the
 * subject, and fail with the XEP's errors (locked, conflict, password,
 * members-only, banned, full, too long); messages carry one room
 * stanza-id and an occupant-id, private messages and nick changes (303)
 * work; full rooms, hidden rooms and the service's room list, admins
 * named by the form; kicks (307), bans (301), members-only (321/322),
 * archive access from membership on, voice in
 * moderated rooms; XEP-0410 self-pings; the room's archive pages like a
 * user's and answers members only in members-only rooms; a session that
 * ends (closed, or its stream-management timeout) leaves; persistent
 * rooms, affiliations and archives survive a restart; destroyed rooms are
 * gone with their venue; flood control; and 200 occupants receive every
 * message of 5 concurrent senders in one order. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE "conference.localhost"
#define ROOM1 "room1@" SERVICE
#define WAIT 5000

static struct raw_client *online(const struct ph_server *s, const char *user, const char *resource)
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

/* Sends a join and returns the element that answers it: the self
 * presence (status 110) or the presence error; caller frees. */
static char *join(struct raw_client *c, const char *room_nick, const char *x_children)
{
	raw_client_send(c, "<presence to='%s'><x xmlns='http://jabber.org/protocol/muc'>%s</x></presence>",
			room_nick, x_children ? x_children : "");
	/* The others' presence stays queued for the caller. */
	char from[300];
	snprintf(from, sizeof(from), "from='%s'", room_nick);
	for (int tries = 0; tries < 10; tries++) {
		char *e = raw_client_wait(c, from, WAIT);
		if (!e)
			return NULL;
		if (strstr(e, "code='110'") || strstr(e, "type='error'"))
			return e;
		free(e);
	}
	return NULL;
}

static bool joined(struct raw_client *c, const char *room_nick, const char *x_children)
{
	char *e = join(c, room_nick, x_children);
	bool yes = e && strstr(e, "code='110'") && !strstr(e, "type='error'");
	free(e);
	return yes;
}

static bool join_fails_with(struct raw_client *c, const char *room_nick, const char *x_children,
			    const char *condition)
{
	char *e = join(c, room_nick, x_children);
	bool yes = e && strstr(e, "type='error'") && strstr(e, condition);
	if (!yes)
		diag("join %s: %s", room_nick, e ? e : "(nothing)");
	free(e);
	return yes;
}

/* Sends an IQ and returns its answer (caller frees). */
static char *iq(struct raw_client *c, const char *type, const char *to, const char *payload)
{
	static int n;
	char id[24];
	snprintf(id, sizeof(id), "iq%d", ++n);
	raw_client_send(c, "<iq type='%s' id='%s' to='%s'>%s</iq>", type, id, to, payload);
	char needle[40];
	snprintf(needle, sizeof(needle), "id='%s'", id);
	return raw_client_wait(c, needle, WAIT);
}

static bool iq_ok(struct raw_client *c, const char *type, const char *to, const char *payload)
{
	char *answer = iq(c, type, to, payload);
	bool yes = answer && strstr(answer, "type='result'");
	if (!yes)
		diag("iq to %s: %s", to, answer ? answer : "(nothing)");
	free(answer);
	return yes;
}

static bool iq_fails_with(struct raw_client *c, const char *type, const char *to,
			  const char *payload, const char *condition)
{
	char *answer = iq(c, type, to, payload);
	bool yes = answer && strstr(answer, "type='error'") && strstr(answer, condition);
	if (!yes)
		diag("iq to %s: %s", to, answer ? answer : "(nothing)");
	free(answer);
	return yes;
}

static bool configure(struct raw_client *c, const char *room, const char *fields)
{
	char payload[4096];
	snprintf(payload, sizeof(payload),
		 "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>"
		 "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
		 "%s</x></query>",
		 fields);
	return iq_ok(c, "set", room, payload);
}

static char *field(const char *var, const char *value)
{
	static char buffers[8][256];
	static int next;
	char *b = buffers[next++ % 8];
	snprintf(b, 256, "<field var='%s'><value>%s</value></field>", var, value);
	return b;
}

static bool admin(struct raw_client *c, const char *room, const char *item)
{
	char payload[1024];
	snprintf(payload, sizeof(payload),
		 "<query xmlns='http://jabber.org/protocol/muc#admin'>%s</query>", item);
	return iq_ok(c, "set", room, payload);
}

static void say(struct raw_client *c, const char *room, const char *id, const char *body)
{
	raw_client_send(c, "<message to='%s' type='groupchat' id='%s'><body>%s</body></message>",
			room, id, body);
}

/* The value of attribute `name` in the first element named `element`
 * (e.g. "stanza-id") of xml, copied into out. */
static bool attribute_of(const char *xml, const char *element, const char *name, char *out,
			 size_t size)
{
	char open[64];
	snprintf(open, sizeof(open), "<%s", element);
	const char *e = xml ? strstr(xml, open) : NULL;
	if (!e)
		return false;
	const char *end = strchr(e, '>');
	char pattern[64];
	snprintf(pattern, sizeof(pattern), " %s='", name);
	const char *a = strstr(e, pattern);
	if (!a || (end && a > end))
		return false;
	a += strlen(pattern);
	const char *q = strchr(a, '\'');
	if (!q || (size_t)(q - a) >= size)
		return false;
	memcpy(out, a, (size_t)(q - a));
	out[q - a] = 0;
	return true;
}

static int count_in(struct raw_client *c, const char *needle)
{
	raw_client_sync(c);
	return raw_client_count(c, needle);
}

static char *server_config(struct ph_server *s, const char *muc_attributes)
{
	char *config = ph_standard_config(s, "durability=\"fsync\"", NULL);
	char *with_c2s = ph_config_with_attributes(config, "c2s", "resumption-timeout=\"1s\"");
	char *with_muc = ph_config_with_attributes(with_c2s, "module name=\"muc\"", muc_attributes);
	free(config);
	free(with_c2s);
	return with_muc;
}

/* ---- the fan-out check --------------------------------------------------------------- */

#define FAN_USERS 40
#define FAN_RESOURCES 5
#define FAN_OCCUPANTS (FAN_USERS * FAN_RESOURCES)
#define FAN_SENDERS 5
#define FAN_MESSAGES 20

static void fan_out(struct ph_server *s)
{
	static struct raw_client *clients[FAN_OCCUPANTS];
	char name[32], resource[16], nick[64];
	for (int u = 0; u < FAN_USERS; u++) {
		snprintf(name, sizeof(name), "fan%d", u);
		ph_add_user(s, name);
	}
	int connected = 0;
	for (int i = 0; i < FAN_OCCUPANTS; i++) {
		snprintf(name, sizeof(name), "fan%d", i / FAN_RESOURCES);
		snprintf(resource, sizeof(resource), "r%d", i % FAN_RESOURCES);
		clients[i] = online(s, name, resource);
		if (!clients[i])
			continue;
		connected++;
		snprintf(nick, sizeof(nick), "big@" SERVICE "/n%d", i);
		if (i == 0) {
			joined(clients[0], nick, NULL);
			configure(clients[0], "big@" SERVICE, field("muc#roomconfig_maxusers", "1000"));
		} else {
			joined(clients[i], nick, "<history maxstanzas='0'/>");
		}
	}
	ok(connected == FAN_OCCUPANTS, "%d occupants joined the room 'big'", connected);
	for (int i = 0; i < FAN_OCCUPANTS; i++)
		if (clients[i])
			raw_client_sync(clients[i]), raw_client_discard(clients[i]);
	/* Five senders interleave without waiting for anything. */
	for (int m = 0; m < FAN_MESSAGES; m++) {
		for (int k = 0; k < FAN_SENDERS; k++) {
			char id[32], body[32];
			snprintf(id, sizeof(id), "s%d-%d", k, m);
			snprintf(body, sizeof(body), "fan %d %d", k, m);
			say(clients[k * 37], "big@" SERVICE, id, body);
		}
	}
	const int total = FAN_SENDERS * FAN_MESSAGES;
	static char reference[FAN_SENDERS * FAN_MESSAGES][128];
	int complete = 0, same_order = 0;
	for (int i = 0; i < FAN_OCCUPANTS; i++) {
		if (!clients[i])
			continue;
		int got = 0;
		bool order = true;
		for (; got < total; got++) {
			char *m = raw_client_wait(clients[i], "type='groupchat'", 10000);
			if (!m)
				break;
			char sid[32], body_id[64];
			bool parsed = attribute_of(m, "stanza-id", "id", sid, sizeof(sid)) &&
				      attribute_of(m, "message", "id", body_id, sizeof(body_id));
			char key[128];
			snprintf(key, sizeof(key), "%s:%s", parsed ? sid : "?", parsed ? body_id : "?");
			if (i == 0)
				snprintf(reference[got], sizeof(reference[got]), "%s", key);
			else if (strcmp(reference[got], key) != 0)
				order = false;
			free(m);
		}
		complete += got == total;
		same_order += got == total && order;
	}
	ok(complete == FAN_OCCUPANTS, "every occupant received all %d messages (%d did)", total,
	   complete);
	ok(same_order == FAN_OCCUPANTS,
	   "every occupant saw the same stanza-id sequence in the same order (%d did)", same_order);
	/* stanza-ids increase along that order. */
	bool increasing = true;
	long previous = 0;
	for (int k = 0; k < total; k++) {
		long id = strtol(reference[k], NULL, 10);
		increasing &= id > previous;
		previous = id;
	}
	ok(increasing, "the room's stanza-ids increase message after message");
	for (int i = 0; i < FAN_OCCUPANTS; i++)
		raw_client_free(clients[i]);
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = server_config(&s, "message-rate=\"10000\" message-burst=\"10000\" max-nick-length=\"20\"");
	ph_server_write_config(&s, config);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with the chat service"))
		return done_testing();
	const char *users[] = { "alice", "bob", "carol", "dave", "eve" };
	for (size_t i = 0; i < 5; i++)
		ph_add_user(&s, users[i]);
	struct raw_client *alice = online(&s, "alice", "a");
	struct raw_client *bob = online(&s, "bob", "b");
	struct raw_client *carol = online(&s, "carol", "c");
	struct raw_client *dave = online(&s, "dave", "d");
	struct raw_client *eve = online(&s, "eve", "e");
	if (!ok(alice && bob && carol && dave && eve, "five users are online"))
		return done_testing();

	/* -- discovery ------------------------------------------------------------- */
	char *answer = iq(alice, "get", "localhost",
			  "<query xmlns='http://jabber.org/protocol/disco#items'/>");
	has_str(answer, "jid='" SERVICE "'", "the server lists its chat service in disco#items");
	free(answer);
	answer = iq(alice, "get", SERVICE, "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "category='conference'", "the service is a conference service");
	has_str(answer, "var='http://jabber.org/protocol/muc'", "that speaks XEP-0045");
	free(answer);

	/* -- a reserved room ----------------------------------------------------------- */
	answer = join(alice, ROOM1 "/Alice", NULL);
	has_str(answer, "code='201'", "alice creates room1 (status 201)");
	has_str(answer, "affiliation='owner'", "as its owner");
	has_str(answer, "role='moderator'", "and moderator");
	has_str(answer, "occupant-id xmlns='urn:xmpp:occupant-id:0'", "with an occupant-id");
	free(answer);
	ok(join_fails_with(bob, ROOM1 "/Bob", NULL, "item-not-found"),
	   "bob cannot enter the room before it is configured (locked)");
	answer = iq(alice, "get", ROOM1, "<query xmlns='http://jabber.org/protocol/muc#owner'/>");
	has_str(answer, "var='muc#roomconfig_roomname'", "the owner gets the configuration form");
	has_str(answer, "var='muc#roomconfig_persistentroom'", "with persistence");
	free(answer);
	ok(iq_fails_with(bob, "get", ROOM1, "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
			 "item-not-found"),
	   "to anyone else the locked room does not exist yet");
	char fields[2048];
	snprintf(fields, sizeof(fields), "%s%s%s%s", field("muc#roomconfig_roomname", "Room One"),
		 field("muc#roomconfig_persistentroom", "1"), field("muc#roomconfig_whois", "anyone"),
		 field("muc#roomconfig_changesubject", "0"));
	ok(configure(alice, ROOM1, fields), "alice configures it: persistent, non-anonymous");
	ok(raw_client_seen(alice, "<subject", WAIT), "and then gets the (empty) subject: it is open");
	raw_client_discard(alice);
	answer = join(bob, ROOM1 "/Bob", NULL);
	has_str(answer, "code='110'", "bob joins");
	has_str(answer, "code='100'", "told that the room is non-anonymous (100)");
	has_str(answer, "code='170'", "and that it is archived (170)");
	has_str(answer, "jid='bob@localhost/b'", "his real JID is visible in a non-anonymous room");
	free(answer);
	ok(raw_client_seen(bob, "from='" ROOM1 "/Alice'", 100),
	   "bob got alice's presence before his own");
	ok(raw_client_seen(bob, "<subject", WAIT), "and the subject after it");
	ok(raw_client_seen(alice, "from='" ROOM1 "/Bob'", WAIT), "alice sees bob come in");
	ok(iq_fails_with(bob, "get", ROOM1, "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
			 "forbidden"),
	   "a non-owner may not read the configuration");
	raw_client_discard(alice);
	raw_client_discard(bob);

	ok(join_fails_with(carol, ROOM1 "/Bob", NULL, "conflict"),
	   "carol cannot take bob's nickname (conflict)");
	ok(join_fails_with(carol, ROOM1 "/abcdefghijklmnopqrstuvwxyz", NULL, "not-acceptable"),
	   "nor a nickname over the configured length");
	raw_client_send(carol, "<presence to='" ROOM1 "'/>");
	answer = raw_client_wait(carol, "type='error'", WAIT);
	has_str(answer, "jid-malformed", "a join without a nickname is jid-malformed");
	free(answer);

	/* -- messages ---------------------------------------------------------------------- */
	say(bob, ROOM1, "m1", "hello room");
	char *to_alice = raw_client_wait(alice, "<body>hello room</body>", WAIT);
	char *to_bob = raw_client_wait(bob, "<body>hello room</body>", WAIT);
	has_str(to_alice, "from='" ROOM1 "/Bob'", "alice receives bob's message from his nick");
	has_str(to_bob, "id='m1'", "bob gets his own message back with its id");
	char sid_a[32] = "", sid_b[32] = "";
	attribute_of(to_alice, "stanza-id", "id", sid_a, sizeof(sid_a));
	attribute_of(to_bob, "stanza-id", "id", sid_b, sizeof(sid_b));
	ok(*sid_a && strcmp(sid_a, sid_b) == 0, "both copies carry the same room stanza-id (%s)", sid_a);
	has_str(to_alice, "by='" ROOM1 "'", "given by the room");
	has_str(to_alice, "urn:xmpp:occupant-id:0", "with bob's occupant-id");
	free(to_alice);
	free(to_bob);
	raw_client_send(bob, "<message to='" ROOM1 "' type='groupchat'><body>forged</body>"
			     "<stanza-id xmlns='urn:xmpp:sid:0' by='" ROOM1 "' id='999999'/></message>");
	to_alice = raw_client_wait(alice, "<body>forged</body>", WAIT);
	ok(to_alice && !strstr(to_alice, "id='999999'"), "a stanza-id forged by a sender is dropped");
	free(to_alice);
	raw_client_send(carol, "<message to='" ROOM1 "' type='groupchat' id='x'><body>intruder</body></message>");
	answer = raw_client_wait(carol, "type='error'", WAIT);
	has_str(answer, "not-acceptable", "a non-occupant's groupchat message is not-acceptable");
	free(answer);
	ok(count_in(alice, "intruder") == 0, "and reaches nobody");
	raw_client_send(bob, "<message to='" ROOM1 "/Alice' type='chat'><body>psst</body></message>");
	answer = raw_client_wait(alice, "<body>psst</body>", WAIT);
	has_str(answer, "from='" ROOM1 "/Bob'", "a private message reaches alice from bob's nick");
	has_str(answer, "http://jabber.org/protocol/muc#user", "marked as a MUC private message");
	free(answer);
	raw_client_send(bob, "<message to='" ROOM1 "/Nobody' type='chat'><body>?</body></message>");
	answer = raw_client_wait(bob, "type='error'", WAIT);
	has_str(answer, "item-not-found", "a private message to an unknown nick: item-not-found");
	free(answer);

	/* -- subject (only moderators here) ----------------------------------------------------- */
	raw_client_send(bob, "<message to='" ROOM1 "' type='groupchat'><subject>bob's</subject></message>");
	answer = raw_client_wait(bob, "type='error'", WAIT);
	has_str(answer, "forbidden", "a participant may not change the subject of this room");
	free(answer);
	raw_client_send(alice, "<message to='" ROOM1 "' type='groupchat'><subject>Topic A</subject></message>");
	ok(raw_client_seen(bob, "<subject>Topic A</subject>", WAIT), "the owner's subject reaches everyone");

	/* -- nick change ---------------------------------------------------------------------- */
	raw_client_discard(alice);
	raw_client_send(bob, "<presence to='" ROOM1 "/Bobby'/>");
	answer = raw_client_wait(alice, "code='303'", WAIT);
	has_str(answer, "nick='Bobby'", "a nick change: unavailable with 303 and the new nick");
	has_str(answer, "from='" ROOM1 "/Bob'", "from the old nick");
	free(answer);
	ok(raw_client_seen(alice, "from='" ROOM1 "/Bobby'", WAIT), "then available from the new one");
	answer = raw_client_wait(bob, "code='303'", WAIT);
	has_str(answer, "code='110'", "bob's own copy says it is him");
	free(answer);

	/* -- history ----------------------------------------------------------------------------- */
	for (int i = 1; i <= 3; i++) {
		char id[8], body[16];
		snprintf(id, sizeof(id), "h%d", i);
		snprintf(body, sizeof(body), "history %d", i);
		say(alice, ROOM1, id, body);
	}
	ok(raw_client_seen(bob, "history 3", WAIT), "three more messages are said");
	ok(joined(carol, ROOM1 "/Carol", "<history maxstanzas='2'/>"), "carol joins asking for 2 messages");
	ok(raw_client_seen(carol, "<subject>Topic A</subject>", WAIT), "she gets the subject");
	ok(count_in(carol, "history 2") == 1 && count_in(carol, "history 3") == 1 &&
		   count_in(carol, "history 1") == 0,
	   "and exactly the last two messages");
	ok(count_in(carol, "urn:xmpp:delay") == 2, "each with a delay");
	answer = raw_client_wait(carol, "history 2", 0);
	has_str(answer, "from='" ROOM1 "'", "stamped by the room");
	free(answer);
	ok(joined(dave, ROOM1 "/Dave", "<history maxchars='0'/>"), "dave joins asking for no history");
	ok(count_in(dave, "<body>") == 0, "and gets none");
	raw_client_discard(dave);
	raw_client_send(dave, "<presence to='" ROOM1 "/Dave' type='unavailable'><status>bye</status></presence>");
	answer = raw_client_wait(alice, "type='unavailable'", WAIT);
	has_str(answer, "from='" ROOM1 "/Dave'", "dave leaves: the others see him go");
	has_str(answer, "<status>bye</status>", "with his words");
	free(answer);
	ok(raw_client_seen(dave, "code='110'", WAIT), "and he gets his own unavailable (110)");
	ok(joined(dave, ROOM1 "/Dave", "<history seconds='3600'/>"), "dave comes back (history of the last hour)");
	ok(count_in(dave, "history 1") == 1, "and gets the messages of the last hour");
	raw_client_send(dave, "<presence to='" ROOM1 "/Dave' type='unavailable'/>");
	ok(raw_client_seen(dave, "type='unavailable'", WAIT), "dave leaves again");
	raw_client_discard(dave);
	ok(joined(dave, ROOM1 "/Dave", "<history since='2999-01-01T00:00:00Z'/>"),
	   "and joins asking for what was said since a future date");
	ok(count_in(dave, "<body>") == 0, "which is nothing");
	answer = iq(eve, "get", SERVICE, "<query xmlns='http://jabber.org/protocol/disco#items'/>");
	has_str(answer, "jid='" ROOM1 "'", "the public room is listed by the service");
	has_str(answer, "name='Room One'", "with its name");
	free(answer);

	/* -- self-ping (XEP-0410) ---------------------------------------------------------- */
	ok(iq_ok(bob, "get", ROOM1 "/Bobby", "<ping xmlns='urn:xmpp:ping'/>"),
	   "a self-ping of a joined occupant is answered");
	ok(iq_fails_with(eve, "get", ROOM1 "/Eve", "<ping xmlns='urn:xmpp:ping'/>", "not-acceptable"),
	   "a self-ping of someone not in the room is not-acceptable");
	raw_client_discard(alice);
	raw_client_send(bob, "<iq type='get' id='v1' to='" ROOM1 "/Alice'><query xmlns='jabber:iq:version'/></iq>");
	char *relayed = raw_client_wait(alice, "jabber:iq:version", WAIT);
	char relay_id[64] = "";
	attribute_of(relayed, "iq", "id", relay_id, sizeof(relay_id));
	has_str(relayed, "from='" ROOM1 "/Bobby'", "an IQ to another occupant is relayed from the asker's nick");
	ok(relayed && !strstr(relayed, "bob@localhost"), "without the asker's real JID");
	free(relayed);
	raw_client_send(alice, "<iq type='result' id='%s' to='" ROOM1 "/Bobby'><query xmlns='jabber:iq:version'>"
			       "<name>raw</name></query></iq>", relay_id);
	answer = raw_client_wait(bob, "id='v1'", WAIT);
	has_str(answer, "from='" ROOM1 "/Alice'", "the answer comes back from the nick that was asked");
	has_str(answer, "<name>raw</name>", "with its content");
	free(answer);

	/* -- password ------------------------------------------------------------------------ */
	snprintf(fields, sizeof(fields), "%s%s", field("muc#roomconfig_passwordprotectedroom", "1"),
		 field("muc#roomconfig_roomsecret", "s3cret"));
	raw_client_discard(bob);
	ok(configure(alice, ROOM1, fields), "alice sets a password");
	ok(raw_client_seen(bob, "code='104'", WAIT), "occupants are told the configuration changed (104)");
	ok(join_fails_with(eve, ROOM1 "/Eve", NULL, "not-authorized"), "eve without it: not-authorized");
	ok(join_fails_with(eve, ROOM1 "/Eve", "<password>wrong</password>", "not-authorized"),
	   "with a wrong one too");
	ok(joined(eve, ROOM1 "/Eve", "<password>s3cret</password>"), "with the right one she is in");
	snprintf(fields, sizeof(fields), "%s", field("muc#roomconfig_passwordprotectedroom", "0"));
	ok(configure(alice, ROOM1, fields), "the password goes again");

	/* -- kick, ban ------------------------------------------------------------------------- */
	raw_client_discard(alice);
	raw_client_discard(eve);
	ok(admin(alice, ROOM1, "<item nick='Eve' role='none'><reason>quiet</reason></item>"),
	   "alice kicks eve");
	answer = raw_client_wait(eve, "code='307'", WAIT);
	has_str(answer, "code='110'", "eve learns she was kicked (307, 110)");
	has_str(answer, "<reason>quiet</reason>", "and why");
	has_str(answer, "<actor nick='Alice'/>", "and by whom");
	free(answer);
	ok(raw_client_seen(alice, "code='307'", WAIT), "the others see it");
	ok(iq_fails_with(bob, "set", ROOM1,
			 "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Alice' role='none'/></query>",
			 "forbidden"),
	   "a participant may not kick");
	ok(iq_fails_with(alice, "set", ROOM1,
			 "<query xmlns='http://jabber.org/protocol/muc#admin'><item jid='alice@localhost' affiliation='member'/></query>",
			 "conflict"),
	   "the last owner cannot step down");
	raw_client_discard(carol);
	ok(admin(alice, ROOM1, "<item jid='carol@localhost' affiliation='outcast'><reason>spam</reason></item>"),
	   "alice bans carol");
	answer = raw_client_wait(carol, "code='301'", WAIT);
	has_str(answer, "type='unavailable'", "carol is removed with 301");
	free(answer);
	ok(join_fails_with(carol, ROOM1 "/Carol", NULL, "forbidden"), "and cannot come back (forbidden)");
	answer = iq(alice, "get", ROOM1,
		    "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query>");
	has_str(answer, "jid='carol@localhost'", "the ban list names her");
	free(answer);
	ok(iq_fails_with(bob, "get", ROOM1,
			 "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query>",
			 "forbidden"),
	   "a participant may not read it");

	/* -- members-only ------------------------------------------------------------------------ */
	ok(admin(alice, ROOM1, "<item jid='bob@localhost' affiliation='member'/>"), "bob becomes a member");
	raw_client_discard(dave);
	ok(configure(alice, ROOM1, field("muc#roomconfig_membersonly", "1")), "the room becomes members-only");
	answer = raw_client_wait(dave, "code='322'", WAIT);
	has_str(answer, "type='unavailable'", "dave (no member) is removed with 322");
	free(answer);
	ok(iq_ok(bob, "get", ROOM1 "/Bobby", "<ping xmlns='urn:xmpp:ping'/>"), "bob (member) stays");
	ok(join_fails_with(eve, ROOM1 "/Eve", NULL, "registration-required"),
	   "eve is refused: registration-required");
	ok(admin(alice, ROOM1, "<item jid='eve@localhost' affiliation='member' nick='Evie'/>"),
	   "alice makes eve a member with a reserved nick");
	ok(join_fails_with(dave, ROOM1 "/Evie", NULL, "registration-required"),
	   "dave is still refused");
	answer = iq(eve, "get", ROOM1,
		    "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/>");
	has_str(answer, "name='Evie'", "eve can discover her reserved nick");
	free(answer);
	ok(joined(eve, ROOM1 "/Evie", NULL), "and joins with it");
	answer = iq(alice, "get", ROOM1,
		    "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query>");
	has_str(answer, "jid='eve@localhost'", "the member list names eve");
	has_str(answer, "jid='bob@localhost'", "and bob");
	free(answer);

	/* -- the room's archive ---------------------------------------------------------------------- */
	answer = iq(eve, "set", ROOM1,
		    "<query xmlns='urn:xmpp:mam:2' queryid='q1'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></query>");
	has_str(answer, "<fin", "a member queries the room's archive");
	ok(answer && !strstr(answer, "complete='true'"), "the first page of 2 is not the last");
	free(answer);
	ok(count_in(eve, "queryid='q1'") == 2, "two results come");
	answer = raw_client_wait(eve, "queryid='q1'", 0);
	has_str(answer, "<body>hello room</body>", "oldest first: bob's first message");
	has_str(answer, "from='" ROOM1 "'", "from the room");
	char first_id[32] = "";
	ok(attribute_of(answer, "result", "id", first_id, sizeof(first_id)) && strcmp(first_id, sid_a) == 0,
	   "its archive id is the stanza-id everyone got (%s)", first_id);
	free(answer);
	raw_client_discard(eve);
	char page[512];
	snprintf(page, sizeof(page),
		 "<query xmlns='urn:xmpp:mam:2' queryid='q2'><set xmlns='http://jabber.org/protocol/rsm'>"
		 "<max>100</max><after>%s</after></set></query>", first_id);
	answer = iq(eve, "set", ROOM1, page);
	has_str(answer, "complete='true'", "paging on after that id reaches the end");
	free(answer);
	ok(count_in(eve, "queryid='q2'") == 4, "with the four later messages");
	raw_client_discard(eve);
	ok(iq_fails_with(dave, "set", ROOM1, "<query xmlns='urn:xmpp:mam:2'/>", "forbidden"),
	   "a non-member may not read a members-only room's archive");

	/* -- invitations ------------------------------------------------------------------------------- */
	raw_client_send(bob, "<message to='" ROOM1 "' id='inv1'><x xmlns='http://jabber.org/protocol/muc#user'>"
			     "<invite to='dave@localhost'/></x></message>");
	answer = raw_client_wait(bob, "id='inv1'", WAIT);
	has_str(answer, "forbidden", "a member may not invite into this members-only room");
	free(answer);
	raw_client_send(alice, "<message to='" ROOM1 "'><x xmlns='http://jabber.org/protocol/muc#user'>"
			       "<invite to='dave@localhost'><reason>come</reason></invite></x></message>");
	answer = raw_client_wait(dave, "<invite", WAIT);
	has_str(answer, "from='" ROOM1 "'", "the owner's mediated invitation comes from the room");
	has_str(answer, "from='alice@localhost/a'", "naming the inviter");
	has_str(answer, "<reason>come</reason>", "with the reason");
	free(answer);
	ok(joined(dave, ROOM1 "/Dave", "<history maxstanzas='0'/>"),
	   "the invitation made dave a member: he may enter");
	raw_client_send(dave, "<presence to='" ROOM1 "/Dave' type='unavailable'/>");
	ok(configure(alice, ROOM1, field("parley#memberhistory", "since-membership")),
	   "alice lets new members read only what follows their membership");
	raw_client_discard(dave);
	answer = iq(dave, "set", ROOM1, "<query xmlns='urn:xmpp:mam:2' queryid='q3'/>");
	has_str(answer, "complete='true'", "dave's archive query is complete");
	free(answer);
	ok(count_in(dave, "queryid='q3'") == 0, "and shows nothing from before he was a member");
	say(alice, ROOM1, "after", "welcome dave");
	ok(raw_client_seen(alice, "welcome dave", WAIT), "alice says something new");
	raw_client_discard(dave);
	answer = iq(dave, "set", ROOM1, "<query xmlns='urn:xmpp:mam:2' queryid='q4'/>");
	free(answer);
	ok(count_in(dave, "queryid='q4'") == 1, "which dave reads in the archive");

	/* -- a full room, admins by the form -------------------------------------------------------------- */
	ok(joined(alice, "small@" SERVICE "/Alice", NULL), "alice creates the room 'small'");
	snprintf(fields, sizeof(fields), "%s%s%s", field("muc#roomconfig_maxusers", "2"),
		 field("muc#roomconfig_publicroom", "0"),
		 "<field var='muc#roomconfig_roomadmins'><value>eve@localhost</value></field>");
	ok(configure(alice, "small@" SERVICE, fields), "for two occupants, hidden, with eve as admin");
	answer = iq(eve, "get", SERVICE, "<query xmlns='http://jabber.org/protocol/disco#items'/>");
	ok(answer && !strstr(answer, "small@"), "a hidden room is not listed");
	free(answer);
	ok(joined(bob, "small@" SERVICE "/Bob", NULL), "bob takes the second place");
	ok(join_fails_with(carol, "small@" SERVICE "/Carol", NULL, "service-unavailable"),
	   "carol finds the room full (service-unavailable)");
	answer = join(eve, "small@" SERVICE "/Eve", NULL);
	has_str(answer, "code='110'", "an admin still gets in");
	has_str(answer, "affiliation='admin'", "eve is admin by the form's list");
	has_str(answer, "role='moderator'", "and so a moderator");
	free(answer);

	/* -- the room's vCard (avatar) ------------------------------------------------------------------ */
	ok(iq_fails_with(bob, "set", ROOM1, "<vCard xmlns='vcard-temp'><FN>mine</FN></vCard>", "forbidden"),
	   "only an owner sets the room's vCard");
	ok(iq_ok(alice, "set", ROOM1, "<vCard xmlns='vcard-temp'><FN>Room One</FN><PHOTO><TYPE>image/png</TYPE>"
				      "<BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard>"),
	   "the owner sets it, with a photo");
	answer = iq(eve, "get", ROOM1, "<vCard xmlns='vcard-temp'/>");
	has_str(answer, "<BINVAL>aGVsbG8=</BINVAL>", "anyone reads it back");
	free(answer);
	answer = iq(eve, "get", ROOM1, "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "<field var='muc#roominfo_avatarhash' type='text-multi' label='Avatar hash'>"
			"<value>aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d</value>",
		"disco#info announces the photo's SHA-1 (XEP-0486)");
	free(answer);

	/* -- a moderated room, voice ------------------------------------------------------------------- */
	ok(joined(alice, "room3@" SERVICE "/Alice", NULL), "alice creates room3");
	ok(configure(alice, "room3@" SERVICE, field("muc#roomconfig_moderatedroom", "1")),
	   "a moderated room");
	answer = join(dave, "room3@" SERVICE "/Dave", NULL);
	has_str(answer, "role='visitor'", "dave enters as a visitor");
	free(answer);
	say(dave, "room3@" SERVICE, "v1", "may I?");
	answer = raw_client_wait(dave, "type='error'", WAIT);
	has_str(answer, "forbidden", "a visitor may not speak: forbidden");
	free(answer);
	ok(admin(alice, "room3@" SERVICE, "<item nick='Dave' role='participant'/>"), "alice gives dave voice");
	answer = raw_client_wait(dave, "role='participant'", WAIT);
	ok(answer != NULL, "dave's presence shows his new role");
	free(answer);
	say(dave, "room3@" SERVICE, "v2", "thanks");
	ok(raw_client_seen(alice, "<body>thanks</body>", WAIT), "now he is heard");

	/* -- instant room, multi-session nick, session end ---------------------------------------- */
	raw_client_send(carol, "<presence to='room2@" SERVICE "/Carol'/>");
	ok(raw_client_seen(carol, "code='201'", WAIT), "a join without <x/> makes an instant room");
	ok(joined(dave, "room2@" SERVICE "/Dave", NULL), "that others can enter at once");
	struct raw_client *carol2 = online(&s, "carol", "c2");
	raw_client_discard(dave);
	ok(carol2 && joined(carol2, "room2@" SERVICE "/Carol", NULL),
	   "carol joins again from a second device with the same nick");
	raw_client_free(carol2);
	ok(iq_ok(dave, "get", "localhost", "<ping xmlns='urn:xmpp:ping'/>"), "(dave settles)");
	raw_client_sync(carol);
	ok(raw_client_count(dave, "type='unavailable'") == 0,
	   "when that device goes, carol is still in the room for the others");
	ok(iq_ok(carol, "get", "room2@" SERVICE "/Carol", "<ping xmlns='urn:xmpp:ping'/>"),
	   "and her first device still is");
	raw_client_free(carol);
	carol = NULL;
	answer = raw_client_wait(dave, "type='unavailable'", WAIT);
	has_str(answer, "from='room2@" SERVICE "/Carol'", "when carol's last session closes, she leaves");
	free(answer);
	/* Stream management: a hibernating session leaves at its timeout. */
	raw_client_send(dave, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
	ok(raw_client_seen(dave, "<enabled", WAIT), "dave enables resumable stream management");
	raw_client_discard(alice);
	raw_client_free(dave);
	dave = NULL;
	answer = raw_client_wait(alice, "from='room3@" SERVICE "/Dave'", 15000);
	has_str(answer, "type='unavailable'", "when his resumption times out, dave leaves room3");
	free(answer);

	/* -- fan-out ------------------------------------------------------------------------------------ */
	fan_out(&s);

	/* -- restart ------------------------------------------------------------------------------------- */
	raw_client_free(alice);
	raw_client_free(bob);
	raw_client_free(eve);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	config = server_config(&s, "message-rate=\"1\" message-burst=\"3\" max-rooms-per-user=\"2\"");
	ph_server_write_config(&s, config);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "and starts again (with strict flood control)"))
		return done_testing();
	ok(ph_wait_log(&s, "persistent rooms restored", WAIT), "persistent rooms are restored");
	alice = online(&s, "alice", "a");
	bob = online(&s, "bob", "b");
	eve = online(&s, "eve", "e");
	answer = iq(eve, "get", ROOM1, "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "name='Room One'", "room1 keeps its name");
	has_str(answer, "muc_membersonly", "and its configuration");
	has_str(answer, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d", "and its avatar");
	free(answer);
	ok(joined(eve, ROOM1 "/Evie", "<history maxstanzas='1'/>"), "eve is still a member");
	ok(raw_client_seen(eve, "<body>welcome dave</body>", WAIT), "history on join comes from the archive");
	ok(raw_client_seen(eve, "<subject>Topic A</subject>", WAIT), "and the subject was kept");
	struct raw_client *carol_again = online(&s, "carol", "c");
	ok(join_fails_with(carol_again, ROOM1 "/Carol", NULL, "forbidden"), "carol is still banned");
	raw_client_free(carol_again);
	answer = iq(alice, "get", "room2@" SERVICE, "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "item-not-found", "the temporary room2 is gone");
	free(answer);
	ok(joined(bob, ROOM1 "/Bob", NULL), "bob joins too");
	int errors = 0;
	for (int i = 0; i < 8; i++)
		say(bob, ROOM1, "flood", "flood");
	for (int i = 0; i < 8; i++) {
		char *e = raw_client_wait(bob, "id='flood'", WAIT);
		errors += e && strstr(e, "resource-constraint");
		free(e);
	}
	ok(errors >= 4, "flood control: %d of 8 rapid messages are refused (resource-constraint)", errors);
	ok(ph_wait_log(&s, "sends too fast", WAIT), "and logged");
	ok(joined(bob, "r2@" SERVICE "/Bob", NULL), "bob enters a second room");
	ok(join_fails_with(bob, "r3@" SERVICE "/Bob", NULL, "resource-constraint"),
	   "but not a third (max-rooms-per-user 2): resource-constraint");

	/* -- destroy ------------------------------------------------------------------------------------ */
	ok(joined(alice, ROOM1 "/Alice", NULL), "alice joins room1");
	raw_client_discard(bob);
	ok(iq_ok(alice, "set", ROOM1,
		 "<query xmlns='http://jabber.org/protocol/muc#owner'><destroy jid='room9@" SERVICE "'>"
		 "<reason>moving</reason></destroy></query>"),
	   "alice destroys room1");
	answer = raw_client_wait(bob, "<destroy", WAIT);
	has_str(answer, "jid='room9@" SERVICE "'", "occupants learn of the alternate venue");
	has_str(answer, "<reason>moving</reason>", "and the reason");
	free(answer);
	answer = iq(bob, "get", ROOM1, "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "item-not-found", "the room is gone");
	free(answer);
	raw_client_free(alice);
	raw_client_free(bob);
	raw_client_free(eve);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ok(ph_server_start(&s, NULL) == 0, "and starts again");
	eve = online(&s, "eve", "e");
	answer = iq(eve, "get", ROOM1, "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "item-not-found", "the destroyed room does not come back");
	free(answer);
	raw_client_free(eve);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
