/* The contact list as a user lives it (RFC 6121): add a contact, ask to
 * see their presence, they approve, each sees the other come and go; a
 * friend request to someone offline waits for them (and survives their
 * ignoring it once); everything survives a restart; versioning sends
 * just the changes; the roster size limit holds; a large roster is built
 * one item at a time without slowing down (figures printed, not judged).
 * The exhaustive state-transition table is test_subscriptions.c. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Logs in, asks for the roster (becoming an interested resource) and
 * sends initial presence with a status. */
static struct raw_client *online(const struct ph_server *s, const char *user, const char *resource)
{
	char password[128];
	snprintf(password, sizeof(password), "%s-secret", user);
	struct raw_client *c = raw_client_new_session(s->c2s_tls_port, user, password, resource);
	if (!c)
		return NULL;
	raw_client_send(c, "<iq type='get' id='roster-1'><query xmlns='jabber:iq:roster'/></iq>");
	free(raw_client_wait(c, "roster-1", 5000));
	raw_client_send(c, "<presence><status>%s is here</status></presence>", user);
	return c;
}

/* The value of attribute `name` in the first element of `xml` that has
 * it, whichever quote mark the server used (caller frees). */
static char *attribute(const char *xml, const char *name)
{
	char needle[64];
	snprintf(needle, sizeof(needle), " %s=", name);
	const char *at = xml ? strstr(xml, needle) : NULL;
	if (!at)
		return NULL;
	at += strlen(needle);
	char quote = *at++;
	const char *end = strchr(at, quote);
	return end ? strndup(at, (size_t)(end - at)) : NULL;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	ph_add_user(&s, "carol");

	struct raw_client *alice = online(&s, "alice", "desk");
	struct raw_client *bob = online(&s, "bob", "phone");
	if (!ok(alice && bob, "alice and bob are online"))
		return done_testing();
	char *features = NULL;
	{
		struct raw_client *probe = raw_client_connect(s.c2s_tls_port, true);
		free(raw_client_open(probe, "localhost"));
		free(raw_client_auth_plain(probe, NULL, "carol", "carol-secret"));
		features = raw_client_open(probe, "localhost");
		raw_client_free(probe);
	}
	has_str(features, "urn:xmpp:features:rosterver", "roster versioning is a stream feature");
	has_str(features, "urn:xmpp:features:pre-approval", "pre-approval is a stream feature");
	free(features);

	raw_client_send(alice, "<iq type='get' id='g0'><query xmlns='jabber:iq:roster' ver=''/></iq>");
	char *answer = raw_client_wait(alice, "g0", 5000);
	has_str(answer, "<query", "a first roster get returns the roster");
	char *first_version = attribute(answer, "ver");
	ok(first_version != NULL, "with a version (ver='')");
	free(answer);

	/* Alice adds bob to her contacts. */
	raw_client_send(alice, "<iq type='set' id='add'><query xmlns='jabber:iq:roster'>"
			       "<item jid='bob@localhost' name='Bob'><group>Friends</group></item>"
			       "</query></iq>");
	char *push = raw_client_wait(alice, "<iq type='set'", 5000);
	has_str(push, "jid='bob@localhost'", "alice gets a roster push for bob");
	has_str(push, "<group>Friends</group>", "with the group");
	has_str(push, "subscription='none'", "and no subscription yet");
	free(push);
	answer = raw_client_wait(alice, "id='add'", 5000);
	has_str(answer, "type='result'", "the roster set is answered");
	free(answer);

	/* Friend request, accepted while both are online. */
	raw_client_send(alice, "<presence to='bob@localhost' type='subscribe'/>");
	push = raw_client_wait(alice, "<iq type='set'", 5000);
	has_str(push, "ask='subscribe'", "alice's item shows the pending request");
	free(push);
	char *request = raw_client_wait(bob, "type='subscribe'", 5000);
	has_str(request, "from='alice@localhost'", "bob is asked, from alice's bare JID");
	free(request);
	raw_client_send(bob, "<presence to='alice@localhost' type='subscribed'/>");
	char *approval = raw_client_wait(alice, "type='subscribed'", 5000);
	ok(approval != NULL, "alice learns that bob approved");
	free(approval);
	push = raw_client_wait(alice, "<iq type='set'", 5000);
	has_str(push, "subscription='to'", "alice's item for bob is now 'to'");
	free(push);
	push = raw_client_wait(bob, "<iq type='set'", 5000);
	has_str(push, "subscription='from'", "bob's roster now lists alice as 'from'");
	free(push);
	char *presence = raw_client_wait(alice, "bob is here", 5000);
	has_str(presence, "from='bob@localhost/phone'", "alice immediately sees bob's presence");
	free(presence);

	/* Bob goes offline and comes back: alice sees both. */
	raw_client_free(bob);
	presence = raw_client_wait(alice, "type='unavailable'", 5000);
	has_str(presence, "from='bob@localhost/phone'", "alice sees bob go offline");
	free(presence);
	bob = online(&s, "bob", "laptop");
	presence = raw_client_wait(alice, "bob is here", 5000);
	has_str(presence, "from='bob@localhost/laptop'", "and come back on another device");
	free(presence);
	/* Bob is not subscribed to alice: her presence must not reach him. */
	raw_client_send(alice, "<presence><status>busy</status></presence>");
	raw_client_sync(alice);
	raw_client_sync(bob);
	is_int(raw_client_count(bob, "busy"), 0, "bob, who has only 'from', does not get alice's presence");

	/* A friend request to someone offline waits for them. */
	raw_client_send(alice, "<presence to='carol@localhost' type='subscribe'><status>it's alice"
			       "</status></presence>");
	raw_client_sync(alice);
	struct raw_client *carol = online(&s, "carol", "one");
	request = carol ? raw_client_wait(carol, "type='subscribe'", 5000) : NULL;
	has_str(request, "it's alice", "carol gets the request (with its text) when she comes online");
	free(request);
	raw_client_free(carol);
	carol = online(&s, "carol", "two");
	request = carol ? raw_client_wait(carol, "type='subscribe'", 5000) : NULL;
	ok(request != NULL, "unanswered, it comes again at her next login");
	free(request);
	raw_client_send(carol, "<presence to='alice@localhost' type='subscribed'/>");
	approval = raw_client_wait(alice, "from='carol@localhost'", 5000);
	has_str(approval, "type='subscribed'", "alice learns that carol accepted");
	free(approval);
	presence = raw_client_wait(alice, "carol is here", 5000);
	ok(presence != NULL, "and sees carol online");
	free(presence);
	raw_client_free(carol);
	carol = online(&s, "carol", "three");
	raw_client_sync(carol);
	is_int(raw_client_count(carol, "type='subscribe'"), 0, "an answered request is not repeated");
	raw_client_free(carol);

	/* Versioning: current -> empty result; behind -> only the change. */
	raw_client_discard(alice);
	raw_client_send(alice, "<iq type='get' id='v1'><query xmlns='jabber:iq:roster' ver=''/></iq>");
	answer = raw_client_wait(alice, "v1", 5000);
	char *current = attribute(strstr(answer ? answer : "", "<query"), "ver");
	free(answer);
	raw_client_send(alice, "<iq type='get' id='v2'><query xmlns='jabber:iq:roster' ver='%s'/></iq>",
			current ? current : "");
	answer = raw_client_wait(alice, "v2", 5000);
	ok(answer && !strstr(answer, "<query"), "a client with the current version gets an empty result");
	free(answer);
	raw_client_send(alice, "<iq type='set' id='rename'><query xmlns='jabber:iq:roster'>"
			       "<item jid='bob@localhost' name='Bobby'/></query></iq>");
	free(raw_client_wait(alice, "id='rename'", 5000));
	raw_client_discard(alice);
	raw_client_send(alice, "<iq type='get' id='v3'><query xmlns='jabber:iq:roster' ver='%s'/></iq>",
			current ? current : "");
	answer = raw_client_wait(alice, "v3", 5000);
	ok(answer && !strstr(answer, "<query"), "a client one change behind gets an empty result");
	free(answer);
	push = raw_client_wait(alice, "<iq type='set'", 5000);
	has_str(push, "name='Bobby'", "followed by a push of the change");
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "<iq type='set'"), 0, "and nothing else");
	free(push);
	free(current);
	raw_client_send(alice, "<iq type='get' id='v4'><query xmlns='jabber:iq:roster' ver='nonsense'/></iq>");
	answer = raw_client_wait(alice, "v4", 5000);
	has_str(answer, "jid='carol@localhost'", "an unknown version gets the full roster");
	free(answer);

	/* XEP-0012: alice, who sees bob's presence, may ask when he was last
	 * online; bob may not ask about alice. */
	raw_client_send(alice, "<iq type='get' id='last1' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>");
	answer = raw_client_wait(alice, "id='last1'", 5000);
	has_str(answer, "seconds='0'", "bob is online: his last activity is 0 seconds ago");
	free(answer);
	raw_client_send(bob, "<presence type='unavailable'><status>gone fishing</status></presence>");
	free(raw_client_wait(alice, "gone fishing", 5000));
	raw_client_send(alice, "<iq type='get' id='last2' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>");
	answer = raw_client_wait(alice, "id='last2'", 5000);
	has_str(answer, "gone fishing", "once offline, it carries his last status");
	has_str(answer, "seconds=", "and how long ago");
	free(answer);
	raw_client_send(bob, "<iq type='get' id='last3' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>");
	answer = raw_client_wait(bob, "id='last3'", 5000);
	has_str(answer, "<forbidden", "bob, not subscribed to alice, is refused");
	free(answer);
	raw_client_send(bob, "<iq type='get' id='last4' to='localhost'><query xmlns='jabber:iq:last'/></iq>");
	answer = raw_client_wait(bob, "id='last4'", 5000);
	has_str(answer, "seconds=", "the server answers its uptime");
	free(answer);

	/* XEP-0055: find a person to add, by user name or vCard name. */
	raw_client_send(alice, "<iq type='set' id='card'><vCard xmlns='vcard-temp'>"
			       "<FN>Alice Liddell</FN></vCard></iq>");
	free(raw_client_wait(alice, "id='card'", 5000));
	raw_client_send(bob, "<iq type='get' id='s0' to='localhost'><query xmlns='jabber:iq:search'/></iq>");
	answer = raw_client_wait(bob, "id='s0'", 5000);
	has_str(answer, "jabber:x:data", "the search form is offered");
	free(answer);
	raw_client_send(bob, "<iq type='set' id='s1' to='localhost'><query xmlns='jabber:iq:search'>"
			     "<nick>LIDD</nick></query></iq>");
	answer = raw_client_wait(bob, "id='s1'", 5000);
	has_str(answer, "jid='alice@localhost'", "searching a vCard name finds alice");
	has_str(answer, "Alice Liddell", "with her name");
	ok(answer && !strstr(answer, "carol@"), "and nobody else");
	free(answer);
	raw_client_send(bob, "<iq type='set' id='s2' to='localhost'><query xmlns='jabber:iq:search'>"
			     "<x xmlns='jabber:x:data' type='submit'><field var='search'><value>car</value>"
			     "</field></x></query></iq>");
	answer = raw_client_wait(bob, "id='s2'", 5000);
	has_str(answer, "<value>carol@localhost</value>", "a form search by user name finds carol");
	free(answer);
	raw_client_send(bob, "<iq type='set' id='s3' to='localhost'><query xmlns='jabber:iq:search'>"
			     "<nick>a</nick></query></iq>");
	answer = raw_client_wait(bob, "id='s3'", 5000);
	has_str(answer, "<not-acceptable", "a one-letter search is refused (it would list everyone)");
	free(answer);

	/* Restart: the roster and the subscriptions are on disk. */
	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ok(ph_server_start(&s, NULL) == 0, "and starts again");
	bob = online(&s, "bob", "laptop");
	alice = online(&s, "alice", "desk");
	raw_client_send(alice, "<iq type='get' id='after'><query xmlns='jabber:iq:roster'/></iq>");
	answer = alice ? raw_client_wait(alice, "id='after'", 5000) : NULL;
	has_str(answer, "name='Bobby'", "after a restart alice's roster still has bob");
	has_str(answer, "subscription='to'", "with the subscription");
	has_str(answer, "jid='carol@localhost'", "and carol");
	free(answer);
	presence = alice ? raw_client_wait(alice, "bob is here", 5000) : NULL;
	ok(presence != NULL, "alice's login probes bob, who is online");
	free(presence);

	/* Removing bob cancels the subscription both ways (RFC 6121 2.5). */
	raw_client_send(alice, "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>"
			       "<item jid='bob@localhost' subscription='remove'/></query></iq>");
	push = raw_client_wait(alice, "<iq type='set'", 5000);
	has_str(push, "subscription='remove'", "alice gets a removal push");
	free(push);
	char *cancel = raw_client_wait(bob, "type='unsubscribe'", 5000);
	has_str(cancel, "from='alice@localhost'", "bob is told alice unsubscribed");
	free(cancel);
	push = raw_client_wait(bob, "<iq type='set'", 5000);
	has_str(push, "subscription='none'", "bob's item for alice goes back to none");
	free(push);
	raw_client_send(alice, "<iq type='set' id='rm2'><query xmlns='jabber:iq:roster'>"
			       "<item jid='bob@localhost' subscription='remove'/></query></iq>");
	answer = raw_client_wait(alice, "id='rm2'", 5000);
	has_str(answer, "<item-not-found", "removing it again is item-not-found");
	free(answer);
	raw_client_send(alice, "<iq type='set' id='bad1'><query xmlns='jabber:iq:roster'>"
			       "<item jid='a@localhost'/><item jid='b@localhost'/></query></iq>");
	answer = raw_client_wait(alice, "id='bad1'", 5000);
	has_str(answer, "<bad-request", "two items in one set are a bad-request");
	free(answer);
	raw_client_send(alice, "<iq type='set' id='bad2'><query xmlns='jabber:iq:roster'>"
			       "<item jid='a@localhost'><group/></item></query></iq>");
	answer = raw_client_wait(alice, "id='bad2'", 5000);
	has_str(answer, "<not-acceptable", "an empty group is not-acceptable");
	free(answer);
	raw_client_send(alice, "<iq type='set' id='bad3'><query xmlns='jabber:iq:roster'>"
			       "<item jid='a@localhost'><group>x</group><group>x</group></item></query></iq>");
	answer = raw_client_wait(alice, "id='bad3'", 5000);
	has_str(answer, "<bad-request", "a group given twice is a bad-request");
	free(answer);
	raw_client_send(alice, "<iq type='set' id='bad4'><query xmlns='jabber:iq:roster'>"
			       "<item jid='@@'/></query></iq>");
	answer = raw_client_wait(alice, "id='bad4'", 5000);
	has_str(answer, "<jid-malformed", "an invalid JID is jid-malformed");
	free(answer);
	raw_client_send(alice, "<iq type='get' id='other' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>");
	answer = raw_client_wait(alice, "id='other'", 5000);
	has_str(answer, "<forbidden", "reading someone else's roster is forbidden");
	free(answer);
	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);

	/* Limits, and a large roster built item by item. */
	struct ph_server l;
	ph_server_init(&l, NULL);
	char *config = ph_standard_config(&l, NULL, NULL);
	char *with_c2s = ph_config_with_attributes(config, "c2s", "max-stanzas-per-second=\"0\"");
	char *with_roster = ph_config_with_attributes(with_c2s, "module name=\"roster\"",
						      "max-items=\"2000\"");
	ph_server_write_config(&l, with_roster);
	free(config);
	free(with_c2s);
	free(with_roster);
	if (ok(ph_server_start(&l, NULL) == 0, "a server with max-items=2000 starts")) {
		ph_add_user(&l, "dave");
		struct raw_client *dave = online(&l, "dave", "d");
		enum { ITEMS = 2000 };
		long long times[2] = { 0, 0 };
		for (int half = 0; half < 2; half++) {
			long long start = now_ms();
			for (int i = half * ITEMS / 2; i < (half + 1) * ITEMS / 2; i++)
				raw_client_send(dave, "<iq type='set' id='i%d'><query xmlns='jabber:iq:roster'>"
						      "<item jid='contact%d@example.org'><group>g</group></item>"
						      "</query></iq>", i, i);
			char last[32];
			snprintf(last, sizeof(last), "id='i%d'", (half + 1) * ITEMS / 2 - 1);
			answer = raw_client_wait(dave, last, 30000);
			has_str(answer, "type='result'", "items %d..%d are added", half * ITEMS / 2,
				(half + 1) * ITEMS / 2 - 1);
			free(answer);
			times[half] = now_ms() - start;
			raw_client_discard(dave);
		}
		diag("roster of %d items: first half %lld ms, second half %lld ms "
		     "(about equal: a change costs the same however large the roster)",
		     ITEMS, times[0], times[1]);
		raw_client_send(dave, "<iq type='set' id='over'><query xmlns='jabber:iq:roster'>"
				      "<item jid='one-too-many@example.org'/></query></iq>");
		answer = raw_client_wait(dave, "id='over'", 5000);
		has_str(answer, "<not-allowed", "item 2001 is refused with not-allowed");
		free(answer);
		raw_client_send(dave, "<iq type='get' id='all'><query xmlns='jabber:iq:roster'/></iq>");
		answer = raw_client_wait(dave, "id='all'", 10000);
		int listed = 0;
		for (const char *p = answer; p && (p = strstr(p, "<item ")); p++)
			listed++;
		is_int(listed, ITEMS, "the roster holds exactly the %d items", ITEMS);
		free(answer);
		raw_client_free(dave);
		char *log = ph_server_log(&l);
		has_str(log, "roster full", "the refusal is logged");
		free(log);
		is_int(ph_server_stop(&l), 0, "the server stops cleanly");
	}
	ph_server_cleanup(&l);
	free(first_version);
	return done_testing();
}
