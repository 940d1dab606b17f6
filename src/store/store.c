/* The LMDB store. The network thread builds write sets and submits them;
 * the writer thread takes every set that is waiting, applies each in a
 * nested transaction of one parent transaction, commits once (one fsync
 * for the whole group) and hands the sets back through a done list and a
 * libevent event, so completions run on the network thread in submission
 * order. Growing the map needs no transaction alive in the process:
 * readers, the backup copy and every write transaction hold a read-write
 * lock for reading while their transaction lives, and the writer takes it
 * for writing around mdb_env_set_mapsize. */
#include "store/store.h"
#include "ack.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <event2/event.h>
#include <lmdb.h>

#define DEFAULT_MAP_SIZE (10ull << 20)
#define DEFAULT_MAX_SPACES 64

struct pl_store_space {
	char *name; /* owned */
	MDB_dbi dbi;
};

enum op_kind { OP_PUT, OP_PUT_NEW, OP_DEL, OP_DEL_PREFIX };

struct op {
	enum op_kind kind;
	struct pl_store_space *space;
	uint8_t *key;   /* owned; value follows key in the same allocation */
	size_t key_len;
	uint8_t *value;
	size_t value_len;
};

/* A write set, or a finished backup travelling the same done list so that
 * its completion reaches the network thread the same way. */
struct pl_store_write {
	struct pl_store *store;
	struct op *ops;
	size_t count, cap;
	int invalid;            /* -EINVAL when an op could never apply (logged at build time) */
	pl_store_done_fn done;
	void *arg;
	int status;
	bool is_backup;         /* the backup thread is joined when its completion runs */
	pthread_t backup_thread;
	struct pl_store_write *next;
};

struct pl_store_read {
	struct pl_store *store;
	MDB_txn *txn;
};

struct pl_store {
	MDB_env *env;
	char *path;
	int lock_fd;
	struct event *done_event;       /* wakes the network thread */
	pthread_t writer;
	bool writer_started;

	pthread_mutex_t mutex;          /* guards queue, done list, counters, stopping, backups */
	pthread_cond_t wake;            /* work for the writer, or a backup finished */
	struct pl_store_write *queue_head, *queue_tail;
	struct pl_store_write *done_head, *done_tail;
	bool stopping;
	unsigned backups_running;
	uint64_t commits, writes;

	/* LMDB allows one transaction opening DBIs at a time and DBI handles
	 * must not appear under a running write transaction, so the writer's
	 * transaction and pl_store_space exclude each other. */
	pthread_mutex_t txn_mutex;
	/* Read side: a transaction is alive (read, write or backup copy).
	 * Write side: mdb_env_set_mapsize. It prefers readers, because the
	 * network thread may nest a read inside another read (or open a space
	 * while reading) and must not deadlock behind a waiting resize. */
	pthread_rwlock_t resize_lock;
	uint64_t map_size, max_map_size; /* writer thread only, once running */

	/* One reset read transaction kept for the next pl_store_read_begin:
	 * renewing it is much cheaper than a fresh begin. */
	struct pl_store_read *cached_read;

	struct pl_store_space **spaces; /* network thread only */
	size_t space_count, space_cap;
};

/* ---- completions ------------------------------------------------------- */

static void push_done(struct pl_store *store, struct pl_store_write *list)
{
	pthread_mutex_lock(&store->mutex);
	while (list) {
		struct pl_store_write *next = list->next;
		list->next = NULL;
		if (store->done_tail)
			store->done_tail->next = list;
		else
			store->done_head = list;
		store->done_tail = list;
		list = next;
	}
	pthread_mutex_unlock(&store->mutex);
	event_active(store->done_event, EV_READ, 0);
}

static void free_write(struct pl_store_write *w)
{
	for (size_t i = 0; i < w->count; i++)
		free(w->ops[i].key);
	free(w->ops);
	free(w);
}

static void run_completions(struct pl_store *store)
{
	pthread_mutex_lock(&store->mutex);
	struct pl_store_write *list = store->done_head;
	store->done_head = store->done_tail = NULL;
	pthread_mutex_unlock(&store->mutex);
	while (list) {
		struct pl_store_write *next = list->next;
		/* The backup thread posted this as its last act: joining costs
		 * at most the few instructions it has left. */
		if (list->is_backup)
			pthread_join(list->backup_thread, NULL);
		if (list->done)
			list->done(list->arg, list->status);
		free_write(list);
		list = next;
	}
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	run_completions(arg);
}

/* ---- the writer ------------------------------------------------------------ */

/* The errno view of an LMDB result for a write set; unexpected errors are
 * logged here so that every failing set leaves a line. */
static int set_status(int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_KEYEXIST:
		return -EEXIST; /* the caller's put_new lost a race: not a store problem */
	case MDB_BAD_VALSIZE:
		pl_log(PL_LOG_ERROR, "store", "write set refused: a key is empty or longer than "
		       "LMDB's limit (%d bytes)", 511);
		return -EIO;
	default:
		pl_log(PL_LOG_ERROR, "store", "write set failed: %s", mdb_strerror(rc));
		return -EIO;
	}
}

static int seek_prefix(MDB_cursor *cursor, const struct op *o, MDB_val *key, MDB_val *value)
{
	if (o->key_len == 0)
		return mdb_cursor_get(cursor, key, value, MDB_FIRST);
	*key = (MDB_val){ o->key_len, o->key };
	return mdb_cursor_get(cursor, key, value, MDB_SET_RANGE);
}

static int delete_prefix(MDB_txn *txn, const struct op *o)
{
	MDB_cursor *cursor;
	int rc = mdb_cursor_open(txn, o->space->dbi, &cursor);
	if (rc)
		return rc;
	MDB_val key, value;
	rc = seek_prefix(cursor, o, &key, &value);
	while (rc == 0 && key.mv_size >= o->key_len &&
	       (o->key_len == 0 || memcmp(key.mv_data, o->key, o->key_len) == 0)) {
		rc = mdb_cursor_del(cursor, 0);
		if (rc)
			break;
		/* After a delete the cursor normally sits on the next key. When
		 * it has nothing current (end of a page being rebalanced, or the
		 * end of the database), seeking the prefix again is always
		 * right, and costs one lookup. */
		rc = mdb_cursor_get(cursor, &key, &value, MDB_GET_CURRENT);
		if (rc == MDB_NOTFOUND || rc == EINVAL)
			rc = seek_prefix(cursor, o, &key, &value);
	}
	mdb_cursor_close(cursor);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Applies one set in a nested transaction of parent, so that a failing
 * set leaves the others of its group alone. Returns an LMDB code. */
static int apply_set(MDB_env *env, MDB_txn *parent, struct pl_store_write *w)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(env, parent, 0, &txn);
	if (rc)
		return rc;
	for (size_t i = 0; i < w->count && rc == 0; i++) {
		struct op *o = &w->ops[i];
		MDB_val key = { o->key_len, o->key }, value = { o->value_len, o->value };
		switch (o->kind) {
		case OP_PUT:
			rc = mdb_put(txn, o->space->dbi, &key, &value, 0);
			break;
		case OP_PUT_NEW:
			rc = mdb_put(txn, o->space->dbi, &key, &value, MDB_NOOVERWRITE);
			break;
		case OP_DEL:
			rc = mdb_del(txn, o->space->dbi, &key, NULL);
			if (rc == MDB_NOTFOUND)
				rc = 0;
			break;
		case OP_DEL_PREFIX:
			rc = delete_prefix(txn, o);
			break;
		}
	}
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	return rc;
}

/* Applies sets[0..n) in one parent transaction and commits it. Returns
 * MDB_MAP_FULL when nothing was committed and the map must grow;
 * otherwise 0 with *handled sets finished (committed or failed with their
 * status). *handled < n only when the parent ran out of dirty-page room
 * (MDB_TXN_FULL): the rest go into the next transaction. */
static int apply_group(struct pl_store *store, struct pl_store_write **sets, size_t n,
		       size_t *handled)
{
	*handled = 0;
	pthread_mutex_lock(&store->txn_mutex);
	pthread_rwlock_rdlock(&store->resize_lock);
	MDB_txn *parent;
	int rc = mdb_txn_begin(store->env, NULL, 0, &parent);
	if (rc) {
		pthread_rwlock_unlock(&store->resize_lock);
		pthread_mutex_unlock(&store->txn_mutex);
		pl_log(PL_LOG_ERROR, "store", "cannot begin a write transaction: %s",
		       mdb_strerror(rc));
		for (size_t i = 0; i < n; i++)
			sets[i]->status = -EIO;
		*handled = n;
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (sets[i]->invalid) {
			sets[i]->status = sets[i]->invalid;
			continue;
		}
		int set_rc = apply_set(store->env, parent, sets[i]);
		if (set_rc == MDB_MAP_FULL) {
			mdb_txn_abort(parent);
			pthread_rwlock_unlock(&store->resize_lock);
			pthread_mutex_unlock(&store->txn_mutex);
			return MDB_MAP_FULL;
		}
		if (set_rc == MDB_TXN_FULL && i > 0) {
			n = i;
			break;
		}
		if (set_rc == MDB_TXN_FULL)
			pl_log(PL_LOG_ERROR, "store", "a write set of %zu operations is too big "
			       "for one LMDB transaction", sets[i]->count);
		sets[i]->status = set_status(set_rc);
	}
	rc = mdb_txn_commit(parent);
	pthread_rwlock_unlock(&store->resize_lock);
	pthread_mutex_unlock(&store->txn_mutex);
	if (rc == MDB_MAP_FULL)
		return rc;
	*handled = n;
	if (rc) {
		pl_log(PL_LOG_ERROR, "store", "commit of %zu write sets failed: %s", n,
		       mdb_strerror(rc));
		for (size_t i = 0; i < n; i++)
			if (sets[i]->status == 0)
				sets[i]->status = -EIO;
		return 0;
	}
	pthread_mutex_lock(&store->mutex);
	store->commits++;
	for (size_t i = 0; i < n; i++)
		if (sets[i]->status == 0)
			store->writes++;
	pthread_mutex_unlock(&store->mutex);
	return 0;
}

/* Doubles the map up to max_map_size. Waits for every live transaction
 * of the process to end (a backup in progress delays growth until it is
 * done). False when already at the maximum or LMDB refused. */
static bool grow_map(struct pl_store *store)
{
	if (store->map_size >= store->max_map_size)
		return false;
	uint64_t next = store->map_size * 2;
	if (next > store->max_map_size)
		next = store->max_map_size;
	pthread_rwlock_wrlock(&store->resize_lock);
	int rc = mdb_env_set_mapsize(store->env, (size_t)next);
	pthread_rwlock_unlock(&store->resize_lock);
	if (rc) {
		pl_log(PL_LOG_ERROR, "store", "cannot grow the map to %llu bytes: %s",
		       (unsigned long long)next, mdb_strerror(rc));
		return false;
	}
	pl_log(PL_LOG_INFO, "store", "map grown from %llu to %llu bytes",
	       (unsigned long long)store->map_size, (unsigned long long)next);
	store->map_size = next;
	return true;
}

/* Commits sets[0..n), growing the map as needed. At the maximum each set
 * is tried alone once, so one huge set does not sink the small ones
 * queued with it; those that still do not fit fail with -ENOSPC. */
static void commit_batch(struct pl_store *store, struct pl_store_write **sets, size_t n)
{
	size_t finished = 0;
	while (finished < n) {
		size_t handled;
		if (apply_group(store, sets + finished, n - finished, &handled) != MDB_MAP_FULL) {
			finished += handled;
			continue;
		}
		if (grow_map(store))
			continue;
		for (size_t i = finished; i < n; i++) {
			if (apply_group(store, &sets[i], 1, &handled) == MDB_MAP_FULL) {
				sets[i]->status = -ENOSPC;
				pl_log(PL_LOG_ERROR, "store",
				       "store is full: map size %llu bytes reached max-map-size; "
				       "raise <storage max-map-size>",
				       (unsigned long long)store->map_size);
			}
		}
		return;
	}
}

/* Takes the whole queue; the caller owns the list. */
static struct pl_store_write *take_queue_locked(struct pl_store *store)
{
	struct pl_store_write *batch = store->queue_head;
	store->queue_head = store->queue_tail = NULL;
	return batch;
}

/* Commits a list of sets and moves it to the done list. */
static void process_batch(struct pl_store *store, struct pl_store_write *batch,
			  struct pl_store_write ***sets, size_t *cap)
{
	size_t n = 0;
	for (struct pl_store_write *w = batch; w; w = w->next) {
		pl_grow((void **)sets, cap, n + 1, sizeof(**sets));
		(*sets)[n++] = w;
	}
	commit_batch(store, *sets, n);
	push_done(store, batch);
}

static void *writer_main(void *arg)
{
	struct pl_store *store = arg;
	struct pl_store_write **sets = NULL;
	size_t cap = 0;
	for (;;) {
		pthread_mutex_lock(&store->mutex);
		while (!store->queue_head && !store->stopping)
			pthread_cond_wait(&store->wake, &store->mutex);
		/* Everything that piled up while the last commit was syncing
		 * goes into this transaction: that is the group commit. */
		struct pl_store_write *batch = take_queue_locked(store);
		bool stop = store->stopping && !batch;
		pthread_mutex_unlock(&store->mutex);
		if (stop)
			break;
		process_batch(store, batch, &sets, &cap);
	}
	free(sets);
	return NULL;
}

/* ---- opening -------------------------------------------------------------- */

static int take_lock(struct pl_store *store, char **error)
{
	char *path = pl_asprintf("%s/parleyd.lock", store->path);
	store->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (store->lock_fd < 0) {
		int code = pl_error(error, -errno, "cannot open %s: %s", path, strerror(errno));
		free(path);
		return code;
	}
	free(path);
	if (flock(store->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		int flock_errno = errno;
		char pid[32] = "unknown";
		ssize_t n = pread(store->lock_fd, pid, sizeof(pid) - 1, 0);
		if (n > 0) {
			pid[n] = '\0';
			pid[strcspn(pid, "\n")] = '\0';
		}
		close(store->lock_fd);
		store->lock_fd = -1;
		if (flock_errno != EWOULDBLOCK)
			return pl_error(error, -flock_errno, "cannot lock the store %s: %s",
					store->path, strerror(flock_errno));
		return pl_error(error, -EBUSY, "store %s is in use by another parleyd (pid %s)",
				store->path, pid[0] ? pid : "unknown");
	}
	char text[32];
	int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	if (ftruncate(store->lock_fd, 0) != 0 || pwrite(store->lock_fd, text, (size_t)len, 0) != len)
		pl_log(PL_LOG_WARN, "store", "cannot write the pid into the lock file");
	return 0;
}

/* Migrations from schema version N to N+1, indexed by N, each run inside
 * the start-up write transaction (all of them commit together or not at
 * all). None exist yet: the first layout is version 1, and version 0
 * means a new store. To change the layout: bump PL_STORE_SCHEMA_VERSION
 * and add migrations[old] here. */
typedef int (*migration_fn)(struct pl_store *store, MDB_txn *txn);
static const migration_fn migrations[PL_STORE_SCHEMA_VERSION + 1] = { NULL };

static const char schema_key[] = "schema-version";

static int check_schema(struct pl_store *store, char **error)
{
	struct pl_store_space *meta = pl_store_space(store, "meta");
	if (!meta)
		return pl_error(error, -EIO, "store %s: cannot open the meta space", store->path);
	MDB_txn *txn;
	int rc = mdb_txn_begin(store->env, NULL, 0, &txn);
	if (rc)
		return pl_error(error, -EIO, "store %s: %s", store->path, mdb_strerror(rc));
	MDB_val key = { sizeof(schema_key) - 1, (void *)schema_key }, value;
	rc = mdb_get(txn, meta->dbi, &key, &value);
	uint32_t version = 0;
	if (rc == 0 && value.mv_size == 4) {
		const uint8_t *p = value.mv_data;
		version = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	} else if (rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return pl_error(error, -EIO, "store %s: unreadable schema version (%s)", store->path,
				rc ? mdb_strerror(rc) : "not 4 bytes");
	}
	if (version > PL_STORE_SCHEMA_VERSION) {
		mdb_txn_abort(txn);
		return pl_error(error, -EPROTO,
				"store at %s has schema version %u, this parleyd supports up to %u: "
				"use a newer parleyd",
				store->path, version, PL_STORE_SCHEMA_VERSION);
	}
	if (version == PL_STORE_SCHEMA_VERSION) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (version == 0) {
		version = PL_STORE_SCHEMA_VERSION;
		pl_log(PL_LOG_INFO, "store", "new store at %s (schema version %u)", store->path,
		       version);
	}
	for (uint32_t from = version; from < PL_STORE_SCHEMA_VERSION; from++) {
		if (!migrations[from]) {
			mdb_txn_abort(txn);
			return pl_error(error, -EPROTO,
					"store at %s has schema version %u and this parleyd has no "
					"migration from it", store->path, from);
		}
		pl_log(PL_LOG_INFO, "store", "migrating %s from schema version %u to %u",
		       store->path, from, from + 1);
		rc = migrations[from](store, txn);
		if (rc) {
			mdb_txn_abort(txn);
			return pl_error(error, -EIO, "store %s: migration from schema version %u "
					"failed (%d)", store->path, from, rc);
		}
	}
	uint8_t be[4] = { PL_STORE_SCHEMA_VERSION >> 24, PL_STORE_SCHEMA_VERSION >> 16 & 0xff,
			  PL_STORE_SCHEMA_VERSION >> 8 & 0xff, PL_STORE_SCHEMA_VERSION & 0xff };
	value = (MDB_val){ sizeof(be), be };
	rc = mdb_put(txn, meta->dbi, &key, &value, 0);
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc)
		return pl_error(error, -EIO, "store %s: cannot write the schema version: %s",
				store->path, mdb_strerror(rc));
	return 0;
}

static void close_store(struct pl_store *store)
{
	for (size_t i = 0; i < store->space_count; i++) {
		free(store->spaces[i]->name);
		free(store->spaces[i]);
	}
	free(store->spaces);
	if (store->cached_read) {
		mdb_txn_abort(store->cached_read->txn);
		free(store->cached_read);
	}
	if (store->env)
		mdb_env_close(store->env);
	if (store->done_event)
		event_free(store->done_event);
	if (store->lock_fd >= 0)
		close(store->lock_fd); /* releases the flock */
	pthread_mutex_destroy(&store->mutex);
	pthread_mutex_destroy(&store->txn_mutex);
	pthread_cond_destroy(&store->wake);
	pthread_rwlock_destroy(&store->resize_lock);
	free(store->path);
	free(store);
}

int pl_store_create(struct event_base *base, const struct pl_store_config *config,
		    struct pl_store **out, char **error)
{
	*out = NULL;
	int rc = pl_mkdir_p(config->path);
	if (rc)
		return pl_error(error, rc, "cannot create the store directory %s: %s",
				config->path, strerror(-rc));
	struct pl_store *store = pl_calloc(1, sizeof(*store));
	store->path = pl_strdup(config->path);
	store->lock_fd = -1;
	pthread_mutex_init(&store->mutex, NULL);
	pthread_mutex_init(&store->txn_mutex, NULL);
	pthread_cond_init(&store->wake, NULL);
	pthread_rwlockattr_t rwlock_attributes;
	pthread_rwlockattr_init(&rwlock_attributes);
	pthread_rwlockattr_setkind_np(&rwlock_attributes, PTHREAD_RWLOCK_PREFER_READER_NP);
	pthread_rwlock_init(&store->resize_lock, &rwlock_attributes);
	pthread_rwlockattr_destroy(&rwlock_attributes);
	rc = take_lock(store, error);
	if (rc)
		goto fail;
	store->map_size = config->map_size ? config->map_size : DEFAULT_MAP_SIZE;
	store->max_map_size = config->max_map_size;
	if (store->max_map_size < store->map_size)
		store->max_map_size = store->map_size;
	/* An existing store keeps the map size it grew to (LMDB records it in
	 * the file) unless the configuration asks for more; a size set before
	 * opening would override the recorded one and make it grow again. */
	char *data_file = pl_asprintf("%s/data.mdb", store->path);
	bool existing = access(data_file, F_OK) == 0;
	free(data_file);
	if ((rc = mdb_env_create(&store->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(store->env, config->max_spaces ? config->max_spaces
								    : DEFAULT_MAX_SPACES)) != 0 ||
	    (!existing && (rc = mdb_env_set_mapsize(store->env, (size_t)store->map_size)) != 0)) {
		rc = pl_error(error, -EIO, "store %s: %s", store->path, mdb_strerror(rc));
		goto fail;
	}
	/* MDB_NOTLS: read transactions belong to whichever thread uses them
	 * (network thread, backup thread), not to the thread's TLS slot. */
	unsigned flags = MDB_NOTLS;
	if (config->durability == PL_DURABILITY_NONE)
		flags |= MDB_NOSYNC;
	rc = mdb_env_open(store->env, store->path, flags, 0600);
	if (rc) {
		rc = pl_error(error, -EIO, "cannot open the store %s: %s", store->path,
			      mdb_strerror(rc));
		goto fail;
	}
	MDB_envinfo info;
	mdb_env_info(store->env, &info);
	if (info.me_mapsize < store->map_size) {
		/* No transaction exists yet: resizing is allowed. */
		rc = mdb_env_set_mapsize(store->env, (size_t)store->map_size);
		if (rc) {
			rc = pl_error(error, -EIO, "store %s: cannot set the map size: %s",
				      store->path, mdb_strerror(rc));
			goto fail;
		}
		mdb_env_info(store->env, &info);
	}
	store->map_size = info.me_mapsize;
	if (store->max_map_size < store->map_size)
		store->max_map_size = store->map_size;
	store->done_event = event_new(base, -1, 0, on_done, store);
	if (!store->done_event) {
		rc = pl_error(error, -ENOMEM, "store %s: cannot create the completion event",
			      store->path);
		goto fail;
	}
	rc = check_schema(store, error);
	if (rc)
		goto fail;
	if (pthread_create(&store->writer, NULL, writer_main, store) != 0) {
		rc = pl_error(error, -EAGAIN, "cannot start the store writer thread");
		goto fail;
	}
	store->writer_started = true;
	pl_log(PL_LOG_INFO, "store", "store %s open (map %llu bytes, max %llu, durability %s)",
	       store->path, (unsigned long long)store->map_size,
	       (unsigned long long)store->max_map_size,
	       config->durability == PL_DURABILITY_NONE ? "none" : "fsync");
	*out = store;
	return 0;
fail:
	close_store(store);
	return rc;
}

void pl_store_destroy(struct pl_store *store)
{
	if (!store)
		return;
	pthread_mutex_lock(&store->mutex);
	store->stopping = true;
	pthread_cond_broadcast(&store->wake);
	while (store->backups_running > 0)
		pthread_cond_wait(&store->wake, &store->mutex);
	pthread_mutex_unlock(&store->mutex);
	if (store->writer_started)
		pthread_join(store->writer, NULL);
	/* Completions may submit more writes; with the writer gone they are
	 * committed here, until nothing is left. */
	struct pl_store_write **sets = NULL;
	size_t cap = 0;
	for (;;) {
		run_completions(store);
		pthread_mutex_lock(&store->mutex);
		struct pl_store_write *batch = take_queue_locked(store);
		pthread_mutex_unlock(&store->mutex);
		if (!batch)
			break;
		process_batch(store, batch, &sets, &cap);
	}
	free(sets);
	close_store(store);
}

/* ---- spaces ------------------------------------------------------------------ */

struct pl_store_space *pl_store_space(struct pl_store *store, const char *name)
{
	for (size_t i = 0; i < store->space_count; i++)
		if (strcmp(store->spaces[i]->name, name) == 0)
			return store->spaces[i];
	/* The writer is not in a transaction while we hold txn_mutex, and the
	 * read side of resize_lock keeps the map from moving under ours. */
	pthread_mutex_lock(&store->txn_mutex);
	pthread_rwlock_rdlock(&store->resize_lock);
	MDB_txn *txn;
	MDB_dbi dbi;
	int rc = mdb_txn_begin(store->env, NULL, 0, &txn);
	if (rc == 0) {
		rc = mdb_dbi_open(txn, name, MDB_CREATE, &dbi);
		if (rc == 0)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
	}
	pthread_rwlock_unlock(&store->resize_lock);
	pthread_mutex_unlock(&store->txn_mutex);
	if (rc) {
		pl_log(PL_LOG_ERROR, "store", "cannot open key space %s: %s%s", name,
		       mdb_strerror(rc),
		       rc == MDB_DBS_FULL ? " (raise the store's maximum number of spaces)" : "");
		return NULL;
	}
	struct pl_store_space *space = pl_calloc(1, sizeof(*space));
	space->name = pl_strdup(name);
	space->dbi = dbi;
	pl_grow((void **)&store->spaces, &store->space_cap, store->space_count + 1,
		sizeof(*store->spaces));
	store->spaces[store->space_count++] = space;
	return space;
}

const char *pl_store_space_name(const struct pl_store_space *space)
{
	return space->name;
}

size_t pl_store_space_count(const struct pl_store *store)
{
	return store->space_count;
}

struct pl_store_space *pl_store_space_at(const struct pl_store *store, size_t index)
{
	return index < store->space_count ? store->spaces[index] : NULL;
}

/* ---- writes --------------------------------------------------------------- */

struct pl_store_write *pl_store_write_begin(struct pl_store *store)
{
	struct pl_store_write *w = pl_calloc(1, sizeof(*w));
	w->store = store;
	return w;
}

static void add_op(struct pl_store_write *w, enum op_kind kind, struct pl_store_space *space,
		   const void *key, size_t key_len, const void *value, size_t value_len)
{
	/* A NULL space (pl_store_space failed, already logged) would crash
	 * the writer: the set fails as a whole instead. */
	if (!space) {
		pl_log(PL_LOG_ERROR, "store", "write to a space that could not be opened");
		w->invalid = -EINVAL;
		return;
	}
	pl_grow((void **)&w->ops, &w->cap, w->count + 1, sizeof(*w->ops));
	struct op *o = &w->ops[w->count++];
	o->kind = kind;
	o->space = space;
	o->key = pl_malloc(key_len + value_len + 1);
	if (key_len)
		memcpy(o->key, key, key_len);
	o->key_len = key_len;
	o->value = o->key + key_len;
	if (value_len)
		memcpy(o->value, value, value_len);
	o->value_len = value_len;
}

void pl_store_put(struct pl_store_write *w, struct pl_store_space *space, const void *key,
		  size_t key_len, const void *value, size_t value_len)
{
	add_op(w, OP_PUT, space, key, key_len, value, value_len);
}

void pl_store_put_new(struct pl_store_write *w, struct pl_store_space *space, const void *key,
		      size_t key_len, const void *value, size_t value_len)
{
	add_op(w, OP_PUT_NEW, space, key, key_len, value, value_len);
}

void pl_store_del(struct pl_store_write *w, struct pl_store_space *space, const void *key,
		  size_t key_len)
{
	add_op(w, OP_DEL, space, key, key_len, NULL, 0);
}

void pl_store_del_prefix(struct pl_store_write *w, struct pl_store_space *space,
			 const void *prefix, size_t prefix_len)
{
	add_op(w, OP_DEL_PREFIX, space, prefix, prefix_len, NULL, 0);
}

/* A write submitted while a client stanza is processed holds that
 * stanza's acknowledgement until the commit (ack.h). */
struct held_completion {
	pl_store_done_fn done;
	void *arg;
	void *hold;
};

static void release_after_done(void *arg, int status)
{
	struct held_completion *h = arg;
	if (h->done)
		h->done(h->arg, status);
	pl_ack_release(h->hold);
	free(h);
}

void pl_store_write_submit(struct pl_store_write *w, pl_store_done_fn done, void *arg)
{
	struct pl_store *store = w->store;
	void *hold = pl_ack_hold();
	if (hold) {
		struct held_completion *h = pl_malloc(sizeof(*h));
		*h = (struct held_completion){ done, arg, hold };
		done = release_after_done;
		arg = h;
	}
	w->done = done;
	w->arg = arg;
	pthread_mutex_lock(&store->mutex);
	if (store->queue_tail)
		store->queue_tail->next = w;
	else
		store->queue_head = w;
	store->queue_tail = w;
	pthread_cond_signal(&store->wake);
	pthread_mutex_unlock(&store->mutex);
}

void pl_store_write_abort(struct pl_store_write *w)
{
	if (w)
		free_write(w);
}

/* ---- reads ------------------------------------------------------------------ */

struct pl_store_read *pl_store_read_begin(struct pl_store *store)
{
	pthread_rwlock_rdlock(&store->resize_lock);
	struct pl_store_read *r = __atomic_exchange_n(&store->cached_read, NULL, __ATOMIC_ACQ_REL);
	if (r) {
		int rc = mdb_txn_renew(r->txn);
		if (rc == 0)
			return r;
		pl_log(PL_LOG_WARN, "store", "cannot renew a read transaction: %s",
		       mdb_strerror(rc));
		mdb_txn_abort(r->txn);
	} else {
		r = pl_calloc(1, sizeof(*r));
		r->store = store;
	}
	int rc = mdb_txn_begin(store->env, NULL, MDB_RDONLY, &r->txn);
	if (rc) {
		pl_log(PL_LOG_ERROR, "store", "cannot begin a read: %s", mdb_strerror(rc));
		r->txn = NULL;
	}
	return r;
}

void pl_store_read_end(struct pl_store_read *r)
{
	if (!r)
		return;
	struct pl_store *store = r->store;
	if (r->txn) {
		mdb_txn_reset(r->txn);
		struct pl_store_read *empty = NULL;
		if (__atomic_compare_exchange_n(&store->cached_read, &empty, r, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			pthread_rwlock_unlock(&store->resize_lock);
			return;
		}
		mdb_txn_abort(r->txn);
	}
	pthread_rwlock_unlock(&store->resize_lock);
	free(r);
}

int pl_store_get(struct pl_store_read *r, struct pl_store_space *space, const void *key,
		 size_t key_len, const void **value, size_t *value_len)
{
	if (!r->txn || !space)
		return -EIO;
	MDB_val k = { key_len, (void *)key }, v;
	int rc = mdb_get(r->txn, space->dbi, &k, &v);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc == MDB_BAD_VALSIZE)
		return -ENOENT; /* a key LMDB cannot hold is certainly absent */
	if (rc) {
		pl_log(PL_LOG_ERROR, "store", "read from %s failed: %s", space->name,
		       mdb_strerror(rc));
		return -EIO;
	}
	*value = v.mv_data;
	*value_len = v.mv_size;
	return 0;
}

static int compare_bytes(const void *a, size_t a_len, const void *b, size_t b_len)
{
	size_t common = a_len < b_len ? a_len : b_len;
	int order = common ? memcmp(a, b, common) : 0;
	if (order)
		return order;
	return a_len < b_len ? -1 : a_len > b_len;
}

/* Calls fn from the cursor's position while keys carry the prefix,
 * stepping with `step` (MDB_NEXT or MDB_PREV); closes the cursor. rc is
 * the status of the positioning. */
static int walk(MDB_cursor *cursor, int rc, MDB_val *key, MDB_val *value, MDB_cursor_op step,
		const struct pl_store_space *space, const void *prefix, size_t prefix_len,
		pl_store_scan_fn fn, void *arg)
{
	int result = 0;
	while (rc == 0) {
		if (prefix_len &&
		    (key->mv_size < prefix_len || memcmp(key->mv_data, prefix, prefix_len) != 0))
			break;
		result = fn(arg, key->mv_data, key->mv_size, value->mv_data, value->mv_size);
		if (result)
			break;
		rc = mdb_cursor_get(cursor, key, value, step);
	}
	mdb_cursor_close(cursor);
	if (result)
		return result;
	if (rc && rc != MDB_NOTFOUND) {
		pl_log(PL_LOG_ERROR, "store", "scan of %s failed: %s", space->name, mdb_strerror(rc));
		return -EIO;
	}
	return 0;
}

int pl_store_scan(struct pl_store_read *r, struct pl_store_space *space, const void *prefix,
		  size_t prefix_len, const void *start, size_t start_len, pl_store_scan_fn fn,
		  void *arg)
{
	if (!r->txn || !space)
		return -EIO;
	MDB_cursor *cursor;
	int rc = mdb_cursor_open(r->txn, space->dbi, &cursor);
	if (rc)
		return -EIO;
	/* Begin at the later of start and prefix: a start before the prefix
	 * must not make the scan stop at the first foreign key. */
	const void *from = prefix;
	size_t from_len = prefix_len;
	if (start && start_len && compare_bytes(start, start_len, prefix, prefix_len) > 0) {
		from = start;
		from_len = start_len;
	}
	MDB_val key, value;
	if (from_len) {
		key = (MDB_val){ from_len, (void *)from };
		rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
	} else {
		rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
	}
	return walk(cursor, rc, &key, &value, MDB_NEXT, space, prefix, prefix_len, fn, arg);
}

int pl_store_scan_reverse(struct pl_store_read *r, struct pl_store_space *space,
			  const void *prefix, size_t prefix_len, const void *before,
			  size_t before_len, pl_store_scan_fn fn, void *arg)
{
	if (!r->txn || !space)
		return -EIO;
	MDB_cursor *cursor;
	int rc = mdb_cursor_open(r->txn, space->dbi, &cursor);
	if (rc)
		return -EIO;
	/* Position on the first key at or after the bound, then step back:
	 * the bound is `before`, or else the smallest key after every key
	 * with the prefix (the prefix with its last byte raised). */
	uint8_t bound[512];
	const void *limit = before;
	size_t limit_len = before_len;
	if (!before || !before_len) {
		limit = NULL;
		limit_len = 0;
		if (prefix_len && prefix_len <= sizeof(bound)) {
			memcpy(bound, prefix, prefix_len);
			size_t n = prefix_len;
			while (n > 0 && bound[n - 1] == 0xff)
				n--;
			if (n > 0) {
				bound[n - 1]++;
				limit = bound;
				limit_len = n;
			}
		}
	}
	MDB_val key, value;
	if (limit_len) {
		key = (MDB_val){ limit_len, (void *)limit };
		rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
		rc = rc == 0 ? mdb_cursor_get(cursor, &key, &value, MDB_PREV)
			     : mdb_cursor_get(cursor, &key, &value, MDB_LAST);
	} else {
		rc = mdb_cursor_get(cursor, &key, &value, MDB_LAST);
	}
	return walk(cursor, rc, &key, &value, MDB_PREV, space, prefix, prefix_len, fn, arg);
}

/* ---- maintenance ------------------------------------------------------------ */

void pl_store_stats(struct pl_store *store, struct pl_store_stats *out)
{
	MDB_envinfo info;
	MDB_stat stat;
	mdb_env_info(store->env, &info);
	mdb_env_stat(store->env, &stat);
	out->map_size = info.me_mapsize;
	out->used_bytes = (uint64_t)(info.me_last_pgno + 1) * stat.ms_psize;
	pthread_mutex_lock(&store->mutex);
	out->commits = store->commits;
	out->writes = store->writes;
	pthread_mutex_unlock(&store->mutex);
}

struct backup_job {
	struct pl_store *store;
	char *path;
	struct pl_store_write *completion; /* carries done/arg/status back */
};

/* Makes the rename itself durable. */
static void sync_parent_directory(const char *path)
{
	char *copy = pl_strdup(path);
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		if (fsync(fd) != 0)
			pl_log(PL_LOG_WARN, "store", "cannot sync the directory of %s: %s", path,
			       strerror(errno));
		close(fd);
	}
	free(copy);
}

static void *backup_main(void *arg)
{
	struct backup_job *job = arg;
	struct pl_store *store = job->store;
	char *tmp = pl_asprintf("%s.tmp", job->path);
	int status = 0;
	int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0) {
		status = -errno;
		pl_log(PL_LOG_ERROR, "store", "backup: cannot create %s: %s", tmp, strerror(errno));
	} else {
		/* The copy runs in a read transaction: holding the read side
		 * keeps the map from being resized under it, so growth (and the
		 * writes needing it) waits for the backup to finish. */
		pthread_rwlock_rdlock(&store->resize_lock);
		int rc = mdb_env_copyfd2(store->env, fd, MDB_CP_COMPACT);
		pthread_rwlock_unlock(&store->resize_lock);
		if (rc) {
			pl_log(PL_LOG_ERROR, "store", "backup: copy failed: %s", mdb_strerror(rc));
			status = rc > 0 ? -rc : -EIO;
		}
		if (status == 0 && fsync(fd) != 0)
			status = -errno;
		if (close(fd) != 0 && status == 0)
			status = -errno;
		if (status == 0 && rename(tmp, job->path) != 0)
			status = -errno;
		if (status == 0)
			sync_parent_directory(job->path);
		else
			unlink(tmp);
	}
	if (status == 0)
		pl_log(PL_LOG_INFO, "store", "backup written to %s", job->path);
	else
		pl_log(PL_LOG_ERROR, "store", "backup to %s failed: %s", job->path,
		       strerror(-status));
	free(tmp);
	free(job->path);
	struct pl_store_write *completion = job->completion;
	free(job);
	completion->status = status;
	/* Posted before backups_running drops, so that destroy, which waits
	 * for the count, finds the completion on the done list. */
	push_done(store, completion);
	pthread_mutex_lock(&store->mutex);
	store->backups_running--;
	pthread_cond_broadcast(&store->wake);
	pthread_mutex_unlock(&store->mutex);
	return NULL;
}

int pl_store_backup(struct pl_store *store, const char *path, pl_store_done_fn done, void *arg)
{
	struct backup_job *job = pl_calloc(1, sizeof(*job));
	job->store = store;
	job->path = pl_strdup(path);
	struct pl_store_write *completion = pl_store_write_begin(store);
	completion->done = done;
	completion->arg = arg;
	completion->is_backup = true;
	job->completion = completion;
	pthread_mutex_lock(&store->mutex);
	store->backups_running++;
	/* Set under the mutex: the thread may finish and post the completion
	 * before pthread_create returns, but run_completions reads the id
	 * only after taking the done list under the same mutex. */
	int rc = pthread_create(&completion->backup_thread, NULL, backup_main, job);
	if (rc != 0)
		store->backups_running--;
	pthread_mutex_unlock(&store->mutex);
	if (rc != 0) {
		pl_log(PL_LOG_ERROR, "store", "cannot start the backup thread: %s", strerror(rc));
		free_write(completion);
		free(job->path);
		free(job);
		return -EAGAIN;
	}
	return 0;
}
