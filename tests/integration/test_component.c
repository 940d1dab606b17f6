/* External components (XEP-0114) driven over a raw socket, the way a
 * gateway or bot connects: the handshake with the right secret is
 * accepted and a wrong one, an unknown domain or a stanza before the
 * handshake gets the stream error the XEP names; stanzas flow both ways
 * between the component and a client; a 'from' outside the component's
 * domain is invalid-from; a second connection replaces the first (which
 * gets <conflict/>), or is refused when replace="false"; a disconnected
 * component's domain bounces instead of leaking to federation; connected
 * components are listed in the server's disco#items. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int component_port;

/* Opens a component stream to `domain` and returns the server's stream
 * header (caller frees) or NULL. */
static char *open_stream(struct raw_client *c, const char *domain)
{
	raw_client_send(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
			   "xmlns:stream='http://etherx.jabber.org/streams' to='%s'>",
			domain);
	return raw_client_wait(c, "<stream:stream", 5000);
}

/* The id='...' of a stream header, copied into id. */
static bool stream_id(const char *header, char *id, size_t size)
{
	const char *at = header ? strstr(header, " id='") : NULL;
	if (!at)
		return false;
	at += 5;
	size_t len = strcspn(at, "'");
	if (len + 1 > size)
		return false;
	memcpy(id, at, len);
	id[len] = '\0';
	return true;
}

static void send_handshake(struct raw_client *c, const char *id, const char *secret)
{
	char input[256];
	snprintf(input, sizeof(input), "%s%s", id, secret);
	unsigned char digest[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)input, strlen(input), digest);
	char hex[2 * SHA_DIGEST_LENGTH + 1];
	for (size_t i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	raw_client_send(c, "<handshake>%s</handshake>", hex);
}

/* Connects and authenticates; NULL when anything fails. */
static struct raw_client *connect_component(const char *domain, const char *secret,
					    char **answer)
{
	struct raw_client *c = raw_client_connect(component_port, false);
	if (!c)
		return NULL;
	char *header = open_stream(c, domain);
	char id[128];
	bool have_id = stream_id(header, id, sizeof(id));
	free(header);
	if (!have_id) {
		raw_client_free(c);
		return NULL;
	}
	send_handshake(c, id, secret);
	*answer = raw_client_wait(c, NULL, 5000);
	return c;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	component_port = ph_free_port();
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "  <components address=\"127.0.0.1\" port=\"%d\"/>\n"
		 "  <component name=\"bot.localhost\" secret=\"s3cret\"/>\n"
		 "  <component name=\"gw.localhost\" secret=\"other\" replace=\"false\"/>\n",
		 component_port);
	char *config = ph_standard_config(&s, NULL, extra);
	ph_server_write_config(&s, config);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with two components configured"))
		return done_testing();
	ph_add_user(&s, "alice");
	struct raw_client *alice = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "desk");
	ok(alice != NULL, "alice logs in");
	raw_client_send(alice, "<presence/>");

	/* Before the component connects, its domain is ours and bounces. */
	raw_client_send(alice, "<message to='bot.localhost' id='early' type='chat'><body>hi</body></message>");
	char *answer = raw_client_wait(alice, "id='early'", 5000);
	has_str(answer, "<service-unavailable", "a message to a disconnected component bounces");
	free(answer);

	/* Wrong secret. */
	struct raw_client *bad = connect_component("bot.localhost", "wrong", &answer);
	has_str(answer, "<not-authorized", "a wrong secret gets not-authorized");
	free(answer);
	ok(bad && raw_client_seen(bad, "</stream:stream>", 5000), "and the stream is closed");
	raw_client_free(bad);
	ok(ph_wait_log(&s, "handshake for bot.localhost failed", 5000), "the failure is logged");

	/* Unknown domain. */
	bad = raw_client_connect(component_port, false);
	char *header = open_stream(bad, "nobody.localhost");
	answer = raw_client_wait(bad, "<stream:error", 5000);
	has_str(answer, "<host-unknown", "an unknown component domain gets host-unknown");
	free(answer);
	free(header);
	raw_client_free(bad);

	/* A stanza before the handshake. */
	bad = raw_client_connect(component_port, false);
	header = open_stream(bad, "bot.localhost");
	free(header);
	raw_client_send(bad, "<message from='bot.localhost' to='alice@localhost'><body>sneaky</body></message>");
	answer = raw_client_wait(bad, "<stream:error", 5000);
	has_str(answer, "<not-authorized", "a stanza before the handshake gets not-authorized");
	free(answer);
	raw_client_free(bad);

	/* The right secret. */
	struct raw_client *bot = connect_component("bot.localhost", "s3cret", &answer);
	is_str(answer, "<handshake/>", "the right secret is accepted with an empty <handshake/>");
	free(answer);
	ok(ph_wait_log(&s, "component bot.localhost authenticated", 5000), "the success is logged");

	/* Client -> component. */
	raw_client_send(alice, "<message to='echo@bot.localhost/r' id='m1' type='chat'><body>ping bot</body></message>");
	answer = raw_client_wait(bot, "ping bot", 5000);
	has_str(answer, "from='alice@localhost/desk'", "the component gets alice's message with her full JID");
	has_str(answer, "to='echo@bot.localhost/r'", "addressed as she sent it");
	ok(answer && !strstr(answer, "jabber:client"), "in the component stream's namespace");
	free(answer);

	/* Component -> client. */
	raw_client_send(bot, "<message from='echo@bot.localhost/r' to='alice@localhost/desk' type='chat' id='m2'><body>pong from bot</body></message>");
	answer = raw_client_wait(alice, "pong from bot", 5000);
	has_str(answer, "from='echo@bot.localhost/r'", "alice gets the component's answer");
	ok(answer && !strstr(answer, "component:accept"), "as a jabber:client stanza");
	free(answer);

	/* An IQ from the client, answered by the component. */
	raw_client_send(alice, "<iq to='bot.localhost' id='q1' type='get'><query xmlns='jabber:iq:version'/></iq>");
	answer = raw_client_wait(bot, "id='q1'", 5000);
	has_str(answer, "jabber:iq:version", "the component gets the IQ");
	free(answer);
	raw_client_send(bot, "<iq from='bot.localhost' to='alice@localhost/desk' id='q1' type='result'><query xmlns='jabber:iq:version'><name>bot</name></query></iq>");
	answer = raw_client_wait(alice, "id='q1'", 5000);
	has_str(answer, "<name>bot</name>", "and alice the result");
	free(answer);

	/* disco#items of the server lists the connected component. */
	raw_client_send(alice, "<iq to='localhost' id='items' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
	answer = raw_client_wait(alice, "id='items'", 5000);
	has_str(answer, "jid='bot.localhost'", "disco#items lists the connected component");
	ok(answer && !strstr(answer, "gw.localhost"), "but not the one that is not connected");
	free(answer);

	/* The component may use the server: a message to an offline user is stored. */
	raw_client_send(bot, "<message from='bot.localhost' to='nobody@localhost' id='m3'><body>x</body></message>");
	answer = raw_client_wait(bot, "id='m3'", 5000);
	has_str(answer, "<service-unavailable", "the component gets errors for what it sent");
	free(answer);

	/* Replacement: a second connection takes over and the first ends with <conflict/>. */
	struct raw_client *bot2 = connect_component("bot.localhost", "s3cret", &answer);
	is_str(answer, "<handshake/>", "a second connection for bot.localhost is accepted");
	free(answer);
	answer = raw_client_wait(bot, "<stream:error", 5000);
	has_str(answer, "<conflict", "the first one ends with a conflict stream error");
	free(answer);
	raw_client_send(alice, "<message to='bot.localhost' id='m4'><body>to the new one</body></message>");
	answer = raw_client_wait(bot2, "to the new one", 5000);
	ok(answer != NULL, "stanzas now go to the new connection");
	free(answer);
	raw_client_free(bot);

	/* From outside its domain. */
	raw_client_send(bot2, "<message from='alice@localhost' to='alice@localhost/desk'><body>spoof</body></message>");
	answer = raw_client_wait(bot2, "<stream:error", 5000);
	has_str(answer, "<invalid-from", "a 'from' outside the component's domain is invalid-from");
	free(answer);
	raw_client_sync(alice);
	is_int(raw_client_count(alice, "spoof"), 0, "and the spoofed stanza never reaches alice");
	raw_client_free(bot2);

	/* replace="false": the second one is refused with conflict. */
	struct raw_client *gw = connect_component("gw.localhost", "other", &answer);
	is_str(answer, "<handshake/>", "gw.localhost connects");
	free(answer);
	struct raw_client *gw2 = connect_component("gw.localhost", "other", &answer);
	has_str(answer, "<conflict", "with replace=false a second gw.localhost gets conflict");
	free(answer);
	raw_client_send(alice, "<message to='gw.localhost' id='m5'><body>still the first</body></message>");
	answer = raw_client_wait(gw, "still the first", 5000);
	ok(answer != NULL, "and the first connection keeps the domain");
	free(answer);
	raw_client_free(gw2);

	/* A component that went away: its domain bounces again. */
	raw_client_free(gw);
	ok(ph_wait_log(&s, "gw.localhost disconnected", 5000), "a closed component is noticed");
	raw_client_send(alice, "<message to='gw.localhost' id='m6' type='chat'><body>gone?</body></message>");
	answer = raw_client_wait(alice, "id='m6'", 5000);
	has_str(answer, "<service-unavailable", "and its domain bounces again");
	free(answer);

	raw_client_free(alice);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
