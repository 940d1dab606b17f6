/* The store with a real LMDB environment in temporary directories: puts,
 * gets, put_new conflicts isolated to their own set, prefix deletes and
 * scans, completions on the loop in submission order, the exclusive lock,
 * the schema check, map growth, a full map that fails cleanly without
 * losing data, backups taken while writes go on, and pending writes
 * committed at destroy. */
#include "store/store.h"
#include "util.h"
#include "../tap.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COMPLETIONS 8192

static struct event_base *base;
static int statuses[MAX_COMPLETIONS];
static intptr_t order[MAX_COMPLETIONS];
static int completed;
static bool timed_out;

static void record(void *arg, int status)
{
	intptr_t id = (intptr_t)arg;
	statuses[id] = status;
	if (completed < MAX_COMPLETIONS)
		order[completed] = id;
	completed++;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	timed_out = true;
}

/* Runs the loop until `target` completions arrived, or 10 s passed. The
 * timer also keeps the loop blocking instead of spinning: the store's
 * completion event is only ever activated, never added. */
static bool run_until(int target)
{
	struct event *timer = evtimer_new(base, on_timeout, NULL);
	struct timeval ten_seconds = { 10, 0 };
	timed_out = false;
	evtimer_add(timer, &ten_seconds);
	while (completed < target && !timed_out)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(timer);
	return completed >= target;
}

static struct pl_store *open_store(const char *dir, uint64_t map, uint64_t max,
				   enum pl_store_durability durability, char **error)
{
	struct pl_store_config config = { .path = dir, .map_size = map, .max_map_size = max,
					  .durability = durability, .max_spaces = 16 };
	struct pl_store *store = NULL;
	int rc = pl_store_create(base, &config, &store, error);
	if (rc != 0)
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

static bool has_value(struct pl_store *store, struct pl_store_space *space, const char *key,
		      const char *expected)
{
	char value[256];
	return get_string(store, space, key, value, sizeof(value)) == 0 &&
	       strcmp(value, expected) == 0;
}

static void put_string(struct pl_store_write *w, struct pl_store_space *space, const char *key,
		       const char *value)
{
	pl_store_put(w, space, key, strlen(key), value, strlen(value));
}

static void submit_one(struct pl_store *store, struct pl_store_space *space, const char *key,
		       const char *value, intptr_t id)
{
	struct pl_store_write *w = pl_store_write_begin(store);
	put_string(w, space, key, value);
	pl_store_write_submit(w, record, (void *)id);
}

/* Appends "key;" for printable keys, with NUL shown as '/'. */
static int collect(void *arg, const void *key, size_t key_len, const void *value, size_t len)
{
	struct pl_buf *b = arg;
	for (size_t i = 0; i < key_len; i++) {
		char c = ((const char *)key)[i];
		pl_buf_append(b, c ? &c : "/", 1);
	}
	pl_buf_puts(b, ";");
	return 0;
}

static int stop_at_second(void *arg, const void *key, size_t key_len, const void *value,
			  size_t len)
{
	int *seen = arg;
	return ++*seen == 2 ? 7 : 0;
}

static char *scan_to_string(struct pl_store *store, struct pl_store_space *space,
			    const char *prefix, size_t prefix_len, const char *start,
			    size_t start_len)
{
	struct pl_buf seen = { 0 };
	struct pl_store_read *r = pl_store_read_begin(store);
	int rc = pl_store_scan(r, space, prefix, prefix_len, start, start_len, collect, &seen);
	pl_store_read_end(r);
	if (rc != 0)
		pl_buf_printf(&seen, "(rc %d)", rc);
	pl_buf_puts(&seen, "");
	return pl_buf_take(&seen);
}

static void remove_tree(const char *dir)
{
	char *command = pl_asprintf("rm -rf '%s'", dir);
	if (system(command) != 0)
		diag("cannot remove %s", dir);
	free(command);
}

static void test_basics(struct pl_store *store, struct pl_store_space *items)
{
	ok(items && pl_store_space(store, "test.items") == items, "a space is opened once");
	is_str(pl_store_space_name(items), "test.items", "the space has its name");
	bool listed = false;
	for (size_t i = 0; i < pl_store_space_count(store); i++)
		listed = listed || pl_store_space_at(store, i) == items;
	ok(listed, "the space is in the list of spaces");
	ok(pl_store_space_at(store, pl_store_space_count(store)) == NULL, "past the list is NULL");

	completed = 0;
	struct pl_store_write *w = pl_store_write_begin(store);
	put_string(w, items, "k1", "v1");
	put_string(w, items, "k2", "v2");
	put_string(w, items, "k2", "v2 again");
	pl_store_write_submit(w, record, (void *)0);
	ok(run_until(1) && statuses[0] == 0, "a write set commits and completes on the loop");
	ok(has_value(store, items, "k1", "v1"), "the value reads back");
	ok(has_value(store, items, "k2", "v2 again"), "a later put in the same set wins");
	char value[64];
	is_int(get_string(store, items, "missing", value, sizeof(value)), -ENOENT,
	       "a missing key is -ENOENT");

	/* Two reads open at the same time (the second does not get the cached
	 * transaction), and the first still works after the second ended. */
	struct pl_store_read *outer = pl_store_read_begin(store);
	struct pl_store_read *inner = pl_store_read_begin(store);
	const void *v1, *v2;
	size_t l1, l2;
	ok(pl_store_get(inner, items, "k1", 2, &v2, &l2) == 0, "a nested read works");
	pl_store_read_end(inner);
	ok(pl_store_get(outer, items, "k1", 2, &v1, &l1) == 0 && l1 == 2 &&
		   memcmp(v1, "v1", 2) == 0, "the outer read still works after the inner ended");
	pl_store_read_end(outer);

	/* A read sees a snapshot: a commit after it began is not visible. */
	struct pl_store_read *snapshot = pl_store_read_begin(store);
	completed = 0;
	submit_one(store, items, "k1", "changed", 0);
	run_until(1);
	ok(pl_store_get(snapshot, items, "k1", 2, &v1, &l1) == 0 && l1 == 2,
	   "an open read keeps its snapshot");
	pl_store_read_end(snapshot);
	ok(has_value(store, items, "k1", "changed"), "a new read sees the commit");
	completed = 0;
	submit_one(store, items, "k1", "v1", 0);
	run_until(1);
}

static void test_conflicts(struct pl_store *store, struct pl_store_space *items)
{
	/* Two sets in one batch: the conflicting one fails alone. */
	completed = 0;
	struct pl_store_write *w = pl_store_write_begin(store);
	put_string(w, items, "k3", "v3");
	pl_store_put_new(w, items, "k1", 2, "other", 5);
	pl_store_del(w, items, "k2", 2);
	pl_store_write_submit(w, record, (void *)1);
	w = pl_store_write_begin(store);
	put_string(w, items, "k4", "v4");
	pl_store_put_new(w, items, "k5", 2, "v5", 2);
	pl_store_del(w, items, "k2", 2);
	pl_store_del(w, items, "never-there", 11);
	pl_store_write_submit(w, record, (void *)2);
	ok(run_until(2), "both sets complete");
	is_int(statuses[1], -EEXIST, "put_new on an existing key fails the set with -EEXIST");
	is_int(statuses[2], 0, "the other set of the batch commits");
	char value[64];
	is_int(get_string(store, items, "k3", value, sizeof(value)), -ENOENT,
	       "the failed set's earlier put is not applied");
	ok(has_value(store, items, "k1", "v1"), "the existing value is untouched");
	ok(has_value(store, items, "k4", "v4") && has_value(store, items, "k5", "v5"),
	   "the successful set's put and put_new are applied");
	is_int(get_string(store, items, "k2", value, sizeof(value)), -ENOENT,
	       "its delete is applied; deleting a missing key is no error");

	/* An unusable key fails its set with a log line, not the process. */
	completed = 0;
	char long_key[600];
	memset(long_key, 'k', sizeof(long_key));
	w = pl_store_write_begin(store);
	pl_store_put(w, items, long_key, sizeof(long_key), "v", 1);
	pl_store_write_submit(w, record, (void *)3);
	submit_one(store, items, "k6", "v6", 4);
	w = pl_store_write_begin(store);
	put_string(w, items, "k7", "v7");
	pl_store_put(w, NULL, "k", 1, "v", 1);
	pl_store_write_submit(w, record, (void *)5);
	ok(run_until(3), "the sets complete");
	is_int(statuses[3], -EIO, "a key longer than LMDB allows fails with -EIO");
	is_int(statuses[4], 0, "a set next to it commits");
	is_int(statuses[5], -EINVAL, "a write to a NULL space fails with -EINVAL");
	ok(get_string(store, items, "k7", value, sizeof(value)) == -ENOENT,
	   "and nothing of that set is applied");
}

static void test_scans(struct pl_store *store, struct pl_store_space *items)
{
	completed = 0;
	struct pl_store_write *w = pl_store_write_begin(store);
	/* Submitted out of order on purpose. */
	static const char *const keys[] = { "bob\0x3", "bob\0x1", "bobby\0x1", "bob\0x2",
					    "carol\0x", "bo\0x9", "bob\0x10" };
	for (size_t i = 0; i < PL_ARRAY_LEN(keys); i++) {
		const char *key = keys[i];
		size_t len = strlen(key) + 1 + strlen(key + strlen(key) + 1);
		pl_store_put(w, items, key, len, "v", 1);
	}
	pl_store_write_submit(w, record, (void *)0);
	run_until(1);

	char *seen = scan_to_string(store, items, "bob\0", 4, NULL, 0);
	is_str(seen, "bob/x1;bob/x10;bob/x2;bob/x3;", "a prefix scan sees bob's keys in key order");
	free(seen);
	seen = scan_to_string(store, items, "bob\0", 4, "bob\0x2", 6);
	is_str(seen, "bob/x2;bob/x3;", "a scan from a start key begins there");
	free(seen);
	seen = scan_to_string(store, items, "bob\0", 4, "bob\0x15", 7);
	is_str(seen, "bob/x2;bob/x3;", "a start between keys begins at the next one");
	free(seen);
	seen = scan_to_string(store, items, "bob\0", 4, "a", 1);
	is_str(seen, "bob/x1;bob/x10;bob/x2;bob/x3;", "a start before the prefix scans it all");
	free(seen);
	seen = scan_to_string(store, items, "bob\0", 4, "z", 1);
	is_str(seen, "", "a start after the prefix finds nothing");
	free(seen);
	seen = scan_to_string(store, items, "dave\0", 5, NULL, 0);
	is_str(seen, "", "an unknown prefix finds nothing");
	free(seen);
	seen = scan_to_string(store, items, "bo", 2, NULL, 0);
	is_str(seen, "bo/x9;bob/x1;bob/x10;bob/x2;bob/x3;bobby/x1;",
	       "a prefix without separator matches longer names too");
	free(seen);

	{
		struct pl_buf back = { 0 };
		struct pl_store_read *rr = pl_store_read_begin(store);
		pl_store_scan_reverse(rr, items, "bob\0", 4, NULL, 0, collect, &back);
		pl_buf_puts(&back, "");
		is_str(back.data, "bob/x3;bob/x2;bob/x10;bob/x1;",
		       "a reverse scan sees bob's keys from the last, and only his");
		pl_buf_reset(&back);
		pl_store_scan_reverse(rr, items, "bob\0", 4, "bob\0x2", 6, collect, &back);
		pl_buf_puts(&back, "");
		is_str(back.data, "bob/x10;bob/x1;", "a reverse scan from a bound starts below it");
		pl_buf_reset(&back);
		pl_store_scan_reverse(rr, items, "bob\0", 4, "bob\0x15", 7, collect, &back);
		pl_buf_puts(&back, "");
		is_str(back.data, "bob/x10;bob/x1;", "a bound between keys starts at the one below");
		pl_buf_reset(&back);
		pl_store_scan_reverse(rr, items, "bobby\0", 6, NULL, 0, collect, &back);
		pl_buf_puts(&back, "");
		is_str(back.data, "bobby/x1;", "the last prefix of the space is found too");
		pl_buf_reset(&back);
		pl_store_scan_reverse(rr, items, "dave\0", 5, NULL, 0, collect, &back);
		pl_buf_puts(&back, "");
		is_str(back.data, "", "an unknown prefix finds nothing backwards");
		pl_store_read_end(rr);
		pl_buf_free(&back);
	}

	int count = 0;
	struct pl_store_read *r = pl_store_read_begin(store);
	is_int(pl_store_scan(r, items, "bob\0", 4, NULL, 0, stop_at_second, &count), 7,
	       "a callback's non-zero result stops the scan and is returned");
	is_int(count, 2, "after the second key");
	pl_store_read_end(r);

	completed = 0;
	w = pl_store_write_begin(store);
	pl_store_del_prefix(w, items, "bob\0", 4);
	pl_store_write_submit(w, record, (void *)0);
	ok(run_until(1) && statuses[0] == 0, "del_prefix commits");
	seen = scan_to_string(store, items, "bo", 2, NULL, 0);
	is_str(seen, "bo/x9;bobby/x1;", "del_prefix removes bob's keys and keeps bo's and bobby's");
	free(seen);

	/* Enough keys to span many pages, with neighbours on both sides. */
	struct pl_store_space *many = pl_store_space(store, "test.many");
	completed = 0;
	w = pl_store_write_begin(store);
	put_string(w, many, "alpha", "kept");
	put_string(w, many, "omega", "kept");
	char value[200];
	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	for (int i = 0; i < 3000; i++) {
		struct pl_store_key k;
		pl_store_key_init(&k);
		pl_store_key_str(&k, "many");
		pl_store_key_u64(&k, (uint64_t)i * 7919 % 3001);
		pl_store_put(w, many, k.data, k.len, value, strlen(value));
	}
	pl_store_write_submit(w, record, (void *)0);
	run_until(1);
	count = 0;
	r = pl_store_read_begin(store);
	pl_store_scan(r, many, "many", 5, NULL, 0, stop_at_second, &count);
	pl_store_read_end(r);
	is_int(count, 2, "the many keys are there");
	completed = 0;
	w = pl_store_write_begin(store);
	pl_store_del_prefix(w, many, "many", 5);
	pl_store_write_submit(w, record, (void *)0);
	ok(run_until(1) && statuses[0] == 0, "del_prefix over many pages commits");
	seen = scan_to_string(store, many, NULL, 0, NULL, 0);
	is_str(seen, "alpha;omega;", "every prefixed key is gone, the neighbours stay");
	free(seen);
}

static void chain_second_write(void *arg, int status);

struct chain {
	struct pl_store *store;
	struct pl_store_space *space;
};

static void chain_second_write(void *arg, int status)
{
	struct chain *c = arg;
	record((void *)0, status);
	submit_one(c->store, c->space, "chained", "from a completion", 1);
}

static void test_order_and_group_commit(struct pl_store *store, struct pl_store_space *items)
{
	struct pl_store_stats before, after;
	pl_store_stats(store, &before);
	completed = 0;
	enum { SETS = 500 };
	for (intptr_t i = 0; i < SETS; i++) {
		char key[32];
		snprintf(key, sizeof(key), "order%03d", (int)i);
		submit_one(store, items, key, "x", 10 + i);
	}
	ok(run_until(SETS), "%d sets complete", SETS);
	bool in_order = true, all_ok = true;
	for (int i = 0; i < SETS; i++) {
		in_order = in_order && order[i] == 10 + i;
		all_ok = all_ok && statuses[10 + i] == 0;
	}
	ok(in_order, "completions run in submission order");
	ok(all_ok, "and all succeeded");
	pl_store_stats(store, &after);
	is_int(after.writes - before.writes, SETS, "the write counter counts the sets");
	ok(after.commits - before.commits < SETS,
	   "sets submitted together share transactions (%llu commits for %d sets)",
	   (unsigned long long)(after.commits - before.commits), SETS);
	ok(after.used_bytes > 0 && after.used_bytes <= after.map_size, "stats: %llu of %llu bytes",
	   (unsigned long long)after.used_bytes, (unsigned long long)after.map_size);
}

static void test_lock(const char *dir)
{
	char *error = NULL;
	struct pl_store_config config = { .path = dir, .map_size = 1 << 20,
					  .max_map_size = 64 << 20, .max_spaces = 16 };
	struct pl_store *second = NULL;
	is_int(pl_store_create(base, &config, &second, &error), -EBUSY,
	       "a second store on the same directory gets -EBUSY");
	ok(second == NULL, "and no store");
	has_str(error, "in use", "the error says the store is in use");
	char pid[32];
	snprintf(pid, sizeof(pid), "(pid %ld)", (long)getpid());
	has_str(error, pid, "and names the pid holding it");
	free(error);
}

static bool backup_has(const char *file, const char *space, const char *key, const char *value)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	bool found = false;
	if (mdb_env_create(&env) != 0)
		return false;
	mdb_env_set_maxdbs(env, 16);
	if (mdb_env_open(env, file, MDB_NOSUBDIR | MDB_RDONLY, 0600) == 0 &&
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
		MDB_val k = { strlen(key), (void *)key }, v;
		found = mdb_dbi_open(txn, space, 0, &dbi) == 0 && mdb_get(txn, dbi, &k, &v) == 0 &&
			v.mv_size == strlen(value) && memcmp(v.mv_data, value, v.mv_size) == 0;
		mdb_txn_abort(txn);
	}
	mdb_env_close(env);
	return found;
}

static void test_backup(struct pl_store *store, struct pl_store_space *items, const char *dir)
{
	char *file = pl_asprintf("%s.backup", dir);
	completed = 0;
	/* Writes in flight before and after the backup starts. */
	enum { WRITES = 400 };
	for (intptr_t i = 0; i < WRITES / 2; i++) {
		char key[32];
		snprintf(key, sizeof(key), "during%03d", (int)i);
		submit_one(store, items, key, "x", 1000 + i);
	}
	is_int(pl_store_backup(store, file, record, (void *)999), 0, "a backup starts");
	for (intptr_t i = WRITES / 2; i < WRITES; i++) {
		char key[32];
		snprintf(key, sizeof(key), "during%03d", (int)i);
		submit_one(store, items, key, "x", 1000 + i);
	}
	ok(run_until(WRITES + 1), "the backup and the writes around it complete");
	is_int(statuses[999], 0, "the backup succeeded");
	bool writes_ok = true;
	for (int i = 0; i < WRITES; i++)
		writes_ok = writes_ok && statuses[1000 + i] == 0;
	ok(writes_ok, "writes went on during the backup");
	ok(access(file, F_OK) == 0, "the backup file exists");
	char *tmp = pl_asprintf("%s.tmp", file);
	ok(access(tmp, F_OK) != 0, "the temporary file was renamed");
	ok(backup_has(file, "test.items", "k1", "v1"),
	   "the backup opens as an LMDB file (MDB_NOSUBDIR|MDB_RDONLY) and holds the data");

	completed = 0;
	is_int(pl_store_backup(store, file, record, (void *)998), 0,
	       "a second backup to the same file starts");
	ok(run_until(1), "and completes");
	is_int(statuses[998], 0, "overwriting an existing backup file is fine");

	FILE *leftover = fopen(tmp, "w");
	if (leftover)
		fclose(leftover);
	completed = 0;
	pl_store_backup(store, file, record, (void *)997);
	ok(run_until(1), "a backup with a leftover .tmp completes");
	is_int(statuses[997], -EEXIST, "with -EEXIST: a half-written file is never reused");
	unlink(tmp);
	unlink(file);
	char *lock = pl_asprintf("%s-lock", file); /* made by the raw LMDB open above */
	unlink(lock);
	free(lock);
	free(tmp);
	free(file);
}

static void test_destroy_commits_pending(struct pl_store *store, struct pl_store_space *items,
					 const char *dir)
{
	completed = 0;
	enum { PENDING = 100 };
	for (intptr_t i = 0; i < PENDING; i++) {
		char key[32];
		snprintf(key, sizeof(key), "late%03d", (int)i);
		submit_one(store, items, key, "written at shutdown", 2 + i);
	}
	struct chain chain = { store, items };
	struct pl_store_write *w = pl_store_write_begin(store);
	put_string(w, items, "first", "of a chain");
	pl_store_write_submit(w, chain_second_write, &chain);
	pl_store_destroy(store);
	is_int(completed, PENDING + 2, "destroy runs every completion, chained ones too");
	bool all_ok = statuses[0] == 0 && statuses[1] == 0;
	for (int i = 0; i < PENDING; i++)
		all_ok = all_ok && statuses[2 + i] == 0;
	ok(all_ok, "all of them succeeded");

	char *error = NULL;
	store = open_store(dir, 1 << 20, 64 << 20, PL_DURABILITY_FSYNC, &error);
	ok(store != NULL, "the store reopens after destroy (lock released)");
	items = pl_store_space(store, "test.items");
	ok(has_value(store, items, "late099", "written at shutdown") &&
		   has_value(store, items, "late000", "written at shutdown"),
	   "the writes made at shutdown are there after reopening");
	ok(has_value(store, items, "chained", "from a completion"),
	   "and so is the write submitted by a completion during destroy");
	ok(has_value(store, items, "k1", "v1"), "and the older data");
	pl_store_destroy(store);
}

static void test_growth(void)
{
	char dir[] = "/tmp/parley-store-grow-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	char *error = NULL;
	struct pl_store *store = open_store(dir, 64 << 10, 64 << 20, PL_DURABILITY_NONE, &error);
	struct pl_store_space *items = pl_store_space(store, "test.items");
	struct pl_store_stats stats;
	pl_store_stats(store, &stats);
	is_int(stats.map_size, 64 << 10, "the map starts at 64 KiB");
	completed = 0;
	char big[2048];
	memset(big, 'x', sizeof(big));
	enum { SETS = 1000 };
	for (intptr_t i = 0; i < SETS; i++) {
		struct pl_store_write *w = pl_store_write_begin(store);
		char k[32];
		snprintf(k, sizeof(k), "grow%04d", (int)i);
		pl_store_put(w, items, k, strlen(k), big, sizeof(big));
		pl_store_write_submit(w, record, (void *)i);
	}
	ok(run_until(SETS), "2 MB of writes complete");
	bool all_ok = true;
	for (int i = 0; i < SETS; i++)
		all_ok = all_ok && statuses[i] == 0;
	ok(all_ok, "and all succeed");
	pl_store_stats(store, &stats);
	ok(stats.map_size >= (2u << 20) && stats.map_size <= (64u << 20),
	   "the map grew (%llu bytes)", (unsigned long long)stats.map_size);
	struct pl_store_read *r = pl_store_read_begin(store);
	const void *value;
	size_t len;
	ok(pl_store_get(r, items, "grow0000", 8, &value, &len) == 0 && len == sizeof(big) &&
		   pl_store_get(r, items, "grow0999", 8, &value, &len) == 0,
	   "the first and the last write read back");
	pl_store_read_end(r);
	uint64_t grown = stats.map_size;
	pl_store_destroy(store);

	/* Reopening with a small configured map keeps the grown size. */
	store = open_store(dir, 64 << 10, 64 << 20, PL_DURABILITY_NONE, &error);
	pl_store_stats(store, &stats);
	is_int(stats.map_size, grown, "a reopened store keeps its grown map");
	pl_store_destroy(store);
	store = open_store(dir, 16 << 20, 64 << 20, PL_DURABILITY_NONE, &error);
	pl_store_stats(store, &stats);
	is_int(stats.map_size, 16 << 20, "and grows it when the configuration asks for more");
	pl_store_destroy(store);
	remove_tree(dir);
}

static void test_full(void)
{
	char dir[] = "/tmp/parley-store-full-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	char *error = NULL;
	struct pl_store *store = open_store(dir, 64 << 10, 256 << 10, PL_DURABILITY_FSYNC, &error);
	struct pl_store_space *items = pl_store_space(store, "test.items");

	/* At the maximum, a huge set fails alone and the small ones queued
	 * with it go through. */
	char *huge = pl_malloc(1 << 20);
	memset(huge, 'h', 1 << 20);
	completed = 0;
	submit_one(store, items, "small-before", "s", 0);
	struct pl_store_write *w = pl_store_write_begin(store);
	pl_store_put(w, items, "huge", 4, huge, 1 << 20);
	pl_store_write_submit(w, record, (void *)1);
	submit_one(store, items, "small-after", "s", 2);
	ok(run_until(3), "a huge set between small ones completes");
	is_int(statuses[1], -ENOSPC, "the huge set fails with -ENOSPC");
	ok(statuses[0] == 0 && statuses[2] == 0, "the small sets around it commit");
	ok(has_value(store, items, "small-before", "s") && has_value(store, items, "small-after", "s"),
	   "and read back");
	free(huge);

	char big[2048];
	memset(big, 'x', sizeof(big));
	int failed_at = -1;
	for (intptr_t i = 0; i < 1000 && failed_at < 0; i++) {
		completed = 0;
		w = pl_store_write_begin(store);
		char k[32];
		snprintf(k, sizeof(k), "full%04d", (int)i);
		pl_store_put(w, items, k, strlen(k), big, sizeof(big));
		pl_store_write_submit(w, record, (void *)3);
		run_until(1);
		if (statuses[3] != 0)
			failed_at = (int)i;
	}
	ok(failed_at > 10, "writes succeed until the map is full (%d)", failed_at);
	is_int(statuses[3], -ENOSPC, "then fail with -ENOSPC");
	struct pl_store_stats stats;
	pl_store_stats(store, &stats);
	is_int(stats.map_size, 256 << 10, "the map stopped at max-map-size");
	ok(has_value(store, items, "small-before", "s"), "earlier data is still readable");
	completed = 0;
	w = pl_store_write_begin(store);
	pl_store_del_prefix(w, items, "full", 4);
	pl_store_write_submit(w, record, (void *)4);
	ok(run_until(1) && statuses[4] == 0, "deleting still works on a full store");
	completed = 0;
	submit_one(store, items, "after-delete", "fits again", 5);
	ok(run_until(1) && statuses[5] == 0, "and makes room for new writes");
	pl_store_destroy(store);

	store = open_store(dir, 64 << 10, 256 << 10, PL_DURABILITY_FSYNC, &error);
	ok(store != NULL, "the full store reopens");
	items = pl_store_space(store, "test.items");
	ok(has_value(store, items, "small-before", "s") &&
		   has_value(store, items, "after-delete", "fits again"),
	   "with its data intact");
	pl_store_destroy(store);
	remove_tree(dir);
}

static void write_schema_version(const char *dir, const void *bytes, size_t len)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	mdb_env_create(&env);
	mdb_env_set_maxdbs(env, 16);
	mdb_env_set_mapsize(env, 1 << 20);
	if (mdb_env_open(env, dir, 0, 0600) == 0 && mdb_txn_begin(env, NULL, 0, &txn) == 0) {
		MDB_val key = { 14, "schema-version" }, value = { len, (void *)bytes };
		if (mdb_dbi_open(txn, "meta", 0, &dbi) == 0 && mdb_put(txn, dbi, &key, &value, 0) == 0)
			mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
	}
	mdb_env_close(env);
}

static void test_schema(void)
{
	char dir[] = "/tmp/parley-store-schema-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	char *error = NULL;
	struct pl_store *store = open_store(dir, 1 << 20, 1 << 20, PL_DURABILITY_NONE, &error);
	struct pl_store_space *meta = pl_store_space(store, "meta");
	struct pl_store_read *r = pl_store_read_begin(store);
	const void *value;
	size_t len;
	const uint8_t current[4] = { 0, 0, 0, PL_STORE_SCHEMA_VERSION };
	ok(pl_store_get(r, meta, "schema-version", 14, &value, &len) == 0 && len == 4 &&
		   memcmp(value, current, 4) == 0,
	   "a new store records the schema version as a big-endian u32");
	pl_store_read_end(r);
	pl_store_destroy(store);

	store = open_store(dir, 1 << 20, 1 << 20, PL_DURABILITY_NONE, &error);
	ok(store != NULL, "a store of the current version reopens");
	pl_store_destroy(store);

	const uint8_t future[4] = { 0, 0, 0, 99 };
	write_schema_version(dir, future, sizeof(future));
	struct pl_store_config config = { .path = dir, .map_size = 1 << 20, .max_map_size = 1 << 20,
					  .max_spaces = 16 };
	store = NULL;
	int rc = pl_store_create(base, &config, &store, &error);
	ok(rc < 0 && store == NULL, "a store with a newer schema version is refused");
	has_str(error, "has schema version 99, this parleyd supports up to 1: use a newer parleyd",
		"the error names both versions and the way out");
	free(error);
	error = NULL;

	write_schema_version(dir, "x", 1);
	ok(open_store(dir, 1 << 20, 1 << 20, PL_DURABILITY_NONE, &error) == NULL,
	   "a malformed schema version is refused, not taken for a new store");
	has_str(error, "unreadable schema version", "with a clear error");
	free(error);
	remove_tree(dir);
}

int main(void)
{
	evthread_use_pthreads();
	base = event_base_new();
	char dir[] = "/tmp/parley-store-test-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	char *subdir = pl_asprintf("%s/made/by/the/store", dir);
	char *error = NULL;
	struct pl_store *store = open_store(subdir, 1 << 20, 64 << 20, PL_DURABILITY_FSYNC, &error);
	ok(store != NULL, "the store opens in a directory it creates");
	if (!store) {
		diag("%s", error ? error : "?");
		return done_testing();
	}
	struct pl_store_space *items = pl_store_space(store, "test.items");

	test_basics(store, items);
	test_conflicts(store, items);
	test_scans(store, items);
	test_order_and_group_commit(store, items);
	test_lock(subdir);
	test_backup(store, items, dir);
	test_destroy_commits_pending(store, items, subdir);
	test_growth();
	test_full();
	test_schema();

	remove_tree(dir);
	free(subdir);
	event_base_free(base);
	libevent_global_shutdown(); /* so valgrind sees no reachable blocks */
	return done_testing();
}
