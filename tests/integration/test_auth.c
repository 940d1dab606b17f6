/* SASL as a client library cannot hide it: every mechanism Parley offers
 * logs in with the right password and fails with the wrong one, both
 * channel-binding types work for -PLUS, corrupted binding data and a
 * downgrade ("y" while -PLUS was offered) fail, PLAIN refuses another
 * user's authzid (ejabberd lets it through), unknown users go through
 * the whole SCRAM exchange before failing (no enumeration), and a client
 * that fails is slowed down while others are not. The client side is
 * tests/integration/raw_client.c, written from the RFCs with OpenSSL. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const mechanisms[] = { "SCRAM-SHA-1", "SCRAM-SHA-256" };

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A new TLS stream up to the features; the caller authenticates. */
static struct raw_client *fresh_stream(const struct ph_server *s, char **features)
{
	struct raw_client *c = raw_client_connect(s->c2s_tls_port, true);
	char *offered = c ? raw_client_open(c, "localhost") : NULL;
	if (features)
		*features = offered;
	else
		free(offered);
	return c;
}

static void check_scram(const struct ph_server *s, const char *mechanism, const char *password,
			enum raw_scram_binding binding, const char *binding_type,
			const char *expected, const char *what)
{
	struct raw_client *c = fresh_stream(s, NULL);
	char *answer = c ? raw_client_auth_scram(c, mechanism, "alice", password, binding,
						  binding_type)
			 : NULL;
	has_str(answer, expected, "%s: %s", mechanism, what);
	free(answer);
	raw_client_free(c);
}

static void check_plain(const struct ph_server *s, const char *authzid, const char *user,
			const char *password, const char *expected, const char *what)
{
	struct raw_client *c = fresh_stream(s, NULL);
	char *answer = c ? raw_client_auth_plain(c, authzid, user, password) : NULL;
	has_str(answer, expected, "PLAIN: %s", what);
	free(answer);
	raw_client_free(c);
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	/* No back-off here: the failures below come one after another from
	 * the same address. The back-off gets its own server at the end. */
	char *config = ph_standard_config(&s, NULL, NULL);
	char *patched = ph_config_with_attributes(config, "c2s",
						  "auth-backoff-base=\"0ms\" auth-backoff-max=\"0ms\"");
	ph_server_write_config(&s, patched);
	free(patched);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	const char *add_alice[] = { "adduser", "alice@localhost", NULL };
	const char *add_bob[] = { "adduser", "bob@localhost", NULL };
	ph_ctl(&s, add_alice, "alice-secret\n", NULL, NULL);
	ph_ctl(&s, add_bob, "bob-secret\n", NULL, NULL);

	char *features = NULL;
	struct raw_client *c = fresh_stream(&s, &features);
	has_str(features, "<mechanism>SCRAM-SHA-1</mechanism>", "SCRAM-SHA-1 is offered");
	has_str(features, "<mechanism>SCRAM-SHA-256</mechanism>", "SCRAM-SHA-256 is offered");
	has_str(features, "<mechanism>SCRAM-SHA-1-PLUS</mechanism>", "SCRAM-SHA-1-PLUS is offered");
	has_str(features, "<mechanism>SCRAM-SHA-256-PLUS</mechanism>",
		"SCRAM-SHA-256-PLUS is offered");
	has_str(features, "<mechanism>PLAIN</mechanism>", "PLAIN is offered inside TLS");
	free(features);
	raw_client_free(c);

	for (size_t i = 0; i < sizeof(mechanisms) / sizeof(*mechanisms); i++) {
		const char *m = mechanisms[i];
		char plus[32];
		snprintf(plus, sizeof(plus), "%s-PLUS", m);
		check_scram(&s, m, "alice-secret", RAW_SCRAM_NO_BINDING, NULL, "<success",
			    "the right password logs in and the server proves it knows it");
		check_scram(&s, m, "wrong", RAW_SCRAM_NO_BINDING, NULL, "<not-authorized",
			    "a wrong password is not-authorized");
		check_scram(&s, plus, "alice-secret", RAW_SCRAM_BIND, "tls-exporter", "<success",
			    "-PLUS with tls-exporter (TLS 1.3) logs in");
		check_scram(&s, plus, "alice-secret", RAW_SCRAM_BIND, "tls-server-end-point",
			    "<success", "-PLUS with tls-server-end-point logs in");
		check_scram(&s, plus, "wrong", RAW_SCRAM_BIND, "tls-exporter", "<not-authorized",
			    "-PLUS with a wrong password is not-authorized");
		check_scram(&s, plus, "alice-secret", RAW_SCRAM_BIND_WRONG, "tls-exporter",
			    "<failure", "-PLUS with binding data of another connection fails");
		check_scram(&s, plus, "alice-secret", RAW_SCRAM_BIND_WRONG, "tls-server-end-point",
			    "<failure", "-PLUS with another certificate's hash fails");
		check_scram(&s, plus, "alice-secret", RAW_SCRAM_BIND, "tls-unique", "<failure",
			    "-PLUS with tls-unique (not offered, unsafe in TLS 1.3) fails");
		check_scram(&s, m, "alice-secret", RAW_SCRAM_CLAIM_SUPPORT, NULL, "<failure",
			    "'y' while -PLUS was offered is a downgrade and fails");
		check_scram(&s, m, "alice-secret", RAW_SCRAM_BIND, "tls-exporter", "<failure",
			    "binding requested on the non-PLUS mechanism fails");
		check_scram(&s, plus, "alice-secret", RAW_SCRAM_NO_BINDING, NULL, "<failure",
			    "-PLUS without binding fails");
	}

	/* Enumeration: an unknown user gets a challenge like a real one and
	 * fails only at the end, with the same condition as a wrong password. */
	c = fresh_stream(&s, NULL);
	char *answer = raw_client_auth_scram(c, "SCRAM-SHA-256", "nobody", "whatever",
					     RAW_SCRAM_NO_BINDING, NULL);
	has_str(answer, "<not-authorized", "an unknown user fails with not-authorized");
	ok(answer && !strstr(answer, "bad server-first"),
	   "after a normal-looking challenge (no early failure)");
	free(answer);
	raw_client_free(c);

	check_plain(&s, NULL, "alice", "alice-secret", "<success", "the right password logs in");
	check_plain(&s, NULL, "alice", "wrong", "<not-authorized", "a wrong password fails");
	check_plain(&s, NULL, "nobody", "wrong", "<not-authorized",
		    "an unknown user fails the same way");
	check_plain(&s, "alice@localhost", "alice", "alice-secret", "<success",
		    "the user's own bare JID as authzid is accepted");
	check_plain(&s, "bob@localhost", "alice", "alice-secret", "<invalid-authzid",
		    "another user's JID as authzid is refused (no logging in as bob)");
	check_plain(&s, "alice@localhost/phone", "alice", "alice-secret", "<invalid-authzid",
		    "an authzid with a resource is refused");

	/* A login is real: after SCRAM, bind and talk. */
	c = fresh_stream(&s, NULL);
	answer = raw_client_auth_scram(c, "SCRAM-SHA-256-PLUS", "alice", "alice-secret",
				       RAW_SCRAM_BIND, "tls-exporter");
	free(answer);
	features = raw_client_open(c, "localhost");
	has_str(features, "<bind", "after SCRAM the restarted stream offers bind");
	free(features);
	raw_client_send(c, "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
			   "<resource>scram</resource></bind></iq>");
	answer = raw_client_wait(c, "<jid>", 5000);
	has_str(answer, "alice@localhost/scram", "and binds alice's resource");
	free(answer);
	ok(raw_client_sync(c), "the session answers pings");
	raw_client_free(c);

	/* SASL is over once it succeeded: a second <auth/> is refused. */
	c = fresh_stream(&s, NULL);
	free(raw_client_auth_plain(c, NULL, "alice", "alice-secret"));
	raw_client_send(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>");
	ok(raw_client_seen(c, "<stream:error", 5000) || raw_client_seen(c, "<failure", 100),
	   "an <auth/> after success (before the restart) is not accepted");
	raw_client_free(c);

	/* XEP-0077 3.2: a user cancels the registration from one session;
	 * the answer comes once it is durable, then every session ends. */
	const char *add_erin[] = { "adduser", "erin@localhost", NULL };
	ph_ctl(&s, add_erin, "erin-secret\n", NULL, NULL);
	struct raw_client *erin_a = raw_client_new_session(s.c2s_tls_port, "erin", "erin-secret", "a");
	struct raw_client *erin_b = raw_client_new_session(s.c2s_tls_port, "erin", "erin-secret", "b");
	if (ok(erin_a && erin_b, "erin logs in twice")) {
		raw_client_send(erin_a, "<iq type='set' id='unreg'><query xmlns='jabber:iq:register'>"
					"<remove/></query></iq>");
		answer = raw_client_wait(erin_a, "unreg", 5000);
		has_str(answer, "type='result'", "the removal is answered with a result");
		free(answer);
		answer = raw_client_wait(erin_a, "<stream:error", 5000);
		has_str(answer, "<not-authorized", "then that stream ends with not-authorized");
		free(answer);
		answer = raw_client_wait(erin_b, "<stream:error", 5000);
		has_str(answer, "<not-authorized", "and so does erin's other session");
		free(answer);
	}
	raw_client_free(erin_a);
	raw_client_free(erin_b);
	check_plain(&s, NULL, "erin", "erin-secret", "<not-authorized",
		    "the removed account cannot log in");
	const char *list_users[] = { "users", NULL };
	char *listed = NULL;
	ph_ctl(&s, list_users, NULL, &listed, NULL);
	ok(listed && !strstr(listed, "erin@") && strstr(listed, "alice@"),
	   "and is gone from the user list");
	free(listed);

	/* parleyctl deluser ends the sessions of the deleted account too. */
	const char *add_frank[] = { "adduser", "frank@localhost", NULL };
	ph_ctl(&s, add_frank, "frank-secret\n", NULL, NULL);
	struct raw_client *frank =
		raw_client_new_session(s.c2s_tls_port, "frank", "frank-secret", "f");
	const char *delete_frank[] = { "deluser", "frank@localhost", NULL };
	ph_ctl(&s, delete_frank, NULL, NULL, NULL);
	answer = frank ? raw_client_wait(frank, "<stream:error", 5000) : NULL;
	has_str(answer, "<not-authorized", "parleyctl deluser ends the user's session");
	free(answer);
	raw_client_free(frank);

	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	free(config);

	/* Back-off: each failure from an address doubles the wait for the
	 * next answer to that address; other clients are not delayed. */
	struct ph_server b;
	ph_server_init(&b, NULL);
	config = ph_standard_config(&b, NULL, NULL);
	patched = ph_config_with_attributes(config, "c2s",
					    "auth-backoff-base=\"400ms\" auth-backoff-max=\"5s\"");
	ph_server_write_config(&b, patched);
	free(patched);
	free(config);
	if (ok(ph_server_start(&b, NULL) == 0, "a server with a 400 ms back-off starts")) {
		ph_ctl(&b, add_alice, "alice-secret\n", NULL, NULL);
		long long durations[3];
		for (int attempt = 0; attempt < 3; attempt++) {
			c = fresh_stream(&b, NULL);
			long long start = now_ms();
			answer = raw_client_auth_plain(c, NULL, "alice", "guess");
			durations[attempt] = now_ms() - start;
			has_str(answer, "<not-authorized", "wrong password %d fails", attempt + 1);
			free(answer);
			raw_client_free(c);
		}
		ok(durations[2] >= 700,
		   "the third failure in a row is answered after a longer delay (%lld ms)",
		   durations[2]);
		c = fresh_stream(&b, NULL);
		struct raw_client *other = raw_client_new_session(b.c2s_tls_port, "alice",
								  "alice-secret", "other");
		ok(other != NULL, "meanwhile a right password still logs in");
		raw_client_free(other);
		raw_client_free(c);
		char *log = ph_server_log(&b);
		has_str(log, "authentication failed", "each failure is logged");
		free(log);
		is_int(ph_server_stop(&b), 0, "the server stops cleanly");
	}
	ph_server_cleanup(&b);
	return done_testing();
}
