/* XEP-0313 archives with real clients: every message is archived for
 * both parties with a stanza-id (a forged one is replaced), pages come in
 * archive order forwards and backwards with correct first/last and
 * completeness, the with/ids/start filters and flip-page work, unknown
 * ids are item-not-found, the archive and its numbering survive a
 * restart, and offline messages carry their archive id. */
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

/* The text between <tag> and </tag> in xml (caller frees), or NULL. */
static char *inner(const char *xml, const char *tag)
{
	char open[64], close[64];
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	const char *a = xml ? strstr(xml, open) : NULL;
	const char *b = a ? strstr(a, close) : NULL;
	return b ? strndup(a + strlen(open), (size_t)(b - a - strlen(open))) : NULL;
}

struct page {
	char bodies[512];   /* "h1 h2 ..." in the order received */
	int count;
	char *fin;          /* the iq result, owned */
	char *first, *last; /* ids from <set/>, owned */
	char *first_result_id;
};

static void page_free(struct page *p)
{
	free(p->fin);
	free(p->first);
	free(p->last);
	free(p->first_result_id);
}

static struct page query(struct raw_client *c, const char *fields, const char *rsm, bool flip)
{
	static int n;
	char qid[16], iqid[16];
	snprintf(qid, sizeof(qid), "f%d", ++n);
	snprintf(iqid, sizeof(iqid), "q%d", n);
	raw_client_send(c,
			"<iq type='set' id='%s'><query xmlns='urn:xmpp:mam:2' queryid='%s'>"
			"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
			"<value>urn:xmpp:mam:2</value></field>%s</x>"
			"<set xmlns='http://jabber.org/protocol/rsm'>%s</set>%s</query></iq>",
			iqid, qid, fields ? fields : "", rsm ? rsm : "", flip ? "<flip-page/>" : "");
	struct page p = { .count = 0 };
	char needle[48];
	snprintf(needle, sizeof(needle), "id='%s'", iqid);
	p.fin = raw_client_wait(c, needle, 5000);
	snprintf(needle, sizeof(needle), "queryid='%s'", qid);
	char *result;
	while ((result = raw_client_wait(c, needle, 0)) != NULL) {
		char *body = inner(result, "body");
		if (body && strlen(p.bodies) + strlen(body) + 2 < sizeof(p.bodies)) {
			if (p.count)
				strcat(p.bodies, " ");
			strcat(p.bodies, body);
		}
		if (!p.first_result_id) {
			const char *id = strstr(result, " id='");
			p.first_result_id = id ? strndup(id + 5, strcspn(id + 5, "'")) : NULL;
		}
		free(body);
		p.count++;
		free(result);
	}
	p.first = inner(p.fin, "first");
	p.last = inner(p.fin, "last");
	if (!p.first && p.fin) {
		/* <first index='0'>id</first> */
		const char *f = strstr(p.fin, "<first");
		const char *gt = f ? strchr(f, '>') : NULL;
		const char *end = gt ? strstr(gt, "</first>") : NULL;
		p.first = end ? strndup(gt + 1, (size_t)(end - gt - 1)) : NULL;
	}
	return p;
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
	struct raw_client *alice = online(&s, "alice");
	struct raw_client *bob = online(&s, "bob");
	struct raw_client *carol = online(&s, "carol");
	if (!ok(alice && bob && carol, "alice, bob and carol are online"))
		return done_testing();

	raw_client_send(alice, "<iq type='get' id='d1' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
	char *answer = raw_client_wait(alice, "id='d1'", 5000);
	has_str(answer, "var='urn:xmpp:mam:2'", "the account advertises archives on its bare JID");
	free(answer);

	for (int i = 1; i <= 30; i++)
		raw_client_send(bob, "<message to='alice@localhost' type='chat'><body>h%d</body></message>", i);
	raw_client_send(bob, "<message to='alice@localhost' type='chat'><body>f1</body>"
			     "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='999'/></message>");
	raw_client_sync(bob);
	for (int i = 1; i <= 5; i++)
		raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>a%d</body></message>", i);
	raw_client_sync(bob);
	raw_client_sync(alice);
	raw_client_send(carol, "<message to='alice@localhost' type='chat'><body>c1</body></message>");
	raw_client_sync(carol);
	raw_client_sync(alice);
	char *h1 = raw_client_wait(alice, "<body>h1</body>", 5000);
	has_str(h1, "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='", "alice's copy carries its archive id");
	free(h1);
	char *forged = raw_client_wait(alice, "<body>f1</body>", 5000);
	ok(forged && !strstr(forged, "id='999'"), "a stanza-id forged by the sender is replaced");
	free(forged);

	struct page p = query(alice, "<field var='with'><value>bob@localhost</value></field>", "<max>10</max>", false);
	is_str(p.bodies, "h1 h2 h3 h4 h5 h6 h7 h8 h9 h10", "the first page with bob: ten messages in order");
	ok(p.fin && !strstr(p.fin, "complete='true'"), "not complete");
	ok(p.first && p.last, "with first and last ids");
	char fields_after[160];
	snprintf(fields_after, sizeof(fields_after), "<max>10</max><after>%s</after>", p.last ? p.last : "");
	char *h5_id = NULL;
	page_free(&p);
	p = query(alice, "<field var='with'><value>bob@localhost</value></field>", fields_after, false);
	is_str(p.bodies, "h11 h12 h13 h14 h15 h16 h17 h18 h19 h20", "the next page continues after the last id");
	page_free(&p);
	p = query(alice, NULL, "<max>5</max><before/>", false);
	is_str(p.bodies, "a2 a3 a4 a5 c1", "the last page (before empty), in archive order");
	page_free(&p);
	p = query(alice, NULL, "<max>5</max><before/>", true);
	is_str(p.bodies, "c1 a5 a4 a3 a2", "flip-page reverses it");
	page_free(&p);
	p = query(alice, "<field var='with'><value>bob@localhost</value></field>", "<max>100</max>", false);
	is_int(p.count, 36, "with bob: 30 + 1 received and 5 sent");
	has_str(p.fin, "complete='true'", "complete");
	ok(!strstr(p.bodies, "c1"), "carol's message is not in it");
	page_free(&p);
	p = query(alice, NULL, "<max>100</max>", false);
	is_int(p.count, 37, "everything: 37 messages");
	page_free(&p);
	p = query(alice, NULL, "<max>10</max>", false);
	has_str(p.fin, "<count>37</count>", "a page of an unfiltered query says how many there are (RSM count)");
	page_free(&p);
	p = query(alice, "<field var='with'><value>bob@localhost</value></field>", "<max>1</max><after>4</after>", false);
	h5_id = p.first_result_id ? strdup(p.first_result_id) : NULL;
	is_str(p.bodies, "h5", "a page after id 4 starts with id 5");
	page_free(&p);
	p = query(alice, "<field var='ids' type='list-multi'><value>5</value><value>7</value></field>", NULL, false);
	is_str(p.bodies, "h5 h7", "ids fetches exactly those messages");
	page_free(&p);
	p = query(alice, "<field var='start'><value>2100-01-01T00:00:00Z</value></field>", NULL, false);
	is_int(p.count, 0, "start in the future: nothing");
	has_str(p.fin, "complete='true'", "and complete");
	page_free(&p);
	p = query(alice, "<field var='end'><value>2000-01-01T00:00:00Z</value></field>", NULL, false);
	is_int(p.count, 0, "end in the past: nothing");
	page_free(&p);
	p = query(alice, NULL, "<max>5</max><after>999999</after>", false);
	has_str(p.fin, "<item-not-found", "an unknown id is item-not-found");
	page_free(&p);
	p = query(bob, "<field var='with'><value>alice@localhost</value></field>", "<max>100</max>", false);
	is_int(p.count, 36, "bob's own archive holds the same conversation");
	page_free(&p);
	raw_client_send(alice, "<iq type='get' id='m1'><metadata xmlns='urn:xmpp:mam:2'/></iq>");
	answer = raw_client_wait(alice, "id='m1'", 5000);
	has_str(answer, "<start id='1'", "metadata: the first id");
	has_str(answer, "<end id='37'", "and the last");
	free(answer);

	/* XEP-0441 preferences. */
	raw_client_send(alice, "<iq type='get' id='p1'><prefs xmlns='urn:xmpp:mam:2'/></iq>");
	answer = raw_client_wait(alice, "id='p1'", 5000);
	has_str(answer, "default='always'", "the default policy is always");
	free(answer);
	raw_client_send(alice, "<iq type='set' id='p2'><prefs xmlns='urn:xmpp:mam:2' default='never'>"
			       "<always><jid>carol@localhost</jid></always><never/></prefs></iq>");
	answer = raw_client_wait(alice, "id='p2'", 5000);
	has_str(answer, "type='result'", "alice archives nothing but carol");
	free(answer);
	raw_client_send(bob, "<message to='alice@localhost' type='chat'><body>not kept</body></message>");
	raw_client_sync(bob);
	raw_client_send(carol, "<message to='alice@localhost' type='chat'><body>kept</body></message>");
	raw_client_sync(carol);
	raw_client_sync(alice);
	char *unkept = raw_client_wait(alice, "not kept", 5000);
	ok(unkept && !strstr(unkept, "stanza-id"), "bob's message arrives without an archive id");
	free(unkept);
	p = query(alice, NULL, "<max>100</max>", false);
	is_int(p.count, 38, "alice's archive grew by carol's message only");
	ok(strstr(p.bodies, "kept") && !strstr(p.bodies, "not kept"), "it has 'kept', not 'not kept'");
	page_free(&p);
	p = query(bob, "<field var='with'><value>alice@localhost</value></field>", "<max>100</max>", false);
	is_int(p.count, 37, "bob's own archive (his default) keeps what he sent");
	page_free(&p);
	raw_client_send(alice, "<iq type='set' id='p3'><prefs xmlns='urn:xmpp:mam:2' default='roster'/></iq>");
	free(raw_client_wait(alice, "id='p3'", 5000));
	raw_client_send(carol, "<message to='alice@localhost' type='chat'><body>not in roster</body></message>");
	raw_client_sync(carol);
	raw_client_sync(alice);
	p = query(alice, NULL, "<max>100</max>", false);
	is_int(p.count, 38, "with 'roster', a sender who is not a contact is not archived");
	page_free(&p);
	raw_client_send(alice, "<iq type='set' id='p4'><prefs xmlns='urn:xmpp:mam:2' default='always'>"
			       "<never><jid>nobody@localhost</jid></never></prefs></iq>");
	free(raw_client_wait(alice, "id='p4'", 5000));

	/* Restart, then an offline message. */
	raw_client_free(alice);
	raw_client_free(bob);
	raw_client_free(carol);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ok(ph_server_start(&s, NULL) == 0, "and starts again");
	bob = online(&s, "bob");
	raw_client_send(bob, "<message to='alice@localhost' type='chat'><body>while away</body></message>");
	raw_client_sync(bob);
	alice = online(&s, "alice");
	char *offline = raw_client_wait(alice, "while away", 5000);
	has_str(offline, "by='alice@localhost' id='39'", "the offline message carries the next archive id (39)");
	free(offline);
	p = query(alice, "<field var='ids' type='list-multi'><value>5</value></field>", NULL, false);
	is_str(p.bodies, "h5", "after the restart the archive answers by the same ids");
	raw_client_send(alice, "<iq type='get' id='p5'><prefs xmlns='urn:xmpp:mam:2'/></iq>");
	answer = raw_client_wait(alice, "id='p5'", 5000);
	has_str(answer, "<jid>nobody@localhost</jid>", "the preferences survive the restart");
	free(answer);
	page_free(&p);
	free(h5_id);

	/* XEP-0424: the sender retracts a message; both archives keep a
	 * tombstone. Someone else cannot retract it. */
	raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>oops</body>"
			       "<origin-id xmlns='urn:xmpp:sid:0' id='oops-1'/></message>");
	raw_client_sync(alice);
	raw_client_send(bob, "<message to='alice@localhost' type='chat'><body>not yours</body>"
			     "<retract xmlns='urn:xmpp:message-retract:1' id='oops-1'/></message>");
	raw_client_sync(bob);
	raw_client_sync(alice);
	p = query(bob, "<field var='with'><value>alice@localhost</value></field>", "<max>3</max><before/>", false);
	ok(strstr(p.bodies, "oops") != NULL, "a retraction by the other party changes nothing");
	page_free(&p);
	raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>retracted a message</body>"
			       "<retract xmlns='urn:xmpp:message-retract:1' id='oops-1'/></message>");
	raw_client_sync(alice);
	raw_client_sync(bob);
	p = query(bob, "<field var='with'><value>alice@localhost</value></field>", "<max>4</max><before/>", false);
	ok(!strstr(p.bodies, "oops"), "in bob's archive the message is gone");
	page_free(&p);
	raw_client_send(bob, "<iq type='set' id='tomb'><query xmlns='urn:xmpp:mam:2' queryid='tomb'>"
			     "<set xmlns='http://jabber.org/protocol/rsm'><max>4</max><before/></set></query></iq>");
	char *tomb_fin = raw_client_wait(bob, "id='tomb'", 5000);
	free(tomb_fin);
	char *tomb = raw_client_wait(bob, "<retracted", 100);
	has_str(tomb, "xmlns='urn:xmpp:message-retract:1'", "a tombstone marks it retracted for bob");
	free(tomb);
	raw_client_discard(bob);
	p = query(alice, "<field var='with'><value>bob@localhost</value></field>", "<max>4</max><before/>", false);
	ok(!strstr(p.bodies, "oops"), "and in alice's archive too");
	page_free(&p);

	/* An operator deletes an archive; its numbering goes on. */
	const char *delete_args[] = { "delete-archive", "bob@localhost", NULL };
	char *out = NULL, *err = NULL;
	is_int(ph_ctl(&s, delete_args, NULL, &out, &err), 0, "parleyctl delete-archive bob@localhost");
	free(out);
	free(err);
	p = query(bob, NULL, "<max>100</max>", false);
	is_int(p.count, 0, "bob's archive is empty");
	has_str(p.fin, "<count>0</count>", "and counts none");
	page_free(&p);
	raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>fresh start</body></message>");
	char *fresh = raw_client_wait(bob, "fresh start", 5000);
	ok(fresh && !strstr(fresh, "id='1'"), "the next message does not reuse an old id");
	free(fresh);
	const char *bad_args[] = { "delete-archive", NULL };
	err = NULL;
	ok(ph_ctl(&s, bad_args, NULL, NULL, &err) != 0, "delete-archive without a JID is refused");
	has_str(err, "delete-archive JID", "with its usage");
	free(err);
	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);

	/* Retention: max-age 2s, looked at every second. */
	struct ph_server r;
	ph_server_init(&r, NULL);
	char *config = ph_standard_config(&r, NULL, NULL);
	char *patched = ph_config_with_attributes(config, "module name=\"mam\"",
						  "max-age=\"2s\" expiry-interval=\"1s\"");
	ph_server_write_config(&r, patched);
	free(patched);
	free(config);
	if (ok(ph_server_start(&r, NULL) == 0, "a server keeping archives for 2 s starts")) {
		ph_add_user(&r, "alice");
		ph_add_user(&r, "bob");
		alice = online(&r, "alice");
		bob = online(&r, "bob");
		for (int i = 1; i <= 3; i++)
			raw_client_send(bob, "<message to='alice@localhost' type='chat'><body>old%d</body></message>", i);
		raw_client_sync(bob);
		raw_client_sync(alice);
		p = query(alice, NULL, "<max>100</max>", false);
		is_int(p.count, 3, "the messages are archived");
		page_free(&p);
		bool expired = false;
		for (int attempt = 0; attempt < 100 && !expired; attempt++) {
			p = query(alice, NULL, "<max>100</max>", false);
			expired = p.count == 0;
			page_free(&p);
			if (!expired)
				raw_client_seen(alice, "never arrives", 100);
		}
		ok(expired, "after max-age they are gone");
		char *log = ph_server_log(&r);
		has_str(log, "expired 6 archived messages", "and the expiry is logged (both archives)");
		free(log);
		raw_client_free(alice);
		raw_client_free(bob);
		is_int(ph_server_stop(&r), 0, "the server stops cleanly");
	}
	ph_server_cleanup(&r);
	return done_testing();
}
