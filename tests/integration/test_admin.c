/* XEP-0050 ad-hoc commands with the XEP-0133 administration set: an admin
 * lists and runs them (two steps with a session id, or one step with the
 * form submitted at once), anyone else sees none and is refused; accounts
 * are added, re-passworded and deleted (the deleted user's sessions end
 * and her contacts' subscriptions with her are cancelled);
 * registered and online users are counted and listed; an announcement
 * reaches every online session; a message of the day is sent at login,
 * survives a restart and can be deleted. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT 5000
#define ADMIN_NS "http://jabber.org/protocol/admin#"

static struct raw_client *online(const struct ph_server *s, const char *user, const char *password,
				 const char *resource)
{
	char secret[128];
	snprintf(secret, sizeof(secret), "%s-secret", user);
	struct raw_client *c = raw_client_new_session(s->c2s_tls_port, user, password ? password : secret,
						      resource);
	if (c) {
		raw_client_send(c, "<presence/>");
		raw_client_sync(c);
	}
	return c;
}

static char *iq(struct raw_client *c, const char *type, const char *payload)
{
	static int n;
	char id[24];
	snprintf(id, sizeof(id), "a%d", ++n);
	raw_client_send(c, "<iq type='%s' id='%s' to='localhost'>%s</iq>", type, id, payload);
	char needle[32];
	snprintf(needle, sizeof(needle), "id='%s'", id);
	return raw_client_wait(c, needle, WAIT);
}

/* Runs a command in one step with `fields` submitted (NULL: no form). */
static char *run(struct raw_client *c, const char *command, const char *fields)
{
	char payload[4096];
	snprintf(payload, sizeof(payload),
		 "<command xmlns='http://jabber.org/protocol/commands' node='" ADMIN_NS "%s' action='execute'>%s%s%s</command>",
		 command, fields ? "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
				   "<value>http://jabber.org/protocol/admin</value></field>" : "",
		 fields ? fields : "", fields ? "</x>" : "");
	return iq(c, "set", payload);
}

static const char *field(const char *var, const char *value)
{
	static char buffers[8][512];
	static int next;
	char *b = buffers[next++ % 8];
	snprintf(b, 512, "<field var='%s'><value>%s</value></field>", var, value);
	return b;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, "durability=\"fsync\"", NULL);
	ph_server_write_config(&s, config);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with admin commands"))
		return done_testing();
	ph_add_user(&s, "admin");
	ph_add_user(&s, "bob");
	struct raw_client *admin = online(&s, "admin", NULL, "console");
	struct raw_client *bob = online(&s, "bob", NULL, "b");
	if (!ok(admin && bob, "the admin and bob are online"))
		return done_testing();
	raw_client_discard(admin);
	raw_client_discard(bob);

	char *answer = iq(admin, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "var='http://jabber.org/protocol/commands'", "the server advertises ad-hoc commands");
	free(answer);
	answer = iq(admin, "get", "<query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/>");
	has_str(answer, "node='" ADMIN_NS "add-user'", "the admin is listed add-user");
	has_str(answer, "node='" ADMIN_NS "announce'", "and announce");
	free(answer);
	answer = iq(bob, "get", "<query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/>");
	ok(answer && strstr(answer, "type='result'") && !strstr(answer, "<item"), "bob is listed none");
	free(answer);
	answer = run(bob, "get-registered-users-num", NULL);
	has_str(answer, "forbidden", "and may not run them (forbidden)");
	free(answer);
	ok(ph_wait_log(&s, "bob@localhost/b may not run get-registered-users-num", WAIT), "which is logged");

	/* Two steps: the form, then its submission. */
	answer = run(admin, "add-user", NULL);
	has_str(answer, "status='executing'", "add-user answers with a form first");
	has_str(answer, "var='accountjid'", "asking for the account");
	char sid[64] = "";
	const char *p = answer ? strstr(answer, "sessionid='") : NULL;
	if (p)
		sscanf(p + 11, "%63[^']", sid);
	ok(*sid != 0, "within a session");
	free(answer);
	char payload[2048];
	snprintf(payload, sizeof(payload),
		 "<command xmlns='http://jabber.org/protocol/commands' node='" ADMIN_NS "add-user' sessionid='%s'>"
		 "<x xmlns='jabber:x:data' type='submit'>%s%s%s</x></command>",
		 sid, field("accountjid", "carol@localhost"), field("password", "carol-pw"),
		 field("password-verify", "carol-pw"));
	answer = iq(admin, "set", payload);
	has_str(answer, "status='completed'", "the submitted form completes it");
	has_str(answer, "type='info'", "successfully");
	free(answer);
	struct raw_client *carol = online(&s, "carol", "carol-pw", "c");
	ok(carol != NULL, "carol can log in with her new account");
	answer = iq(admin, "set", payload);
	has_str(answer, "bad-request", "a session id is good for one submission");
	free(answer);
	answer = run(admin, "add-user", "<field var='accountjid'><value>carol@localhost</value></field>"
					"<field var='password'><value>x</value></field><field var='password-verify'><value>x</value></field>");
	has_str(answer, "type='error'", "adding an existing account fails (one step)");
	free(answer);
	answer = run(admin, "add-user", "<field var='accountjid'><value>dave@elsewhere.example</value></field>"
					"<field var='password'><value>x</value></field><field var='password-verify'><value>x</value></field>");
	has_str(answer, "must name an account of this server", "so does an account of another domain");
	free(answer);

	/* Counting and listing. */
	answer = run(admin, "get-registered-users-num", NULL);
	has_str(answer, "<field var='registeredusersnum'><value>3</value>", "three registered users");
	free(answer);
	answer = run(admin, "get-online-users-num", NULL);
	has_str(answer, "<field var='onlineusersnum'><value>3</value>", "three online");
	free(answer);
	answer = run(admin, "get-online-users-list", NULL);
	has_str(answer, "<value>carol@localhost</value>", "listed by JID");
	free(answer);
	answer = run(admin, "get-user-statistics", field("accountjid", "bob@localhost"));
	has_str(answer, "<value>bob@localhost/b</value>", "bob's online resources");
	free(answer);

	/* Announcement, password, deletion. */
	answer = run(admin, "announce", "<field var='subject'><value>Maintenance</value></field>"
					"<field var='announcement'><value>Back at 5</value></field>");
	has_str(answer, "sent to 3 sessions", "an announcement goes to every online session");
	free(answer);
	ok(raw_client_seen(bob, "<body>Back at 5</body>", WAIT), "bob reads it");
	ok(raw_client_seen(carol, "<subject>Maintenance</subject>", WAIT), "carol too, with the subject");
	answer = run(admin, "change-user-password", "<field var='accountjid'><value>carol@localhost</value></field>"
						    "<field var='password'><value>new-pw</value></field>");
	has_str(answer, "type='info'", "carol's password is changed");
	free(answer);
	struct raw_client *carol2 = online(&s, "carol", "new-pw", "c2");
	ok(carol2 != NULL, "she logs in with the new one");
	raw_client_free(carol2);
	/* Carol and bob are friends before she goes. */
	raw_client_send(bob, "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
	ok(raw_client_seen(bob, "id='roster'", WAIT), "bob reads his roster (and so gets pushes)");
	raw_client_send(carol, "<presence to='bob@localhost' type='subscribe'/>");
	ok(raw_client_seen(bob, "type='subscribe'", WAIT), "carol asks bob for his presence");
	raw_client_send(bob, "<presence to='carol@localhost' type='subscribed'/>");
	ok(raw_client_seen(bob, "subscription='from'", WAIT), "bob agrees");
	raw_client_discard(bob);
	answer = run(admin, "delete-user", "<field var='accountjids'><value>carol@localhost</value></field>");
	has_str(answer, "type='info'", "carol's account is deleted");
	free(answer);
	ok(raw_client_seen(carol, "</stream:stream>", WAIT), "and her session ends");
	answer = raw_client_wait(bob, "jid='carol@localhost' subscription='none'", WAIT);
	ok(answer != NULL, "bob's roster no longer has her as a subscriber (RFC 6121 unsubscribe)");
	free(answer);
	raw_client_free(carol);
	ok(online(&s, "carol", "new-pw", "c3") == NULL, "she can no longer log in");

	/* Message of the day. */
	answer = run(admin, "set-motd", field("motd", "Welcome to Parley"));
	has_str(answer, "type='info'", "the admin sets a message of the day");
	free(answer);
	struct raw_client *bob2 = online(&s, "bob", NULL, "phone");
	ok(bob2 && raw_client_seen(bob2, "<body>Welcome to Parley</body>", WAIT), "bob gets it at login");
	raw_client_free(bob2);
	raw_client_free(admin);
	raw_client_free(bob);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ok(ph_server_start(&s, NULL) == 0, "and starts again");
	bob = online(&s, "bob", NULL, "b");
	ok(bob && raw_client_seen(bob, "Welcome to Parley", WAIT), "the message of the day survived");
	admin = online(&s, "admin", NULL, "console");
	answer = run(admin, "delete-motd", NULL);
	has_str(answer, "type='info'", "the admin deletes it");
	free(answer);
	bob2 = online(&s, "bob", NULL, "tablet");
	ok(bob2 && raw_client_count(bob2, "Welcome") == 0, "a new login gets none");
	raw_client_free(bob2);
	raw_client_free(bob);
	raw_client_free(admin);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
