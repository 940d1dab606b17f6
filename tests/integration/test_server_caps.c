/* XEP-0115 for the server itself: after authentication the stream
 * features carry the server's caps (so clients skip a disco#info round
 * trip), disco#info on the caps node answers, and the hash announced is
 * the hash of that answer (checked with the XEP's algorithm). */
#include "caps.h"
#include "harness.h"
#include "raw_client.h"
#include "xml/stream.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	ph_add_user(&s, "alice");
	struct raw_client *c = raw_client_connect(s.c2s_tls_port, true);
	char *features = c ? raw_client_open(c, "localhost") : NULL;
	ok(features && !strstr(features, "http://jabber.org/protocol/caps"),
	   "no caps before authentication");
	free(features);
	char *success = raw_client_auth_plain(c, NULL, "alice", "alice-secret");
	free(success);
	features = raw_client_open(c, "localhost");
	has_str(features, "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://parley.im' ver='",
		"the stream features after authentication carry the server's caps");
	char ver[64] = "";
	const char *p = features ? strstr(features, " ver='") : NULL;
	if (p)
		sscanf(p + 6, "%63[^']", ver);
	free(features);
	raw_client_send(c, "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
	free(raw_client_wait(c, "id='b'", 5000));
	raw_client_send(c, "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' "
			   "node='https://parley.im#%s'/></iq>", ver);
	char *answer = raw_client_wait(c, "id='d'", 5000);
	has_str(answer, "type='result'", "disco#info on the caps node answers");
	const char *q = answer ? strstr(answer, "<query") : NULL;
	const char *end = answer ? strstr(answer, "</query>") : NULL;
	char *hash = NULL;
	if (q && end) {
		struct pl_xnode *query = pl_xml_parse_element(q, (size_t)(end - q) + 8, "jabber:client");
		hash = query ? pl_caps_hash(query) : NULL;
		pl_xnode_unref(&query);
	}
	ok(hash && strcmp(hash, ver) == 0, "and the announced ver is that answer's hash (%s)", ver);
	free(hash);
	free(answer);
	raw_client_send(c, "<iq type='get' id='e' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' "
			   "node='https://parley.im#wrong'/></iq>");
	answer = raw_client_wait(c, "id='e'", 5000);
	has_str(answer, "item-not-found", "another node is item-not-found");
	free(answer);
	raw_client_free(c);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
