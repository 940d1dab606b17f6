/* Accounts against a real store in a temporary directory: create, read
 * back and re-derive the keys, duplicates (early and racing), password
 * changes, listing and counting, and deletion that takes the user's data
 * in other spaces with it (and only that user's) and fires "user-deleted".
 * Also the value encoding and its refusal of malformed values. */
#include "accounts.h"
#include "hooks.h"
#include "util.h"
#include "../tap.h"

#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

static struct event_base *base;
static struct pl_store *store;

struct completion {
	bool fired;
	int status;
	int calls;
};

static void on_done(void *arg, int status)
{
	struct completion *c = arg;
	c->fired = true;
	c->status = status;
	c->calls++;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Runs the loop until the completion arrives or ten seconds pass; a
 * ticking timer keeps EVLOOP_ONCE from spinning on an idle base. */
static bool wait_for(struct completion *c)
{
	int64_t deadline = pl_now_ms() + 10000;
	while (!c->fired && pl_now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	return c->fired;
}

static char deleted_jid[256];
static int deleted_count;

static int on_user_deleted(struct pl_event *event, void *userdata)
{
	snprintf(deleted_jid, sizeof(deleted_jid), "%s", (const char *)event->data);
	deleted_count++;
	return PL_CONTINUE;
}

static bool key_exists(struct pl_store_space *space, const void *key, size_t key_len)
{
	struct pl_store_read *r = pl_store_read_begin(store);
	const void *value;
	size_t value_len;
	int rc = pl_store_get(r, space, key, key_len, &value, &value_len);
	pl_store_read_end(r);
	return rc == 0;
}

/* The stored keys must be what an independent derivation from the
 * password and the stored salt gives. */
static bool keys_match(const struct pl_scram_credentials *c, const char *password)
{
	uint8_t stored1[20], server1[20], stored256[32], server256[32];
	char *prepared = pl_scram_saslprep(password);
	bool same = prepared &&
		    pl_scram_derive(PL_SCRAM_SHA1, prepared, c->salt, sizeof(c->salt), c->iterations,
				    stored1, server1) == 0 &&
		    pl_scram_derive(PL_SCRAM_SHA256, prepared, c->salt, sizeof(c->salt),
				    c->iterations, stored256, server256) == 0 &&
		    memcmp(stored1, c->stored_key_sha1, 20) == 0 &&
		    memcmp(server1, c->server_key_sha1, 20) == 0 &&
		    memcmp(stored256, c->stored_key_sha256, 32) == 0 &&
		    memcmp(server256, c->server_key_sha256, 32) == 0;
	free(prepared);
	return same;
}

static struct pl_buf listed;

static void on_listed(void *arg, const char *bare_jid)
{
	pl_buf_printf(&listed, "%s;", bare_jid);
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path);
}

static void test_encoding(void)
{
	struct pl_account account = { .created = 0x0102030405060708ULL, .flags = PL_ACCOUNT_DISABLED };
	account.credentials.iterations = 4096;
	for (size_t i = 0; i < sizeof(account.credentials.salt); i++)
		account.credentials.salt[i] = (uint8_t)i;
	account.credentials.salt_len = sizeof(account.credentials.salt);
	memset(account.credentials.stored_key_sha1, 0x11, 20);
	memset(account.credentials.server_key_sha1, 0x22, 20);
	memset(account.credentials.stored_key_sha256, 0x33, 32);
	memset(account.credentials.server_key_sha256, 0x44, 32);

	uint8_t value[PL_ACCOUNT_ENCODED_LEN + 8];
	is_int(pl_account_encode(&account, value, PL_ACCOUNT_ENCODED_LEN - 1), 0,
	       "encode refuses a short buffer");
	size_t len = pl_account_encode(&account, value, sizeof(value));
	is_int(len, PL_ACCOUNT_ENCODED_LEN, "encoded length");
	is_int(value[0], 1, "format version 1 first");
	ok(memcmp(value + 1, "\x00\x00\x10\x00" "\x00\x00\x00\x01"
			     "\x01\x02\x03\x04\x05\x06\x07\x08", 16) == 0,
	   "iterations, flags, created big-endian");

	struct pl_account back;
	memset(&back, 0xff, sizeof(back));
	is_int(pl_account_decode(value, len, &back), 0, "decode");
	/* Field by field: the struct has padding that decode need not write. */
	const struct pl_scram_credentials *a = &account.credentials, *b = &back.credentials;
	ok(back.created == account.created && back.flags == account.flags &&
		   b->iterations == a->iterations && b->salt_len == a->salt_len &&
		   memcmp(b->salt, a->salt, sizeof(a->salt)) == 0 &&
		   memcmp(b->stored_key_sha1, a->stored_key_sha1, 20) == 0 &&
		   memcmp(b->server_key_sha1, a->server_key_sha1, 20) == 0 &&
		   memcmp(b->stored_key_sha256, a->stored_key_sha256, 32) == 0 &&
		   memcmp(b->server_key_sha256, a->server_key_sha256, 32) == 0,
	   "round trip keeps every field");

	is_int(pl_account_decode(value, 0, &back), -EINVAL, "an empty value is refused");
	is_int(pl_account_decode(value, len - 1, &back), -EINVAL, "a short value is refused");
	is_int(pl_account_decode(value, len + 1, &back), -EINVAL, "a long value is refused");
	value[0] = 2;
	is_int(pl_account_decode(value, len, &back), -EINVAL, "an unknown version is refused");
	value[0] = 0;
	is_int(pl_account_decode(value, len, &back), -EINVAL, "version 0 is refused");
	value[0] = 1;
	memset(value + 1, 0, 4);
	is_int(pl_account_decode(value, len, &back), -EINVAL, "zero iterations are refused");
	is_int(pl_account_decode("garbage", 7, &back), -EINVAL, "garbage is refused");
}

static void test_credentials(void)
{
	struct pl_scram_credentials c;
	is_int(pl_accounts_make_credentials("", 4096, &c), -EINVAL, "empty password refused");
	is_int(pl_accounts_make_credentials("\xC2\xAD", 4096, &c), -EINVAL,
	       "a password that SASLprep maps to nothing is refused");
	is_int(pl_accounts_make_credentials("bell\x07", 4096, &c), -EINVAL,
	       "a prohibited character is refused");
	is_int(pl_accounts_make_credentials("secret", 100, &c), -EINVAL,
	       "too few iterations refused");
	char long_password[PL_ACCOUNT_MAX_PASSWORD + 2];
	memset(long_password, 'a', sizeof(long_password) - 1);
	long_password[sizeof(long_password) - 1] = '\0';
	is_int(pl_accounts_make_credentials(long_password, 4096, &c), -EINVAL,
	       "1024-byte password refused");
	long_password[PL_ACCOUNT_MAX_PASSWORD] = '\0';
	is_int(pl_accounts_make_credentials(long_password, 4096, &c), 0,
	       "1023-byte password accepted");
	ok(keys_match(&c, long_password), "its keys derive again");

	struct pl_scram_credentials other;
	pl_accounts_make_credentials(long_password, 4096, &other);
	ok(memcmp(c.salt, other.salt, sizeof(c.salt)) != 0, "each credential gets a fresh salt");
}

int main(void)
{
	test_encoding();
	test_credentials();

	char dir[] = "/tmp/parley-test-accounts-XXXXXX";
	if (!mkdtemp(dir)) {
		ok(0, "mkdtemp");
		return done_testing();
	}
	char *store_path = pl_asprintf("%s/store", dir);

	evthread_use_pthreads();
	base = event_base_new();
	struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval tick_interval = { 0, 20000 };
	event_add(tick, &tick_interval);

	struct pl_store_config config = {
		.path = store_path,
		.map_size = 8u << 20,
		.max_map_size = 64u << 20,
		.durability = PL_DURABILITY_NONE,
		.max_spaces = 16,
	};
	char *error = NULL;
	int rc = pl_store_create(base, &config, &store, &error);
	is_int(rc, 0, "store opens");
	if (rc) {
		diag("%s", error ? error : "(no message)");
		free(error);
		return done_testing();
	}

	is_int(pl_accounts_create("alice@localhost", "secret", on_done, NULL), -EINVAL,
	       "create before init is refused");
	is_int(pl_accounts_init(store, 1000), -EINVAL, "init refuses too few iterations");
	is_int(pl_accounts_init(store, 4096), 0, "init");

	/* Per-user data of three users in another space, before any account. */
	struct pl_store_space *items = pl_store_space(store, "test.items");
	ok(items != NULL, "a second space opens");
	struct completion put_items = { 0 };
	struct pl_store_write *w = pl_store_write_begin(store);
	pl_store_put(w, items, "alice@localhost\0x", 17, "1", 1);
	pl_store_put(w, items, "alice@localhost\0y", 17, "2", 1);
	pl_store_put(w, items, "bob@localhost\0x", 15, "3", 1);
	pl_store_put(w, items, "alice@localhost.example\0x", 25, "4", 1);
	pl_store_write_submit(w, on_done, &put_items);
	ok(wait_for(&put_items) && put_items.status == 0, "per-user items stored");

	/* Create and read back. */
	struct completion created = { 0 };
	uint64_t before = (uint64_t)time(NULL);
	is_int(pl_accounts_create("alice@localhost", "secret", on_done, &created), 0,
	       "create submitted");
	ok(wait_for(&created), "create completes");
	is_int(created.status, 0, "create succeeds");
	ok(pl_accounts_exists("alice@localhost"), "alice exists");
	ok(!pl_accounts_exists("bob@localhost"), "bob does not");
	struct pl_account alice;
	is_int(pl_accounts_get("alice@localhost", &alice), 0, "get alice");
	is_int(pl_accounts_get("bob@localhost", &alice), -ENOENT, "get bob: -ENOENT");
	pl_accounts_get("alice@localhost", &alice);
	is_int(alice.credentials.iterations, 4096, "configured iterations stored");
	is_int(alice.flags, 0, "no flags");
	ok(alice.created >= before && alice.created <= (uint64_t)time(NULL), "creation time");
	ok(keys_match(&alice.credentials, "secret"), "stored keys derive from the password");
	ok(!keys_match(&alice.credentials, "Secret"), "and not from another");

	/* Duplicates: the early check, then a race only put_new can settle. */
	struct completion duplicate = { 0 };
	is_int(pl_accounts_create("alice@localhost", "other", on_done, &duplicate), -EEXIST,
	       "duplicate create refused at once");
	ok(!duplicate.fired, "and done is not called");
	/* The writer thread may commit the first create before the second
	 * one's early check runs; then the second is refused at once rather
	 * than by put_new. Either way exactly one password wins. */
	struct completion race1 = { 0 }, race2 = { 0 };
	is_int(pl_accounts_create("carol@localhost", "one", on_done, &race1), 0, "race: first");
	int second = pl_accounts_create("carol@localhost", "two", on_done, &race2);
	ok(second == 0 || second == -EEXIST, "race: second submitted or refused at once");
	ok(wait_for(&race1) && (second != 0 || wait_for(&race2)), "race: completions arrive");
	is_int(race1.status, 0, "race: the first wins");
	if (second == 0)
		is_int(race2.status, -EEXIST, "race: put_new refuses the second");
	else
		ok(!race2.fired, "race: no completion for the refused second");
	struct pl_account carol;
	pl_accounts_get("carol@localhost", &carol);
	ok(keys_match(&carol.credentials, "one"), "race: the winner's password is stored");

	/* Refusals. */
	is_int(pl_accounts_create("nolocalpart", "pw", on_done, NULL), -EINVAL, "no localpart");
	is_int(pl_accounts_create("@localhost", "pw", on_done, NULL), -EINVAL, "empty localpart");
	is_int(pl_accounts_create("eve@localhost/res", "pw", on_done, NULL), -EINVAL,
	       "a resource is refused");
	is_int(pl_accounts_create("eve@localhost", "", on_done, NULL), -EINVAL, "empty password");
	is_int(pl_accounts_create("eve@localhost", "a\x07", on_done, NULL), -EINVAL,
	       "prohibited password");
	ok(!pl_accounts_exists("eve@localhost"), "nothing created by refusals");

	/* Password change. */
	struct completion missing = { 0 };
	is_int(pl_accounts_set_password("nobody@localhost", "pw", on_done, &missing), -ENOENT,
	       "set_password on a missing user: -ENOENT at once");
	ok(!missing.fired, "and done is not called");
	is_int(pl_accounts_set_password("alice@localhost", "", on_done, NULL), -EINVAL,
	       "set_password refuses an empty password");
	struct completion changed = { 0 };
	is_int(pl_accounts_set_password("alice@localhost", "n\xC2\xAD" "ew", on_done, &changed), 0,
	       "set_password submitted");
	ok(wait_for(&changed) && changed.status == 0, "set_password succeeds");
	struct pl_account alice2;
	pl_accounts_get("alice@localhost", &alice2);
	ok(memcmp(alice2.credentials.stored_key_sha256, alice.credentials.stored_key_sha256, 32) != 0,
	   "keys changed");
	ok(memcmp(alice2.credentials.salt, alice.credentials.salt, PL_ACCOUNT_SALT_LEN) != 0,
	   "salt changed");
	ok(keys_match(&alice2.credentials, "new"), "new keys derive from the SASLprepped password");
	is_int(alice2.created, alice.created, "creation time kept");

	/* Listing and counting. */
	struct completion more1 = { 0 }, more2 = { 0 };
	pl_accounts_create("bob@localhost", "pw", on_done, &more1);
	pl_accounts_create("dave@example.org", "pw", on_done, &more2);
	ok(wait_for(&more1) && wait_for(&more2) && more1.status == 0 && more2.status == 0,
	   "two more accounts");
	is_int(pl_accounts_count(), 4, "count");
	is_int(pl_accounts_list(NULL, on_listed, NULL), 0, "list all");
	is_str(listed.data, "alice@localhost;bob@localhost;carol@localhost;dave@example.org;",
	       "all accounts, sorted");
	pl_buf_reset(&listed);
	pl_accounts_list("localhost", on_listed, NULL);
	is_str(listed.data, "alice@localhost;bob@localhost;carol@localhost;",
	       "the accounts of one domain");
	pl_buf_reset(&listed);
	pl_accounts_list("host", on_listed, NULL);
	ok(listed.len == 0, "a domain suffix is not a domain");
	pl_buf_reset(&listed);

	/* Deletion. */
	static char fake_module;
	pl_hook((struct pl_module *)&fake_module, "user-deleted", on_user_deleted, NULL, 0);
	struct completion deleted = { 0 };
	is_int(pl_accounts_delete("alice@localhost", on_done, &deleted), 0, "delete submitted");
	is_int(pl_accounts_set_password("alice@localhost", "again", on_done, NULL), -ENOENT,
	       "set_password while the delete is in flight: -ENOENT");
	is_int(pl_accounts_delete("alice@localhost", on_done, NULL), -ENOENT,
	       "a second delete in flight: -ENOENT");
	is_int(deleted_count, 0, "the hook waits for the commit");
	ok(wait_for(&deleted), "delete completes");
	is_int(deleted.status, 0, "delete succeeds");
	is_int(deleted.calls, 1, "done once");
	is_int(deleted_count, 1, "user-deleted fired once");
	is_str(deleted_jid, "alice@localhost", "with the bare JID");
	ok(!pl_accounts_exists("alice@localhost"), "alice is gone");
	ok(!key_exists(items, "alice@localhost\0x", 17), "her items are gone");
	ok(!key_exists(items, "alice@localhost\0y", 17), "all of them");
	ok(key_exists(items, "bob@localhost\0x", 15), "bob's items stay");
	ok(key_exists(items, "alice@localhost.example\0x", 25),
	   "a longer JID with the same start keeps its items");
	is_int(pl_accounts_count(), 3, "count after delete");
	is_int(pl_accounts_delete("alice@localhost", on_done, NULL), -ENOENT,
	       "deleting a missing user: -ENOENT");

	/* Create again after delete: a fresh account. */
	struct completion again = { 0 };
	is_int(pl_accounts_create("alice@localhost", "back", on_done, &again), 0,
	       "re-create after delete");
	ok(wait_for(&again) && again.status == 0, "re-create succeeds");

	/* Delete then create in the same loop turn: the writer applies them
	 * in order, so the new account survives. */
	struct completion gone = { 0 }, reborn = { 0 };
	is_int(pl_accounts_delete("bob@localhost", on_done, &gone), 0, "delete bob");
	is_int(pl_accounts_create("bob@localhost", "reborn", on_done, &reborn), 0,
	       "create bob while his delete is in flight");
	ok(wait_for(&gone) && wait_for(&reborn) && gone.status == 0 && reborn.status == 0,
	   "both complete");
	struct pl_account bob;
	ok(pl_accounts_get("bob@localhost", &bob) == 0 && keys_match(&bob.credentials, "reborn"),
	   "bob has his new account");

	pl_accounts_shutdown();
	is_int(pl_accounts_create("zed@localhost", "pw", on_done, NULL), -EINVAL,
	       "create after shutdown is refused");
	pl_store_destroy(store);
	event_free(tick);
	event_base_free(base);
	pl_hooks_shutdown();
	pl_buf_free(&listed);
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(store_path);
	return done_testing();
}
