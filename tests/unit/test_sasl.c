/* SASL mechanisms: the RFC 5802 (SCRAM-SHA-1) and RFC 7677
 * (SCRAM-SHA-256) exchanges byte for byte, wrong passwords, unknown users
 * failing only at the end with salts that do not give them away, channel
 * binding and its downgrade protection, authzid rules for SCRAM and PLAIN,
 * the state machine's edges (no initial response, steps after the end)
 * and malformed input. A small SCRAM client computes proofs for the
 * exchanges the RFCs do not cover. */
#include "sasl.h"
#include "scram.h"
#include "../tap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- the fake account store and connection ---------------------------------------- */

static struct pl_scram_credentials user_credentials;
static bool user_disabled;
static int lookup_error;           /* non-zero: every lookup fails with it */
static char last_lookup[64];       /* the username the last lookup asked for */
static uint8_t exporter_data[32];
static uint8_t end_point_data[32];

static int get_credentials(void *userdata, const char *username, struct pl_scram_credentials *out)
{
	snprintf(last_lookup, sizeof(last_lookup), "%s", username);
	if (lookup_error)
		return lookup_error;
	if (strcmp(username, "user") != 0)
		return -ENOENT;
	*out = user_credentials;
	return user_disabled ? -EACCES : 0;
}

static int channel_binding(void *userdata, const char *type, uint8_t *out, size_t *len)
{
	const uint8_t *data;
	if (strcmp(type, "tls-exporter") == 0)
		data = exporter_data;
	else if (strcmp(type, "tls-server-end-point") == 0)
		data = end_point_data;
	else
		return -ENOTSUP;
	if (*len < 32)
		return -ENOTSUP;
	memcpy(out, data, 32);
	*len = 32;
	return 0;
}

static const struct pl_sasl_callbacks callbacks = { get_credentials, channel_binding };

/* The account "user" with `password`, both key sets derived from the salt. */
static void make_user(const char *password, const char *salt_base64)
{
	uint8_t *salt;
	size_t salt_len;
	if (pl_base64_decode(salt_base64, strlen(salt_base64), &salt, &salt_len) != 0 ||
	    salt_len > PL_ACCOUNT_SALT_LEN)
		pl_fatal("bad test salt %s", salt_base64);
	memset(&user_credentials, 0, sizeof(user_credentials));
	memcpy(user_credentials.salt, salt, salt_len);
	user_credentials.salt_len = (uint8_t)salt_len;
	user_credentials.iterations = 4096;
	pl_scram_derive(PL_SCRAM_SHA1, password, salt, salt_len, 4096,
			user_credentials.stored_key_sha1, user_credentials.server_key_sha1);
	pl_scram_derive(PL_SCRAM_SHA256, password, salt, salt_len, 4096,
			user_credentials.stored_key_sha256, user_credentials.server_key_sha256);
	free(salt);
}

/* ---- driving the server ---------------------------------------------------------- */

static const char *last_reason;

static struct pl_sasl *start_with(const char *mechanism, bool plus_offered, const char *binding_type)
{
	struct pl_sasl_options options = { .domain = "localhost", .plus_offered = plus_offered,
					   .binding_type = binding_type };
	return pl_sasl_new(mechanism, &callbacks, NULL, &options);
}

static struct pl_sasl *start(const char *mechanism, bool plus_offered)
{
	return start_with(mechanism, plus_offered, "tls-exporter");
}

static enum pl_sasl_result step_bytes(struct pl_sasl *s, const void *data, size_t len,
				      struct pl_buf *out, enum pl_sasl_condition *condition)
{
	pl_buf_reset(out);
	last_reason = NULL;
	enum pl_sasl_result r = pl_sasl_step_data(s, data, len, true, out, condition, &last_reason);
	if (r == PL_SASL_FAILURE && !last_reason)
		last_reason = "(no reason given)";
	return r;
}

static enum pl_sasl_result step(struct pl_sasl *s, const char *message, struct pl_buf *out,
				enum pl_sasl_condition *condition)
{
	return step_bytes(s, message, strlen(message), out, condition);
}

/* ---- the client side of SCRAM ------------------------------------------------------ */

/* The client-final message for `password`: reads s= and i= from the
 * server-first message and appends p= to `without_proof`. */
static char *client_final(enum pl_scram_hash hash, const char *password,
			  const char *client_first_bare, const char *server_first,
			  const char *without_proof)
{
	const char *salt_text = strstr(server_first, ",s=") + 3;
	uint32_t iterations = (uint32_t)strtoul(strstr(server_first, ",i=") + 3, NULL, 10);
	uint8_t *salt;
	size_t salt_len;
	pl_base64_decode(salt_text, strcspn(salt_text, ","), &salt, &salt_len);
	size_t n = pl_scram_digest_len(hash);
	uint8_t salted[32], client_key[32], stored[32], signature[32], proof[32];
	pl_scram_salted_password(hash, password, salt, salt_len, iterations, salted);
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

/* c= for a GS2 header and, for -PLUS, the binding data. */
static char *channel_field(const char *gs2, const uint8_t *binding, size_t binding_len)
{
	struct pl_buf raw = { 0 };
	pl_buf_puts(&raw, gs2);
	if (binding)
		pl_buf_append(&raw, binding, binding_len);
	char *encoded = pl_base64_encode(raw.data, raw.len);
	pl_buf_free(&raw);
	return encoded;
}

static enum pl_scram_hash mechanism_hash(const char *mechanism)
{
	return strstr(mechanism, "SHA-256") ? PL_SCRAM_SHA256 : PL_SCRAM_SHA1;
}

/* Runs a whole SCRAM exchange on a fresh session: client-first with
 * `gs2` and `username` (already a saslname), then client-final with c=
 * set to `channel_b64` (NULL: the base64 of the GS2 header alone) and the
 * proof for `password`. Returns the last result; *condition after a
 * failure; *server_first (if not NULL) gets the server-first message. */
static enum pl_sasl_result scram_full(struct pl_sasl *s, const char *mechanism, const char *gs2,
				      const char *channel_b64, const char *username,
				      const char *password, enum pl_sasl_condition *condition,
				      char **server_first_out)
{
	struct pl_buf out = { 0 };
	char *first = pl_asprintf("%sn=%s,r=abcdefghijkl", gs2, username);
	enum pl_sasl_result r = step(s, first, &out, condition);
	if (r == PL_SASL_CONTINUE) {
		char *server_first = pl_strdup(out.data);
		const char *nonce = server_first + 2;
		char *default_channel = channel_field(gs2, NULL, 0);
		char *without = pl_asprintf("c=%s,r=%.*s", channel_b64 ? channel_b64 : default_channel,
					    (int)strcspn(nonce, ","), nonce);
		char *final = client_final(mechanism_hash(mechanism), password, first + strlen(gs2),
					   server_first, without);
		r = step(s, final, &out, condition);
		if (r == PL_SASL_SUCCESS && strncmp(out.data, "v=", 2) != 0)
			r = PL_SASL_FAILURE;
		free(final);
		free(without);
		free(default_channel);
		if (server_first_out)
			*server_first_out = server_first;
		else
			free(server_first);
	}
	free(first);
	pl_buf_free(&out);
	return r;
}

static enum pl_sasl_result scram(const char *mechanism, bool plus_offered, const char *gs2,
				 const char *channel_b64, const char *password,
				 enum pl_sasl_condition *condition)
{
	struct pl_sasl *s = start(mechanism, plus_offered);
	enum pl_sasl_result r = scram_full(s, mechanism, gs2, channel_b64, "user", password,
					   condition, NULL);
	pl_sasl_free(s);
	return r;
}

/* The client-first answer for a message, and the condition when it fails. */
static enum pl_sasl_result first_only(const char *mechanism, const char *message,
				      enum pl_sasl_condition *condition)
{
	struct pl_sasl *s = start(mechanism, false);
	struct pl_buf out = { 0 };
	enum pl_sasl_result r = step(s, message, &out, condition);
	pl_buf_free(&out);
	pl_sasl_free(s);
	return r;
}

/* A client-final answer after a good client-first for "user". */
static enum pl_sasl_result final_only(const char *message, enum pl_sasl_condition *condition)
{
	struct pl_sasl *s = start("SCRAM-SHA-256", false);
	pl_sasl_set_server_nonce(s, "SERVER");
	struct pl_buf out = { 0 };
	enum pl_sasl_result r = step(s, "n,,n=user,r=abc", &out, condition);
	if (r == PL_SASL_CONTINUE)
		r = step(s, message, &out, condition);
	pl_buf_free(&out);
	pl_sasl_free(s);
	return r;
}

static enum pl_sasl_result plain(const char *message, size_t len, enum pl_sasl_condition *condition)
{
	struct pl_sasl *s = start("PLAIN", false);
	struct pl_buf out = { 0 };
	enum pl_sasl_result r = step_bytes(s, message, len, &out, condition);
	pl_buf_free(&out);
	pl_sasl_free(s);
	return r;
}
#define PLAIN(literal, condition) plain((literal), sizeof(literal) - 1, (condition))

static const char *name(enum pl_sasl_condition condition)
{
	return pl_sasl_condition_name(condition);
}

/* The s= value of a server-first message, as a new string. */
static char *salt_of(const char *server_first)
{
	const char *salt = strstr(server_first, ",s=");
	return salt ? pl_strndup(salt + 3, strcspn(salt + 3, ",")) : pl_strdup("");
}

/* ---- the tests ------------------------------------------------------------------ */

static void test_rfc_vectors(void)
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
	ok(pl_sasl_username(s) == NULL, "no username before the exchange succeeds");
	is_int(step(s, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
		    &out, &condition),
	       PL_SASL_SUCCESS, "RFC 5802: the RFC's proof is accepted");
	is_str(out.data, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=", "RFC 5802: server signature as in the RFC");
	is_str(pl_sasl_username(s), "user", "the authenticated username");
	is_int(step(s, "c=biws", &out, &condition), PL_SASL_FAILURE,
	       "a step after success fails");
	ok(pl_sasl_username(s) == NULL, "and the username is gone");
	pl_sasl_free(s);

	/* The same exchange with one bit of the proof flipped. */
	s = start("SCRAM-SHA-1", false);
	pl_sasl_set_server_nonce(s, "3rfcNHYJY1ZVvWVs7j");
	step(s, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", &out, &condition);
	is_int(step(s, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4To=",
		    &out, &condition),
	       PL_SASL_FAILURE, "RFC 5802: a proof off by one bit fails");
	is_str(name(condition), "not-authorized", "with not-authorized");
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
	pl_buf_free(&out);
}

static void test_passwords_and_users(void)
{
	struct pl_buf out = { 0 };
	enum pl_sasl_condition condition;
	make_user("secret", "AAECAwQFBgcICQoLDA0ODw==");

	is_int(scram("SCRAM-SHA-256", false, "n,,", NULL, "secret", &condition), PL_SASL_SUCCESS,
	       "SCRAM-SHA-256 with the right password");
	is_int(scram("SCRAM-SHA-1", false, "n,,", NULL, "secret", &condition), PL_SASL_SUCCESS,
	       "SCRAM-SHA-1 with the right password");
	is_int(scram("SCRAM-SHA-256", false, "n,,", NULL, "wrong", &condition), PL_SASL_FAILURE,
	       "SCRAM-SHA-256 with a wrong password fails");
	is_str(name(condition), "not-authorized", "with not-authorized");
	is_int(scram("SCRAM-SHA-1", false, "n,,", NULL, "wrong", &condition), PL_SASL_FAILURE,
	       "SCRAM-SHA-1 with a wrong password fails");

	/* Unknown users: a normal-looking server-first, the failure at the end. */
	struct pl_sasl *s = start("SCRAM-SHA-256", false);
	char *server_first = NULL;
	is_int(scram_full(s, "SCRAM-SHA-256", "n,,", NULL, "nobody", "secret", &condition, &server_first),
	       PL_SASL_FAILURE, "an unknown user fails at the final step");
	is_str(name(condition), "not-authorized", "with not-authorized, as a wrong password does");
	pl_sasl_free(s);
	char *salt = salt_of(server_first ? server_first : "");
	is_int(strlen(salt), 24, "its server-first carries a 16-byte salt like real accounts");
	has_str(server_first, ",i=4096", "and the iteration count of the last real account");
	free(server_first);

	s = start("SCRAM-SHA-256", false);
	step(s, "n,,n=nobody,r=xyz", &out, &condition);
	char *again = salt_of(out.data);
	is_str(again, salt, "the same unknown user gets the same salt every time");
	pl_sasl_free(s);
	s = start("SCRAM-SHA-256", false);
	step(s, "n,,n=NoBody,r=xyz", &out, &condition);
	char *folded = salt_of(out.data);
	is_str(folded, salt, "and so does its other spelling (one account would answer both)");
	pl_sasl_free(s);
	s = start("SCRAM-SHA-256", false);
	step(s, "n,,n=somebody,r=xyz", &out, &condition);
	char *other = salt_of(out.data);
	ok(strcmp(other, salt) != 0, "another unknown user gets another salt");
	pl_sasl_free(s);
	free(salt);
	free(again);
	free(folded);
	free(other);

	struct pl_sasl_options options = { .domain = "localhost", .iterations = 10000 };
	s = pl_sasl_new("SCRAM-SHA-1", &callbacks, NULL, &options);
	step(s, "n,,n=nobody,r=xyz", &out, &condition);
	has_str(out.data, ",i=10000", "unknown users show the configured iteration count");
	pl_sasl_free(s);

	/* saslname escapes reach the account lookup decoded. */
	s = start("SCRAM-SHA-256", false);
	is_int(step(s, "n,,n=us=2Cer=3D,r=xyz", &out, &condition), PL_SASL_CONTINUE,
	       "a username with =2C and =3D is accepted");
	is_str(last_lookup, "us,er=", "and looked up as 'us,er='");
	pl_sasl_free(s);

	/* Disabled accounts and store errors. */
	user_disabled = true;
	is_int(scram("SCRAM-SHA-256", false, "n,,", NULL, "secret", &condition), PL_SASL_FAILURE,
	       "a disabled account cannot log in with SCRAM");
	is_str(name(condition), "account-disabled", "with account-disabled");
	is_int(scram("SCRAM-SHA-256", false, "n,,", NULL, "wrong", &condition), PL_SASL_FAILURE,
	       "a disabled account with a wrong password");
	is_str(name(condition), "not-authorized", "is only not-authorized");
	user_disabled = false;
	lookup_error = -EIO;
	is_int(first_only("SCRAM-SHA-256", "n,,n=user,r=abc", &condition), PL_SASL_FAILURE,
	       "a failing account store fails the exchange");
	is_str(name(condition), "temporary-auth-failure", "with temporary-auth-failure");
	lookup_error = 0;
	pl_buf_free(&out);
}

static void test_channel_binding(void)
{
	enum pl_sasl_condition condition;
	make_user("secret", "AAECAwQFBgcICQoLDA0ODw==");
	memset(exporter_data, 7, sizeof(exporter_data));
	memset(end_point_data, 9, sizeof(end_point_data));

	char *c = channel_field("p=tls-exporter,,", exporter_data, sizeof(exporter_data));
	is_int(scram("SCRAM-SHA-256-PLUS", true, "p=tls-exporter,,", c, "secret", &condition),
	       PL_SASL_SUCCESS, "SCRAM-SHA-256-PLUS with the connection's tls-exporter data");
	is_int(scram("SCRAM-SHA-256-PLUS", true, "p=tls-exporter,,", c, "wrong", &condition),
	       PL_SASL_FAILURE, "SCRAM-SHA-256-PLUS with a wrong password fails");
	free(c);
	c = channel_field("p=tls-exporter,,", end_point_data, sizeof(end_point_data));
	is_int(scram("SCRAM-SHA-1-PLUS", true, "p=tls-exporter,,", c, "secret", &condition),
	       PL_SASL_FAILURE, "-PLUS with other binding data fails (a man in the middle)");
	is_str(name(condition), "not-authorized", "with not-authorized");
	free(c);
	c = channel_field("p=tls-server-end-point,,", end_point_data, sizeof(end_point_data));
	is_int(scram("SCRAM-SHA-1-PLUS", true, "p=tls-server-end-point,,", c, "secret", &condition),
	       PL_SASL_SUCCESS, "SCRAM-SHA-1-PLUS with tls-server-end-point also works");
	free(c);
	is_int(scram("SCRAM-SHA-256-PLUS", true, "p=tls-exporter,,", NULL, "secret", &condition),
	       PL_SASL_FAILURE, "-PLUS with c= lacking the binding data fails");

	is_int(scram("SCRAM-SHA-256", true, "y,,", NULL, "secret", &condition), PL_SASL_FAILURE,
	       "'y' when -PLUS was offered is a downgrade");
	is_str(name(condition), "not-authorized", "refused as not-authorized");
	is_int(scram("SCRAM-SHA-256", false, "y,,", NULL, "secret", &condition), PL_SASL_SUCCESS,
	       "'y' when -PLUS was not offered is fine");
	is_int(scram("SCRAM-SHA-256", false, "y,,", "biws", "secret", &condition), PL_SASL_FAILURE,
	       "but c= must then repeat 'y,,', not 'n,,'");
	is_int(scram("SCRAM-SHA-256-PLUS", true, "p=tls-unique,,", "x", "secret", &condition),
	       PL_SASL_FAILURE, "tls-unique, which Parley does not provide, fails");
	is_int(scram("SCRAM-SHA-256", true, "p=tls-exporter,,", "x", "secret", &condition),
	       PL_SASL_FAILURE, "p= on a non-PLUS mechanism fails");
	is_str(name(condition), "malformed-request", "with malformed-request");
	is_int(scram("SCRAM-SHA-256-PLUS", true, "n,,", NULL, "secret", &condition), PL_SASL_FAILURE,
	       "a -PLUS mechanism without channel binding fails");

	struct pl_sasl *s = start_with("SCRAM-SHA-256-PLUS", true, NULL);
	c = channel_field("p=tls-exporter,,", exporter_data, sizeof(exporter_data));
	is_int(scram_full(s, "SCRAM-SHA-256-PLUS", "p=tls-exporter,,", c, "user", "secret", &condition,
			  NULL),
	       PL_SASL_FAILURE, "a connection without binding (no TLS) refuses p=");
	free(c);
	pl_sasl_free(s);
}

static void test_authzid(void)
{
	enum pl_sasl_condition condition;
	make_user("secret", "AAECAwQFBgcICQoLDA0ODw==");
	is_int(scram("SCRAM-SHA-256", false, "n,a=user@localhost,", NULL, "secret", &condition),
	       PL_SASL_SUCCESS, "SCRAM with the user's own bare JID as authzid");
	is_int(scram("SCRAM-SHA-256", false, "n,a=User@LocalHost,", NULL, "secret", &condition),
	       PL_SASL_SUCCESS, "also in another case (JIDs are compared normalised)");
	is_int(scram("SCRAM-SHA-256", false, "n,a=admin@localhost,", NULL, "secret", &condition),
	       PL_SASL_FAILURE, "SCRAM with another user's authzid fails");
	is_str(name(condition), "invalid-authzid", "with invalid-authzid");
	is_int(scram("SCRAM-SHA-256", false, "n,a=user@localhost/res,", NULL, "secret", &condition),
	       PL_SASL_FAILURE, "an authzid with a resource is not the bare JID");
	is_int(scram("SCRAM-SHA-256", false, "n,a=user@example.org,", NULL, "secret", &condition),
	       PL_SASL_FAILURE, "nor is one on another domain");
	is_int(first_only("SCRAM-SHA-256", "n,a=us=ZZer,n=user,r=abc", &condition), PL_SASL_FAILURE,
	       "an authzid with a bad escape fails");
	is_str(name(condition), "malformed-request", "with malformed-request");
	is_int(first_only("SCRAM-SHA-256", "n,a=,n=user,r=abc", &condition), PL_SASL_FAILURE,
	       "an empty authzid after a= fails");
}

static void test_malformed_scram(void)
{
	enum pl_sasl_condition condition;
	make_user("secret", "AAECAwQFBgcICQoLDA0ODw==");
	static const struct {
		const char *message;
		const char *what;
	} bad_first[] = {
		{ "x,,n=user,r=abc", "a bad GS2 flag" },
		{ "n,n=user,r=abc", "a GS2 header with one comma" },
		{ "n,,r=abc", "no username" },
		{ "n,,n=user", "no nonce" },
		{ "n,,n=,r=abc", "an empty username" },
		{ "n,,n=user,r=", "an empty nonce" },
		{ "n,,n=us=ZZer,r=abc", "a bad saslname escape" },
		{ "n,,n=user=2,r=abc", "a truncated escape" },
		{ "n,,m=ext,n=user,r=abc", "the reserved m= extension" },
		{ "n,,n=user,r=abc,m=ext", "m= later in the message" },
		{ "n,,n=user,r=a b", "a nonce with a space" },
		{ "n,,n=user,r=abc,", "a trailing comma" },
		{ "n,,n=user,r=abc,=x", "an attribute without a name" },
		{ "p=,,n=user,r=abc", "an empty channel binding name" },
		{ "p=tls exporter,,n=user,r=abc", "a channel binding name with a space" },
		{ "", "an empty client-first" },
	};
	for (size_t i = 0; i < PL_ARRAY_LEN(bad_first); i++) {
		enum pl_sasl_result r = first_only("SCRAM-SHA-256", bad_first[i].message, &condition);
		ok(r == PL_SASL_FAILURE && condition == PL_SASL_MALFORMED_REQUEST,
		   "client-first with %s is malformed-request", bad_first[i].what);
	}
	is_int(first_only("SCRAM-SHA-256", "n,,n=user,r=abc,x=future", &condition), PL_SASL_CONTINUE,
	       "an unknown optional extension is ignored");

	const char *good_nonce = "abcSERVER";
	char *msg;
	msg = pl_asprintf("c=biws,r=%s", good_nonce);
	is_int(final_only(msg, &condition), PL_SASL_FAILURE, "client-final without a proof fails");
	is_str(name(condition), "malformed-request", "with malformed-request");
	free(msg);
	msg = pl_asprintf("c=biws,p=AAAA,r=%s", good_nonce);
	is_int(final_only(msg, &condition), PL_SASL_FAILURE, "client-final with p= not last fails");
	free(msg);
	msg = pl_asprintf("c=biws,r=%s,p=AAAA,x=1", good_nonce);
	is_int(final_only(msg, &condition), PL_SASL_FAILURE, "client-final with an attribute after p= fails");
	free(msg);
	msg = pl_asprintf("r=%s,c=biws,p=AAAA", good_nonce);
	is_int(final_only(msg, &condition), PL_SASL_FAILURE, "client-final with r= first fails");
	free(msg);
	msg = pl_asprintf("c=b!ws,r=%s,p=AAAA", good_nonce);
	is_int(final_only(msg, &condition), PL_SASL_FAILURE, "bad base64 in c= fails");
	is_str(name(condition), "incorrect-encoding", "with incorrect-encoding");
	free(msg);
	msg = pl_asprintf("c=biws,r=%s,p=!!!!", good_nonce);
	is_int(final_only(msg, &condition), PL_SASL_FAILURE, "bad base64 in p= fails");
	is_str(name(condition), "incorrect-encoding", "with incorrect-encoding");
	free(msg);
	msg = pl_asprintf("c=biws,r=%s,p=AAAA", good_nonce);
	is_int(final_only(msg, &condition), PL_SASL_FAILURE, "a proof of the wrong length fails");
	is_str(name(condition), "malformed-request", "with malformed-request");
	free(msg);
	is_int(final_only("c=biws,r=abcOTHER,p=AAAA", &condition), PL_SASL_FAILURE,
	       "a nonce mismatch fails");
	is_str(name(condition), "not-authorized", "with not-authorized");
	is_int(final_only("c=biws,r=abc,p=AAAA", &condition), PL_SASL_FAILURE,
	       "the client nonce alone is a mismatch too");
}

static void test_steps(void)
{
	struct pl_buf out = { 0 };
	enum pl_sasl_condition condition;
	const char *reason;
	make_user("secret", "AAECAwQFBgcICQoLDA0ODw==");

	struct pl_sasl *s = start("SCRAM-SHA-256", false);
	pl_buf_puts(&out, "junk");
	pl_buf_reset(&out);
	is_int(pl_sasl_step_data(s, NULL, 0, false, &out, &condition, &reason), PL_SASL_CONTINUE,
	       "no initial response: a challenge");
	is_int(out.len, 0, "and it is empty");
	is_int(step(s, "n,,n=user,r=abc", &out, &condition), PL_SASL_CONTINUE,
	       "then the client-first is taken");
	pl_sasl_free(s);

	s = start("SCRAM-SHA-256", false);
	is_int(pl_sasl_step_data(s, (const uint8_t *)"", 0, true, &out, &condition, &reason),
	       PL_SASL_FAILURE, "an empty initial response ('=') is a malformed client-first");
	is_str(name(condition), "malformed-request", "malformed-request");
	ok(reason && *reason, "with a reason for the log");
	is_int(step(s, "n,,n=user,r=abc", &out, &condition), PL_SASL_FAILURE,
	       "and the session is over after a failure");
	pl_sasl_free(s);

	s = start("PLAIN", false);
	is_int(pl_sasl_step(s, (const uint8_t *)"", 0, &out, &condition, &reason), PL_SASL_CONTINUE,
	       "pl_sasl_step takes an empty first message as no initial response");
	is_int(PLAIN("", &condition), PL_SASL_FAILURE, "an empty PLAIN response fails");
	pl_sasl_free(s);

	s = start("SCRAM-SHA-256", false);
	char big[PL_SASL_MAX_MESSAGE + 1];
	memset(big, 'a', sizeof(big));
	memcpy(big, "n,,n=user,r=", 12);
	is_int(step_bytes(s, big, sizeof(big), &out, &condition), PL_SASL_FAILURE,
	       "a message over 4 KiB fails");
	is_str(name(condition), "malformed-request", "with malformed-request");
	pl_sasl_free(s);
	s = start("SCRAM-SHA-256", false);
	is_int(step_bytes(s, big, sizeof(big) - 1, &out, &condition), PL_SASL_CONTINUE,
	       "a message of exactly 4 KiB is still read");
	pl_sasl_free(s);

	s = start("SCRAM-SHA-256", false);
	is_int(step_bytes(s, "n,,n=u\0ser,r=abc", 15, &out, &condition), PL_SASL_FAILURE,
	       "a NUL inside a SCRAM message fails");
	pl_sasl_free(s);

	static const char *const mechanisms[] = { "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS",
						  "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS" };
	bool all = true;
	for (size_t i = 0; i < PL_ARRAY_LEN(mechanisms); i++) {
		s = start(mechanisms[i], true);
		all = all && s;
		pl_sasl_free(s);
	}
	ok(all, "the five mechanisms are known");
	ok(start("DIGEST-MD5", false) == NULL, "an unknown mechanism is refused");
	ok(start("scram-sha-1", false) == NULL, "mechanism names are case-sensitive");
	is_str(name(PL_SASL_TEMPORARY_AUTH_FAILURE), "temporary-auth-failure", "condition names");
	is_str(name(PL_SASL_ABORTED), "aborted", "condition names, the first one");
	pl_buf_free(&out);
}

static void test_plain(void)
{
	enum pl_sasl_condition condition;
	make_user("secret", "AAECAwQFBgcICQoLDA0ODw==");

	struct pl_sasl *s = start("PLAIN", false);
	struct pl_buf out = { 0 };
	is_int(step_bytes(s, "\0user\0secret", 12, &out, &condition), PL_SASL_SUCCESS,
	       "PLAIN with the right password");
	is_int(out.len, 0, "with no additional data");
	is_str(pl_sasl_username(s), "user", "and the username");
	pl_sasl_free(s);
	pl_buf_free(&out);

	is_int(PLAIN("\0user\0nope", &condition), PL_SASL_FAILURE, "PLAIN with a wrong password fails");
	is_str(name(condition), "not-authorized", "with not-authorized");
	ok(last_reason && !strstr(last_reason, "nope"), "the reason for the log does not carry the password");
	is_int(PLAIN("\0nobody\0secret", &condition), PL_SASL_FAILURE, "PLAIN for an unknown user fails");
	is_str(name(condition), "not-authorized", "with the same not-authorized");
	is_int(PLAIN("user@localhost\0user\0secret", &condition), PL_SASL_SUCCESS,
	       "PLAIN with the user's own bare JID as authzid");
	is_int(PLAIN("USER@localhost\0user\0secret", &condition), PL_SASL_SUCCESS,
	       "also spelled in capitals");
	is_int(PLAIN("admin@localhost\0user\0secret", &condition), PL_SASL_FAILURE,
	       "PLAIN with another user's authzid fails (ejabberd would log in as admin)");
	is_str(name(condition), "invalid-authzid", "with invalid-authzid");
	is_int(PLAIN("localhost\0user\0secret", &condition), PL_SASL_FAILURE,
	       "a domain as authzid fails");
	is_int(PLAIN("user secret", &condition), PL_SASL_FAILURE, "PLAIN without NULs fails");
	is_str(name(condition), "malformed-request", "with malformed-request");
	is_int(PLAIN("user\0secret", &condition), PL_SASL_FAILURE, "PLAIN with one NUL fails");
	is_int(PLAIN("\0user\0sec\0ret", &condition), PL_SASL_FAILURE, "PLAIN with three NULs fails");
	is_int(PLAIN("\0user\0", &condition), PL_SASL_FAILURE, "PLAIN with an empty password fails");
	is_str(name(condition), "malformed-request", "with malformed-request");
	is_int(PLAIN("\0\0secret", &condition), PL_SASL_FAILURE, "PLAIN with an empty authcid fails");

	user_disabled = true;
	is_int(PLAIN("\0user\0secret", &condition), PL_SASL_FAILURE, "a disabled account cannot log in");
	is_str(name(condition), "account-disabled", "with account-disabled");
	user_disabled = false;

	/* An account that only has SHA-1 keys (imported from elsewhere). */
	memset(user_credentials.stored_key_sha256, 0, sizeof(user_credentials.stored_key_sha256));
	memset(user_credentials.server_key_sha256, 0, sizeof(user_credentials.server_key_sha256));
	is_int(PLAIN("\0user\0secret", &condition), PL_SASL_SUCCESS,
	       "PLAIN checks a SHA-1-only account with SHA-1");
	is_int(PLAIN("\0user\0wrong", &condition), PL_SASL_FAILURE, "and still refuses a wrong password");
	is_int(scram("SCRAM-SHA-256", false, "n,,", NULL, "secret", &condition), PL_SASL_FAILURE,
	       "SCRAM-SHA-256 cannot succeed without SHA-256 keys");
}

int main(void)
{
	test_rfc_vectors();
	test_passwords_and_users();
	test_channel_binding();
	test_authzid();
	test_malformed_scram();
	test_steps();
	test_plain();
	return done_testing();
}
