/* Hostile input from an authenticated session: each bad stream gets the
 * RFC 6120 stream error (restricted-xml, not-well-formed,
 * policy-violation, unsupported-stanza-type) and a log line, bad stanzas
 * get stanza errors and the stream stays up, and after every case two
 * bystanders still exchange messages. A billion-laughs document does not
 * make the server grow, a stanza with 500 attributes is refused rather
 * than wedging the session (Prosody's failure), and a session flooding
 * stanzas is slowed down while a bystander's answers keep coming. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct raw_client *alice, *bob;
static int round_number;

/* Alice writes to bob; bob must get it. */
static void bystanders_still_talk(const char *after)
{
	char body[64];
	snprintf(body, sizeof(body), "still here %d", ++round_number);
	raw_client_send(alice, "<message to='bob@localhost/b' type='chat'><body>%s</body></message>",
			body);
	char *got = raw_client_wait(bob, body, 5000);
	ok(got != NULL, "after %s, bystanders still exchange messages", after);
	free(got);
}

static struct raw_client *mallory(const struct ph_server *s)
{
	return raw_client_new_session(s->c2s_tls_port, "mallory", "mallory-secret", NULL);
}

/* Mallory sends `xml`; the stream must end with `condition`. */
static void expect_stream_error(const struct ph_server *s, const char *xml, const char *condition,
				const char *what)
{
	struct raw_client *m = mallory(s);
	if (!m) {
		ok(0, "mallory logs in for %s", what);
		return;
	}
	raw_client_send(m, "%s", xml);
	char *error = raw_client_wait(m, "<stream:error", 10000);
	has_str(error, condition, "%s is a %s stream error", what, condition);
	free(error);
	ok(raw_client_seen(m, "</stream:stream>", 5000), "and the stream is closed");
	raw_client_free(m);
	bystanders_still_talk(what);
}

static char *repeat(const char *unit, int count, const char *prefix, const char *suffix)
{
	size_t size = strlen(prefix) + strlen(unit) * (size_t)count + strlen(suffix) + 1;
	char *text = malloc(size);
	strcpy(text, prefix);
	char *p = text + strlen(prefix);
	for (int i = 0; i < count; i++) {
		strcpy(p, unit);
		p += strlen(unit);
	}
	strcpy(p, suffix);
	return text;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	const char *users[][2] = { { "alice@localhost", "alice-secret\n" },
				   { "bob@localhost", "bob-secret\n" },
				   { "mallory@localhost", "mallory-secret\n" } };
	for (size_t i = 0; i < 3; i++) {
		const char *args[] = { "adduser", users[i][0], NULL };
		ph_ctl(&s, args, users[i][1], NULL, NULL);
	}
	alice = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "a");
	bob = raw_client_new_session(s.c2s_tls_port, "bob", "bob-secret", "b");
	if (!ok(alice && bob, "two bystanders log in"))
		return done_testing();
	bystanders_still_talk("logging in");

	/* Billion laughs: entity declarations are refused before any expansion. */
	long before = ph_rss_kib(s.pid);
	{
		struct raw_client *c = raw_client_connect(s.c2s_tls_port, true);
		raw_client_send(c,
				"<?xml version='1.0'?><!DOCTYPE stream:stream ["
				"<!ENTITY a \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">"
				"<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
				"<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">"
				"<!ENTITY d \"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\">"
				"<!ENTITY e \"&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;\">"
				"<!ENTITY f \"&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;\">"
				"<!ENTITY g \"&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;\">"
				"<!ENTITY h \"&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;\">"
				"<!ENTITY i \"&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;\">]>"
				"<stream:stream xmlns='jabber:client' "
				"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
				"version='1.0'><message><body>&i;&i;&i;&i;</body></message>");
		char *error = raw_client_wait(c, "<stream:error", 10000);
		has_str(error, "<restricted-xml", "a billion-laughs document is restricted-xml");
		free(error);
		raw_client_free(c);
	}
	long after = ph_rss_kib(s.pid);
	ok(after - before < 8192, "and the server did not grow (%ld KiB before, %ld KiB after)",
	   before, after);
	bystanders_still_talk("a billion-laughs document");

	expect_stream_error(&s, "<message to='bob@localhost'><?evil instruction?></message>",
			    "<restricted-xml", "a processing instruction");
	expect_stream_error(&s, "<message to='bob@localhost'><body>&custom;</body></message>",
			    "<restricted-xml", "a reference to an undeclared entity");
	expect_stream_error(&s, "<message><body>caf\xc3\x28</body></message>", "<not-well-formed",
			    "invalid UTF-8");
	expect_stream_error(&s, "<message><body></message>", "<not-well-formed",
			    "a mismatched end tag");
	expect_stream_error(&s, "<surprise xmlns='jabber:client'/>", "<unsupported-stanza-type",
			    "an unknown top-level element");

	char *wide = NULL;
	{
		/* ~500 attributes: over the per-element limit (128). */
		char *attributes = malloc(500 * 24);
		attributes[0] = '\0';
		for (int i = 0; i < 500; i++)
			sprintf(attributes + strlen(attributes), " a%d='v'", i);
		if (asprintf(&wide, "<message to='bob@localhost/b'%s><body>wide</body></message>",
			     attributes) < 0)
			wide = NULL;
		free(attributes);
	}
	expect_stream_error(&s, wide, "<policy-violation",
			    "a stanza with 500 attributes (no silent wedge)");
	free(wide);
	char *deep = repeat("<x>", 200, "<message to='bob@localhost/b'>", "");
	expect_stream_error(&s, deep, "<policy-violation", "nesting 200 elements deep");
	free(deep);
	char *log = ph_server_log(&s);
	has_str(log, "stream error policy-violation", "stream errors are logged with their condition");
	free(log);

	/* Stanza errors keep the stream: mallory is answered and stays. */
	struct raw_client *m = mallory(&s);
	if (ok(m != NULL, "mallory logs in again")) {
		raw_client_send(m, "<message to='@@bad' id='m1'><body>x</body></message>");
		char *error = raw_client_wait(m, "<jid-malformed", 5000);
		ok(error != NULL, "a message to a malformed JID gets jid-malformed");
		free(error);
		raw_client_send(m, "<iq type='get' id='two' to='localhost'>"
				   "<ping xmlns='urn:xmpp:ping'/><query xmlns='jabber:iq:version'/></iq>");
		error = raw_client_wait(m, "<bad-request", 5000);
		ok(error != NULL, "an IQ get with two payloads gets bad-request");
		free(error);
		raw_client_send(m, "<iq type='bogus' id='t1' to='localhost'>"
				   "<ping xmlns='urn:xmpp:ping'/></iq>");
		error = raw_client_wait(m, "<bad-request", 5000);
		ok(error != NULL, "an IQ of an unknown type gets bad-request");
		free(error);
		/* 100 attributes is within the limit: delivered as sent. */
		char *attributes = malloc(100 * 24);
		attributes[0] = '\0';
		for (int i = 0; i < 100; i++)
			sprintf(attributes + strlen(attributes), " x%d='v%d'", i, i);
		raw_client_send(m, "<message to='bob@localhost/b'%s><body>hundred</body></message>",
				attributes);
		free(attributes);
		char *got = raw_client_wait(bob, "hundred", 5000);
		ok(got && strstr(got, "x99=") != NULL,
		   "a message with 100 attributes is delivered with them");
		free(got);
		ok(raw_client_sync(m), "mallory's stream is still up after the stanza errors");
		raw_client_free(m);
	}
	bystanders_still_talk("stanza errors");
	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);

	/* Flooding: a low stanza rate, so the pause is visible. */
	struct ph_server f;
	ph_server_init(&f, NULL);
	char *config = ph_standard_config(&f, NULL, NULL);
	char *patched = ph_config_with_attributes(config, "c2s",
						  "max-stanzas-per-second=\"20\" stanza-burst=\"40\"");
	ph_server_write_config(&f, patched);
	free(patched);
	free(config);
	if (ok(ph_server_start(&f, NULL) == 0, "a server with 20 stanzas/s per session starts")) {
		for (size_t i = 0; i < 3; i++) {
			const char *args[] = { "adduser", users[i][0], NULL };
			ph_ctl(&f, args, users[i][1], NULL, NULL);
		}
		struct raw_client *flooder = mallory(&f);
		struct raw_client *bystander =
			raw_client_new_session(f.c2s_tls_port, "alice", "alice-secret", "a");
		enum { FLOOD = 120 };
		char *burst = malloc(FLOOD * 96);
		burst[0] = '\0';
		for (int i = 0; i < FLOOD; i++)
			sprintf(burst + strlen(burst),
				"<iq type='get' id='flood-%d' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
				i);
		raw_client_send(flooder, "%s", burst);
		free(burst);
		/* Once some answers arrived the rest are being held back: the
		 * bystander's ping must be answered while the flooder still waits
		 * for its last one. */
		ok(raw_client_seen(flooder, "flood-0", 5000), "the flooder gets its first answers");
		ok(raw_client_sync(bystander), "the bystander is answered meanwhile");
		ok(raw_client_count(flooder, "flood-119") == 0,
		   "while the flooder's last ping is still held back");
		ok(raw_client_seen(flooder, "flood-119", 15000),
		   "the flooder's stanzas are all answered in the end, none dropped");
		int answered = 0;
		char *pong;
		while ((pong = raw_client_wait(flooder, "flood-", 0)) != NULL) {
			answered++;
			free(pong);
		}
		is_int(answered, FLOOD, "every flood ping got exactly one answer");
		char *flood_log = ph_server_log(&f);
		has_str(flood_log, "stanzas/s; reading paused", "the throttling is logged");
		free(flood_log);
		raw_client_free(flooder);
		raw_client_free(bystander);
		is_int(ph_server_stop(&f), 0, "the server stops cleanly");
	}
	ph_server_cleanup(&f);
	return done_testing();
}
