/* SCRAM's building blocks (RFC 5802, RFC 7677) on OpenSSL: SASLprep of
 * passwords through libidn's stringprep profile, PBKDF2 for the
 * SaltedPassword, HMAC and H for the keys and signatures, and the strict
 * base64 the SASL exchange is wrapped in. Everything here is pure and
 * thread-safe; the accounts code and the SASL mechanisms build on it. */
#include "scram.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stringprep.h>

size_t pl_scram_digest_len(enum pl_scram_hash hash)
{
	switch (hash) {
	case PL_SCRAM_SHA1:
		return 20;
	case PL_SCRAM_SHA256:
		return 32;
	}
	return 0;
}

static const EVP_MD *scram_md(enum pl_scram_hash hash)
{
	switch (hash) {
	case PL_SCRAM_SHA1:
		return EVP_sha1();
	case PL_SCRAM_SHA256:
		return EVP_sha256();
	}
	return NULL;
}

char *pl_scram_saslprep(const char *password)
{
	if (!password)
		return NULL;
	char *prepared = NULL;
	/* Flags 0 is the "query" profile: unassigned code points pass, so a
	 * password typed on a newer Unicode than libidn knows still works. */
	if (stringprep_profile(password, &prepared, "SASLprep", 0) != STRINGPREP_OK) {
		free(prepared);
		return NULL;
	}
	return prepared;
}

int pl_scram_salted_password(enum pl_scram_hash hash, const char *prepared_password,
			     const uint8_t *salt, size_t salt_len, uint32_t iterations,
			     uint8_t *out)
{
	const EVP_MD *md = scram_md(hash);
	if (!md || !prepared_password || !salt || !out || iterations == 0)
		return -EINVAL;
	size_t password_len = strlen(prepared_password);
	if (password_len > INT_MAX || salt_len > INT_MAX || iterations > INT_MAX)
		return -EINVAL;
	if (PKCS5_PBKDF2_HMAC(prepared_password, (int)password_len, salt, (int)salt_len,
			      (int)iterations, md, (int)pl_scram_digest_len(hash), out) != 1)
		return -EINVAL;
	return 0;
}

int pl_scram_hmac(enum pl_scram_hash hash, const void *key, size_t key_len,
		  const void *data, size_t data_len, uint8_t *out)
{
	const EVP_MD *md = scram_md(hash);
	if (!md || key_len > INT_MAX)
		return -EINVAL;
	unsigned int out_len = 0;
	/* OpenSSL rejects a NULL key even when its length is 0. */
	static const uint8_t empty;
	if (!HMAC(md, key ? key : &empty, (int)key_len, data ? data : &empty, data_len,
		  out, &out_len))
		return -EINVAL;
	return out_len == pl_scram_digest_len(hash) ? 0 : -EINVAL;
}

int pl_scram_hash(enum pl_scram_hash hash, const void *data, size_t len, uint8_t *out)
{
	const EVP_MD *md = scram_md(hash);
	if (!md)
		return -EINVAL;
	static const uint8_t empty;
	unsigned int out_len = 0;
	if (EVP_Digest(data ? data : &empty, len, out, &out_len, md, NULL) != 1)
		return -EINVAL;
	return out_len == pl_scram_digest_len(hash) ? 0 : -EINVAL;
}

int pl_scram_derive(enum pl_scram_hash hash, const char *prepared_password,
		    const uint8_t *salt, size_t salt_len, uint32_t iterations,
		    uint8_t *stored_key, uint8_t *server_key)
{
	uint8_t salted[PL_SCRAM_MAX_DIGEST], client_key[PL_SCRAM_MAX_DIGEST];
	size_t digest_len = pl_scram_digest_len(hash);
	int rc = pl_scram_salted_password(hash, prepared_password, salt, salt_len,
					  iterations, salted);
	if (rc == 0)
		rc = pl_scram_hmac(hash, salted, digest_len, "Client Key", 10, client_key);
	if (rc == 0)
		rc = pl_scram_hash(hash, client_key, digest_len, stored_key);
	if (rc == 0)
		rc = pl_scram_hmac(hash, salted, digest_len, "Server Key", 10, server_key);
	/* The SaltedPassword and ClientKey are password equivalents: nothing
	 * of them may linger on the stack. */
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	return rc;
}

/* ---- base64 ------------------------------------------------------------- */

static const char base64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *pl_base64_encode(const void *data, size_t len)
{
	const uint8_t *in = data;
	char *out = pl_malloc((len + 2) / 3 * 4 + 1);
	char *p = out;
	size_t i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t group = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*p++ = base64_alphabet[group >> 18];
		*p++ = base64_alphabet[(group >> 12) & 63];
		*p++ = base64_alphabet[(group >> 6) & 63];
		*p++ = base64_alphabet[group & 63];
	}
	if (len - i == 1) {
		uint32_t group = (uint32_t)in[i] << 16;
		*p++ = base64_alphabet[group >> 18];
		*p++ = base64_alphabet[(group >> 12) & 63];
		*p++ = '=';
		*p++ = '=';
	} else if (len - i == 2) {
		uint32_t group = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		*p++ = base64_alphabet[group >> 18];
		*p++ = base64_alphabet[(group >> 12) & 63];
		*p++ = base64_alphabet[(group >> 6) & 63];
		*p++ = '=';
	}
	*p = '\0';
	return out;
}

static int base64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int pl_base64_decode(const char *text, size_t text_len, uint8_t **out, size_t *out_len)
{
	if (!text || text_len % 4 != 0)
		return -EINVAL;
	size_t padding = 0;
	if (text_len >= 1 && text[text_len - 1] == '=')
		padding++;
	if (text_len >= 2 && text[text_len - 2] == '=')
		padding++;
	uint8_t *decoded = pl_malloc(text_len / 4 * 3 + 1);
	size_t n = 0;
	for (size_t i = 0; i < text_len; i += 4) {
		bool last = i + 4 == text_len;
		size_t pad_here = last ? padding : 0;
		uint32_t group = 0;
		for (size_t j = 0; j < 4; j++) {
			int v = j >= 4 - pad_here ? 0 : base64_value(text[i + j]);
			if (v < 0)
				goto invalid;
			group = group << 6 | (uint32_t)v;
		}
		/* Non-zero bits under the padding would let two texts decode to
		 * the same bytes; RFC 4648 section 3.5 lets us refuse them. */
		if ((pad_here == 1 && (group & 0xff)) || (pad_here == 2 && (group & 0xffff)))
			goto invalid;
		decoded[n++] = (uint8_t)(group >> 16);
		if (pad_here < 2)
			decoded[n++] = (uint8_t)(group >> 8);
		if (pad_here < 1)
			decoded[n++] = (uint8_t)group;
	}
	decoded[n] = '\0';
	*out = decoded;
	*out_len = n;
	return 0;
invalid:
	free(decoded);
	return -EINVAL;
}
