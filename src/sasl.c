/* The SASL mechanisms behind sasl.h. SCRAM keeps what it must sign
 * between its two steps (the GS2 header, client-first-message-bare,
 * server-first-message and the combined nonce) and parses each message
 * completely before acting on it, so that malformed input is answered
 * malformed-request whatever else is wrong with it. Secrets are compared
 * in constant time and wiped before they are freed. Nothing is logged
 * here: the caller logs the condition and the static reason, which never
 * carry a secret. */
#include "sasl.h"
#include "jid.h"
#include "scram.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* Room for any channel binding: tls-exporter is 32 bytes,
 * tls-server-end-point at most a SHA-512 digest. */
#define CHANNEL_BINDING_MAX 64
/* 18 random bytes are 24 base64 characters, none of them ','. */
#define SERVER_NONCE_BYTES 18

enum mechanism_kind { MECH_PLAIN, MECH_SCRAM };

enum exchange_state {
	STATE_START,       /* waiting for the initial response */
	STATE_SCRAM_FINAL, /* server-first sent, waiting for client-final */
	STATE_DONE,        /* succeeded or failed: nothing more is accepted */
};

struct pl_sasl {
	enum mechanism_kind kind;
	enum pl_scram_hash hash;
	bool plus;
	const struct pl_sasl_callbacks *callbacks;
	void *userdata;
	struct pl_sasl_options options;
	enum exchange_state state;
	bool asked_initial;
	bool succeeded;
	enum pl_sasl_condition condition;
	const char *reason;
	char *username;
	char *gs2_header;          /* "n,,", "y,a=user@host," or "p=tls-exporter,," */
	char *binding_name;        /* the p= type of a -PLUS exchange */
	char *client_first_bare;
	char *server_first;
	char *nonce;               /* client nonce + server nonce */
	char *test_server_nonce;
	struct pl_scram_credentials credentials;
	bool fake;                 /* no such account: the exchange runs, then fails */
	bool disabled;             /* refused only after a correct proof */
};

const char *pl_sasl_condition_name(enum pl_sasl_condition condition)
{
	switch (condition) {
	case PL_SASL_ABORTED:
		return "aborted";
	case PL_SASL_ACCOUNT_DISABLED:
		return "account-disabled";
	case PL_SASL_CREDENTIALS_EXPIRED:
		return "credentials-expired";
	case PL_SASL_ENCRYPTION_REQUIRED:
		return "encryption-required";
	case PL_SASL_INCORRECT_ENCODING:
		return "incorrect-encoding";
	case PL_SASL_INVALID_AUTHZID:
		return "invalid-authzid";
	case PL_SASL_INVALID_MECHANISM:
		return "invalid-mechanism";
	case PL_SASL_MALFORMED_REQUEST:
		return "malformed-request";
	case PL_SASL_MECHANISM_TOO_WEAK:
		return "mechanism-too-weak";
	case PL_SASL_NOT_AUTHORIZED:
		return "not-authorized";
	case PL_SASL_TEMPORARY_AUTH_FAILURE:
		return "temporary-auth-failure";
	}
	/* A value outside the enum is a bug; refusing is the safe answer. */
	return "not-authorized";
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
	if (!callbacks || !callbacks->get_credentials)
		pl_fatal("pl_sasl_new: no get_credentials callback");
	if (!mechanism)
		return NULL;
	for (size_t i = 0; i < PL_ARRAY_LEN(known); i++) {
		if (strcmp(known[i].name, mechanism) != 0)
			continue;
		struct pl_sasl *s = pl_calloc(1, sizeof(*s));
		s->kind = known[i].kind;
		s->hash = known[i].hash;
		s->plus = known[i].plus;
		s->callbacks = callbacks;
		s->userdata = userdata;
		if (options)
			s->options = *options;
		return s;
	}
	return NULL;
}

static void free_secret_string(char *text)
{
	if (text)
		OPENSSL_cleanse(text, strlen(text));
	free(text);
}

void pl_sasl_free(struct pl_sasl *s)
{
	if (!s)
		return;
	free(s->username);
	free(s->gs2_header);
	free(s->binding_name);
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
	return s->succeeded ? s->username : NULL;
}

/* Every failure ends the exchange: a client may not retry a step, and a
 * half-initialised SCRAM state is never read. */
static enum pl_sasl_result fail(struct pl_sasl *s, enum pl_sasl_condition condition,
				const char *reason)
{
	s->condition = condition;
	s->reason = reason;
	s->state = STATE_DONE;
	s->succeeded = false;
	return PL_SASL_FAILURE;
}

static enum pl_sasl_result succeed(struct pl_sasl *s)
{
	s->state = STATE_DONE;
	s->succeeded = true;
	return PL_SASL_SUCCESS;
}

static size_t salt_length(const struct pl_scram_credentials *c)
{
	return c->salt_len && c->salt_len <= sizeof(c->salt) ? c->salt_len : sizeof(c->salt);
}

static bool key_present(const uint8_t *key, size_t len)
{
	uint8_t any = 0;
	for (size_t i = 0; i < len; i++)
		any |= key[i];
	return any != 0;
}

/* The authzid, when given, must be the user's own bare JID (RFC 6120
 * 6.3.8 lets a server refuse any other; acting for someone else is not a
 * feature Parley offers). The user's side goes through nodeprep, as the
 * account lookup does, so "User" may say "user@host"; a username that is
 * no valid localpart (with '@' or '/') can never match anything. */
static bool authzid_allowed(const struct pl_sasl *s, const char *authzid)
{
	if (!authzid || !*authzid)
		return true;
	if (!s->options.domain)
		return false;
	struct pl_jid requested;
	if (pl_jid_parse(authzid, &requested) != PL_JID_OK)
		return false;
	bool allowed = false;
	char *local = pl_jid_prep_local(s->username);
	if (local && requested.local && !requested.resource) {
		char *own = pl_asprintf("%s@%s", local, s->options.domain);
		char *own_bare = pl_jid_normalize_bare(own);
		allowed = own_bare && strcmp(own_bare, requested.bare) == 0;
		free(own);
		free(own_bare);
	}
	free(local);
	pl_jid_free(&requested);
	return allowed;
}

/* The per-process secret the fake salts are made from: stable for the
 * life of the daemon so a name always gets the same salt, unknowable so
 * the salt cannot be told from a real one. */
static uint8_t fake_salt_secret[32];
static pthread_once_t fake_salt_secret_once = PTHREAD_ONCE_INIT;
/* The iteration count of the last real account seen, shown to unknown
 * users when the caller did not say which count accounts get. */
static _Atomic uint32_t last_real_iterations;

static void make_fake_salt_secret(void)
{
	pl_random_bytes(fake_salt_secret, sizeof(fake_salt_secret));
}

static void make_fake_credentials(struct pl_sasl *s)
{
	pthread_once(&fake_salt_secret_once, make_fake_salt_secret);
	/* Keyed on the name as the account lookup normalises it: "User" and
	 * "user" share one real account, so they must share a fake salt too,
	 * or comparing the two salts would tell whether the account exists. */
	char *local = pl_jid_prep_local(s->username);
	const char *key = local ? local : s->username;
	uint8_t digest[32];
	pl_scram_hmac(PL_SCRAM_SHA256, fake_salt_secret, sizeof(fake_salt_secret), key,
		      strlen(key), digest);
	free(local);
	memset(&s->credentials, 0, sizeof(s->credentials));
	memcpy(s->credentials.salt, digest, sizeof(s->credentials.salt));
	s->credentials.salt_len = sizeof(s->credentials.salt);
	uint32_t iterations = s->options.iterations;
	if (!iterations)
		iterations = atomic_load(&last_real_iterations);
	s->credentials.iterations = iterations ? iterations : PL_SCRAM_MIN_ITERATIONS;
	s->fake = true;
}

/* Looks the user up; a missing account gets fake credentials, so the
 * exchange looks the same until its very end. */
static int load_credentials(struct pl_sasl *s)
{
	memset(&s->credentials, 0, sizeof(s->credentials));
	int rc = s->callbacks->get_credentials(s->userdata, s->username, &s->credentials);
	if (rc == -EACCES) {
		/* Disabled: checked like any account, refused after the proof
		 * so that the answer does not tell an attacker more than a
		 * wrong password would. */
		s->disabled = true;
		rc = 0;
	}
	if (rc == 0) {
		if (s->credentials.iterations == 0)
			return -EINVAL;
		atomic_store(&last_real_iterations, s->credentials.iterations);
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	make_fake_credentials(s);
	return 0;
}

/* The checks both mechanisms make once the user is named: the authzid
 * (before the account, so that its answer says nothing about the
 * account), then the account, real or fake. */
static bool admit(struct pl_sasl *s, const char *authzid)
{
	if (!authzid_allowed(s, authzid)) {
		fail(s, PL_SASL_INVALID_AUTHZID, "authzid is not the user's own bare JID");
		return false;
	}
	if (load_credentials(s) != 0) {
		fail(s, PL_SASL_TEMPORARY_AUTH_FAILURE, "account lookup failed");
		return false;
	}
	return true;
}

/* ---- PLAIN (RFC 4616) ------------------------------------------------------------ */

/* Derives the keys from the password with the account's salt and compares
 * StoredKey. SHA-256 when the account has its keys (always, for accounts
 * Parley made), SHA-1 for accounts that only carry those. */
static enum pl_sasl_result plain_verify(struct pl_sasl *s, const char *prepared_password)
{
	const struct pl_scram_credentials *c = &s->credentials;
	enum pl_scram_hash hash = PL_SCRAM_SHA256;
	const uint8_t *expected = c->stored_key_sha256;
	if (!s->fake && !key_present(c->stored_key_sha256, sizeof(c->stored_key_sha256))) {
		hash = PL_SCRAM_SHA1;
		expected = c->stored_key_sha1;
		if (!key_present(c->stored_key_sha1, sizeof(c->stored_key_sha1)))
			return fail(s, PL_SASL_NOT_AUTHORIZED, "account has no keys");
	}
	size_t digest_len = pl_scram_digest_len(hash);
	uint8_t stored[PL_SCRAM_MAX_DIGEST], server[PL_SCRAM_MAX_DIGEST];
	/* Fake accounts derive too, so that they take as long as real ones. */
	int rc = pl_scram_derive(hash, prepared_password, c->salt, salt_length(c), c->iterations,
				 stored, server);
	bool match = rc == 0 && !s->fake && CRYPTO_memcmp(stored, expected, digest_len) == 0;
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(server, sizeof(server));
	if (!match)
		return fail(s, PL_SASL_NOT_AUTHORIZED, "wrong password or no such user");
	if (s->disabled)
		return fail(s, PL_SASL_ACCOUNT_DISABLED, "account disabled");
	return succeed(s);
}

static enum pl_sasl_result plain_step(struct pl_sasl *s, const uint8_t *data, size_t len)
{
	/* [authzid] NUL authcid NUL passwd, and no third NUL. */
	const uint8_t *end = data + len;
	const uint8_t *first = memchr(data, 0, len);
	const uint8_t *second = first ? memchr(first + 1, 0, (size_t)(end - first - 1)) : NULL;
	if (!second || memchr(second + 1, 0, (size_t)(end - second - 1)))
		return fail(s, PL_SASL_MALFORMED_REQUEST,
			    "PLAIN message is not authzid NUL authcid NUL password");
	char *authzid = pl_strndup((const char *)data, (size_t)(first - data));
	char *authcid = pl_strndup((const char *)first + 1, (size_t)(second - first - 1));
	char *password = pl_strndup((const char *)second + 1, (size_t)(end - second - 1));
	char *prepared_user = *authcid ? pl_scram_saslprep(authcid) : NULL;
	char *prepared_password = *password ? pl_scram_saslprep(password) : NULL;
	enum pl_sasl_result result = PL_SASL_FAILURE;
	if (!prepared_user || !*prepared_user || !prepared_password || !*prepared_password) {
		free(prepared_user);
		fail(s, PL_SASL_MALFORMED_REQUEST, "PLAIN identity or password empty or not SASLprep");
		goto out;
	}
	s->username = prepared_user;
	if (admit(s, authzid))
		result = plain_verify(s, prepared_password);
out:
	free_secret_string(prepared_password);
	free_secret_string(password);
	free(authcid);
	free(authzid);
	return result;
}

/* ---- SCRAM (RFC 5802, RFC 7677) ---------------------------------------------------- */

/* One "k=value" attribute of a SCRAM message. */
struct attribute {
	char key;
	const char *value;
	size_t len;
};

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Splits the next attribute off *cursor (a NUL-terminated message, no
 * NULs inside); *cursor becomes NULL after the last one. False when the
 * field is not ALPHA "=" value, which includes the empty field a trailing
 * comma leaves. */
static bool next_attribute(const char **cursor, struct attribute *a)
{
	const char *p = *cursor;
	if (!p)
		return false;
	const char *comma = strchr(p, ',');
	size_t field_len = comma ? (size_t)(comma - p) : strlen(p);
	if (field_len < 2 || !is_alpha(p[0]) || p[1] != '=')
		return false;
	a->key = p[0];
	a->value = p + 2;
	a->len = field_len - 2;
	*cursor = comma ? comma + 1 : NULL;
	return true;
}

/* Decodes a saslname (RFC 5802: "=2C" is ',', "=3D" is '='; any other '='
 * is an error). NULL when malformed or empty. */
static char *decode_saslname(const char *text, size_t len)
{
	if (len == 0)
		return NULL;
	struct pl_buf out = { 0 };
	pl_buf_append(&out, "", 0);
	for (size_t i = 0; i < len; i++) {
		if (text[i] != '=') {
			pl_buf_append(&out, &text[i], 1);
			continue;
		}
		if (len - i >= 3 && text[i + 1] == '2' && text[i + 2] == 'C') {
			pl_buf_append(&out, ",", 1);
		} else if (len - i >= 3 && text[i + 1] == '3' && text[i + 2] == 'D') {
			pl_buf_append(&out, "=", 1);
		} else {
			pl_buf_free(&out);
			return NULL;
		}
		i += 2;
	}
	return pl_buf_take(&out);
}

/* RFC 5802: printable = %x21-2B / %x2D-7E (no ','; the caller's split
 * already excludes it). */
static bool nonce_printable(const char *nonce, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)nonce[i] < 0x21 || (unsigned char)nonce[i] > 0x7e)
			return false;
	return true;
}

static bool known_binding_type(const char *name)
{
	return strcmp(name, "tls-exporter") == 0 || strcmp(name, "tls-server-end-point") == 0;
}

/* The connection's binding data for `type`; false when it has none. */
static bool binding_data(struct pl_sasl *s, const char *type, uint8_t *data, size_t *data_len)
{
	*data_len = CHANNEL_BINDING_MAX;
	if (!s->options.binding_type || !s->callbacks->channel_binding || !known_binding_type(type))
		return false;
	if (s->callbacks->channel_binding(s->userdata, type, data, data_len) != 0)
		return false;
	return *data_len > 0 && *data_len <= CHANNEL_BINDING_MAX;
}

/* client-first-message = gs2-header client-first-message-bare
 * gs2-header = gs2-cbind-flag "," [ "a=" saslname ] ","
 * client-first-message-bare = [ "m=" ... "," ] "n=" saslname "," "r=" nonce [ "," extensions ] */
static enum pl_sasl_result scram_first(struct pl_sasl *s, const char *message, struct pl_buf *out)
{
	const char *p = message;
	char flag = p[0];
	const char *binding = NULL;
	size_t binding_len = 0;
	if ((flag == 'n' || flag == 'y') && p[1] == ',') {
		p += 2;
	} else if (flag == 'p' && p[1] == '=') {
		/* cb-name = 1*(ALPHA / DIGIT / "." / "-") */
		binding = p + 2;
		binding_len = strspn(binding, "abcdefghijklmnopqrstuvwxyz"
					      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
		if (binding_len == 0 || binding[binding_len] != ',')
			return fail(s, PL_SASL_MALFORMED_REQUEST, "bad channel binding name");
		p = binding + binding_len + 1;
	} else {
		return fail(s, PL_SASL_MALFORMED_REQUEST, "bad GS2 channel binding flag");
	}
	const char *authzid_text = NULL;
	size_t authzid_len = 0;
	if (p[0] == 'a' && p[1] == '=') {
		authzid_text = p + 2;
		authzid_len = strcspn(authzid_text, ",");
		p = authzid_text + authzid_len;
	}
	if (*p != ',')
		return fail(s, PL_SASL_MALFORMED_REQUEST, "bad GS2 header");
	const char *bare = p + 1;
	size_t gs2_len = (size_t)(bare - message);

	if (bare[0] == 'm' && bare[1] == '=')
		return fail(s, PL_SASL_MALFORMED_REQUEST, "mandatory SCRAM extension not supported");
	const char *cursor = bare;
	struct attribute user, nonce, extension;
	if (!next_attribute(&cursor, &user) || user.key != 'n' || user.len == 0 ||
	    !next_attribute(&cursor, &nonce) || nonce.key != 'r' || nonce.len == 0)
		return fail(s, PL_SASL_MALFORMED_REQUEST, "client-first needs n= then r=");
	while (cursor) {
		if (!next_attribute(&cursor, &extension))
			return fail(s, PL_SASL_MALFORMED_REQUEST, "bad attribute in client-first");
		if (extension.key == 'm')
			return fail(s, PL_SASL_MALFORMED_REQUEST, "mandatory SCRAM extension not supported");
	}
	if (!nonce_printable(nonce.value, nonce.len))
		return fail(s, PL_SASL_MALFORMED_REQUEST, "client nonce not printable");

	enum pl_sasl_result result = PL_SASL_FAILURE;
	char *authzid = NULL;
	char *decoded_user = decode_saslname(user.value, user.len);
	char *prepared_user = decoded_user ? pl_scram_saslprep(decoded_user) : NULL;
	free(decoded_user);
	if (!prepared_user || !*prepared_user) {
		free(prepared_user);
		fail(s, PL_SASL_MALFORMED_REQUEST, "bad username");
		goto out;
	}
	s->username = prepared_user;
	if (authzid_text && !(authzid = decode_saslname(authzid_text, authzid_len))) {
		fail(s, PL_SASL_MALFORMED_REQUEST, "bad authzid");
		goto out;
	}

	/* Channel binding (RFC 5802 section 6). */
	if (flag == 'n' && s->plus) {
		fail(s, PL_SASL_MALFORMED_REQUEST, "-PLUS mechanism without channel binding");
		goto out;
	}
	if (flag == 'y' && (s->options.plus_offered || s->plus)) {
		/* The client can bind but believes we cannot: someone removed
		 * the -PLUS mechanisms it should have seen. */
		fail(s, PL_SASL_NOT_AUTHORIZED, "channel binding downgrade detected");
		goto out;
	}
	if (flag == 'p') {
		if (!s->plus) {
			fail(s, PL_SASL_MALFORMED_REQUEST,
			     "channel binding requested on a non-PLUS mechanism");
			goto out;
		}
		s->binding_name = pl_strndup(binding, binding_len);
		uint8_t data[CHANNEL_BINDING_MAX];
		size_t data_len;
		if (!binding_data(s, s->binding_name, data, &data_len)) {
			fail(s, PL_SASL_MALFORMED_REQUEST, "unsupported channel binding type");
			goto out;
		}
	}

	if (!admit(s, authzid))
		goto out;
	s->gs2_header = pl_strndup(message, gs2_len);
	s->client_first_bare = pl_strdup(bare);
	char *server_nonce;
	if (s->test_server_nonce) {
		server_nonce = pl_strdup(s->test_server_nonce);
	} else {
		uint8_t random[SERVER_NONCE_BYTES];
		pl_random_bytes(random, sizeof(random));
		server_nonce = pl_base64_encode(random, sizeof(random));
	}
	s->nonce = pl_asprintf("%.*s%s", (int)nonce.len, nonce.value, server_nonce);
	free(server_nonce);
	char *salt = pl_base64_encode(s->credentials.salt, salt_length(&s->credentials));
	s->server_first = pl_asprintf("r=%s,s=%s,i=%u", s->nonce, salt, s->credentials.iterations);
	free(salt);
	pl_buf_puts(out, s->server_first);
	s->state = STATE_SCRAM_FINAL;
	result = PL_SASL_CONTINUE;
out:
	free(authzid);
	return result;
}

/* Checks ClientProof against StoredKey and, when it holds, writes the
 * server-final message. */
static enum pl_sasl_result scram_verify(struct pl_sasl *s, const char *auth_message,
					const uint8_t *proof, struct pl_buf *out)
{
	size_t digest_len = pl_scram_digest_len(s->hash);
	const struct pl_scram_credentials *c = &s->credentials;
	const uint8_t *stored = s->hash == PL_SCRAM_SHA1 ? c->stored_key_sha1 : c->stored_key_sha256;
	const uint8_t *server_key = s->hash == PL_SCRAM_SHA1 ? c->server_key_sha1
							     : c->server_key_sha256;
	size_t auth_len = strlen(auth_message);
	uint8_t signature[PL_SCRAM_MAX_DIGEST], client_key[PL_SCRAM_MAX_DIGEST],
		check[PL_SCRAM_MAX_DIGEST];
	/* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage), and the
	 * proof holds when H(ClientKey) is StoredKey. */
	bool computed = pl_scram_hmac(s->hash, stored, digest_len, auth_message, auth_len,
				      signature) == 0;
	for (size_t i = 0; i < digest_len; i++)
		client_key[i] = proof[i] ^ signature[i];
	computed = computed && pl_scram_hash(s->hash, client_key, digest_len, check) == 0;
	bool match = computed && !s->fake && key_present(stored, digest_len) &&
		     CRYPTO_memcmp(check, stored, digest_len) == 0;
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(signature, sizeof(signature));
	if (!match)
		return fail(s, PL_SASL_NOT_AUTHORIZED, "wrong password or no such user");
	if (s->disabled)
		return fail(s, PL_SASL_ACCOUNT_DISABLED, "account disabled");
	uint8_t server_signature[PL_SCRAM_MAX_DIGEST];
	if (pl_scram_hmac(s->hash, server_key, digest_len, auth_message, auth_len,
			  server_signature) != 0)
		return fail(s, PL_SASL_TEMPORARY_AUTH_FAILURE, "cannot compute the server signature");
	char *encoded = pl_base64_encode(server_signature, digest_len);
	pl_buf_printf(out, "v=%s", encoded);
	free(encoded);
	return succeed(s);
}

/* client-final-message = "c=" base64 "," "r=" nonce [ "," extensions ] "," "p=" base64 */
static enum pl_sasl_result scram_final(struct pl_sasl *s, const char *message, struct pl_buf *out)
{
	const char *cursor = message;
	struct attribute channel, nonce, attribute, proof = { 0 };
	if (!next_attribute(&cursor, &channel) || channel.key != 'c' ||
	    !next_attribute(&cursor, &nonce) || nonce.key != 'r')
		return fail(s, PL_SASL_MALFORMED_REQUEST, "client-final needs c= then r=");
	const char *proof_field = NULL;
	while (cursor) {
		const char *field = cursor;
		if (!next_attribute(&cursor, &attribute))
			return fail(s, PL_SASL_MALFORMED_REQUEST, "bad attribute in client-final");
		if (attribute.key == 'm')
			return fail(s, PL_SASL_MALFORMED_REQUEST, "mandatory SCRAM extension not supported");
		if (attribute.key == 'p') {
			if (proof_field)
				return fail(s, PL_SASL_MALFORMED_REQUEST, "two proofs in client-final");
			proof = attribute;
			proof_field = field;
		}
	}
	/* The proof signs everything before it, so it must come last. */
	if (!proof_field || proof.value + proof.len != message + strlen(message))
		return fail(s, PL_SASL_MALFORMED_REQUEST, "client-final must end with p=");
	size_t without_proof_len = (size_t)(proof_field - 1 - message);

	uint8_t *binding = NULL, *proof_bytes = NULL;
	size_t binding_len = 0, proof_len = 0;
	if (pl_base64_decode(channel.value, channel.len, &binding, &binding_len) != 0)
		return fail(s, PL_SASL_INCORRECT_ENCODING, "bad base64 in c=");
	if (pl_base64_decode(proof.value, proof.len, &proof_bytes, &proof_len) != 0) {
		free(binding);
		return fail(s, PL_SASL_INCORRECT_ENCODING, "bad base64 in p=");
	}
	enum pl_sasl_result result = PL_SASL_FAILURE;
	/* c= must repeat the GS2 header, followed for -PLUS by the binding
	 * data of this very connection (which a man in the middle cannot
	 * make equal to his own connection's). */
	struct pl_buf expected = { 0 };
	pl_buf_puts(&expected, s->gs2_header);
	if (s->binding_name) {
		uint8_t data[CHANNEL_BINDING_MAX];
		size_t data_len;
		if (!binding_data(s, s->binding_name, data, &data_len)) {
			fail(s, PL_SASL_NOT_AUTHORIZED, "channel binding data unavailable");
			goto out;
		}
		pl_buf_append(&expected, data, data_len);
	}
	if (binding_len != expected.len || CRYPTO_memcmp(binding, expected.data, binding_len) != 0) {
		fail(s, PL_SASL_NOT_AUTHORIZED, "channel binding mismatch");
		goto out;
	}
	if (nonce.len != strlen(s->nonce) || memcmp(nonce.value, s->nonce, nonce.len) != 0) {
		fail(s, PL_SASL_NOT_AUTHORIZED, "nonce mismatch");
		goto out;
	}
	if (proof_len != pl_scram_digest_len(s->hash)) {
		fail(s, PL_SASL_MALFORMED_REQUEST, "proof has the wrong length");
		goto out;
	}
	char *auth_message = pl_asprintf("%s,%s,%.*s", s->client_first_bare, s->server_first,
					 (int)without_proof_len, message);
	result = scram_verify(s, auth_message, proof_bytes, out);
	free(auth_message);
out:
	pl_buf_free(&expected);
	free(binding);
	free(proof_bytes);
	return result;
}

/* ---- steps ----------------------------------------------------------------------- */

static enum pl_sasl_result run_step(struct pl_sasl *s, const uint8_t *data, size_t len,
				    bool has_data, struct pl_buf *out)
{
	if (s->state == STATE_DONE)
		return fail(s, PL_SASL_MALFORMED_REQUEST, "the exchange is already over");
	if (len > PL_SASL_MAX_MESSAGE)
		return fail(s, PL_SASL_MALFORMED_REQUEST, "message too long");
	if (!data && len)
		return fail(s, PL_SASL_MALFORMED_REQUEST, "no data");
	if (!data)
		data = (const uint8_t *)"";
	if (s->state == STATE_START && !has_data && !s->asked_initial) {
		/* No initial response: RFC 6120 6.4.2 answers with an empty
		 * challenge and waits for the client's first message. Asked
		 * once; a second empty answer is taken as empty data. */
		s->asked_initial = true;
		return PL_SASL_CONTINUE;
	}
	if (s->kind == MECH_PLAIN)
		return plain_step(s, data, len);
	if (memchr(data, 0, len))
		return fail(s, PL_SASL_MALFORMED_REQUEST, "NUL in a SCRAM message");
	char *message = pl_strndup((const char *)data, len);
	enum pl_sasl_result result = s->state == STATE_START ? scram_first(s, message, out)
							      : scram_final(s, message, out);
	free(message);
	return result;
}

enum pl_sasl_result pl_sasl_step_data(struct pl_sasl *s, const uint8_t *data, size_t len,
				      bool has_data, struct pl_buf *out,
				      enum pl_sasl_condition *condition, const char **reason)
{
	enum pl_sasl_result result = run_step(s, data, len, has_data, out);
	if (result == PL_SASL_FAILURE) {
		if (condition)
			*condition = s->condition;
		if (reason)
			*reason = s->reason;
	}
	return result;
}

enum pl_sasl_result pl_sasl_step(struct pl_sasl *s, const uint8_t *data, size_t len,
				 struct pl_buf *out, enum pl_sasl_condition *condition,
				 const char **reason)
{
	return pl_sasl_step_data(s, data, len, len > 0, out, condition, reason);
}
