/* User accounts, stored in the key space "accounts.users" keyed by the
 * normalised bare JID. The value has a versioned header and the SCRAM
 * credentials for SHA-1 and SHA-256 (one salt, one iteration count),
 * never the plain password. Creating, changing and deleting go through
 * the store's writer; deleting also removes every key of the user in every
 * space (keys of per-user data start with "user@host\0"), in one write set,
 * and fires the "user-deleted" hook. */
#ifndef PL_ACCOUNTS_H
#define PL_ACCOUNTS_H

#include <stdbool.h>
#include <stdint.h>

#include "scram.h"
#include "store/store.h"

#define PL_ACCOUNT_SALT_LEN 16

struct pl_scram_credentials {
	uint8_t salt[PL_ACCOUNT_SALT_LEN];
	/* Bytes of salt in use: PL_ACCOUNT_SALT_LEN for every stored account;
	 * shorter only for the RFC test vectors. 0 reads as the full length. */
	uint8_t salt_len;
	uint32_t iterations;
	uint8_t stored_key_sha1[20];
	uint8_t server_key_sha1[20];
	uint8_t stored_key_sha256[32];
	uint8_t server_key_sha256[32];
};

struct pl_account {
	struct pl_scram_credentials credentials;
	uint64_t created;   /* unix seconds */
	uint32_t flags;     /* PL_ACCOUNT_DISABLED, ... */
};
#define PL_ACCOUNT_DISABLED 0x1

/* Opens the accounts space. iterations >= PL_SCRAM_MIN_ITERATIONS. */
int pl_accounts_init(struct pl_store *store, uint32_t iterations);
void pl_accounts_shutdown(void);
/* The PBKDF2 iteration count new accounts get (0 before init): SASL shows
 * it to unknown users so that i= does not tell accounts apart. */
uint32_t pl_accounts_default_iterations(void);

/* Fresh salt, both derivations. Returns 0 or -EINVAL (bad password). */
int pl_accounts_make_credentials(const char *password, uint32_t iterations,
				 struct pl_scram_credentials *out);

/* Serialisation of struct pl_account to the stored value: byte 0 is the
 * format version (1), then iterations (u32 BE), flags (u32 BE), created
 * (u64 BE), the salt, the SHA-1 StoredKey and ServerKey, the SHA-256
 * StoredKey and ServerKey. encode returns PL_ACCOUNT_ENCODED_LEN, or 0 if
 * out_len is too small; decode returns 0, or -EINVAL for an unknown
 * version or a value of the wrong length. */
#define PL_ACCOUNT_ENCODED_LEN (1 + 4 + 4 + 8 + PL_ACCOUNT_SALT_LEN + 20 + 20 + 32 + 32)
size_t pl_account_encode(const struct pl_account *account, uint8_t *out, size_t out_len);
int pl_account_decode(const void *value, size_t len, struct pl_account *out);

/* Passwords: non-empty after SASLprep and at most this many bytes (before
 * and after), else -EINVAL. */
#define PL_ACCOUNT_MAX_PASSWORD 1023
/* Bare JIDs longer than this are refused (-EINVAL): keys of per-user data
 * ("user@host\0" + more) must stay under LMDB's 511-byte key limit. */
#define PL_ACCOUNT_MAX_JID 255

/* Changes (network thread). `bare_jid` must be normalised and have a
 * localpart. A return of 0 means the change was submitted: `done` (may be
 * NULL) runs later on the store's event loop thread with the final status,
 * 0 once durable, or -EEXIST (create lost a race with another create of
 * the same user), -ENOSPC, -EIO. A negative return means the change was
 * refused at once and `done` is never called: -EINVAL (bad JID or
 * password, or accounts not initialised), -EEXIST (create of an existing
 * user), -ENOENT (passwd/delete of a missing user, or of one whose
 * deletion is still in flight), -EIO (the read failed).
 * Delete removes the account and every "user@host\0"-prefixed key of every
 * open space in one write set, and once that is durable fires the hook
 * "user-deleted" (data: the bare JID as const char *) before `done`.
 * "user-deleting" (same data) fires before the data goes. */
int pl_accounts_create(const char *bare_jid, const char *password,
		       void (*done)(void *arg, int status), void *arg);
int pl_accounts_set_password(const char *bare_jid, const char *password,
			     void (*done)(void *arg, int status), void *arg);
int pl_accounts_delete(const char *bare_jid,
		       void (*done)(void *arg, int status), void *arg);

/* Reads (network thread). 0, -ENOENT, or -EIO. */
int pl_accounts_get(const char *bare_jid, struct pl_account *out);
bool pl_accounts_exists(const char *bare_jid);
/* Calls fn for each account (optionally only those of `domain`), sorted
 * bytewise. The names are collected first and fn runs outside the read
 * transaction, so fn may call back into accounts. 0 or -EIO. */
int pl_accounts_list(const char *domain, void (*fn)(void *arg, const char *bare_jid), void *arg);
/* Counts by a scan (O(n)); 0 on error. */
uint64_t pl_accounts_count(void);

#endif
