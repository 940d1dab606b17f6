/* XEP-0163 personal eventing with real clients that announce XEP-0115
 * capabilities and answer the server's disco#info about them: publishing
 * auto-creates a node, contacts with "+notify" and a presence subscription
 * (and the owner's own resources) are notified, strangers are not and may
 * not read; publish-options set a new node's configuration and are
 * preconditions on an existing one (precondition-not-met); max_items keeps
 * the newest, an id republished replaces its item; retract, purge and
 * delete are notified; a resource coming online gets the last item; a
 * capabilities hash that does not match its disco#info is not trusted;
 * oversized payloads are refused; XEP-0490 markers reach only the owner;
 * the account advertises pubsub/pep; and
 * nodes and items survive a restart; XEP-0048 bookmarks in private storage
 * are read from and written to the XEP-0402 node (#compat). */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT 5000
#define PL_TEST_FEATURES_MAX 16
#define CAPS_NODE "https://parley.test/client"
#define AVATAR "urn:xmpp:avatar:metadata"
#define DEVICES "eu.siacs.conversations.axolotl.devicelist"
#define BOOKMARKS "urn:xmpp:bookmarks:1"

/* The features every test client announces (sorted, as XEP-0115 hashes). */
static const char *const client_features[] = {
	"http://jabber.org/protocol/caps",
	"http://jabber.org/protocol/disco#info",
	BOOKMARKS "+notify",
	DEVICES "+notify",
	AVATAR "+notify",
	"urn:xmpp:mds:displayed:0+notify",
	"storage:bookmarks+notify",
};

static int compare(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* XEP-0115 5.1 computed here independently of the server. */
static void caps_ver(char *out, size_t size)
{
	const char *sorted[PL_TEST_FEATURES_MAX];
	size_t n = sizeof(client_features) / sizeof(client_features[0]);
	memcpy(sorted, client_features, sizeof(client_features));
	qsort(sorted, n, sizeof(char *), compare);
	char s[2048];
	snprintf(s, sizeof(s), "client/pc//Parley test<");
	for (size_t i = 0; i < n; i++) {
		strncat(s, sorted[i], sizeof(s) - strlen(s) - 2);
		strcat(s, "<");
	}
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	EVP_Digest(s, strlen(s), digest, &len, EVP_sha1(), NULL);
	unsigned char b64[64];
	EVP_EncodeBlock(b64, digest, (int)len);
	snprintf(out, size, "%s", (char *)b64);
}

static char ver[64];

static void send_presence(struct raw_client *c, const char *announced_ver)
{
	raw_client_send(c, "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
			   "node='" CAPS_NODE "' ver='%s'/></presence>", announced_ver);
}

/* Answers the server's disco#info about our capabilities, with the
 * features above (or a wrong set, to test verification). */
static bool answer_disco(struct raw_client *c, bool honest)
{
	char *q = raw_client_wait(c, "http://jabber.org/protocol/disco#info", WAIT);
	if (!q)
		return false;
	char id[64] = "", from[256] = "";
	const char *p = strstr(q, " id='");
	if (p)
		sscanf(p + 5, "%63[^']", id);
	p = strstr(q, " from='");
	if (p)
		sscanf(p + 7, "%255[^']", from);
	free(q);
	char features[2048] = "";
	size_t n = sizeof(client_features) / sizeof(client_features[0]);
	for (size_t i = 0; i < n - (honest ? 0 : 1); i++) {
		strcat(features, "<feature var='");
		strcat(features, client_features[i]);
		strcat(features, "'/>");
	}
	raw_client_send(c, "<iq type='result' id='%s' to='%s'><query xmlns='http://jabber.org/protocol/disco#info' "
			   "node='" CAPS_NODE "#%s'><identity category='client' type='pc' name='Parley test'/>%s</query></iq>",
			id, from, ver, features);
	return true;
}

static struct raw_client *login(const struct ph_server *s, const char *user, const char *resource)
{
	char password[128];
	snprintf(password, sizeof(password), "%s-secret", user);
	return raw_client_new_session(s->c2s_tls_port, user, password, resource);
}

static char *iq(struct raw_client *c, const char *type, const char *to, const char *payload)
{
	static int n;
	char id[24];
	snprintf(id, sizeof(id), "p%d", ++n);
	if (to)
		raw_client_send(c, "<iq type='%s' id='%s' to='%s'>%s</iq>", type, id, to, payload);
	else
		raw_client_send(c, "<iq type='%s' id='%s'>%s</iq>", type, id, payload);
	char needle[40];
	snprintf(needle, sizeof(needle), "id='%s'", id);
	return raw_client_wait(c, needle, WAIT);
}

static char *publish(struct raw_client *c, const char *node, const char *id, const char *payload,
		     const char *options)
{
	char body[8192];
	snprintf(body, sizeof(body),
		 "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='%s'><item%s%s%s>%s</item></publish>%s%s%s</pubsub>",
		 node, id ? " id='" : "", id ? id : "", id ? "'" : "", payload,
		 options ? "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
			   "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>" : "",
		 options ? options : "", options ? "</x></publish-options>" : "");
	return iq(c, "set", NULL, body);
}

static bool published(struct raw_client *c, const char *node, const char *id, const char *payload,
		      const char *options)
{
	char *answer = publish(c, node, id, payload, options);
	bool yes = answer && strstr(answer, "type='result'");
	if (!yes)
		diag("publish to %s: %s", node, answer ? answer : "(nothing)");
	free(answer);
	return yes;
}

static char *items(struct raw_client *c, const char *owner, const char *node, const char *extra)
{
	char body[512];
	snprintf(body, sizeof(body),
		 "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='%s'%s/></pubsub>", node,
		 extra ? extra : "");
	return iq(c, "get", owner, body);
}

static int occurrences(const char *haystack, const char *needle)
{
	int n = 0;
	for (const char *p = haystack; p && (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static void befriend(struct raw_client *a, const char *a_jid, struct raw_client *b, const char *b_jid)
{
	raw_client_send(a, "<presence to='%s' type='subscribe'/>", b_jid);
	raw_client_sync(a);
	raw_client_send(b, "<presence to='%s' type='subscribed'/>", a_jid);
	raw_client_send(b, "<presence to='%s' type='subscribe'/>", a_jid);
	raw_client_sync(b);
	raw_client_send(a, "<presence to='%s' type='subscribed'/>", b_jid);
	raw_client_sync(a);
	raw_client_sync(b);
}

int main(void)
{
	caps_ver(ver, sizeof(ver));
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, "durability=\"fsync\"", NULL);
	ph_server_write_config(&s, config);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with PEP"))
		return done_testing();
	const char *users[] = { "alice", "bob", "carol", "dave" };
	for (size_t i = 0; i < 4; i++)
		ph_add_user(&s, users[i]);
	struct raw_client *alice = login(&s, "alice", "phone");
	struct raw_client *bob = login(&s, "bob", "b");
	struct raw_client *carol = login(&s, "carol", "c");
	struct raw_client *dave = login(&s, "dave", "d");
	if (!ok(alice && bob && carol && dave, "four users log in"))
		return done_testing();
	befriend(alice, "alice@localhost", bob, "bob@localhost");
	befriend(alice, "alice@localhost", dave, "dave@localhost");
	raw_client_discard(alice);
	raw_client_discard(bob);
	raw_client_discard(dave);

	char *answer = iq(alice, "get", "alice@localhost",
			  "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "category='pubsub'", "the account is a pubsub service");
	has_str(answer, "type='pep'", "of type pep");
	has_str(answer, "http://jabber.org/protocol/pubsub#publish-options", "with publish-options");
	free(answer);

	/* Capabilities: the server asks each resource once per hash. */
	send_presence(alice, ver);
	ok(answer_disco(alice, true), "the server asks alice's phone what its capabilities mean");
	raw_client_sync(alice);
	send_presence(bob, ver);
	ok(raw_client_sync(bob) && raw_client_count(bob, "disco#info") == 0,
	   "bob announces the same hash: nobody asks again (cached by ver)");
	send_presence(carol, ver);
	send_presence(dave, "bm90LXRoZS1yZWFsLWhhc2g=");
	ok(answer_disco(dave, false), "dave is asked about a hash his answer does not match");
	ok(ph_wait_log(&s, "do not match their disco#info", WAIT), "the mismatch is logged");
	raw_client_sync(alice);
	raw_client_discard(alice);
	raw_client_discard(bob);
	raw_client_discard(carol);
	raw_client_discard(dave);

	/* Publish and notify. */
	ok(published(alice, AVATAR, "a1", "<metadata xmlns='" AVATAR "'><info id='a1' bytes='10' type='image/png'/></metadata>", NULL),
	   "alice publishes her avatar metadata (the node is created)");
	answer = raw_client_wait(bob, "http://jabber.org/protocol/pubsub#event", WAIT);
	has_str(answer, "from='alice@localhost'", "bob (a contact with +notify) is notified");
	has_str(answer, "node='" AVATAR "'", "of that node");
	has_str(answer, "id='a1'", "with the item");
	free(answer);
	ok(raw_client_seen(alice, "<info id='a1'", WAIT), "alice's own phone is notified too");
	raw_client_sync(carol);
	ok(raw_client_count(carol, "pubsub#event") == 0, "carol (no subscription) is not");
	raw_client_sync(dave);
	ok(raw_client_count(dave, "pubsub#event") == 0,
	   "dave (a contact whose capabilities did not verify) is not");
	answer = items(bob, "alice@localhost", AVATAR, NULL);
	has_str(answer, "<info id='a1'", "bob reads the item");
	ok(answer && strstr(answer, "<items node='" AVATAR "'") && !strstr(answer, "pubsub#event"),
	   "in a pubsub <items/> answer");
	free(answer);
	answer = items(carol, "alice@localhost", AVATAR, NULL);
	has_str(answer, "not-authorized", "carol may not read a presence-access node");
	has_str(answer, "presence-subscription-required", "she needs a presence subscription");
	free(answer);
	answer = items(bob, "alice@localhost", "no-such-node", NULL);
	has_str(answer, "item-not-found", "an unknown node is item-not-found");
	free(answer);

	/* max_items 1 by default: the newest only. */
	ok(published(alice, AVATAR, "a2", "<metadata xmlns='" AVATAR "'><info id='a2' bytes='11' type='image/png'/></metadata>", NULL),
	   "alice publishes a new avatar");
	answer = items(bob, "alice@localhost", AVATAR, NULL);
	ok(answer && strstr(answer, "id='a2'") && !strstr(answer, "id='a1'"),
	   "a node keeps one item by default: the newest");
	free(answer);

	/* publish-options. */
	const char *open_access = "<field var='pubsub#access_model'><value>open</value></field>";
	ok(published(alice, DEVICES, "current", "<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list>", open_access),
	   "alice publishes her OMEMO device list with access_model open");
	answer = items(carol, "alice@localhost", DEVICES, NULL);
	has_str(answer, "<device id='1'/>", "a stranger may read an open node");
	free(answer);
	answer = publish(alice, AVATAR, "a3", "<metadata xmlns='" AVATAR "'/>", open_access);
	has_str(answer, "conflict", "publish-options that differ from an existing node: conflict");
	has_str(answer, "precondition-not-met", "precondition-not-met");
	free(answer);
	ok(published(alice, DEVICES, "current", "<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/><device id='2'/></list>", open_access),
	   "matching publish-options are accepted");

	/* Many items: bookmarks. */
	const char *bookmark_options = "<field var='pubsub#max_items'><value>max</value></field>"
				       "<field var='pubsub#access_model'><value>whitelist</value></field>";
	for (int i = 1; i <= 3; i++) {
		char id[64], payload[256];
		snprintf(id, sizeof(id), "room%d@conference.localhost", i);
		snprintf(payload, sizeof(payload), "<conference xmlns='" BOOKMARKS "' name='Room %d'/>", i);
		published(alice, BOOKMARKS, id, payload, bookmark_options);
	}
	published(alice, BOOKMARKS, "room2@conference.localhost",
		  "<conference xmlns='" BOOKMARKS "' name='Renamed'/>", bookmark_options);
	answer = items(alice, NULL, BOOKMARKS, NULL);
	ok(occurrences(answer, "<item ") == 3, "bookmarks keep every item (max_items=max): 3");
	has_str(answer, "name='Renamed'", "an id published again replaces its item");
	ok(answer && !strstr(answer, "name='Room 2'"), "(the old one is gone)");
	free(answer);
	answer = items(alice, NULL, BOOKMARKS, " max_items='1'");
	ok(occurrences(answer, "<item ") == 1 && strstr(answer, "Renamed"),
	   "max_items=1 asks for the newest only");
	free(answer);
	answer = iq(alice, "get", NULL, "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='" BOOKMARKS "'>"
					"<item id='room1@conference.localhost'/></items></pubsub>");
	ok(answer && occurrences(answer, "<item ") == 1 && strstr(answer, "Room 1"), "an item is fetched by id");
	free(answer);
	answer = items(bob, "alice@localhost", BOOKMARKS, NULL);
	has_str(answer, "closed-node", "a whitelist node is closed to contacts");
	free(answer);
	raw_client_sync(bob);
	ok(raw_client_count(bob, "Room 1") == 0, "and they get no notifications of it");

	/* XEP-0411: a client still on XEP-0048 private storage shares them. */
	answer = iq(alice, "get", NULL, "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>");
	ok(answer && occurrences(answer, "<conference ") == 3, "legacy private storage shows the 3 PEP bookmarks");
	has_str(answer, "jid='room2@conference.localhost' name='Renamed'", "with their names");
	free(answer);
	raw_client_discard(alice);
	answer = iq(alice, "set", NULL, "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
					"<conference jid='room1@conference.localhost' name='One' autojoin='true'><nick>al</nick></conference>"
					"<conference jid='legacy@conference.localhost' name='Legacy'/>"
					"</storage></query>");
	has_str(answer, "type='result'", "a legacy client replaces the bookmarks through private storage");
	free(answer);
	answer = items(alice, NULL, BOOKMARKS, NULL);
	ok(answer && occurrences(answer, "<item ") == 2, "the PEP node now holds those 2");
	has_str(answer, "<conference xmlns='" BOOKMARKS "' name='One' autojoin='true'><nick>al</nick></conference>",
		"converted to XEP-0402 items");
	has_str(answer, "id='legacy@conference.localhost'", "keyed by room JID");
	free(answer);
	ok(raw_client_seen(alice, "<retract id='room3@conference.localhost'/>", WAIT),
	   "the owner's resources are told which bookmark went");
	answer = iq(alice, "get", "alice@localhost", "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "urn:xmpp:bookmarks:1#compat", "the account advertises bookmarks #compat");
	has_str(answer, "urn:xmpp:bookmarks-conversion:0", "and XEP-0411 conversion");
	free(answer);
	/* XEP-0411: the XEP-0048 PEP node is the same bookmarks. */
	answer = items(alice, NULL, "storage:bookmarks", NULL);
	has_str(answer, "<item id='current'><storage xmlns='storage:bookmarks'>", "the XEP-0048 PEP node reads as one <storage/>");
	has_str(answer, "jid='legacy@conference.localhost'", "made from the bookmarks:1 items");
	free(answer);
	raw_client_discard(alice);
	answer = publish(alice, "storage:bookmarks", "current",
			 "<storage xmlns='storage:bookmarks'><conference jid='pep48@conference.localhost' name='Old PEP' autojoin='true'/></storage>",
			 NULL);
	has_str(answer, "<item id='current'/>", "an old client publishes XEP-0048 bookmarks to PEP");
	free(answer);
	answer = items(alice, NULL, BOOKMARKS, NULL);
	ok(answer && occurrences(answer, "<item ") == 1 && strstr(answer, "id='pep48@conference.localhost'"),
	   "and bookmarks:1 holds exactly that room");
	free(answer);
	ok(raw_client_seen(alice, "<items node='storage:bookmarks'>", WAIT),
	   "resources following the XEP-0048 node are notified with the new <storage/>");
	/* Back to the two rooms the restart check expects. */
	answer = iq(alice, "set", NULL, "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
					"<conference jid='room1@conference.localhost' name='One' autojoin='true'><nick>al</nick></conference>"
					"<conference jid='legacy@conference.localhost' name='Legacy'/>"
					"</storage></query>");
	free(answer);

	/* XEP-0490: where each chat was read up to, shared by the owner's devices only. */
	raw_client_discard(alice);
	raw_client_discard(bob);
	ok(published(alice, "urn:xmpp:mds:displayed:0", "bob@localhost",
		     "<displayed xmlns='urn:xmpp:mds:displayed:0'><stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='42'/></displayed>",
		     "<field var='pubsub#max_items'><value>max</value></field>"
		     "<field var='pubsub#access_model'><value>whitelist</value></field>"
		     "<field var='pubsub#send_last_published_item'><value>never</value></field>"),
	   "alice's phone publishes a displayed marker (XEP-0490 node options)");
	ok(raw_client_seen(alice, "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='42'/>", WAIT),
	   "her devices with +notify are told");
	raw_client_sync(bob);
	ok(raw_client_count(bob, "mds:displayed") == 0, "a contact is not (whitelist)");

	/* Limits. */
	char big[6000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	char payload[6200];
	snprintf(payload, sizeof(payload), "<data xmlns='urn:xmpp:avatar:data'>%s</data>", big);
	answer = publish(alice, "urn:xmpp:avatar:data", "big", payload, NULL);
	has_str(answer, "payload-too-big", "a payload over max-item-size is refused (payload-too-big)");
	free(answer);
	answer = iq(bob, "set", "alice@localhost", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='x'>"
						  "<item><x xmlns='y'/></item></publish></pubsub>");
	has_str(answer, "forbidden", "nobody publishes to someone else's account");
	free(answer);

	/* Last item at presence. */
	raw_client_discard(bob);
	raw_client_send(bob, "<presence type='unavailable'/>");
	raw_client_sync(bob);
	send_presence(bob, ver);
	answer = raw_client_wait(bob, "<info id='a2'", WAIT);
	has_str(answer, "pubsub#event", "bob comes online again and gets the last avatar item");
	free(answer);
	ok(raw_client_seen(bob, "<device id='2'/>", WAIT), "and the last device list");

	/* Retract, configure, purge, delete. */
	raw_client_discard(bob);
	answer = iq(alice, "set", NULL, "<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='" AVATAR "' notify='true'>"
					"<item id='a2'/></retract></pubsub>");
	has_str(answer, "type='result'", "alice retracts her avatar");
	free(answer);
	answer = raw_client_wait(bob, "<retract id='a2'/>", WAIT);
	ok(answer != NULL, "bob is told (notify=true)");
	free(answer);
	answer = iq(alice, "get", NULL, "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='" DEVICES "'/></pubsub>");
	has_str(answer, "<value>open</value>", "the owner reads a node's configuration");
	free(answer);
	answer = iq(alice, "set", NULL, "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='" DEVICES "'>"
					"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
					"<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
					"<field var='pubsub#access_model'><value>presence</value></field></x></configure></pubsub>");
	has_str(answer, "type='result'", "and changes it");
	free(answer);
	answer = items(carol, "alice@localhost", DEVICES, NULL);
	has_str(answer, "presence-subscription-required", "carol may no longer read the device list");
	free(answer);
	answer = iq(alice, "set", NULL, "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><purge node='" DEVICES "'/></pubsub>");
	has_str(answer, "type='result'", "alice purges the device list");
	free(answer);
	ok(raw_client_seen(bob, "<purge node='" DEVICES "'/>", WAIT), "bob is told");
	answer = items(bob, "alice@localhost", DEVICES, NULL);
	ok(answer && strstr(answer, "type='result'") && !strstr(answer, "<item "), "and the node is empty");
	free(answer);
	answer = iq(alice, "set", NULL, "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='" DEVICES "'/></pubsub>");
	has_str(answer, "type='result'", "alice deletes the node");
	free(answer);
	ok(raw_client_seen(bob, "<delete node='" DEVICES "'/>", WAIT), "bob is told");
	answer = items(bob, "alice@localhost", DEVICES, NULL);
	has_str(answer, "item-not-found", "the node is gone");
	free(answer);

	/* Restart. */
	raw_client_free(alice);
	raw_client_free(bob);
	raw_client_free(carol);
	raw_client_free(dave);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ok(ph_server_start(&s, NULL) == 0, "and starts again");
	alice = login(&s, "alice", "laptop");
	answer = items(alice, NULL, BOOKMARKS, NULL);
	ok(answer && occurrences(answer, "<item ") == 2, "the bookmarks survived the restart");
	free(answer);
	answer = publish(alice, BOOKMARKS, "x", "<conference xmlns='" BOOKMARKS "'/>", open_access);
	has_str(answer, "precondition-not-met", "and so did the node's configuration");
	free(answer);
	raw_client_free(alice);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
