/* SCRAM against the published examples: the SHA-1 exchange of RFC 5802
 * section 5 and the SHA-256 one of RFC 7677 section 3 are replayed from
 * our derived keys (proof and server signature must match byte for byte),
 * SASLprep against RFC 4013 section 3, and base64 round trips plus the
 * malformed inputs SASL must refuse. */
#include "scram.h"
#include "../tap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct exchange {
	const char *name;
	enum pl_scram_hash hash;
	const char *password;
	const char *salt_base64;
	uint32_t iterations;
	const char *client_first_bare;
	const char *server_first;
	const char *client_final_without_proof;
	const char *proof_base64;
	const char *server_signature_base64;
};

static const struct exchange exchanges[] = {
	{ "RFC 5802 SHA-1", PL_SCRAM_SHA1, "pencil", "QSXCR+Q6sek8bf92", 4096,
	  "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
	  "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
	  "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
	  "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "rmF9pqV8S7suAoZWja4dJRkFsKQ=" },
	{ "RFC 7677 SHA-256", PL_SCRAM_SHA256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 4096,
	  "n=user,r=rOprNGfwEbeRWgbNEkqO",
	  "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
	  "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	  "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
	  "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
	  "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=" },
};

/* Plays the server's side of an exchange with the keys an account would
 * store, and the client's side from the password, and compares both with
 * the RFC's messages. */
static void replay(const struct exchange *x)
{
	size_t digest_len = pl_scram_digest_len(x->hash);
	uint8_t *salt;
	size_t salt_len;
	is_int(pl_base64_decode(x->salt_base64, strlen(x->salt_base64), &salt, &salt_len), 0,
	       "%s: salt decodes", x->name);

	char *prepared = pl_scram_saslprep(x->password);
	is_str(prepared, x->password, "%s: an ASCII password is its own SASLprep", x->name);

	uint8_t stored_key[PL_SCRAM_MAX_DIGEST], server_key[PL_SCRAM_MAX_DIGEST];
	is_int(pl_scram_derive(x->hash, prepared, salt, salt_len, x->iterations,
			       stored_key, server_key), 0, "%s: derive", x->name);

	/* Client side: ClientKey from the SaltedPassword. */
	uint8_t salted[PL_SCRAM_MAX_DIGEST], client_key[PL_SCRAM_MAX_DIGEST];
	uint8_t client_key_hash[PL_SCRAM_MAX_DIGEST];
	is_int(pl_scram_salted_password(x->hash, prepared, salt, salt_len, x->iterations, salted),
	       0, "%s: salted password", x->name);
	is_int(pl_scram_hmac(x->hash, salted, digest_len, "Client Key", 10, client_key), 0,
	       "%s: client key", x->name);
	is_int(pl_scram_hash(x->hash, client_key, digest_len, client_key_hash), 0,
	       "%s: H(ClientKey)", x->name);
	ok(memcmp(client_key_hash, stored_key, digest_len) == 0,
	   "%s: StoredKey = H(ClientKey)", x->name);

	char *auth_message = malloc(strlen(x->client_first_bare) + strlen(x->server_first) +
				    strlen(x->client_final_without_proof) + 3);
	sprintf(auth_message, "%s,%s,%s", x->client_first_bare, x->server_first,
		x->client_final_without_proof);

	uint8_t client_signature[PL_SCRAM_MAX_DIGEST], proof[PL_SCRAM_MAX_DIGEST];
	pl_scram_hmac(x->hash, stored_key, digest_len, auth_message, strlen(auth_message),
		      client_signature);
	for (size_t i = 0; i < digest_len; i++)
		proof[i] = client_key[i] ^ client_signature[i];
	char *proof_text = pl_base64_encode(proof, digest_len);
	is_str(proof_text, x->proof_base64, "%s: ClientProof matches the RFC", x->name);

	/* Server side: recover ClientKey from the RFC's proof and check it
	 * against StoredKey, as the SASL mechanism will. */
	uint8_t *rfc_proof;
	size_t rfc_proof_len;
	is_int(pl_base64_decode(x->proof_base64, strlen(x->proof_base64), &rfc_proof,
				&rfc_proof_len), 0, "%s: proof decodes", x->name);
	is_int(rfc_proof_len, digest_len, "%s: proof has the digest length", x->name);
	uint8_t recovered[PL_SCRAM_MAX_DIGEST], recovered_hash[PL_SCRAM_MAX_DIGEST];
	for (size_t i = 0; i < digest_len; i++)
		recovered[i] = rfc_proof[i] ^ client_signature[i];
	pl_scram_hash(x->hash, recovered, digest_len, recovered_hash);
	ok(memcmp(recovered_hash, stored_key, digest_len) == 0,
	   "%s: the server verifies the RFC's proof", x->name);

	uint8_t server_signature[PL_SCRAM_MAX_DIGEST];
	pl_scram_hmac(x->hash, server_key, digest_len, auth_message, strlen(auth_message),
		      server_signature);
	char *signature_text = pl_base64_encode(server_signature, digest_len);
	is_str(signature_text, x->server_signature_base64,
	       "%s: ServerSignature matches the RFC", x->name);

	free(signature_text);
	free(rfc_proof);
	free(proof_text);
	free(auth_message);
	free(prepared);
	free(salt);
}

static void check_saslprep(const char *input, const char *expected, const char *what)
{
	char *prepared = pl_scram_saslprep(input);
	is_str(prepared, expected, "SASLprep: %s", what);
	free(prepared);
}

static void check_base64(const char *plain, const char *encoded)
{
	char *text = pl_base64_encode(plain, strlen(plain));
	is_str(text, encoded, "base64 of \"%s\"", plain);
	free(text);
	uint8_t *bytes = NULL;
	size_t len = 0;
	is_int(pl_base64_decode(encoded, strlen(encoded), &bytes, &len), 0,
	       "\"%s\" decodes", encoded);
	ok(bytes && len == strlen(plain) && memcmp(bytes, plain, len) == 0,
	   "\"%s\" decodes to \"%s\"", encoded, plain);
	free(bytes);
}

static void check_bad_base64(const char *text, const char *why)
{
	uint8_t *bytes = NULL;
	size_t len = 0;
	is_int(pl_base64_decode(text, strlen(text), &bytes, &len), -EINVAL,
	       "base64 refused: %s", why);
	ok(bytes == NULL, "nothing allocated for a refused text (%s)", why);
}

int main(void)
{
	is_int(pl_scram_digest_len(PL_SCRAM_SHA1), 20, "SHA-1 digest length");
	is_int(pl_scram_digest_len(PL_SCRAM_SHA256), 32, "SHA-256 digest length");

	for (size_t i = 0; i < sizeof(exchanges) / sizeof(exchanges[0]); i++)
		replay(&exchanges[i]);

	/* RFC 4013 section 3, plus the no-op and the bidi rule. */
	check_saslprep("I\xC2\xADX", "IX", "SOFT HYPHEN mapped to nothing");
	check_saslprep("user", "user", "no transformation");
	check_saslprep("USER", "USER", "case preserved");
	check_saslprep("\xC2\xAA", "a", "output is NFKC");
	check_saslprep("\xE2\x85\xA8", "IX", "ROMAN NUMERAL NINE is NFKC IX");
	check_saslprep("a\xC2\xA0" "b", "a b", "non-ASCII space mapped to SPACE");
	check_saslprep("\x07", NULL, "ASCII control character prohibited");
	check_saslprep("\xD8\xA7" "1", NULL, "bidi: RandALCat first but not last");
	check_saslprep("", "", "empty stays empty");
	check_saslprep("\xff\xfe", NULL, "invalid UTF-8 refused");
	check_saslprep(NULL, NULL, "NULL refused");

	uint8_t out[PL_SCRAM_MAX_DIGEST];
	is_int(pl_scram_derive((enum pl_scram_hash)7, "x", (const uint8_t *)"s", 1, 4096, out, out),
	       -EINVAL, "an unknown hash is refused");
	is_int(pl_scram_salted_password(PL_SCRAM_SHA1, "x", (const uint8_t *)"s", 1, 0, out),
	       -EINVAL, "zero iterations are refused");

	/* RFC 4648 section 10. */
	check_base64("", "");
	check_base64("f", "Zg==");
	check_base64("fo", "Zm8=");
	check_base64("foo", "Zm9v");
	check_base64("foob", "Zm9vYg==");
	check_base64("fooba", "Zm9vYmE=");
	check_base64("foobar", "Zm9vYmFy");
	check_bad_base64("Zg=", "length not a multiple of 4");
	check_bad_base64("Zg", "padding missing");
	check_bad_base64("Zh==", "non-zero bits under the padding");
	check_bad_base64("Zm9v\n", "whitespace");
	check_bad_base64("Z===", "three padding characters");
	check_bad_base64("Zg==Zg==", "padding in the middle");
	check_bad_base64("Zm-v", "URL-safe alphabet");
	return done_testing();
}
