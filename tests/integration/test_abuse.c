/* Anti-abuse and operator contact with a real parleyd: XEP-0157 contact
 * addresses appear in the server's disco#info (and a value that is no URI
 * stops start-up with a message); a XEP-0377 spam report inside a block
 * is logged for the operator, counted in `parleyctl status`, and the
 * block itself still happens. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT 5000

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, NULL, NULL);
	char *bad = ph_config_with_attributes(config, "module name=\"disco\"",
					      "abuse-address=\"abuse.example.com\"");
	ph_server_write_config(&s, bad);
	free(bad);
	char *err = NULL;
	const char *check[] = { "--check-config", "-c", s.config_path, NULL };
	int rc = ph_run_parleyd(check, NULL, NULL, &err, 10000);
	ok(rc != 0, "an abuse address that is no URI is refused");
	has_str(err, "abuse-address \"abuse.example.com\" is not a URI", "with a message naming it");
	free(err);
	char *good = ph_config_with_attributes(config, "module name=\"disco\"",
					       "abuse-address=\"mailto:abuse@localhost\" "
					       "security-address=\"xmpp:security@localhost\"");
	ph_server_write_config(&s, good);
	free(good);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with contact addresses"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "spammer");
	struct raw_client *alice = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "a");
	if (!ok(alice != NULL, "alice logs in"))
		return done_testing();
	raw_client_send(alice, "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
	char *answer = raw_client_wait(alice, "id='d1'", WAIT);
	has_str(answer, "<value>http://jabber.org/network/serverinfo</value>", "disco#info carries a serverinfo form");
	has_str(answer, "<field var='abuse-addresses'><value>mailto:abuse@localhost</value></field>",
		"with the abuse address");
	has_str(answer, "<field var='security-addresses'><value>xmpp:security@localhost</value></field>",
		"and the security address");
	has_str(answer, "var='urn:xmpp:reporting:1'", "and spam reporting is advertised");
	free(answer);

	raw_client_send(alice, "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='spammer@localhost'>"
			       "<report xmlns='urn:xmpp:reporting:1' reason='urn:xmpp:reporting:spam'>"
			       "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='28482-98726-73623'/>"
			       "<text>buy now\nbuy now</text></report></item></block></iq>");
	answer = raw_client_wait(alice, "id='b1'", WAIT);
	has_str(answer, "type='result'", "a block with a spam report succeeds");
	free(answer);
	ok(ph_wait_log(&s, "abuse report from alice@localhost/a about spammer@localhost: "
			   "urn:xmpp:reporting:spam; stanza ids 28482-98726-73623; text: buy now buy now", WAIT),
	   "the report is logged on one line with its reason, ids and text");
	char *out = NULL;
	const char *status[] = { "status", NULL };
	ph_ctl(&s, status, NULL, &out, NULL);
	has_str(out, "abuse-reports", "parleyctl status counts it");
	ok(out && strstr(out, "abuse-reports") && strstr(strstr(out, "abuse-reports"), "1"),
	   "as one report");
	free(out);
	raw_client_send(alice, "<iq type='get' id='l1'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
	answer = raw_client_wait(alice, "id='l1'", WAIT);
	has_str(answer, "jid='spammer@localhost'", "and the spammer is blocked");
	free(answer);
	raw_client_free(alice);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
