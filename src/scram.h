/* SCRAM key derivation (RFC 5802, RFC 7677): SaltedPassword =
 * PBKDF2(SASLprep(password), salt, i), ClientKey = HMAC(SaltedPassword,
 * "Client Key"), StoredKey = H(ClientKey), ServerKey = HMAC(SaltedPassword,
 * "Server Key"). Accounts store only StoredKey and ServerKey, never the
 * password. The SASL exchange itself arrives with the client streams. */
#ifndef PL_SCRAM_H
#define PL_SCRAM_H

#include <stddef.h>
#include <stdint.h>

enum pl_scram_hash {
	PL_SCRAM_SHA1 = 0,
	PL_SCRAM_SHA256 = 1,
};
#define PL_SCRAM_MAX_DIGEST 32
#define PL_SCRAM_MIN_ITERATIONS 4096

size_t pl_scram_digest_len(enum pl_scram_hash hash);

/* SASLprep (RFC 4013) of a password; NULL if it contains prohibited
 * characters. Caller frees. */
char *pl_scram_saslprep(const char *password);

/* Derives StoredKey and ServerKey (each pl_scram_digest_len bytes) from a
 * password that has already been SASLprepped. Returns 0 or -EINVAL. */
int pl_scram_derive(enum pl_scram_hash hash, const char *prepared_password,
		    const uint8_t *salt, size_t salt_len, uint32_t iterations,
		    uint8_t *stored_key, uint8_t *server_key);

/* The SaltedPassword alone (for test vectors and the SASL exchange). */
int pl_scram_salted_password(enum pl_scram_hash hash, const char *prepared_password,
			     const uint8_t *salt, size_t salt_len, uint32_t iterations,
			     uint8_t *out);

/* HMAC(key, data) and H(data) with the SCRAM hash; out receives
 * pl_scram_digest_len bytes. The SASL exchange needs both to check a
 * ClientProof against StoredKey and to sign with ServerKey. 0 or -EINVAL. */
int pl_scram_hmac(enum pl_scram_hash hash, const void *key, size_t key_len,
		  const void *data, size_t data_len, uint8_t *out);
int pl_scram_hash(enum pl_scram_hash hash, const void *data, size_t len, uint8_t *out);

/* Standard base64 (RFC 4648, with padding), as SASL carries it.
 * Encoding returns a NUL-terminated string the caller frees. Decoding is
 * strict (no whitespace, correct padding, zero pad bits, as RFC 6120
 * 6.4.2 asks) and returns 0 with a buffer the caller frees (NUL-terminated
 * for convenience, *out_len excludes the NUL), or -EINVAL. */
char *pl_base64_encode(const void *data, size_t len);
int pl_base64_decode(const char *text, size_t text_len, uint8_t **out, size_t *out_len);

#endif
