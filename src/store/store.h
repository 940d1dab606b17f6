/* The LMDB store: one environment, a named database per key space
 * ("module.space"), a single writer thread with group commit, and read
 * transactions from the network thread.
 *
 * Writes are asynchronous: the network thread builds a write set (puts and
 * deletes, copied in), submits it, and gets a completion callback on the
 * network thread once the set is durable (committed and, with durability
 * "fsync", synced). The writer applies every pending set in ONE LMDB
 * transaction (each set in a nested transaction so one failing set does not
 * sink the others), commits once, then posts all completions. That is what
 * lets many clients' writes share one fsync.
 *
 * MDB_MAP_FULL never crashes: the writer grows the map (doubling, up to
 * max_map_size) and retries; past the maximum the sets fail with -ENOSPC
 * and a log line, and nothing already committed is touched. */
#ifndef PL_STORE_H
#define PL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct pl_store;
struct pl_store_space;
struct pl_store_write;
struct pl_store_read;

/* Bumped when the layout of stored values changes; see migrations in store.c. */
#define PL_STORE_SCHEMA_VERSION 1

enum pl_store_durability {
	PL_DURABILITY_FSYNC = 0, /* commit returns after fdatasync: nothing acked is lost */
	PL_DURABILITY_NONE = 1,  /* MDB_NOSYNC: for throwaway test servers only */
};

struct pl_store_config {
	const char *path;            /* directory; created if missing */
	uint64_t map_size;           /* initial LMDB map size in bytes */
	uint64_t max_map_size;       /* growth stops here */
	enum pl_store_durability durability;
	unsigned max_spaces;         /* MDB maxdbs */
};

/* Opens the environment, takes the directory's lock (a second parleyd on
 * the same store gets -EBUSY with "in use by pid N"), checks and migrates
 * the schema version, and starts the writer thread. Completions are
 * delivered on `base`'s thread. */
int pl_store_create(struct event_base *base, const struct pl_store_config *config,
		    struct pl_store **out, char **error);
/* Waits for every submitted write to commit, runs their completions,
 * stops the writer thread and closes the environment. */
void pl_store_destroy(struct pl_store *store);

/* Opens or creates the named database "module.space". Spaces live as long
 * as the store; asking twice returns the same pointer. NULL on error (logged). */
struct pl_store_space *pl_store_space(struct pl_store *store, const char *name);
const char *pl_store_space_name(const struct pl_store_space *space);
/* Every space opened so far (for deleting a user's data everywhere). */
size_t pl_store_space_count(const struct pl_store *store);
struct pl_store_space *pl_store_space_at(const struct pl_store *store, size_t index);

/* ---- writes (network thread builds and submits; writer thread applies) ---- */

/* status: 0 when durable, or -errno (-EEXIST for a failed put_new,
 * -ENOSPC when the map cannot grow, -EIO for LMDB errors). */
typedef void (*pl_store_done_fn)(void *arg, int status);

struct pl_store_write *pl_store_write_begin(struct pl_store *store);
/* The data is copied; the caller keeps its buffers. */
void pl_store_put(struct pl_store_write *w, struct pl_store_space *space,
		  const void *key, size_t key_len, const void *value, size_t value_len);
/* Like put, but the whole set fails with -EEXIST if the key exists. */
void pl_store_put_new(struct pl_store_write *w, struct pl_store_space *space,
		      const void *key, size_t key_len, const void *value, size_t value_len);
/* Deleting a missing key is not an error. */
void pl_store_del(struct pl_store_write *w, struct pl_store_space *space,
		  const void *key, size_t key_len);
/* Deletes every key starting with prefix. */
void pl_store_del_prefix(struct pl_store_write *w, struct pl_store_space *space,
			 const void *prefix, size_t prefix_len);
/* Hands the set to the writer; done (may be NULL) runs on the network
 * thread after commit. The write set is owned by the store from here. */
void pl_store_write_submit(struct pl_store_write *w, pl_store_done_fn done, void *arg);
/* Discards a set that was not submitted. */
void pl_store_write_abort(struct pl_store_write *w);

/* ---- reads (network thread; keep them short) ------------------------------- */

struct pl_store_read *pl_store_read_begin(struct pl_store *store);
void pl_store_read_end(struct pl_store_read *r);
/* 0 and *value, *value_len pointing into the map (valid until read_end),
 * -ENOENT if absent, -EIO on error. */
int pl_store_get(struct pl_store_read *r, struct pl_store_space *space,
		 const void *key, size_t key_len, const void **value, size_t *value_len);
/* Calls fn for each key starting with prefix, in key order, from the first
 * key >= start (start may be NULL: from the prefix). fn returns 0 to go on,
 * non-zero to stop (that value is returned). Returns 0 when exhausted. */
typedef int (*pl_store_scan_fn)(void *arg, const void *key, size_t key_len,
				const void *value, size_t value_len);
int pl_store_scan(struct pl_store_read *r, struct pl_store_space *space,
		  const void *prefix, size_t prefix_len,
		  const void *start, size_t start_len, pl_store_scan_fn fn, void *arg);
/* The same in descending key order, from the last key < before (before
 * may be NULL: from the last key with the prefix). For "the latest N"
 * without reading everything older. */
int pl_store_scan_reverse(struct pl_store_read *r, struct pl_store_space *space,
			  const void *prefix, size_t prefix_len, const void *before,
			  size_t before_len, pl_store_scan_fn fn, void *arg);

/* ---- maintenance --------------------------------------------------------- */

struct pl_store_stats {
	uint64_t map_size;      /* current map size, bytes */
	uint64_t used_bytes;    /* pages in use * page size */
	uint64_t commits;       /* transactions committed since start */
	uint64_t writes;        /* write sets committed since start */
};
void pl_store_stats(struct pl_store *store, struct pl_store_stats *out);

/* Online compacted copy into one file at `path` (mdb_env_copyfd2 with
 * MDB_CP_COMPACT) on a helper thread; done runs on the network thread.
 * The file is written to path.tmp and renamed when complete. */
int pl_store_backup(struct pl_store *store, const char *path,
		    pl_store_done_fn done, void *arg);

/* ---- key encoding (pure; unit-tested) --------------------------------------- */

/* Composite keys that sort meaningfully: strings are written with a
 * trailing NUL separator, integers big-endian so that byte order is
 * numeric order. A key builder owns a small buffer. */
struct pl_store_key {
	uint8_t data[1024];
	size_t len;
	bool overflow; /* set when a part did not fit; the key must not be used */
};
void pl_store_key_init(struct pl_store_key *k);
void pl_store_key_str(struct pl_store_key *k, const char *s);   /* s + '\0' */
void pl_store_key_u64(struct pl_store_key *k, uint64_t v);      /* 8 bytes BE */
void pl_store_key_u32(struct pl_store_key *k, uint32_t v);      /* 4 bytes BE */
/* Reads back: returns the number of bytes consumed, 0 on malformed input. */
size_t pl_store_key_read_str(const uint8_t *p, size_t len, const char **s, size_t *s_len);
size_t pl_store_key_read_u64(const uint8_t *p, size_t len, uint64_t *v);

#endif
