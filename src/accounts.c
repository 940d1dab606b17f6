/* User accounts on top of the store: the space "accounts.users" maps a
 * normalised bare JID (no trailing NUL) to a versioned value holding the
 * SCRAM credentials, never the password. Reads are short LMDB read
 * transactions on the network thread; changes are write sets for the
 * store's writer, and deleting a user also wipes every "user@host\0" key
 * of every other space in the same set, so a crash never leaves a user's
 * data without its account or an account half-deleted. Network thread only,
 * which is why the state below needs no locks. */
#include "accounts.h"
#include "hooks.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#define ACCOUNTS_SPACE "accounts.users"
#define ACCOUNT_FORMAT_VERSION 1

/* A submitted delete waiting for its commit. The list lets a password
 * change that arrives meanwhile see the user as gone: otherwise its put,
 * applied after the delete, would bring the account back without its data. */
struct pending_delete {
	char *bare_jid;
	void (*done)(void *arg, int status);
	void *arg;
	struct pending_delete *next;
};

static struct pl_store *accounts_store;
static struct pl_store_space *users_space;
static uint32_t default_iterations;
static struct pending_delete *pending_deletes;

int pl_accounts_init(struct pl_store *store, uint32_t iterations)
{
	if (!store || iterations < PL_SCRAM_MIN_ITERATIONS)
		return -EINVAL;
	struct pl_store_space *space = pl_store_space(store, ACCOUNTS_SPACE);
	if (!space)
		return -EIO;
	accounts_store = store;
	users_space = space;
	default_iterations = iterations;
	return 0;
}

uint32_t pl_accounts_default_iterations(void)
{
	return default_iterations;
}

/* Deletes still in flight keep their own copies and finish through the
 * store's completions, which pl_store_destroy still delivers. */
void pl_accounts_shutdown(void)
{
	accounts_store = NULL;
	users_space = NULL;
	default_iterations = 0;
}

int pl_accounts_make_credentials(const char *password, uint32_t iterations,
				 struct pl_scram_credentials *out)
{
	if (!password || strlen(password) > PL_ACCOUNT_MAX_PASSWORD ||
	    iterations < PL_SCRAM_MIN_ITERATIONS)
		return -EINVAL;
	char *prepared = pl_scram_saslprep(password);
	if (!prepared)
		return -EINVAL;
	size_t prepared_len = strlen(prepared);
	int rc = -EINVAL;
	if (prepared_len == 0 || prepared_len > PL_ACCOUNT_MAX_PASSWORD)
		goto out;
	memset(out, 0, sizeof(*out));
	pl_random_bytes(out->salt, sizeof(out->salt));
	out->salt_len = sizeof(out->salt);
	out->iterations = iterations;
	rc = pl_scram_derive(PL_SCRAM_SHA1, prepared, out->salt, sizeof(out->salt), iterations,
			     out->stored_key_sha1, out->server_key_sha1);
	if (rc == 0)
		rc = pl_scram_derive(PL_SCRAM_SHA256, prepared, out->salt, sizeof(out->salt),
				     iterations, out->stored_key_sha256, out->server_key_sha256);
out:
	OPENSSL_cleanse(prepared, prepared_len);
	free(prepared);
	return rc;
}

/* ---- value encoding -------------------------------------------------------- */

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
	for (int shift = 24; shift >= 0; shift -= 8)
		*p++ = (uint8_t)(v >> shift);
	return p;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
	for (int shift = 56; shift >= 0; shift -= 8)
		*p++ = (uint8_t)(v >> shift);
	return p;
}

static uint8_t *put_bytes(uint8_t *p, const void *data, size_t len)
{
	memcpy(p, data, len);
	return p + len;
}

static const uint8_t *get_u32(const uint8_t *p, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++)
		*v = *v << 8 | p[i];
	return p + 4;
}

static const uint8_t *get_u64(const uint8_t *p, uint64_t *v)
{
	*v = 0;
	for (int i = 0; i < 8; i++)
		*v = *v << 8 | p[i];
	return p + 8;
}

static const uint8_t *get_bytes(const uint8_t *p, void *out, size_t len)
{
	memcpy(out, p, len);
	return p + len;
}

size_t pl_account_encode(const struct pl_account *account, uint8_t *out, size_t out_len)
{
	if (out_len < PL_ACCOUNT_ENCODED_LEN)
		return 0;
	const struct pl_scram_credentials *c = &account->credentials;
	uint8_t *p = out;
	*p++ = ACCOUNT_FORMAT_VERSION;
	p = put_u32(p, c->iterations);
	p = put_u32(p, account->flags);
	p = put_u64(p, account->created);
	p = put_bytes(p, c->salt, sizeof(c->salt));
	p = put_bytes(p, c->stored_key_sha1, sizeof(c->stored_key_sha1));
	p = put_bytes(p, c->server_key_sha1, sizeof(c->server_key_sha1));
	p = put_bytes(p, c->stored_key_sha256, sizeof(c->stored_key_sha256));
	p = put_bytes(p, c->server_key_sha256, sizeof(c->server_key_sha256));
	return (size_t)(p - out);
}

int pl_account_decode(const void *value, size_t len, struct pl_account *out)
{
	const uint8_t *p = value;
	/* Version 1 has exactly one length; anything else is corruption or a
	 * newer format this binary must not half-read. */
	if (!p || len < 1 || p[0] != ACCOUNT_FORMAT_VERSION || len != PL_ACCOUNT_ENCODED_LEN)
		return -EINVAL;
	struct pl_account account;
	struct pl_scram_credentials *c = &account.credentials;
	p++;
	p = get_u32(p, &c->iterations);
	p = get_u32(p, &account.flags);
	p = get_u64(p, &account.created);
	p = get_bytes(p, c->salt, sizeof(c->salt));
	c->salt_len = sizeof(c->salt);
	p = get_bytes(p, c->stored_key_sha1, sizeof(c->stored_key_sha1));
	p = get_bytes(p, c->server_key_sha1, sizeof(c->server_key_sha1));
	p = get_bytes(p, c->stored_key_sha256, sizeof(c->stored_key_sha256));
	get_bytes(p, c->server_key_sha256, sizeof(c->server_key_sha256));
	/* Zero iterations would make every later PBKDF2 fail; refuse it here. */
	if (c->iterations == 0)
		return -EINVAL;
	*out = account;
	return 0;
}

/* ---- reads ------------------------------------------------------------------- */

/* A shape check only: normalising is the caller's job (jid.c). */
static bool bare_jid_acceptable(const char *bare_jid)
{
	if (!bare_jid)
		return false;
	size_t len = strlen(bare_jid);
	const char *at = strchr(bare_jid, '@');
	return len > 0 && len <= PL_ACCOUNT_MAX_JID && at && at != bare_jid && at[1] != '\0' &&
	       !strchr(at + 1, '@') && !strchr(bare_jid, '/');
}

int pl_accounts_get(const char *bare_jid, struct pl_account *out)
{
	if (!users_space || !bare_jid_acceptable(bare_jid))
		return users_space ? -ENOENT : -EIO;
	struct pl_store_read *r = pl_store_read_begin(accounts_store);
	if (!r)
		return -EIO;
	const void *value;
	size_t value_len;
	int rc = pl_store_get(r, users_space, bare_jid, strlen(bare_jid), &value, &value_len);
	if (rc == 0 && pl_account_decode(value, value_len, out) != 0) {
		pl_log(PL_LOG_ERROR, "accounts", "the stored account of %s is unreadable "
		       "(%zu bytes, format %d)", bare_jid, value_len,
		       value_len ? ((const uint8_t *)value)[0] : -1);
		rc = -EIO;
	}
	pl_store_read_end(r);
	return rc;
}

bool pl_accounts_exists(const char *bare_jid)
{
	struct pl_account account;
	return pl_accounts_get(bare_jid, &account) == 0;
}

struct list_state {
	const char *domain;
	size_t domain_len;
	char **names;
	size_t count, cap;
};

static int collect_name(void *arg, const void *key, size_t key_len,
			const void *value, size_t value_len)
{
	struct list_state *state = arg;
	if (state->domain) {
		/* Keys are "local@domain": match "@domain" at the end. */
		if (key_len < state->domain_len + 2)
			return 0;
		const char *tail = (const char *)key + key_len - state->domain_len;
		if (tail[-1] != '@' || memcmp(tail, state->domain, state->domain_len) != 0)
			return 0;
	}
	pl_grow((void **)&state->names, &state->cap, state->count + 1, sizeof(char *));
	state->names[state->count++] = pl_strndup(key, key_len);
	return 0;
}

int pl_accounts_list(const char *domain, void (*fn)(void *arg, const char *bare_jid), void *arg)
{
	if (!users_space)
		return -EIO;
	struct list_state state = { .domain = domain, .domain_len = domain ? strlen(domain) : 0 };
	struct pl_store_read *r = pl_store_read_begin(accounts_store);
	if (!r)
		return -EIO;
	int rc = pl_store_scan(r, users_space, NULL, 0, NULL, 0, collect_name, &state);
	pl_store_read_end(r);
	for (size_t i = 0; i < state.count; i++) {
		if (rc == 0)
			fn(arg, state.names[i]);
		free(state.names[i]);
	}
	free(state.names);
	return rc == 0 ? 0 : -EIO;
}

static int count_one(void *arg, const void *key, size_t key_len,
		     const void *value, size_t value_len)
{
	(*(uint64_t *)arg)++;
	return 0;
}

uint64_t pl_accounts_count(void)
{
	if (!users_space)
		return 0;
	struct pl_store_read *r = pl_store_read_begin(accounts_store);
	if (!r)
		return 0;
	uint64_t count = 0;
	int rc = pl_store_scan(r, users_space, NULL, 0, NULL, 0, count_one, &count);
	pl_store_read_end(r);
	return rc == 0 ? count : 0;
}

/* ---- changes ----------------------------------------------------------------- */

static bool delete_pending(const char *bare_jid)
{
	for (struct pending_delete *d = pending_deletes; d; d = d->next)
		if (strcmp(d->bare_jid, bare_jid) == 0)
			return true;
	return false;
}

/* Encodes and submits one account; the store reports to done. */
static void submit_account(const char *bare_jid, const struct pl_account *account, bool is_new,
			   void (*done)(void *arg, int status), void *arg)
{
	uint8_t value[PL_ACCOUNT_ENCODED_LEN];
	size_t value_len = pl_account_encode(account, value, sizeof(value));
	struct pl_store_write *w = pl_store_write_begin(accounts_store);
	if (is_new)
		pl_store_put_new(w, users_space, bare_jid, strlen(bare_jid), value, value_len);
	else
		pl_store_put(w, users_space, bare_jid, strlen(bare_jid), value, value_len);
	pl_store_write_submit(w, done, arg);
	OPENSSL_cleanse(value, sizeof(value));
}

int pl_accounts_create(const char *bare_jid, const char *password,
		       void (*done)(void *arg, int status), void *arg)
{
	if (!users_space || !bare_jid_acceptable(bare_jid))
		return -EINVAL;
	/* The early check spares two PBKDF2 runs for the obvious duplicate;
	 * put_new still settles a race between two creates. After a pending
	 * delete the writer applies the delete first, so the create may go. */
	if (!delete_pending(bare_jid)) {
		struct pl_account existing;
		int rc = pl_accounts_get(bare_jid, &existing);
		if (rc == 0)
			return -EEXIST;
		if (rc != -ENOENT)
			return rc;
	}
	struct pl_account account = { .created = (uint64_t)time(NULL), .flags = 0 };
	int rc = pl_accounts_make_credentials(password, default_iterations, &account.credentials);
	if (rc == 0)
		submit_account(bare_jid, &account, true, done, arg);
	OPENSSL_cleanse(&account, sizeof(account));
	return rc;
}

int pl_accounts_set_password(const char *bare_jid, const char *password,
			     void (*done)(void *arg, int status), void *arg)
{
	if (!users_space || !bare_jid_acceptable(bare_jid))
		return -EINVAL;
	if (delete_pending(bare_jid))
		return -ENOENT;
	struct pl_account account;
	int rc = pl_accounts_get(bare_jid, &account);
	if (rc != 0)
		return rc;
	/* Creation time and flags survive; the salt is new with the keys. */
	rc = pl_accounts_make_credentials(password, default_iterations, &account.credentials);
	if (rc == 0) {
		submit_account(bare_jid, &account, false, done, arg);
		/* What was granted with the old password goes with it (FAST tokens). */
		pl_hooks_fire("user-password-changed", (void *)bare_jid);
	}
	OPENSSL_cleanse(&account, sizeof(account));
	return rc;
}

static void delete_done(void *arg, int status)
{
	struct pending_delete *d = arg;
	for (struct pending_delete **link = &pending_deletes; *link; link = &(*link)->next) {
		if (*link == d) {
			*link = d->next;
			break;
		}
	}
	if (status == 0) {
		pl_log(PL_LOG_INFO, "accounts", "deleted %s and all its data", d->bare_jid);
		pl_hooks_fire("user-deleted", d->bare_jid);
	} else {
		pl_log(PL_LOG_WARN, "accounts", "deleting %s failed: %s", d->bare_jid,
		       strerror(-status));
	}
	if (d->done)
		d->done(d->arg, status);
	free(d->bare_jid);
	free(d);
}

int pl_accounts_delete(const char *bare_jid,
		       void (*done)(void *arg, int status), void *arg)
{
	if (!users_space || !bare_jid_acceptable(bare_jid))
		return -EINVAL;
	if (delete_pending(bare_jid))
		return -ENOENT;
	struct pl_account account;
	int rc = pl_accounts_get(bare_jid, &account);
	if (rc != 0)
		return rc;
	OPENSSL_cleanse(&account, sizeof(account));
	/* Modules still see the account's data here (its contacts must learn
	 * that the subscriptions end); "user-deleted" follows once it is gone. */
	pl_hooks_fire("user-deleting", (void *)bare_jid);

	size_t jid_len = strlen(bare_jid);
	struct pl_store_write *w = pl_store_write_begin(accounts_store);
	pl_store_del(w, users_space, bare_jid, jid_len);
	/* The prefix includes the NUL so that deleting "al@host" leaves the
	 * data of "al@host.example" alone. */
	size_t space_count = pl_store_space_count(accounts_store);
	for (size_t i = 0; i < space_count; i++) {
		struct pl_store_space *space = pl_store_space_at(accounts_store, i);
		if (space != users_space)
			pl_store_del_prefix(w, space, bare_jid, jid_len + 1);
	}
	struct pending_delete *d = pl_calloc(1, sizeof(*d));
	d->bare_jid = pl_strdup(bare_jid);
	d->done = done;
	d->arg = arg;
	d->next = pending_deletes;
	pending_deletes = d;
	pl_store_write_submit(w, delete_done, d);
	return 0;
}
