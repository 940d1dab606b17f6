/* XEP-0215 external services with a real parleyd: the configured STUN
 * and TURN servers are listed to a logged-in user (all, or one type),
 * TURN ones with TURN REST API credentials that verify with the shared
 * secret and expire as configured; credentials for one service; an
 * unknown one is item-not-found; bad URIs stop start-up. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT 5000

static char *config_with(struct ph_server *s, const char *module)
{
	char *config = ph_standard_config(s, NULL, NULL);
	const char *anchor = "    <module name=\"version\"/>\n";
	char *at = strstr(config, anchor);
	if (!at)
		return config;
	size_t head = (size_t)(at - config);
	char *out = malloc(strlen(config) + strlen(module) + 1);
	memcpy(out, config, head);
	strcpy(out + head, module);
	strcat(out, at);
	free(config);
	return out;
}

static char *attribute(const char *xml, const char *name, char *out, size_t size)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), " %s='", name);
	const char *p = xml ? strstr(xml, pattern) : NULL;
	if (!p)
		return NULL;
	p += strlen(pattern);
	size_t n = strcspn(p, "'");
	if (n >= size)
		n = size - 1;
	memcpy(out, p, n);
	out[n] = 0;
	return out;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *bad = config_with(&s, "    <module name=\"extdisco\"><service>turn.example.com</service></module>\n");
	ph_server_write_config(&s, bad);
	free(bad);
	char *err = NULL;
	const char *check[] = { "--check-config", s.config_path, NULL };
	ok(ph_run_parleyd(check, NULL, NULL, &err, 10000) != 0, "a service that is no URI is refused");
	has_str(err, "is not a STUN or TURN URI", "with a message saying what is expected");
	free(err);
	char *config = config_with(&s,
				   "    <module name=\"extdisco\" secret=\"turn-secret\" ttl=\"1h\">"
				   "<service>stun:stun.example.com</service>"
				   "<service>turn:turn.example.com:3478?transport=udp</service>"
				   "<service>turns:turn.example.com</service></module>\n");
	ph_server_write_config(&s, config);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with STUN and TURN services"))
		return done_testing();
	ph_add_user(&s, "alice");
	struct raw_client *alice = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "a");
	if (!ok(alice != NULL, "alice logs in"))
		return done_testing();
	raw_client_send(alice, "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
	char *answer = raw_client_wait(alice, "id='d'", WAIT);
	has_str(answer, "var='urn:xmpp:extdisco:2'", "the server advertises external services");
	free(answer);
	raw_client_send(alice, "<iq type='get' id='s1' to='localhost'><services xmlns='urn:xmpp:extdisco:2'/></iq>");
	answer = raw_client_wait(alice, "id='s1'", WAIT);
	has_str(answer, "type='stun' host='stun.example.com' port='3478' transport='udp'", "the STUN server is listed");
	has_str(answer, "type='turn' host='turn.example.com' port='3478' transport='udp'", "the TURN server too");
	has_str(answer, "type='turns' host='turn.example.com' port='5349' transport='tcp'", "and TURN over TLS");
	char username[128] = "", password[128] = "", expires[64] = "";
	const char *turn = answer ? strstr(answer, "type='turn'") : NULL;
	attribute(turn, "username", username, sizeof(username));
	attribute(turn, "password", password, sizeof(password));
	attribute(turn, "expires", expires, sizeof(expires));
	long long expiry = atoll(username);
	long long now = (long long)time(NULL);
	ok(expiry > now + 3500 && expiry <= now + 3700, "TURN credentials expire in the configured hour");
	has_str(username, ":alice@localhost", "for alice's account");
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	HMAC(EVP_sha1(), "turn-secret", 11, (const unsigned char *)username, strlen(username), digest, &len);
	unsigned char expected[64];
	EVP_EncodeBlock(expected, digest, (int)len);
	ok(strcmp(password, (char *)expected) == 0, "the password is HMAC-SHA1(secret, username), as coturn checks");
	ok(*expires != 0, "with an expires stamp (%s)", expires);
	free(answer);
	raw_client_send(alice, "<iq type='get' id='s2' to='localhost'><services xmlns='urn:xmpp:extdisco:2' type='stun'/></iq>");
	answer = raw_client_wait(alice, "id='s2'", WAIT);
	ok(answer && strstr(answer, "type='stun'") && !strstr(answer, "type='turn'"), "asking for STUN lists STUN only");
	free(answer);
	raw_client_send(alice, "<iq type='get' id='c1' to='localhost'><credentials xmlns='urn:xmpp:extdisco:2'>"
			       "<service host='turn.example.com' type='turn'/></credentials></iq>");
	answer = raw_client_wait(alice, "id='c1'", WAIT);
	has_str(answer, "<credentials xmlns='urn:xmpp:extdisco:2'>", "credentials for one service");
	has_str(answer, "password='", "with a password");
	free(answer);
	raw_client_send(alice, "<iq type='get' id='c2' to='localhost'><credentials xmlns='urn:xmpp:extdisco:2'>"
			       "<service host='nowhere.example.com' type='turn'/></credentials></iq>");
	answer = raw_client_wait(alice, "id='c2'", WAIT);
	has_str(answer, "item-not-found", "an unknown service is item-not-found");
	free(answer);
	raw_client_free(alice);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
