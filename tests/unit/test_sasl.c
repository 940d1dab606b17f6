/* SASL mechanisms: the RFC 5802 (SCRAM-SHA-1) and RFC 7677
 * (SCRAM-SHA-256) exchanges byte for byte, wrong passwords, unknown users
 * failing only at the end, channel binding and its downgrade protection,
 * PLAIN with authzid rules, and malformed input. */
#include "sasl.h"
#include "scram.h"
#include "../tap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static struct pl_scram_credentials user_credentials;
static bool user_disabled;
static uint8_t channel_data[32];

static int get_credentials(void *userdata, const char *username, struct pl_scram_credentials *out)
{
	if (strcmp(username, "user") != 0)
		return -ENOENT;
	*out = user_credentials;
	return user_disabled ? -EACCES : 0;
}

static int channel_binding(void *userdata, const char *type, uint8_t *out, size_t *len)
{
	if (strcmp(type, "tls-exporter") != 0)
		return -ENOTSUP;
	memcpy(out, channel_data, 32);
	*len = 32;
	return 0;
}

static const struct pl_sasl_callbacks callbacks = { get_credentials, channel_binding };

static void make_user(const char *password, const char *salt_base64)
{
	uint8_t *salt;
	size_t salt_len;
	pl_base64_decode(salt_base64, strlen(salt_base64), &salt, &salt_len);
	memset(&user_credentials, 0, sizeof(user_credentials));
	memcpy(user_credentials.salt, salt, salt_len < 16 ? salt_len : 16);
	user_credentials.salt_len = (uint8_t)(salt_len < 16 ? salt_len : 16);
	user_credentials.iterations = 4096;
	pl_scram_derive(PL_SCRAM_SHA1, password, salt, salt_len, 4096,
			user_credentials.stored_key_sha1, user_credentials.server_key_sha1);
	pl_scram_derive(PL_SCRAM_SHA256, password, salt, salt_len, 4096,
			user_credentials.stored_key_sha256, user_credentials.server_key_sha256);
	free(salt);
}

static enum pl_sasl_result step(struct pl_sasl *s, const char *message, struct pl_buf *out,
				enum pl_sasl_condition *condition)
{
	const char *reason;
	pl_buf_reset(out);
	return pl_sasl_step(s, (const uint8_t *)message, strlen(message), out, condition, &reason);
}

/* Client side of SCRAM: the proof for a password over the exchange. */
static char *client_final(enum pl_scram_hash hash, const char *password,
			  const char *client_first_bare, const char *server_first,
			  const char *without_proof)
{
	uint8_t *salt;
	size_t salt_len;
	const char *s = strstr(server_first, ",s=") + 3;
	size_t s_len = strcspn(s, ",");
	pl_base64_decode(s, s_len, &salt, &salt_len);
	uint8_t salted[32], client_key[32], stored[32], signature[32], proof[32];
	size_t n = pl_scram_digest_len(hash);
	pl_scram_salted_password(hash, password, salt, salt_len, 4096, salted);
	pl_scram_hmac(hash, salted, n, "Client Key", 10, client_key);
	pl_scram_hash(hash, client_key, n, stored);
	char *auth = pl_asprintf("%s,%s,%s", client_first_bare, server_first, without_proof);
	pl_scram_hmac(hash, stored, n, auth, strlen(auth), signature);
	for (size_t i = 0; i < n; i++)
		proof[i] = client_key[i] ^ signature[i];
	char *encoded = pl_base64_encode(proof, n);
	char *final = pl_asprintf("%s,p=%s", without_proof, encoded);
	free(encoded);
	free(auth);
	free(salt);
	return final;
}

static struct pl_sasl *start(const char *mechanism, bool plus_offered)
{
	struct pl_sasl_options options = { .domain = "localhost", .plus_offered = plus_offered,
					   .binding_type = "tls-exporter" };
	return pl_sasl_new(mechanism, &callbacks, NULL, &options);
}

/* Runs a SCRAM exchange; returns the final result and condition. */
static enum pl_sasl_result scram(const char *mechanism, bool plus_offered, const char *gs2,
				 const char *channel_b64, const char *password,
				 enum pl_sasl_condition *condition)
{
	struct pl_sasl *s = start(mechanism, plus_offered);
	struct pl_buf out = { 0 };
	char *first = pl_asprintf("%sn=user,r=abcdefghijkl", gs2);
	enum pl_sasl_result r = step(s, first, &out, condition);
	if (r == PL_SASL_CONTINUE) {
		char *server_first = pl_strdup(out.data);
		const char *nonce = server_first + 2;
		char *without = pl_asprintf("c=%s,r=%.*s", channel_b64, (int)strcspn(nonce, ","), nonce);
		char *final = client_final(strstr(mechanism, "256") ? PL_SCRAM_SHA256 : PL_SCRAM_SHA1,
					   password, first + strlen(gs2), server_first, without);
		r = step(s, final, &out, condition);
		free(final);
		free(without);
		free(server_first);
	}
	free(first);
	pl_buf_free(&out);
	pl_sasl_free(s);
	return r;
}

int main(void)
{
	struct pl_buf out = { 0 };
	enum pl_sasl_condition condition;

	/* RFC 5802 section 5. */
	make_user("pencil", "QSXCR+Q6sek8bf92");
	struct pl_sasl *s = start("SCRAM-SHA-1", false);
	pl_sasl_set_server_nonce(s, "3rfcNHYJY1ZVvWVs7j");
	is_int(step(s, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", &out, &condition), PL_SASL_CONTINUE,
	       "RFC 5802: client-first accepted");
	is_str(out.data, "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
	       "RFC 5802: server-first as in the RFC");
	is_int(step(s, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
		    &out, &condition),
	       PL_SASL_SUCCESS, "RFC 5802: the RFC's proof is accepted");
	is_str(out.data, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=", "RFC 5802: server signature as in the RFC");
	is_str(pl_sasl_username(s), "user", "the authenticated username");
	pl_sasl_free(s);

	/* RFC 7677 section 3. */
	make_user("pencil", "W22ZaJ0SNY7soEsUEjb6gQ==");
	s = start("SCRAM-SHA-256", false);
	pl_sasl_set_server_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	is_int(step(s, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &out, &condition), PL_SASL_CONTINUE,
	       "RFC 7677: client-first accepted");
	is_str(out.data, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	       "RFC 7677: server-first as in the RFC");
	is_int(step(s, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
		       "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		    &out, &condition),
	       PL_SASL_SUCCESS, "RFC 7677: the RFC's proof is accepted");
	is_str(out.data, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
	       "RFC 7677: server signature as in the RFC");
	pl_sasl_free(s);

	make_user("secret", "AAECAwQFBgcICQoLDA0ODw==");
	is_int(scram("SCRAM-SHA-256", false, "n,,", "biws", "secret", &condition), PL_SASL_SUCCESS,
	       "SCRAM-SHA-256 with the right password");
	is_int(scram("SCRAM-SHA-1", false, "n,,", "biws", "secret", &condition), PL_SASL_SUCCESS,
	       "SCRAM-SHA-1 with the right password");
	is_int(scram("SCRAM-SHA-256", false, "n,,", "biws", "wrong", &condition), PL_SASL_FAILURE,
	       "a wrong password fails");
	is_str(pl_sasl_condition_name(condition), "not-authorized", "with not-authorized");

	s = start("SCRAM-SHA-256", false);
	is_int(step(s, "n,,n=nobody,r=abc", &out, &condition), PL_SASL_CONTINUE,
	       "an unknown user still gets a normal server-first");
	ok(strstr(out.data, ",s=") && strstr(out.data, ",i=4096"), "with a salt and iterations");
	pl_sasl_free(s);

	/* Channel binding. */
	memset(channel_data, 7, sizeof(channel_data));
	uint8_t cbind[64];
	memcpy(cbind, "p=tls-exporter,,", 16);
	memcpy(cbind + 16, channel_data, 32);
	char *c = pl_base64_encode(cbind, 48);
	is_int(scram("SCRAM-SHA-256-PLUS", true, "p=tls-exporter,,", c, "secret", &condition),
	       PL_SASL_SUCCESS, "-PLUS with the connection's binding data succeeds");
	free(c);
	cbind[20] ^= 1;
	c = pl_base64_encode(cbind, 48);
	is_int(scram("SCRAM-SHA-256-PLUS", true, "p=tls-exporter,,", c, "secret", &condition),
	       PL_SASL_FAILURE, "-PLUS with other binding data fails");
	free(c);
	is_int(scram("SCRAM-SHA-256", true, "y,,", "eSws", "secret", &condition), PL_SASL_FAILURE,
	       "'y' when -PLUS was offered is a downgrade");
	is_str(pl_sasl_condition_name(condition), "not-authorized", "refused as not-authorized");
	is_int(scram("SCRAM-SHA-256", false, "y,,", "eSws", "secret", &condition), PL_SASL_SUCCESS,
	       "'y' when -PLUS was not offered is fine");
	is_int(scram("SCRAM-SHA-256-PLUS", true, "p=tls-unique,,", "x", "secret", &condition),
	       PL_SASL_FAILURE, "an unsupported binding type fails");
	is_int(scram("SCRAM-SHA-256", false, "p=tls-exporter,,", "x", "secret", &condition),
	       PL_SASL_FAILURE, "p= on a non-PLUS mechanism fails");

	/* Authzid. */
	is_int(scram("SCRAM-SHA-256", false, "n,a=user@localhost,", "bixhPXVzZXJAbG9jYWxob3N0LA==",
		     "secret", &condition),
	       PL_SASL_SUCCESS, "SCRAM with the user's own authzid succeeds");
	is_int(scram("SCRAM-SHA-256", false, "n,a=admin@localhost,", "x", "secret", &condition),
	       PL_SASL_FAILURE, "SCRAM with another user's authzid fails");
	is_str(pl_sasl_condition_name(condition), "invalid-authzid", "with invalid-authzid");

	/* Malformed SCRAM. */
	s = start("SCRAM-SHA-256", false);
	is_int(step(s, "x,,n=user,r=abc", &out, &condition), PL_SASL_FAILURE, "a bad GS2 flag fails");
	is_str(pl_sasl_condition_name(condition), "malformed-request", "as malformed-request");
	pl_sasl_free(s);
	s = start("SCRAM-SHA-256", false);
	is_int(step(s, "n,,n=us=ZZer,r=abc", &out, &condition), PL_SASL_FAILURE, "a bad saslname escape fails");
	pl_sasl_free(s);
	s = start("SCRAM-SHA-256", false);
	is_int(step(s, "n,,m=ext,n=user,r=abc", &out, &condition), PL_SASL_FAILURE,
	       "the reserved m= extension fails");
	pl_sasl_free(s);
	s = start("SCRAM-SHA-256", false);
	step(s, "n,,n=user,r=abc", &out, &condition);
	is_int(step(s, "c=biws,r=WRONGNONCE,p=AAAA", &out, &condition), PL_SASL_FAILURE,
	       "a nonce mismatch fails");
	pl_sasl_free(s);
	s = start("SCRAM-SHA-256", false);
	step(s, "n,,n=user,r=abc", &out, &condition);
	is_int(step(s, "c=biws,r=abc,p=!!!", &out, &condition), PL_SASL_FAILURE, "bad base64 fails");
	is_str(pl_sasl_condition_name(condition), "incorrect-encoding", "as incorrect-encoding");
	pl_sasl_free(s);
	s = start("SCRAM-SHA-256", false);
	char big[5000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	is_int(step(s, big, &out, &condition), PL_SASL_FAILURE, "an oversized message fails");
	pl_sasl_free(s);
	s = start("SCRAM-SHA-256", false);
	is_int(step(s, "", &out, &condition), PL_SASL_CONTINUE,
	       "no initial response: an empty challenge");
	pl_sasl_free(s);
	ok(start("DIGEST-MD5", false) == NULL, "an unknown mechanism is refused");

	/* PLAIN. */
	const char plain_ok[] = "\0user\0secret";
	const char plain_self[] = "user@localhost\0user\0secret";
	const char plain_other[] = "admin@localhost\0user\0secret";
	const char plain_wrong[] = "\0user\0nope";
	const char plain_malformed[] = "user secret";
	const char *reason;
	s = start("PLAIN", false);
	is_int(pl_sasl_step(s, (const uint8_t *)plain_ok, sizeof(plain_ok) - 1, &out, &condition, &reason),
	       PL_SASL_SUCCESS, "PLAIN with the right password");
	pl_sasl_free(s);
	s = start("PLAIN", false);
	is_int(pl_sasl_step(s, (const uint8_t *)plain_self, sizeof(plain_self) - 1, &out, &condition, &reason),
	       PL_SASL_SUCCESS, "PLAIN with the user's own authzid");
	pl_sasl_free(s);
	s = start("PLAIN", false);
	is_int(pl_sasl_step(s, (const uint8_t *)plain_other, sizeof(plain_other) - 1, &out, &condition, &reason),
	       PL_SASL_FAILURE, "PLAIN with another user's authzid fails (unlike ejabberd)");
	is_str(pl_sasl_condition_name(condition), "invalid-authzid", "with invalid-authzid");
	pl_sasl_free(s);
	s = start("PLAIN", false);
	is_int(pl_sasl_step(s, (const uint8_t *)plain_wrong, sizeof(plain_wrong) - 1, &out, &condition, &reason),
	       PL_SASL_FAILURE, "PLAIN with a wrong password fails");
	is_str(pl_sasl_condition_name(condition), "not-authorized", "with not-authorized");
	pl_sasl_free(s);
	s = start("PLAIN", false);
	is_int(pl_sasl_step(s, (const uint8_t *)plain_malformed, sizeof(plain_malformed) - 1, &out, &condition, &reason),
	       PL_SASL_FAILURE, "PLAIN without NUL separators fails");
	is_str(pl_sasl_condition_name(condition), "malformed-request", "with malformed-request");
	pl_sasl_free(s);
	user_disabled = true;
	s = start("PLAIN", false);
	is_int(pl_sasl_step(s, (const uint8_t *)plain_ok, sizeof(plain_ok) - 1, &out, &condition, &reason),
	       PL_SASL_FAILURE, "a disabled account cannot log in");
	is_str(pl_sasl_condition_name(condition), "account-disabled", "with account-disabled");
	pl_sasl_free(s);
	pl_buf_free(&out);
	return done_testing();
}
