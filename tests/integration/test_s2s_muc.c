/* Group chat across servers: two real parleyd instances on loopback,
 * a.localhost (with its chat service conference.a.localhost) and
 * b.localhost, federating by dialback over TLS. bob@b.localhost joins a
 * room on a: he gets the occupant list, the history and the subject,
 * exchanges groupchat and private messages with alice, a local occupant,
 * queries the room's MAM archive (the results travel over s2s), and
 * leaves. Then he joins again and his server goes away (the b parleyd is
 * killed): the next room message to him bounces, and the room removes
 * him with status 333 ("ghost") so alice sees him leave.
 * b's route to conference.a.localhost names a host ("localhost:port"),
 * resolved through c-ares; `parleyctl status` counts the s2s streams,
 * authentications and bounced stanzas.
 * Piggybacking (XEP-0220 multiplexing): a also hosts a2.localhost; once
 * the stream from conference.a.localhost to b is up, alice@a.localhost
 * and carol@a2.localhost write to bob over that same connection (each
 * domain one more db:result on it): b accepts exactly one connection
 * from a. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT 10000
#define ROOM "lobby@conference.a.localhost"

struct side {
	struct ph_server server;
	const char *domain;
	int s2s_port, s2s_tls_port;
};

/* Dialback over TLS between the two self-signed servers; a has a route
 * for b, b one for a and one for a's chat service (another domain, on
 * the same server). */
static char *config_for(struct side *self, const struct side *other, const char *extra)
{
	char s2s[1024];
	snprintf(s2s, sizeof(s2s),
		 "  <s2s address=\"127.0.0.1\" port=\"%d\" tls-port=\"%d\" authentication=\"dialback\" "
		 "dialback-secret=\"%s-secret\"/>\n"
		 "  <remote name=\"%s\" route=\"127.0.0.1:%d\"/>\n%s",
		 self->s2s_port, self->s2s_tls_port, self->domain, other->domain, other->s2s_port, extra ? extra : "");
	char *config = ph_standard_config(&self->server, NULL, s2s);
	char host[128];
	snprintf(host, sizeof(host), "<host name=\"%s\"/>", self->domain);
	char *patched = ph_replace(config, "<host name=\"localhost\"/>", host);
	free(config);
	return patched;
}

static struct raw_client *online(const struct side *side, const char *user, const char *resource)
{
	struct raw_client *c = raw_client_connect(side->server.c2s_tls_port, true);
	char password[64];
	snprintf(password, sizeof(password), "%s-secret", user);
	if (c && !raw_client_login(c, side->domain, user, password, resource)) {
		raw_client_free(c);
		return NULL;
	}
	if (c) {
		raw_client_send(c, "<presence/>");
		raw_client_sync(c);
	}
	return c;
}

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

/* The join's own presence (status 110) or its error; the others'
 * presence and the history stay queued for the caller. */
static char *join(struct raw_client *c, const char *room_nick)
{
	raw_client_send(c, "<presence to='%s'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
			room_nick);
	char from[300];
	snprintf(from, sizeof(from), "from='%s'", room_nick);
	return raw_client_wait(c, from, WAIT);
}

/* The value of `name: N` in parleyctl status output, 0 when absent. */
static long counter(const char *status, const char *name)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\n%s: ", name);
	const char *at = status ? strstr(status, pattern) : NULL;
	return at ? strtol(at + strlen(pattern), NULL, 10) : 0;
}

int main(void)
{
	struct side a = { .domain = "a.localhost" }, b = { .domain = "b.localhost" };
	ph_server_init(&a.server, NULL);
	ph_server_init(&b.server, NULL);
	a.s2s_port = ph_free_port();
	b.s2s_port = ph_free_port();
	a.s2s_tls_port = ph_free_port();
	b.s2s_tls_port = ph_free_port();
	char *config = config_for(&a, &b, NULL);
	char *two_hosts = ph_replace(config, "<host name=\"a.localhost\"/>",
				     "<host name=\"a.localhost\"/><host name=\"a2.localhost\"/>");
	ph_server_write_config(&a.server, two_hosts);
	free(two_hosts);
	free(config);
	char extra[512];
	/* A route that is neither an address nor a host name is refused. */
	config = config_for(&b, &a, "  <remote name=\"c.localhost\" route=\"no_such host:5269\"/>\n");
	ph_server_write_config(&b.server, config);
	free(config);
	ok(ph_server_start(&b.server, NULL) != 0,
	   "a route that is neither an address nor a host name is refused at start");
	char *log = ph_server_log(&b.server);
	has_str(log, "is neither an IP address nor a host name", "saying why");
	free(log);
	snprintf(extra, sizeof(extra),
		 "  <remote name=\"conference.a.localhost\" route=\"localhost:%d\"/>\n"
		 "  <remote name=\"a2.localhost\" route=\"127.0.0.1:%d\"/>\n",
		 a.s2s_port, a.s2s_port);
	config = config_for(&b, &a, extra);
	ph_server_write_config(&b.server, config);
	free(config);
	if (!ok(ph_server_start(&a.server, NULL) == 0 && ph_server_start(&b.server, NULL) == 0,
		"a.localhost (with conference.a.localhost) and b.localhost start"))
		goto out;
	ph_add_user_at(&a.server, "alice", "a.localhost");
	ph_add_user_at(&a.server, "carol", "a2.localhost");
	ph_add_user_at(&b.server, "bob", "b.localhost");
	struct raw_client *alice = online(&a, "alice", "desk");
	struct raw_client *bob = online(&b, "bob", "phone");
	struct side a2 = a;
	a2.domain = "a2.localhost";
	struct raw_client *carol = online(&a2, "carol", "tablet");
	if (!ok(alice && bob && carol,
		"alice@a.localhost, carol@a2.localhost (same server) and bob@b.localhost are online"))
		goto out;

	/* alice makes an open, non-anonymous room with a subject and a line
	 * of history. */
	char *answer = join(alice, ROOM "/Alice");
	has_str(answer, "code='201'", "alice creates the room");
	free(answer);
	answer = iq(alice, "set", ROOM,
		    "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>"
		    "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
		    "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
		    "<field var='muc#roomconfig_whois'><value>anyone</value></field>"
		    "</x></query>");
	has_str(answer, "type='result'", "and configures it");
	free(answer);
	raw_client_send(alice, "<message to='" ROOM "' type='groupchat'><subject>Federation</subject></message>");
	ok(raw_client_seen(alice, "<subject>Federation</subject>", WAIT), "alice sets the subject");
	raw_client_send(alice, "<message to='" ROOM "' type='groupchat' id='h1'><body>before bob</body></message>");
	ok(raw_client_seen(alice, "<body>before bob</body>", WAIT), "and says something");
	raw_client_discard(alice);

	/* bob joins from b.localhost. */
	raw_client_send(bob, "<presence to='" ROOM "/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
	answer = raw_client_wait(bob, "from='" ROOM "/Alice'", 15000);
	has_str(answer, "affiliation='owner'", "bob gets the occupant list over s2s: alice, the owner");
	has_str(answer, "jid='alice@a.localhost/desk'", "with her real JID (non-anonymous room)");
	free(answer);
	answer = raw_client_wait(bob, "from='" ROOM "/Bob'", WAIT);
	has_str(answer, "code='110'", "then his own presence (status 110)");
	has_str(answer, "code='100'", "saying the room is non-anonymous (status 100)");
	free(answer);
	answer = raw_client_wait(bob, "<body>before bob</body>", WAIT);
	has_str(answer, "<delay xmlns='urn:xmpp:delay'", "the history, with its delay stamp");
	has_str(answer, "from='" ROOM "/Alice'", "from alice's occupant JID");
	free(answer);
	answer = raw_client_wait(bob, "<subject>", WAIT);
	has_str(answer, "<subject>Federation</subject>", "and the subject");
	free(answer);
	answer = raw_client_wait(alice, "from='" ROOM "/Bob'", WAIT);
	has_str(answer, "jid='bob@b.localhost/phone'", "alice sees bob@b.localhost/phone join");
	free(answer);
	char connected[96];
	snprintf(connected, sizeof(connected), "conference.a.localhost: connected to 127.0.0.1 port %d",
		 a.s2s_port);
	ok(ph_wait_log(&b.server, connected, WAIT),
	   "b reached conference.a.localhost through its route by host name (localhost)");

	/* Groupchat both ways. */
	raw_client_send(bob, "<message to='" ROOM "' type='groupchat' id='g1'><body>hi from b</body></message>");
	answer = raw_client_wait(alice, "<body>hi from b</body>", WAIT);
	has_str(answer, "from='" ROOM "/Bob'", "alice gets bob's groupchat message from his occupant JID");
	has_str(answer, "<stanza-id", "archived with a stanza-id");
	free(answer);
	answer = raw_client_wait(bob, "<body>hi from b</body>", WAIT);
	has_str(answer, "id='g1'", "bob gets his own message reflected, with his id");
	free(answer);
	raw_client_send(alice, "<message to='" ROOM "' type='groupchat' id='g2'><body>welcome</body></message>");
	answer = raw_client_wait(bob, "<body>welcome</body>", WAIT);
	has_str(answer, "from='" ROOM "/Alice'", "bob gets alice's groupchat message");
	free(answer);

	/* Private messages through the room. */
	raw_client_send(bob, "<message to='" ROOM "/Alice' type='chat' id='p1'><body>psst alice</body></message>");
	answer = raw_client_wait(alice, "<body>psst alice</body>", WAIT);
	has_str(answer, "from='" ROOM "/Bob'", "alice gets bob's private message from his occupant JID");
	free(answer);
	raw_client_send(alice, "<message to='" ROOM "/Bob' type='chat' id='p2'><body>psst bob</body></message>");
	answer = raw_client_wait(bob, "<body>psst bob</body>", WAIT);
	has_str(answer, "from='" ROOM "/Alice'", "bob gets alice's private answer");
	free(answer);

	/* Piggybacking: a.localhost and a2.localhost ride on the stream
	 * conference.a.localhost opened to b. */
	raw_client_send(alice, "<message to='bob@b.localhost/phone' type='chat' id='d1'><body>direct from a</body></message>");
	answer = raw_client_wait(bob, "<body>direct from a</body>", WAIT);
	has_str(answer, "from='alice@a.localhost/desk'", "bob gets alice's direct message");
	free(answer);
	raw_client_send(carol, "<message to='bob@b.localhost/phone' type='chat' id='d2'><body>from the other host</body></message>");
	answer = raw_client_wait(bob, "<body>from the other host</body>", WAIT);
	has_str(answer, "from='carol@a2.localhost/tablet'", "and carol's, from a's second host");
	free(answer);
	raw_client_send(bob, "<message to='carol@a2.localhost/tablet' type='chat' id='d3'><body>hi carol</body></message>");
	answer = raw_client_wait(carol, "<body>hi carol</body>", WAIT);
	has_str(answer, "from='bob@b.localhost/phone'", "carol gets bob's answer");
	free(answer);
	ok(ph_wait_log(&a.server, "a.localhost -> b.localhost piggybacks on conference.a.localhost's stream", WAIT),
	   "a.localhost's stanzas piggyback on the open stream to b");
	ok(ph_wait_log(&a.server, "a2.localhost -> b.localhost piggybacks on conference.a.localhost's stream", WAIT),
	   "and so do a2.localhost's");
	ok(ph_wait_log(&b.server, "incoming stream from a2.localhost authenticated with dialback", WAIT),
	   "b verified a2.localhost by dialback");
	const char *status_args[] = { "status", NULL };
	char *status = NULL;
	ph_ctl(&b.server, status_args, NULL, &status, NULL);
	ok(counter(status, "s2s-streams-in") == 1, "b accepted one connection from a for all three domains (%ld)",
	   counter(status, "s2s-streams-in"));
	free(status);
	const char *s2s_args[] = { "s2s", NULL };
	char *listing = NULL;
	ph_ctl(&b.server, s2s_args, NULL, &listing, NULL);
	ok(listing && strstr(listing, "conference.a.localhost") && strstr(listing, " a.localhost") &&
		   strstr(listing, "a2.localhost by dialback"),
	   "parleyctl s2s on b lists the three domains on that stream");
	if (listing)
		diag("%s", listing);
	free(listing);
	listing = NULL;
	ph_ctl(&a.server, s2s_args, NULL, &listing, NULL);
	has_str(listing, "out a2.localhost -> b.localhost: ready, dialback, TLS, piggybacking",
		"and on a the riders say they piggyback");
	free(listing);

	/* The room's archive, queried from b: results come over s2s. */
	raw_client_discard(bob);
	answer = iq(bob, "set", ROOM, "<query xmlns='urn:xmpp:mam:2' queryid='fq'/>");
	has_str(answer, "type='result'", "bob queries the room's archive from b.localhost");
	has_str(answer, "complete='true'", "and gets the whole of it");
	free(answer);
	ok(raw_client_count(bob, "queryid='fq'") == 3, "three results reached b (%d)",
	   raw_client_count(bob, "queryid='fq'"));
	answer = raw_client_wait(bob, "queryid='fq'", 0);
	has_str(answer, "<body>before bob</body>", "oldest first");
	has_str(answer, "from='" ROOM "'", "from the room");
	free(answer);
	answer = raw_client_wait(bob, "queryid='fq'", 0);
	has_str(answer, "<body>hi from b</body>", "then bob's own");
	free(answer);
	raw_client_discard(bob);

	/* bob leaves. */
	raw_client_send(bob, "<presence to='" ROOM "/Bob' type='unavailable'/>");
	answer = raw_client_wait(bob, "from='" ROOM "/Bob'", WAIT);
	has_str(answer, "type='unavailable'", "bob leaves and gets his own unavailable presence");
	free(answer);
	answer = raw_client_wait(alice, "from='" ROOM "/Bob'", WAIT);
	has_str(answer, "type='unavailable'", "alice sees him leave");
	free(answer);

	/* bob comes back, then his server dies. */
	answer = join(bob, ROOM "/Bob");
	has_str(answer, "code='110'", "bob joins again");
	free(answer);
	answer = raw_client_wait(alice, "from='" ROOM "/Bob'", WAIT);
	ok(answer && !strstr(answer, "unavailable"), "alice sees him back");
	free(answer);
	/* Killed first, so that b never tells the room bob went offline. */
	ph_server_kill(&b.server);
	raw_client_free(bob);
	bob = NULL;
	raw_client_send(alice, "<message to='" ROOM "' type='groupchat' id='g3'><body>anyone there?</body></message>");
	answer = raw_client_wait(alice, "from='" ROOM "/Bob'", 30000);
	has_str(answer, "type='unavailable'", "once the room's message to bob bounces, he leaves the room");
	has_str(answer, "code='333'", "with status 333 (removed because of an error)");
	free(answer);
	answer = iq(alice, "get", ROOM, "<query xmlns='http://jabber.org/protocol/disco#items'/>");
	ok(answer && strstr(answer, "type='result'") && !strstr(answer, "/Bob"),
	   "the room's occupant list no longer has bob");
	free(answer);
	status = NULL;
	ph_ctl(&a.server, status_args, NULL, &status, NULL);
	ok(counter(status, "s2s-streams-in") >= 1, "parleyctl status counts incoming s2s streams");
	ok(counter(status, "s2s-streams-out") >= 2,
	   "and outgoing ones (a.localhost and conference.a.localhost to b, and again after b died)");
	ok(counter(status, "s2s-auth-dialback") >= 2, "dialback authentications, both ways");
	ok(counter(status, "s2s-auth-external") == 0, "no SASL EXTERNAL between self-signed servers");
	ok(counter(status, "s2s-stanzas-bounced") >= 1, "and the stanza that bounced");
	if (!status || !strstr(status, "s2s-stanzas-bounced"))
		diag("%s", status ? status : "(no status)");
	free(status);
	raw_client_free(alice);
	raw_client_free(carol);
	is_int(ph_server_stop(&a.server), 0, "a stops cleanly");
out:
	ph_server_cleanup(&a.server);
	ph_server_cleanup(&b.server);
	return done_testing();
}
