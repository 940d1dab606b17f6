/* The inbox (XEP-0430 draft, MongooseIM's namespace) with real clients:
 * a device that starts cold gets every chat, newest first, with its last
 * message and unread count in one query; counts grow with incoming
 * messages and return to zero when the account answers, sends a
 * displayed marker (XEP-0333) from any device, or resets the chat; pages
 * follow RSM; counts survive a restart. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The results of an inbox query, concatenated (caller frees), and the fin. */
static char *inbox(struct raw_client *c, const char *rsm, char **fin)
{
	static int n;
	char id[16], qid[16];
	snprintf(id, sizeof(id), "i%d", ++n);
	snprintf(qid, sizeof(qid), "q%d", n);
	raw_client_send(c, "<iq type='set' id='%s'><inbox xmlns='erlang-solutions.com:xmpp:inbox:0' queryid='%s'>%s</inbox></iq>",
			id, qid, rsm ? rsm : "");
	char needle[32];
	snprintf(needle, sizeof(needle), "id='%s'", id);
	*fin = raw_client_wait(c, needle, WAIT);
	snprintf(needle, sizeof(needle), "queryid='%s'", qid);
	size_t cap = 1;
	char *all = calloc(1, 1);
	char *r;
	while ((r = raw_client_wait(c, needle, 0)) != NULL) {
		cap += strlen(r) + 1;
		all = realloc(all, cap);
		strcat(all, r);
		strcat(all, "\n");
		free(r);
	}
	return all;
}

static void say(struct raw_client *c, const char *to, const char *body)
{
	raw_client_send(c, "<message to='%s' type='chat'><body>%s</body></message>", to, body);
	raw_client_sync(c);
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, "durability=\"fsync\"", NULL);
	const char *anchor = "    <module name=\"version\"/>\n";
	char *at = strstr(config, anchor);
	char *patched = malloc(strlen(config) + 64);
	memcpy(patched, config, (size_t)(at - config));
	strcpy(patched + (at - config), "    <module name=\"inbox\"/>\n");
	strcat(patched, at);
	ph_server_write_config(&s, patched);
	free(patched);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with the inbox"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	ph_add_user(&s, "carol");
	struct raw_client *bob = online(&s, "bob", "b");
	struct raw_client *carol = online(&s, "carol", "c");
	say(bob, "alice@localhost", "b1");
	say(bob, "alice@localhost", "b2");
	say(carol, "alice@localhost", "c1");
	say(bob, "alice@localhost", "b3");

	struct raw_client *phone = online(&s, "alice", "phone");
	char *fin;
	char *results = inbox(phone, NULL, &fin);
	char *bob_line = results ? strstr(results, "jid='bob@localhost'") : NULL;
	char *carol_line = results ? strstr(results, "jid='carol@localhost'") : NULL;
	ok(bob_line && carol_line && bob_line < carol_line, "two chats, the newest (bob's) first");
	ok(results && strstr(results, "unread='3' jid='bob@localhost'"), "bob's with 3 unread");
	ok(results && strstr(results, "unread='1' jid='carol@localhost'"), "carol's with 1");
	ok(bob_line && strstr(bob_line, "<body>b3</body>") && (!carol_line || strstr(bob_line, "<body>b3</body>") < carol_line),
	   "each with its last message");
	ok(results && strstr(results, "urn:xmpp:sid:0"), "which carries its archive id");
	has_str(fin, "<unread-messages>4</unread-messages>", "the fin counts 4 unread messages");
	has_str(fin, "<active-conversations>2</active-conversations>", "in 2 active conversations");
	free(results);
	free(fin);

	/* Reading on one device shows on the other. */
	raw_client_send(phone, "<message to='bob@localhost' type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>");
	raw_client_sync(phone);
	struct raw_client *laptop = online(&s, "alice", "laptop");
	results = inbox(laptop, NULL, &fin);
	ok(results && strstr(results, "unread='0' jid='bob@localhost'"),
	   "a displayed marker from the phone: the laptop sees bob's chat read");
	free(results);
	free(fin);
	say(laptop, "carol@localhost", "hi carol");
	results = inbox(phone, NULL, &fin);
	ok(results && strstr(results, "unread='0' jid='carol@localhost'"), "answering carol reads her chat");
	ok(results && strstr(results, "<body>hi carol</body>"), "and the answer is the chat's last message");
	ok(results && strstr(results, "jid='carol@localhost'") < strstr(results, "jid='bob@localhost'"),
	   "which is now the newest chat");
	has_str(fin, "<unread-messages>0</unread-messages>", "nothing unread now");
	free(results);
	free(fin);

	/* Paging and reset. */
	say(bob, "alice@localhost", "b4");
	results = inbox(phone, "<set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set>", &fin);
	ok(results && strstr(results, "jid='bob@localhost'") && !strstr(results, "carol"), "a page of one: bob's chat");
	has_str(fin, "<last>bob@localhost</last>", "the page says where it ends");
	free(results);
	free(fin);
	results = inbox(phone, "<set xmlns='http://jabber.org/protocol/rsm'><max>1</max><after>bob@localhost</after></set>", &fin);
	ok(results && strstr(results, "jid='carol@localhost'") && !strstr(results, "bob@"), "the next page: carol's");
	free(results);
	free(fin);
	raw_client_send(phone, "<iq type='set' id='r'><reset xmlns='erlang-solutions.com:xmpp:inbox:0#conversation' jid='bob@localhost'/></iq>");
	char *answer = raw_client_wait(phone, "id='r'", WAIT);
	has_str(answer, "type='result'", "a chat can be reset explicitly");
	free(answer);

	/* Restart. */
	say(carol, "alice@localhost", "c2");
	raw_client_free(phone);
	raw_client_free(laptop);
	raw_client_free(bob);
	raw_client_free(carol);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ok(ph_server_start(&s, NULL) == 0, "and starts again");
	phone = online(&s, "alice", "phone");
	results = inbox(phone, NULL, &fin);
	ok(results && strstr(results, "unread='1' jid='carol@localhost'") && strstr(results, "unread='0' jid='bob@localhost'"),
	   "the counts survived the restart");
	free(results);
	free(fin);
	raw_client_free(phone);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
