/* The store with a real LMDB environment in a temporary directory: puts,
 * gets, put_new conflicts isolated to their own set, prefix deletes and
 * scans, completion order, the exclusive lock, the schema check, map
 * growth, a full map that fails cleanly, backups, and pending writes
 * committed at destroy. */
#include "store/store.h"
#include "util.h"
#include "../tap.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct event_base *base;
static int statuses[4096];
static int completed;

static void record(void *arg, int status)
{
	statuses[(intptr_t)arg] = status;
	completed++;
}

static bool run_until(int target)
{
	int64_t deadline = pl_now_ms() + 10000;
	while (completed < target && pl_now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	return completed >= target;
}

static struct pl_store *open_store(const char *dir, uint64_t map, uint64_t max, char **error)
{
	struct pl_store_config config = { .path = dir, .map_size = map, .max_map_size = max,
					  .durability = PL_DURABILITY_NONE, .max_spaces = 16 };
	struct pl_store *store = NULL;
	if (pl_store_create(base, &config, &store, error) != 0)
		return NULL;
	return store;
}

static int get_string(struct pl_store *store, struct pl_store_space *space, const char *key,
		      char *out, size_t out_len)
{
	struct pl_store_read *r = pl_store_read_begin(store);
	const void *value;
	size_t len;
	int rc = pl_store_get(r, space, key, strlen(key), &value, &len);
	if (rc == 0)
		snprintf(out, out_len, "%.*s", (int)len, (const char *)value);
	pl_store_read_end(r);
	return rc;
}

static void put_string(struct pl_store_write *w, struct pl_store_space *space, const char *key,
		       const char *value)
{
	pl_store_put(w, space, key, strlen(key), value, strlen(value));
}

static int collect(void *arg, const void *key, size_t key_len, const void *value, size_t len)
{
	struct pl_buf *b = arg;
	pl_buf_append(b, key, key_len);
	pl_buf_puts(b, ";");
	return 0;
}

static void make_dir(char *template)
{
	if (!mkdtemp(template))
		abort();
}

int main(void)
{
	evthread_use_pthreads();
	base = event_base_new();
	char dir[] = "/tmp/parley-store-test-XXXXXX";
	make_dir(dir);
	char *error = NULL;
	struct pl_store *store = open_store(dir, 1 << 20, 64 << 20, &error);
	ok(store != NULL, "the store opens in a new directory");
	struct pl_store_space *items = pl_store_space(store, "test.items");
	ok(items && pl_store_space(store, "test.items") == items, "a space is opened once");
	is_str(pl_store_space_name(items), "test.items", "the space has its name");

	struct pl_store_write *w = pl_store_write_begin(store);
	put_string(w, items, "alice@localhost\0a", "1");
	put_string(w, items, "k1", "v1");
	put_string(w, items, "k2", "v2");
	pl_store_write_submit(w, record, (void *)0);
	ok(run_until(1) && statuses[0] == 0, "a write set commits and completes on the loop");
	char value[64];
	ok(get_string(store, items, "k1", value, sizeof(value)) == 0 && strcmp(value, "v1") == 0,
	   "the value reads back");
	is_int(get_string(store, items, "missing", value, sizeof(value)), -ENOENT,
	       "a missing key is -ENOENT");

	/* Two sets in one batch: the conflicting one fails alone. */
	completed = 0;
	w = pl_store_write_begin(store);
	put_string(w, items, "k3", "v3");
	pl_store_put_new(w, items, "k1", 2, "other", 5);
	pl_store_write_submit(w, record, (void *)1);
	w = pl_store_write_begin(store);
	put_string(w, items, "k4", "v4");
	pl_store_del(w, items, "k2", 2);
	pl_store_del(w, items, "never-there", 11);
	pl_store_write_submit(w, record, (void *)2);
	ok(run_until(2), "both sets complete");
	is_int(statuses[1], -EEXIST, "put_new on an existing key fails the set with -EEXIST");
	is_int(statuses[2], 0, "the other set of the batch commits");
	is_int(get_string(store, items, "k3", value, sizeof(value)), -ENOENT,
	       "the failed set's other puts are not applied");
	ok(get_string(store, items, "k1", value, sizeof(value)) == 0 && strcmp(value, "v1") == 0,
	   "the existing value is untouched");
	ok(get_string(store, items, "k4", value, sizeof(value)) == 0,
	   "the successful set's put is applied");
	is_int(get_string(store, items, "k2", value, sizeof(value)), -ENOENT, "delete applied");

	/* Scans and prefix deletes. */
	completed = 0;
	w = pl_store_write_begin(store);
	const char *keys[] = { "bob\0x3", "bob\0x1", "bob\0x2", "bobby\0x1", "carol\0x" };
	for (int i = 0; i < 5; i++)
		pl_store_put(w, items, keys[i], strlen(keys[i]) + 3, "v", 1);
	pl_store_write_submit(w, record, (void *)3);
	run_until(1);
	struct pl_buf seen = { 0 };
	struct pl_store_read *r = pl_store_read_begin(store);
	pl_store_scan(r, items, "bob\0", 4, NULL, 0, collect, &seen);
	pl_store_read_end(r);
	is_int(seen.len, 3 * 7, "a prefix scan sees exactly bob's three keys");
	pl_buf_reset(&seen);
	r = pl_store_read_begin(store);
	pl_store_scan(r, items, "bob\0", 4, "bob\0x2", 6, collect, &seen);
	pl_store_read_end(r);
	is_int(seen.len, 2 * 7, "a scan from a start key sees the keys from there on");
	pl_buf_free(&seen);
	completed = 0;
	w = pl_store_write_begin(store);
	pl_store_del_prefix(w, items, "bob\0", 4);
	pl_store_write_submit(w, record, (void *)4);
	run_until(1);
	r = pl_store_read_begin(store);
	const void *v;
	size_t vlen;
	ok(pl_store_get(r, items, "bob\0x1", 6, &v, &vlen) == -ENOENT &&
		   pl_store_get(r, items, "bobby\0x1", 8, &v, &vlen) == 0,
	   "del_prefix removes bob's keys and keeps bobby's");
	pl_store_read_end(r);

	/* Completions in submission order. */
	completed = 0;
	for (intptr_t i = 0; i < 200; i++) {
		w = pl_store_write_begin(store);
		char key[32];
		snprintf(key, sizeof(key), "order%03d", (int)i);
		put_string(w, items, key, "x");
		pl_store_write_submit(w, record, (void *)(100 + i));
	}
	ok(run_until(200), "200 sets complete");

	/* A second store on the same directory. */
	char *second_error = NULL;
	ok(open_store(dir, 1 << 20, 64 << 20, &second_error) == NULL,
	   "a second store on the same directory is refused");
	has_str(second_error, "in use", "the error says the store is in use");
	free(second_error);

	/* Backup. */
	char backup[200];
	snprintf(backup, sizeof(backup), "%s.backup", dir);
	completed = 0;
	is_int(pl_store_backup(store, backup, record, (void *)5), 0, "a backup starts");
	ok(run_until(1) && statuses[5] == 0, "the backup completes");
	MDB_env *env;
	mdb_env_create(&env);
	mdb_env_set_maxdbs(env, 16);
	int rc = mdb_env_open(env, backup, MDB_NOSUBDIR | MDB_RDONLY, 0600);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val key = { 2, "k1" }, data;
	bool found = rc == 0 && mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0 &&
		     mdb_dbi_open(txn, "test.items", 0, &dbi) == 0 && mdb_get(txn, dbi, &key, &data) == 0;
	ok(found, "the backup is an LMDB file holding the data");
	if (found)
		mdb_txn_abort(txn);
	mdb_env_close(env);
	unlink(backup);
	char lock[220];
	snprintf(lock, sizeof(lock), "%s-lock", backup);
	unlink(lock);

	/* Pending writes are committed by destroy. */
	completed = 0;
	w = pl_store_write_begin(store);
	put_string(w, items, "late", "written at shutdown");
	pl_store_write_submit(w, record, (void *)6);
	pl_store_destroy(store);
	ok(completed == 1 && statuses[6] == 0, "destroy commits and completes pending writes");
	store = open_store(dir, 1 << 20, 64 << 20, &error);
	items = pl_store_space(store, "test.items");
	ok(get_string(store, items, "late", value, sizeof(value)) == 0,
	   "the write made at shutdown is there after reopening");
	pl_store_destroy(store);

	/* Growth: a 64 KiB map takes 2 MB of writes. */
	char grow_dir[] = "/tmp/parley-store-grow-XXXXXX";
	make_dir(grow_dir);
	store = open_store(grow_dir, 64 << 10, 64 << 20, &error);
	items = pl_store_space(store, "test.items");
	completed = 0;
	char big[2048];
	memset(big, 'x', sizeof(big));
	for (intptr_t i = 0; i < 1000; i++) {
		w = pl_store_write_begin(store);
		char k[32];
		snprintf(k, sizeof(k), "grow%04d", (int)i);
		pl_store_put(w, items, k, strlen(k), big, sizeof(big));
		pl_store_write_submit(w, record, (void *)(1000 + i));
	}
	run_until(1000);
	bool all_ok = true;
	for (int i = 0; i < 1000; i++)
		all_ok = all_ok && statuses[1000 + i] == 0;
	struct pl_store_stats stats;
	pl_store_stats(store, &stats);
	ok(all_ok && stats.map_size > (1u << 20), "2 MB of writes succeed and the map grew (%llu)",
	   (unsigned long long)stats.map_size);
	pl_store_destroy(store);

	/* Full: at max-map-size, writes fail with -ENOSPC and nothing is lost. */
	char full_dir[] = "/tmp/parley-store-full-XXXXXX";
	make_dir(full_dir);
	store = open_store(full_dir, 64 << 10, 256 << 10, &error);
	items = pl_store_space(store, "test.items");
	int failed_at = -1;
	for (intptr_t i = 0; i < 1000 && failed_at < 0; i++) {
		completed = 0;
		w = pl_store_write_begin(store);
		char k[32];
		snprintf(k, sizeof(k), "full%04d", (int)i);
		pl_store_put(w, items, k, strlen(k), big, sizeof(big));
		pl_store_write_submit(w, record, (void *)2000);
		run_until(1);
		if (statuses[2000] != 0)
			failed_at = (int)i;
	}
	ok(failed_at > 10, "writes succeed until the map is full (%d)", failed_at);
	is_int(statuses[2000], -ENOSPC, "then fail with -ENOSPC");
	ok(get_string(store, items, "full0000", value, sizeof(value)) == 0,
	   "earlier data is still readable");
	pl_store_destroy(store);
	store = open_store(full_dir, 64 << 10, 256 << 10, &error);
	items = pl_store_space(store, "test.items");
	ok(store && get_string(store, items, "full0005", value, sizeof(value)) == 0,
	   "and still there after reopening");
	pl_store_destroy(store);

	/* A store written by a newer parleyd is refused. */
	mdb_env_create(&env);
	mdb_env_set_maxdbs(env, 16);
	mdb_env_open(env, full_dir, 0, 0600);
	mdb_txn_begin(env, NULL, 0, &txn);
	mdb_dbi_open(txn, "meta", 0, &dbi);
	uint8_t future[4] = { 0, 0, 0, 99 };
	MDB_val version_key = { 14, "schema-version" }, version = { 4, future };
	mdb_put(txn, dbi, &version_key, &version, 0);
	mdb_txn_commit(txn);
	mdb_env_close(env);
	free(error);
	error = NULL;
	ok(open_store(full_dir, 64 << 10, 256 << 10, &error) == NULL,
	   "a store with a newer schema version is refused");
	has_str(error, "schema version 99", "the error names the version");
	free(error);

	char command[300];
	snprintf(command, sizeof(command), "rm -rf %s %s %s", dir, grow_dir, full_dir);
	if (system(command) != 0)
		diag("cleanup failed");
	event_base_free(base);
	return done_testing();
}
