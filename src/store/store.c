/* The LMDB store. The network thread builds write sets and submits them;
 * the writer thread takes every set that is waiting, applies each in a
 * nested transaction of one parent transaction, commits once (one fsync
 * for the whole group) and hands the sets back through a done list and a
 * libevent event, so completions run on the network thread. Growing the
 * map needs no transaction alive in the process: readers hold a
 * read-write lock for reading while their transaction lives, and the
 * writer takes it for writing around mdb_env_set_mapsize. */
#include "store/store.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <event2/event.h>
#include <lmdb.h>

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

/* A write set, or a finished backup travelling the same done list. */
struct pl_store_write {
	struct pl_store *store;
	struct op *ops;
	size_t count, cap;
	pl_store_done_fn done;
	void *arg;
	int status;
	struct pl_store_write *next;
};

struct pl_store {
	MDB_env *env;
	char *path;
	int lock_fd;
	struct event *done_event;       /* wakes the network thread */
	pthread_t writer;
	bool writer_started;

	pthread_mutex_t mutex;          /* guards queue, done list, counters, stopping */
	pthread_cond_t wake;            /* work for the writer, or a backup finished */
	struct pl_store_write *queue_head, *queue_tail;
	struct pl_store_write *done_head, *done_tail;
	bool stopping;
	unsigned backups_running;
	uint64_t commits, writes;

	pthread_mutex_t txn_mutex;      /* the writer's transaction vs. opening spaces */
	pthread_rwlock_t resize_lock;   /* read: a transaction is alive; write: resizing */
	uint64_t map_size, max_map_size;

	struct pl_store_space **spaces; /* network thread only */
	size_t space_count, space_cap;
};

struct pl_store_read {
	struct pl_store *store;
	MDB_txn *txn;
};

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

static int lmdb_status(int rc)
{
	switch (rc) {
	case MDB_SUCCESS: return 0;
	case MDB_KEYEXIST: return -EEXIST;
	case MDB_NOTFOUND: return -ENOENT;
	case MDB_MAP_FULL: return -ENOSPC;
	default: return -EIO;
	}
}

static int delete_prefix(MDB_txn *txn, const struct op *o)
{
	MDB_cursor *cursor;
	int rc = mdb_cursor_open(txn, o->space->dbi, &cursor);
	if (rc)
		return rc;
	MDB_val key = { o->key_len, o->key }, value;
	rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
	while (rc == 0 && key.mv_size >= o->key_len && memcmp(key.mv_data, o->key, o->key_len) == 0) {
		rc = mdb_cursor_del(cursor, 0);
		if (rc)
			break;
		rc = mdb_cursor_get(cursor, &key, &value, MDB_GET_CURRENT);
		if (rc == MDB_NOTFOUND || rc == EINVAL)
			rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
	}
	mdb_cursor_close(cursor);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Applies one set in a nested transaction. Returns an LMDB code; the set's
 * status gets the errno view of it. */
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

/* Applies sets[0..n) in one transaction. MDB_MAP_FULL means nothing was
 * committed and the caller should grow the map and try again. */
static int apply_group(struct pl_store *store, struct pl_store_write **sets, size_t n)
{
	pthread_mutex_lock(&store->txn_mutex);
	pthread_rwlock_rdlock(&store->resize_lock);
	MDB_txn *parent;
	int rc = mdb_txn_begin(store->env, NULL, 0, &parent);
	if (rc) {
		pthread_rwlock_unlock(&store->resize_lock);
		pthread_mutex_unlock(&store->txn_mutex);
		for (size_t i = 0; i < n; i++)
			sets[i]->status = lmdb_status(rc);
		return rc;
	}
	for (size_t i = 0; i < n; i++) {
		int set_rc = apply_set(store->env, parent, sets[i]);
		if (set_rc == MDB_MAP_FULL) {
			mdb_txn_abort(parent);
			pthread_rwlock_unlock(&store->resize_lock);
			pthread_mutex_unlock(&store->txn_mutex);
			return MDB_MAP_FULL;
		}
		sets[i]->status = lmdb_status(set_rc);
		if (set_rc && set_rc != MDB_KEYEXIST)
			pl_log(PL_LOG_ERROR, "store", "write failed: %s", mdb_strerror(set_rc));
	}
	rc = mdb_txn_commit(parent);
	pthread_rwlock_unlock(&store->resize_lock);
	pthread_mutex_unlock(&store->txn_mutex);
	if (rc == MDB_MAP_FULL)
		return rc;
	if (rc) {
		pl_log(PL_LOG_ERROR, "store", "commit failed: %s", mdb_strerror(rc));
		for (size_t i = 0; i < n; i++)
			if (sets[i]->status == 0)
				sets[i]->status = -EIO;
	}
	pthread_mutex_lock(&store->mutex);
	store->commits++;
	for (size_t i = 0; i < n; i++)
		if (sets[i]->status == 0)
			store->writes++;
	pthread_mutex_unlock(&store->mutex);
	return 0;
}

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

static void commit_batch(struct pl_store *store, struct pl_store_write **sets, size_t n)
{
	while (apply_group(store, sets, n) == MDB_MAP_FULL) {
		if (grow_map(store))
			continue;
		/* At the maximum: let the sets that fit go through alone so one
		 * big set does not sink the small ones. */
		for (size_t i = 0; i < n; i++) {
			if (apply_group(store, &sets[i], 1) == MDB_MAP_FULL) {
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

static void *writer_main(void *arg)
{
	struct pl_store *store = arg;
	struct pl_store_write **sets = NULL;
	size_t cap = 0;
	for (;;) {
		pthread_mutex_lock(&store->mutex);
		while (!store->queue_head && !store->stopping)
			pthread_cond_wait(&store->wake, &store->mutex);
		struct pl_store_write *batch = store->queue_head;
		store->queue_head = store->queue_tail = NULL;
		bool stop = store->stopping && !batch;
		pthread_mutex_unlock(&store->mutex);
		if (stop)
			break;
		size_t n = 0;
		for (struct pl_store_write *w = batch; w; w = w->next) {
			pl_grow((void **)&sets, &cap, n + 1, sizeof(*sets));
			sets[n++] = w;
		}
		commit_batch(store, sets, n);
		push_done(store, batch);
	}
	free(sets);
	return NULL;
}

/* ---- opening ------------------------------------------------------------ */

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
		char pid[32] = "unknown";
		ssize_t n = pread(store->lock_fd, pid, sizeof(pid) - 1, 0);
		if (n > 0) {
			pid[n] = '\0';
			pid[strcspn(pid, "\n")] = '\0';
		}
		close(store->lock_fd);
		store->lock_fd = -1;
		return pl_error(error, -EBUSY, "store %s is in use by another parleyd (pid %s)",
				store->path, pid);
	}
	char text[32];
	int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	if (ftruncate(store->lock_fd, 0) != 0 || pwrite(store->lock_fd, text, (size_t)len, 0) != len)
		pl_log(PL_LOG_WARN, "store", "cannot write the pid into the lock file");
	return 0;
}

/* Migrations from version N to N+1, indexed by N. None exist yet: the
 * first layout is version 1. */
typedef int (*migration_fn)(struct pl_store *store, MDB_txn *txn);
static const migration_fn migrations[PL_STORE_SCHEMA_VERSION + 1] = { NULL };

static int check_schema(struct pl_store *store, char **error)
{
	struct pl_store_space *meta = pl_store_space(store, "meta");
	if (!meta)
		return pl_error(error, -EIO, "store %s: cannot open the meta space", store->path);
	MDB_txn *txn;
	int rc = mdb_txn_begin(store->env, NULL, 0, &txn);
	if (rc)
		return pl_error(error, -EIO, "store %s: %s", store->path, mdb_strerror(rc));
	MDB_val key = { strlen("schema-version"), "schema-version" }, value;
	rc = mdb_get(txn, meta->dbi, &key, &value);
	uint32_t version = 0;
	if (rc == 0 && value.mv_size == 4) {
		const uint8_t *p = value.mv_data;
		version = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	} else if (rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return pl_error(error, -EIO, "store %s: unreadable schema version", store->path);
	}
	if (version > PL_STORE_SCHEMA_VERSION) {
		mdb_txn_abort(txn);
		return pl_error(error, -EPROTO,
				"store at %s has schema version %u, this parleyd supports up to %u: "
				"use a newer parleyd",
				store->path, version, PL_STORE_SCHEMA_VERSION);
	}
	if (version == 0) {
		version = PL_STORE_SCHEMA_VERSION;
		pl_log(PL_LOG_INFO, "store", "new store at %s (schema version %u)", store->path,
		       version);
	}
	for (uint32_t v = version; v < PL_STORE_SCHEMA_VERSION; v++) {
		if (!migrations[v]) {
			mdb_txn_abort(txn);
			return pl_error(error, -EPROTO, "store at %s: no migration from schema %u",
					store->path, v);
		}
		pl_log(PL_LOG_INFO, "store", "migrating %s from schema %u to %u", store->path, v,
		       v + 1);
		rc = migrations[v](store, txn);
		if (rc) {
			mdb_txn_abort(txn);
			return pl_error(error, -EIO, "store %s: migration from schema %u failed",
					store->path, v);
		}
	}
	uint8_t be[4] = { PL_STORE_SCHEMA_VERSION >> 24, PL_STORE_SCHEMA_VERSION >> 16 & 0xff,
			  PL_STORE_SCHEMA_VERSION >> 8 & 0xff, PL_STORE_SCHEMA_VERSION & 0xff };
	value = (MDB_val){ 4, be };
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
	if (store->env)
		mdb_env_close(store->env);
	if (store->done_event)
		event_free(store->done_event);
	if (store->lock_fd >= 0)
		close(store->lock_fd);
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
	int rc = pl_mkdir_p(config->path);
	if (rc)
		return pl_error(error, rc, "cannot create the store directory %s: %s", config->path,
				strerror(-rc));
	struct pl_store *store = pl_calloc(1, sizeof(*store));
	store->path = pl_strdup(config->path);
	store->lock_fd = -1;
	pthread_mutex_init(&store->mutex, NULL);
	pthread_mutex_init(&store->txn_mutex, NULL);
	pthread_cond_init(&store->wake, NULL);
	pthread_rwlock_init(&store->resize_lock, NULL);
	rc = take_lock(store, error);
	if (rc)
		goto fail;
	store->max_map_size = config->max_map_size;
	store->map_size = config->map_size;
	if ((rc = mdb_env_create(&store->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(store->env, config->max_spaces ? config->max_spaces : 64)) != 0) {
		rc = pl_error(error, -EIO, "store %s: %s", store->path, mdb_strerror(rc));
		goto fail;
	}
	mdb_env_set_mapsize(store->env, (size_t)store->map_size);
	unsigned flags = MDB_NOTLS;
	if (config->durability == PL_DURABILITY_NONE)
		flags |= MDB_NOSYNC;
	rc = mdb_env_open(store->env, store->path, flags, 0600);
	if (rc) {
		rc = pl_error(error, -EIO, "cannot open the store %s: %s", store->path,
			      mdb_strerror(rc));
		goto fail;
	}
	/* An existing store may already be bigger than the configured start. */
	MDB_envinfo info;
	mdb_env_info(store->env, &info);
	store->map_size = info.me_mapsize;
	if (store->max_map_size < store->map_size)
		store->max_map_size = store->map_size;
	store->done_event = event_new(base, -1, 0, on_done, store);
	rc = check_schema(store, error);
	if (rc)
		goto fail;
	if (pthread_create(&store->writer, NULL, writer_main, store) != 0) {
		rc = pl_error(error, -EAGAIN, "cannot start the store writer thread");
		goto fail;
	}
	store->writer_started = true;
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
	run_completions(store);
	close_store(store);
}

struct pl_store_space *pl_store_space(struct pl_store *store, const char *name)
{
	for (size_t i = 0; i < store->space_count; i++)
		if (strcmp(store->spaces[i]->name, name) == 0)
			return store->spaces[i];
	pthread_mutex_lock(&store->txn_mutex);
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
	pthread_mutex_unlock(&store->txn_mutex);
	if (rc) {
		pl_log(PL_LOG_ERROR, "store", "cannot open key space %s: %s", name, mdb_strerror(rc));
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
	pl_grow((void **)&w->ops, &w->cap, w->count + 1, sizeof(*w->ops));
	struct op *o = &w->ops[w->count++];
	o->kind = kind;
	o->space = space;
	o->key = pl_malloc(key_len + value_len + 1);
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

void pl_store_write_submit(struct pl_store_write *w, pl_store_done_fn done, void *arg)
{
	struct pl_store *store = w->store;
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
	free_write(w);
}

/* ---- reads ------------------------------------------------------------------ */

struct pl_store_read *pl_store_read_begin(struct pl_store *store)
{
	struct pl_store_read *r = pl_calloc(1, sizeof(*r));
	r->store = store;
	pthread_rwlock_rdlock(&store->resize_lock);
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
	if (r->txn)
		mdb_txn_abort(r->txn);
	pthread_rwlock_unlock(&r->store->resize_lock);
	free(r);
}

int pl_store_get(struct pl_store_read *r, struct pl_store_space *space, const void *key,
		 size_t key_len, const void **value, size_t *value_len)
{
	if (!r->txn || !space)
		return -EIO;
	MDB_val k = { key_len, (void *)key }, v;
	int rc = mdb_get(r->txn, space->dbi, &k, &v);
	if (rc)
		return lmdb_status(rc);
	*value = v.mv_data;
	*value_len = v.mv_size;
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
	MDB_val key, value;
	if (start && start_len) {
		key = (MDB_val){ start_len, (void *)start };
		rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
	} else if (prefix_len) {
		key = (MDB_val){ prefix_len, (void *)prefix };
		rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
	} else {
		rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
	}
	int result = 0;
	while (rc == 0) {
		if (prefix_len &&
		    (key.mv_size < prefix_len || memcmp(key.mv_data, prefix, prefix_len) != 0))
			break;
		result = fn(arg, key.mv_data, key.mv_size, value.mv_data, value.mv_size);
		if (result)
			break;
		rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
	}
	mdb_cursor_close(cursor);
	if (rc && rc != MDB_NOTFOUND && !result)
		return -EIO;
	return result;
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

static void *backup_main(void *arg)
{
	struct backup_job *job = arg;
	struct pl_store *store = job->store;
	char *tmp = pl_asprintf("%s.tmp", job->path);
	int status = 0;
	int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0) {
		status = -errno;
	} else {
		/* Holding the read side keeps the map from being resized under
		 * the copy; a resize waits for the backup to finish. */
		pthread_rwlock_rdlock(&store->resize_lock);
		int rc = mdb_env_copyfd2(store->env, fd, MDB_CP_COMPACT);
		pthread_rwlock_unlock(&store->resize_lock);
		if (rc)
			status = rc > 0 ? -rc : -EIO;
		if (status == 0 && fsync(fd) != 0)
			status = -errno;
		close(fd);
		if (status == 0 && rename(tmp, job->path) != 0)
			status = -errno;
		if (status != 0)
			unlink(tmp);
	}
	if (status == 0)
		pl_log(PL_LOG_INFO, "store", "backup written to %s", job->path);
	else
		pl_log(PL_LOG_ERROR, "store", "backup to %s failed: %s", job->path, strerror(-status));
	free(tmp);
	job->completion->status = status;
	push_done(store, job->completion);
	pthread_mutex_lock(&store->mutex);
	store->backups_running--;
	pthread_cond_broadcast(&store->wake);
	pthread_mutex_unlock(&store->mutex);
	free(job->path);
	free(job);
	return NULL;
}

int pl_store_backup(struct pl_store *store, const char *path, pl_store_done_fn done, void *arg)
{
	struct backup_job *job = pl_calloc(1, sizeof(*job));
	job->store = store;
	job->path = pl_strdup(path);
	job->completion = pl_store_write_begin(store);
	job->completion->done = done;
	job->completion->arg = arg;
	pthread_mutex_lock(&store->mutex);
	store->backups_running++;
	pthread_mutex_unlock(&store->mutex);
	pthread_t thread;
	pthread_attr_t attributes;
	pthread_attr_init(&attributes);
	pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(&thread, &attributes, backup_main, job);
	pthread_attr_destroy(&attributes);
	if (rc != 0) {
		pthread_mutex_lock(&store->mutex);
		store->backups_running--;
		pthread_mutex_unlock(&store->mutex);
		free_write(job->completion);
		free(job->path);
		free(job);
		return -EAGAIN;
	}
	return 0;
}
