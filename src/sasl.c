/* The SASL mechanisms. SCRAM keeps the messages it must sign (client-first
 * bare, server-first) between steps; every comparison of secrets is
 * constant-time; nothing secret is logged. */
#include "sasl.h"
#include "jid.h"
#include "scram.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define MAX_MESSAGE 4096

enum mechanism_kind { MECH_PLAIN, MECH_SCRAM };

struct pl_sasl {
	enum mechanism_kind kind;
	enum pl_scram_hash hash;
	bool plus;
	const struct pl_sasl_callbacks *callbacks;
	void *userdata;
	struct pl_sasl_options options;
	int step;
	char *username;
	char *gs2_header;          /* "n,," or "p=tls-exporter,," ... */
	char *client_first_bare;
	char *server_first;
	char *nonce;               /* client nonce + server nonce */
	char *test_server_nonce;
	struct pl_scram_credentials credentials;
	bool fake;                 /* no such account: fail at the end */
	bool disabled;
	bool asked_initial;
};

static const char *const condition_names[] = {
	"aborted", "account-disabled", "credentials-expired", "encryption-required",
	"incorrect-encoding", "invalid-authzid", "invalid-mechanism", "malformed-request",
	"mechanism-too-weak", "not-authorized", "temporary-auth-failure",
};

const char *pl_sasl_condition_name(enum pl_sasl_condition condition)
{
	return condition_names[condition];
}

struct pl_sasl *pl_sasl_new(const char *mechanism, const struct pl_sasl_callbacks *callbacks,
			    void *userdata, const struct pl_sasl_options *options)
{
	static const struct {
		const char *name;
		enum mechanism_kind kind;
		enum pl_scram_hash hash;
		bool plus;
	} known[] = {
		{ "PLAIN", MECH_PLAIN, PL_SCRAM_SHA256, false },
		{ "SCRAM-SHA-1", MECH_SCRAM, PL_SCRAM_SHA1, false },
		{ "SCRAM-SHA-1-PLUS", MECH_SCRAM, PL_SCRAM_SHA1, true },
		{ "SCRAM-SHA-256", MECH_SCRAM, PL_SCRAM_SHA256, false },
		{ "SCRAM-SHA-256-PLUS", MECH_SCRAM, PL_SCRAM_SHA256, true },
	};
	for (size_t i = 0; i < PL_ARRAY_LEN(known); i++) {
		if (strcmp(known[i].name, mechanism) != 0)
			continue;
		struct pl_sasl *s = pl_calloc(1, sizeof(*s));
		s->kind = known[i].kind;
		s->hash = known[i].hash;
		s->plus = known[i].plus;
		s->callbacks = callbacks;
		s->userdata = userdata;
		s->options = *options;
		return s;
	}
	return NULL;
}

void pl_sasl_free(struct pl_sasl *s)
{
	if (!s)
		return;
	free(s->username);
	free(s->gs2_header);
	free(s->client_first_bare);
	free(s->server_first);
	free(s->nonce);
	free(s->test_server_nonce);
	OPENSSL_cleanse(&s->credentials, sizeof(s->credentials));
	free(s);
}

void pl_sasl_set_server_nonce(struct pl_sasl *s, const char *nonce)
{
	free(s->test_server_nonce);
	s->test_server_nonce = pl_strdup(nonce);
}

const char *pl_sasl_username(const struct pl_sasl *s)
{
	return s->username;
}

static size_t salt_length(const struct pl_scram_credentials *c)
{
	return c->salt_len && c->salt_len <= sizeof(c->salt) ? c->salt_len : sizeof(c->salt);
}

static enum pl_sasl_result failure(enum pl_sasl_condition *condition, const char **reason,
				   enum pl_sasl_condition value, const char *why)
{
	*condition = value;
	*reason = why;
	return PL_SASL_FAILURE;
}

/* The authzid, when given, must name the authenticating user. */
static bool authzid_allowed(const struct pl_sasl *s, const char *authzid, const char *username)
{
	if (!authzid || !*authzid)
		return true;
	char *own = pl_asprintf("%s@%s", username, s->options.domain);
	char *own_bare = pl_jid_normalize_bare(own);
	char *requested = pl_jid_normalize_bare(authzid);
	bool same = own_bare && requested && strcmp(own_bare, requested) == 0;
	free(own);
	free(own_bare);
	free(requested);
	return same;
}

/* Looks the user up; a missing account gets a fake salt derived from the
 * name and a per-process secret, so the exchange looks the same. */
static int load_credentials(struct pl_sasl *s)
{
	int rc = s->callbacks->get_credentials(s->userdata, s->username, &s->credentials);
	if (rc == -EACCES) {
		/* Disabled: checked like any account, refused after the proof
		 * so that the answer does not leak whether the password was right. */
		s->disabled = true;
		rc = 0;
	}
	if (rc == 0)
		return 0;
	if (rc != -ENOENT)
		return rc;
	static uint8_t secret[32];
	static bool have_secret;
	if (!have_secret) {
		pl_random_bytes(secret, sizeof(secret));
		have_secret = true;
	}
	uint8_t digest[32];
	pl_scram_hmac(PL_SCRAM_SHA256, secret, sizeof(secret), s->username, strlen(s->username),
		      digest);
	memset(&s->credentials, 0, sizeof(s->credentials));
	memcpy(s->credentials.salt, digest, sizeof(s->credentials.salt));
	s->credentials.salt_len = sizeof(s->credentials.salt);
	s->credentials.iterations = PL_SCRAM_MIN_ITERATIONS;
	s->fake = true;
	return 0;
}

/* The checks both mechanisms make once the user is known: the authzid,
 * then the account (real or fake). False with the failure set. */
static bool admit(struct pl_sasl *s, const char *authzid, enum pl_sasl_condition *condition,
		  const char **reason)
{
	if (!authzid_allowed(s, authzid, s->username)) {
		failure(condition, reason, PL_SASL_INVALID_AUTHZID, "authzid names another user");
		return false;
	}
	if (load_credentials(s) != 0) {
		failure(condition, reason, PL_SASL_TEMPORARY_AUTH_FAILURE, "account lookup failed");
		return false;
	}
	return true;
}

/* ---- PLAIN -------------------------------------------------------------------- */

static enum pl_sasl_result plain_step(struct pl_sasl *s, const uint8_t *data, size_t len,
				      enum pl_sasl_condition *condition, const char **reason)
{
	/* authzid NUL authcid NUL password; no other NUL allowed. */
	const uint8_t *first = memchr(data, 0, len);
	const uint8_t *second = first ? memchr(first + 1, 0, len - (size_t)(first + 1 - data)) : NULL;
	if (!first || !second || memchr(second + 1, 0, len - (size_t)(second + 1 - data)))
		return failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "PLAIN message malformed");
	char *authzid = pl_strndup((const char *)data, (size_t)(first - data));
	char *authcid = pl_strndup((const char *)first + 1, (size_t)(second - first - 1));
	char *password = pl_strndup((const char *)second + 1, len - (size_t)(second + 1 - data));
	enum pl_sasl_result result = PL_SASL_FAILURE;
	char *prepared_user = pl_scram_saslprep(authcid);
	char *prepared_password = pl_scram_saslprep(password);
	if (!*authcid || !prepared_user || !prepared_password || !*prepared_password) {
		failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "PLAIN identity or password invalid");
		goto out;
	}
	s->username = prepared_user;
	prepared_user = NULL;
	if (!admit(s, authzid, condition, reason))
		goto out;
	uint8_t stored[32], server[32];
	bool sha256 = true;
	if (pl_scram_derive(PL_SCRAM_SHA256, prepared_password, s->credentials.salt,
			    salt_length(&s->credentials), s->credentials.iterations, stored,
			    server) != 0)
		sha256 = false;
	bool match = sha256 && !s->fake &&
		     CRYPTO_memcmp(stored, s->credentials.stored_key_sha256, 32) == 0;
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(server, sizeof(server));
	if (!match)
		failure(condition, reason, PL_SASL_NOT_AUTHORIZED, "wrong password or no such user");
	else if (s->disabled)
		failure(condition, reason, PL_SASL_ACCOUNT_DISABLED, "account disabled");
	else
		result = PL_SASL_SUCCESS;
out:
	if (prepared_password)
		OPENSSL_cleanse(prepared_password, strlen(prepared_password));
	OPENSSL_cleanse(password, strlen(password));
	free(prepared_password);
	free(prepared_user);
	free(password);
	free(authcid);
	free(authzid);
	return result;
}

/* ---- SCRAM -------------------------------------------------------------------- */

/* Decodes a saslname (RFC 5802: "=2C" is ',', "=3D" is '='). */
static char *decode_saslname(const char *text, size_t len)
{
	struct pl_buf out = { 0 };
	pl_buf_append(&out, "", 0);
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '=') {
			if (i + 2 < len && text[i + 1] == '2' && text[i + 2] == 'C')
				pl_buf_append(&out, ",", 1);
			else if (i + 2 < len && text[i + 1] == '3' && text[i + 2] == 'D')
				pl_buf_append(&out, "=", 1);
			else {
				pl_buf_free(&out);
				return NULL;
			}
			i += 2;
		} else {
			pl_buf_append(&out, &text[i], 1);
		}
	}
	return pl_buf_take(&out);
}

/* Finds "k=" attribute `key` in a comma-separated SCRAM message. */
static const char *attribute(const char *message, char key, size_t *len)
{
	const char *p = message;
	while (p && *p) {
		const char *end = strchr(p, ',');
		if (p[0] == key && p[1] == '=') {
			*len = (size_t)((end ? end : p + strlen(p)) - p - 2);
			return p + 2;
		}
		p = end ? end + 1 : NULL;
	}
	return NULL;
}

static enum pl_sasl_result scram_first(struct pl_sasl *s, const char *message, struct pl_buf *out,
				       enum pl_sasl_condition *condition, const char **reason)
{
	/* gs2-header: cbind-flag "," [ authzid ] "," */
	const char *p = message;
	char *binding_name = NULL;
	if (p[0] == 'n' && p[1] == ',') {
		if (s->plus)
			return failure(condition, reason, PL_SASL_MALFORMED_REQUEST,
				       "-PLUS mechanism without channel binding");
		p += 2;
	} else if (p[0] == 'y' && p[1] == ',') {
		/* The client could bind but thinks we cannot: if we offered
		 * -PLUS, someone stripped it (RFC 5802 section 6). */
		if (s->options.plus_offered || s->plus)
			return failure(condition, reason, PL_SASL_NOT_AUTHORIZED,
				       "channel binding downgrade detected");
		p += 2;
	} else if (p[0] == 'p' && p[1] == '=') {
		const char *comma = strchr(p, ',');
		if (!comma || !s->plus)
			return failure(condition, reason, PL_SASL_MALFORMED_REQUEST,
				       "channel binding requested on a non-PLUS mechanism");
		binding_name = pl_strndup(p + 2, (size_t)(comma - p - 2));
		p = comma + 1;
	} else {
		return failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "bad GS2 header");
	}
	char *authzid = NULL;
	if (p[0] == 'a' && p[1] == '=') {
		const char *comma = strchr(p, ',');
		if (!comma) {
			free(binding_name);
			return failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "bad authzid");
		}
		authzid = decode_saslname(p + 2, (size_t)(comma - p - 2));
		p = comma;
	}
	if (*p != ',') {
		free(binding_name);
		free(authzid);
		return failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "bad GS2 header");
	}
	p++;
	s->gs2_header = pl_strndup(message, (size_t)(p - message));
	s->client_first_bare = pl_strdup(p);

	enum pl_sasl_result result = PL_SASL_FAILURE;
	size_t user_len, nonce_len;
	const char *user = strncmp(p, "n=", 2) == 0 ? p + 2 : NULL;
	const char *comma = user ? strchr(user, ',') : NULL;
	user_len = comma ? (size_t)(comma - user) : 0;
	const char *nonce = comma && strncmp(comma + 1, "r=", 2) == 0 ? comma + 3 : NULL;
	nonce_len = nonce ? strcspn(nonce, ",") : 0;
	if (!user || !nonce || nonce_len == 0 || user_len == 0 || attribute(p, 'm', &(size_t){ 0 })) {
		failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "client-first message malformed");
		goto out;
	}
	for (size_t i = 0; i < nonce_len; i++)
		if ((unsigned char)nonce[i] < 0x21 || (unsigned char)nonce[i] > 0x7e) {
			failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "bad nonce");
			goto out;
		}
	char *decoded = decode_saslname(user, user_len);
	char *prepared = decoded ? pl_scram_saslprep(decoded) : NULL;
	free(decoded);
	if (!prepared || !*prepared) {
		free(prepared);
		failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "bad username");
		goto out;
	}
	s->username = prepared;
	if (binding_name) {
		uint8_t data[64];
		size_t data_len = sizeof(data);
		if (!s->options.binding_type || strcmp(binding_name, s->options.binding_type) != 0 ||
		    s->callbacks->channel_binding(s->userdata, binding_name, data, &data_len) != 0) {
			failure(condition, reason, PL_SASL_MALFORMED_REQUEST,
				"unsupported channel binding type");
			goto out;
		}
	}
	if (!admit(s, authzid, condition, reason))
		goto out;
	char *server_nonce;
	if (s->test_server_nonce) {
		server_nonce = pl_strdup(s->test_server_nonce);
	} else {
		uint8_t random[18];
		pl_random_bytes(random, sizeof(random));
		server_nonce = pl_base64_encode(random, sizeof(random));
	}
	s->nonce = pl_asprintf("%.*s%s", (int)nonce_len, nonce, server_nonce);
	free(server_nonce);
	char *salt = pl_base64_encode(s->credentials.salt, salt_length(&s->credentials));
	s->server_first = pl_asprintf("r=%s,s=%s,i=%u", s->nonce, salt, s->credentials.iterations);
	free(salt);
	pl_buf_puts(out, s->server_first);
	result = PL_SASL_CONTINUE;
out:
	free(binding_name);
	free(authzid);
	return result;
}

static enum pl_sasl_result scram_final(struct pl_sasl *s, const char *message, struct pl_buf *out,
				       enum pl_sasl_condition *condition, const char **reason)
{
	const char *proof_at = strstr(message, ",p=");
	size_t channel_len, nonce_len;
	const char *channel = attribute(message, 'c', &channel_len);
	const char *nonce = attribute(message, 'r', &nonce_len);
	if (!proof_at || !channel || !nonce || channel != message + 2)
		return failure(condition, reason, PL_SASL_MALFORMED_REQUEST,
			       "client-final message malformed");
	size_t digest_len = pl_scram_digest_len(s->hash);
	const char *proof_text = proof_at + 3;
	uint8_t *proof = NULL, *binding = NULL;
	size_t proof_len = 0, binding_len = 0;
	if (pl_base64_decode(proof_text, strlen(proof_text), &proof, &proof_len) != 0 ||
	    pl_base64_decode(channel, channel_len, &binding, &binding_len) != 0) {
		free(proof);
		return failure(condition, reason, PL_SASL_INCORRECT_ENCODING, "bad base64 in SCRAM");
	}
	enum pl_sasl_result result = PL_SASL_FAILURE;
	/* c= must be the GS2 header, plus the channel's binding data for -PLUS. */
	struct pl_buf expected = { 0 };
	pl_buf_puts(&expected, s->gs2_header);
	if (s->plus) {
		uint8_t data[64];
		size_t data_len = sizeof(data);
		if (s->callbacks->channel_binding(s->userdata, s->options.binding_type, data,
						  &data_len) == 0)
			pl_buf_append(&expected, data, data_len);
	}
	if (binding_len != expected.len || CRYPTO_memcmp(binding, expected.data, binding_len) != 0) {
		failure(condition, reason, PL_SASL_NOT_AUTHORIZED, "channel binding mismatch");
		goto out;
	}
	if (nonce_len != strlen(s->nonce) || memcmp(nonce, s->nonce, nonce_len) != 0) {
		failure(condition, reason, PL_SASL_NOT_AUTHORIZED, "nonce mismatch");
		goto out;
	}
	if (proof_len != digest_len) {
		failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "bad proof length");
		goto out;
	}
	char *auth_message = pl_asprintf("%s,%s,%.*s", s->client_first_bare, s->server_first,
					 (int)(proof_at - message), message);
	const uint8_t *stored = s->hash == PL_SCRAM_SHA1 ? s->credentials.stored_key_sha1
							 : s->credentials.stored_key_sha256;
	const uint8_t *server_key = s->hash == PL_SCRAM_SHA1 ? s->credentials.server_key_sha1
							     : s->credentials.server_key_sha256;
	uint8_t signature[PL_SCRAM_MAX_DIGEST], client_key[PL_SCRAM_MAX_DIGEST],
		check[PL_SCRAM_MAX_DIGEST];
	pl_scram_hmac(s->hash, stored, digest_len, auth_message, strlen(auth_message), signature);
	for (size_t i = 0; i < digest_len; i++)
		client_key[i] = proof[i] ^ signature[i];
	pl_scram_hash(s->hash, client_key, digest_len, check);
	bool match = !s->fake && CRYPTO_memcmp(check, stored, digest_len) == 0;
	if (!match) {
		failure(condition, reason, PL_SASL_NOT_AUTHORIZED, "wrong password or no such user");
	} else if (s->disabled) {
		failure(condition, reason, PL_SASL_ACCOUNT_DISABLED, "account disabled");
	} else {
		uint8_t server_signature[PL_SCRAM_MAX_DIGEST];
		pl_scram_hmac(s->hash, server_key, digest_len, auth_message, strlen(auth_message),
			      server_signature);
		char *encoded = pl_base64_encode(server_signature, digest_len);
		pl_buf_printf(out, "v=%s", encoded);
		free(encoded);
		result = PL_SASL_SUCCESS;
	}
	OPENSSL_cleanse(client_key, sizeof(client_key));
	free(auth_message);
out:
	pl_buf_free(&expected);
	free(proof);
	free(binding);
	return result;
}

enum pl_sasl_result pl_sasl_step(struct pl_sasl *s, const uint8_t *data, size_t len,
				 struct pl_buf *out, enum pl_sasl_condition *condition,
				 const char **reason)
{
	if (len > MAX_MESSAGE)
		return failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "message too long");
	if (s->step == 0 && len == 0 && !s->asked_initial) {
		/* No initial response: RFC 6120 6.4.2 answers with an empty
		 * challenge and waits for the client's first message. */
		s->asked_initial = true;
		return PL_SASL_CONTINUE;
	}
	int step = s->step++;
	if (s->kind == MECH_PLAIN) {
		if (step > 0)
			return failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "unexpected response");
		return plain_step(s, data, len, condition, reason);
	}
	if (memchr(data, 0, len))
		return failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "NUL in a SCRAM message");
	char *message = pl_strndup((const char *)data, len);
	enum pl_sasl_result result;
	if (step == 0)
		result = scram_first(s, message, out, condition, reason);
	else if (step == 1)
		result = scram_final(s, message, out, condition, reason);
	else
		result = failure(condition, reason, PL_SASL_MALFORMED_REQUEST, "unexpected response");
	free(message);
	return result;
}
