/* XEP-0198 stream management with real connections: acknowledgements
 * count stanzas, a connection dropped without closing the stream is
 * resumed and gets exactly the stanzas it had not acknowledged, once; a
 * second resume kicks the first connection; a bogus id fails; a session
 * that is not resumed in time hands its messages to the offline queue;
 * and, the promise itself, messages acknowledged to the sender survive a
 * kill -9 right after the acknowledgement (durability fsync), each
 * delivered exactly once after the restart. */
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

/* Enables stream management; returns the resumption id (caller frees). */
static char *enable(struct raw_client *c, const char *max)
{
	raw_client_send(c, "<enable xmlns='urn:xmpp:sm:3' resume='true'%s%s%s/>",
			max ? " max='" : "", max ? max : "", max ? "'" : "");
	char *enabled = raw_client_wait(c, "<enabled", 5000);
	const char *id = enabled ? strstr(enabled, "id='") : NULL;
	char *copy = id ? strndup(id + 4, strcspn(id + 4, "'")) : NULL;
	free(enabled);
	return copy;
}

/* Asks for an acknowledgement until it reaches `h` (acks only count what
 * is delivered or on disk, so the first answer may be lower). */
static bool acked(struct raw_client *c, unsigned h)
{
	char needle[32];
	snprintf(needle, sizeof(needle), "h='%u'", h);
	for (int attempt = 0; attempt < 50; attempt++) {
		raw_client_send(c, "<r xmlns='urn:xmpp:sm:3'/>");
		if (raw_client_seen(c, needle, 200))
			return true;
	}
	return false;
}

/* A new connection up to the point where bind or resume comes. */
static struct raw_client *authenticated(const struct ph_server *s, const char *user)
{
	char password[128];
	snprintf(password, sizeof(password), "%s-secret", user);
	struct raw_client *c = raw_client_connect(s->c2s_tls_port, true);
	free(raw_client_open(c, "localhost"));
	free(raw_client_auth_plain(c, NULL, user, password));
	char *features = raw_client_open(c, "localhost");
	bool has_sm = features && strstr(features, "urn:xmpp:sm:3");
	free(features);
	if (!has_sm)
		diag("no stream management feature after authentication");
	return c;
}

static int count_each(struct raw_client *c, const char *prefix, int first, int last, int *twice)
{
	int missing = 0;
	*twice = 0;
	for (int i = first; i <= last; i++) {
		char body[64];
		snprintf(body, sizeof(body), "<body>%s%d</body>", prefix, i);
		int n = raw_client_count(c, body);
		missing += n == 0;
		*twice += n > 1;
	}
	return missing;
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
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with fsync durability"))
		return done_testing();
	const char *users[] = { "alice", "bob", "carol", "dave", "erin" };
	for (size_t i = 0; i < 5; i++)
		ph_add_user(&s, users[i]);

	struct raw_client *alice = login(&s, "alice", "a");
	char *alice_id = alice ? enable(alice, NULL) : NULL;
	ok(alice_id != NULL, "alice enables stream management with resumption");
	struct raw_client *bob = login(&s, "bob", "b");
	raw_client_send(bob, "<presence/>");
	char *bob_id = enable(bob, NULL);
	ok(bob_id != NULL, "so does bob");

	for (int i = 1; i <= 5; i++)
		raw_client_send(alice, "<message to='bob@localhost/b' type='chat'><body>m%d</body></message>", i);
	ok(acked(alice, 5), "alice's five messages are acknowledged (h=5)");
	ok(raw_client_seen(bob, "<body>m5</body>", 5000), "bob receives them");
	ok(raw_client_seen(bob, "<r xmlns", 100), "and the server asks bob for an acknowledgement");
	/* Bob has handled only two of them when his connection dies. */
	raw_client_send(bob, "<a xmlns='urn:xmpp:sm:3' h='2'/>");
	raw_client_free(bob);
	ok(ph_wait_log(&s, "bob@localhost/b waits", 10000), "bob's session waits to be resumed");
	raw_client_send(alice, "<message to='bob@localhost/b' type='chat'><body>m6</body></message>");
	raw_client_send(alice, "<message to='bob@localhost/b' type='chat'><body>m7</body></message>");
	ok(acked(alice, 7), "messages to the waiting session are acknowledged too");

	struct raw_client *bob2 = authenticated(&s, "bob");
	raw_client_send(bob2, "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='2'/>", bob_id ? bob_id : "");
	char *resumed = raw_client_wait(bob2, "<resumed", 5000);
	has_str(resumed, "previd=", "bob resumes on a new connection");
	free(resumed);
	raw_client_sync(bob2);
	int twice = 0;
	int missing = count_each(bob2, "m", 3, 7, &twice);
	is_int(missing, 0, "every message he had not acknowledged (m3..m7) is resent");
	is_int(twice, 0, "each exactly once");
	is_int(raw_client_count(bob2, "<body>m1</body>") + raw_client_count(bob2, "<body>m2</body>"), 0,
	       "and the acknowledged ones are not");
	raw_client_send(alice, "<message to='bob@localhost/b' type='chat'><body>m8</body></message>");
	ok(raw_client_seen(bob2, "<body>m8</body>", 5000), "the resumed session receives new messages");

	/* A second resume while the first connection is up takes over. */
	struct raw_client *bob3 = authenticated(&s, "bob");
	raw_client_send(bob3, "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='8'/>", bob_id ? bob_id : "");
	resumed = raw_client_wait(bob3, "<resumed", 5000);
	ok(resumed != NULL, "resuming again from a third connection works");
	free(resumed);
	raw_client_seen(bob2, "never sent", 1000);
	ok(raw_client_closed(bob2), "and the previous connection is closed");
	raw_client_free(bob2);

	struct raw_client *stranger = authenticated(&s, "carol");
	raw_client_send(stranger, "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>", bob_id ? bob_id : "");
	char *failed = raw_client_wait(stranger, "<failed", 5000);
	has_str(failed, "<item-not-found", "another user cannot resume bob's session");
	free(failed);
	raw_client_send(stranger, "<resume xmlns='urn:xmpp:sm:3' previd='bogus' h='0'/>");
	failed = raw_client_wait(stranger, "<failed", 5000);
	has_str(failed, "<item-not-found", "an unknown id fails with item-not-found");
	free(failed);
	raw_client_free(stranger);

	/* Not resumed in time: the messages go to the offline queue. */
	struct raw_client *carol = login(&s, "carol", "c");
	raw_client_send(carol, "<presence/>");
	char *carol_id = enable(carol, "1");
	ok(carol_id != NULL, "carol enables resumption with max=1");
	raw_client_free(carol);
	ok(ph_wait_log(&s, "carol@localhost/c waits 1 s", 10000), "her session waits one second");
	for (int i = 1; i <= 3; i++)
		raw_client_send(alice, "<message to='carol@localhost/c' type='chat'><body>t%d</body></message>", i);
	ok(ph_wait_log(&s, "carol@localhost/c was not resumed in time", 10000), "it is not resumed in time");
	carol = login(&s, "carol", "c2");
	raw_client_send(carol, "<presence/>");
	ok(raw_client_seen(carol, "<body>t3</body>", 5000), "carol's next login gets the messages");
	raw_client_sync(carol);
	missing = count_each(carol, "t", 1, 3, &twice);
	ok(missing == 0 && twice == 0, "all three, once each");
	raw_client_free(carol);
	raw_client_free(bob3);

	/* A client that could not resume sends its messages again on a new
	 * stream: those with a known origin-id (XEP-0359) are not routed again,
	 * whether the recipient is online or offline. */
	carol = login(&s, "carol", "c3");
	raw_client_send(carol, "<presence/>");
	raw_client_sync(carol);
	for (int pass = 0; pass < 2; pass++) {
		struct raw_client *resender = login(&s, "alice", "dup");
		for (int i = 1; i <= 50 + pass; i++) {
			raw_client_send(resender, "<message to='carol@localhost' type='chat'><body>o%d</body>"
						  "<origin-id xmlns='urn:xmpp:sid:0' id='origin-%d'/></message>", i, i);
			raw_client_send(resender, "<message to='erin@localhost' type='chat'><body>e%d</body>"
						  "<origin-id xmlns='urn:xmpp:sid:0' id='erin-%d'/></message>", i, i);
		}
		raw_client_sync(resender);
		raw_client_free(resender);
	}
	raw_client_seen(carol, "<body>o51</body>", 5000);
	raw_client_sync(carol);
	missing = count_each(carol, "o", 1, 51, &twice);
	is_int(missing, 0, "carol (online) gets all 51 messages");
	is_int(twice, 0, "and none of the 50 sent again a second time");
	raw_client_free(carol);
	struct raw_client *erin = login(&s, "erin", "e");
	raw_client_send(erin, "<presence/>");
	raw_client_seen(erin, "<body>e51</body>", 5000);
	raw_client_sync(erin);
	missing = count_each(erin, "e", 1, 51, &twice);
	is_int(missing, 0, "erin (offline) gets all 51 from her queue");
	is_int(twice, 0, "the queue holds no duplicates");
	raw_client_free(erin);
	char *log = ph_server_log(&s);
	has_str(log, "dropped a message sent again", "duplicates are logged");
	free(log);

	const char *status_args[] = { "status", NULL };
	char *status = NULL;
	ph_ctl(&s, status_args, NULL, &status, NULL);
	has_str(status, "sm-resumed: 2\n", "parleyctl status counts the two resumptions");
	has_str(status, "sm-resume-failed: 2\n", "and the two refused ones");
	has_str(status, "sm-timeouts: 1\n", "and the session that was not resumed");
	has_str(status, "duplicates-dropped: 100\n", "and the 100 duplicates dropped");
	has_str(status, "offline-stored: ", "and offline messages stored");
	free(status);

	/* The promise: acknowledged means on disk, even under kill -9. */
	const char *env = getenv("PARLEY_CRASH_ROUNDS");
	int rounds = env ? atoi(env) : 2;
	enum { CRASH_MESSAGES = 200 };
	for (int round = 1; round <= rounds; round++) {
		/* Odd rounds: dave is offline. Even rounds: his resumable
		 * session lost its connection and waits to be resumed. */
		bool hibernating = round % 2 == 0;
		if (hibernating) {
			char resource[32], waits[64];
			snprintf(resource, sizeof(resource), "sleepy%d", round);
			snprintf(waits, sizeof(waits), "dave@localhost/%s waits", resource);
			struct raw_client *away = login(&s, "dave", resource);
			raw_client_send(away, "<presence/>");
			free(enable(away, NULL));
			raw_client_free(away);
			ok(ph_wait_log(&s, waits, 10000), "round %d: dave's session waits to be resumed", round);
		}
		struct raw_client *sender = login(&s, "alice", "crash");
		free(enable(sender, NULL));
		for (int i = 1; i <= CRASH_MESSAGES; i++)
			raw_client_send(sender, "<message to='dave@localhost' type='chat'>"
						"<body>r%d-%d</body></message>", round, i);
		bool all_acked = acked(sender, CRASH_MESSAGES);
		ph_server_kill(&s);
		is_int(raw_client_count(sender, "type='error'"), 0, "round %d: no message bounced", round);
		ok(all_acked, "round %d: %d messages to %s dave are acknowledged, then kill -9",
		   round, CRASH_MESSAGES, hibernating ? "hibernating" : "offline");
		raw_client_free(sender);
		if (!ok(ph_server_start(&s, NULL) == 0, "round %d: parleyd starts again", round))
			break;
		char dave_resource[16];
		snprintf(dave_resource, sizeof(dave_resource), "d%d", round);
		struct raw_client *dave = login(&s, "dave", dave_resource);
		raw_client_send(dave, "<presence/>");
		char last[48];
		snprintf(last, sizeof(last), "<body>r%d-%d</body>", round, CRASH_MESSAGES);
		raw_client_seen(dave, last, 10000);
		raw_client_sync(dave);
		char prefix[16];
		snprintf(prefix, sizeof(prefix), "r%d-", round);
		missing = count_each(dave, prefix, 1, CRASH_MESSAGES, &twice);
		diag("crash round %d: %d acknowledged, %d delivered, %d duplicated", round,
		     CRASH_MESSAGES, CRASH_MESSAGES - missing, twice);
		/* In order: each next one has a higher number. */
		char needle[24];
		snprintf(needle, sizeof(needle), "<body>r%d-", round);
		int previous = 0, out_of_order = 0;
		char *m;
		while ((m = raw_client_wait(dave, needle, 0)) != NULL) {
			int number = atoi(strstr(m, needle) + strlen(needle));
			out_of_order += number <= previous;
			previous = number;
			free(m);
		}
		is_int(out_of_order, 0, "round %d: they arrive in the order they were sent", round);
		/* And they are in dave's archive: acknowledged means archived. */
		raw_client_send(dave, "<iq type='set' id='arch%d'><query xmlns='urn:xmpp:mam:2'>"
				      "<set xmlns='http://jabber.org/protocol/rsm'><max>%d</max><before/>"
				      "</set></query></iq>", round, CRASH_MESSAGES);
		char fin_needle[48];
		snprintf(fin_needle, sizeof(fin_needle), "<iq type='result' id='arch%d'", round);
		char *fin = raw_client_wait(dave, fin_needle, 10000);
		free(fin);
		int archived = 0;
		char *result;
		while ((result = raw_client_wait(dave, "<result xmlns='urn:xmpp:mam:2'", 0)) != NULL) {
			archived += strstr(result, needle) != NULL;
			free(result);
		}
		is_int(archived, CRASH_MESSAGES, "round %d: all of them survived in the archive too", round);
		is_int(missing, 0, "round %d: none of the acknowledged messages is lost", round);
		is_int(twice, 0, "round %d: none is delivered twice", round);
		/* Dave stays for the grace period so that the queue is emptied. */
		char safe[96];
		snprintf(safe, sizeof(safe), "dave@localhost/%s: %d offline messages delivered and safe",
			 dave_resource, CRASH_MESSAGES);
		ok(ph_wait_log(&s, safe, 10000), "round %d: the queue is emptied", round);
		raw_client_free(dave);
	}

	raw_client_free(alice);
	free(alice_id);
	free(bob_id);
	free(carol_id);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
