/* mod_dedup: drops messages a client sends twice. A client that lost its
 * stream before an acknowledgement (and could not resume) sends its
 * unacknowledged messages again on a new stream; those carrying a
 * XEP-0359 origin-id it already used are accepted (and so acknowledged)
 * but not routed a second time. The ids are remembered per sender bare
 * JID, the last `window` of them for at most `max-age`, in memory and in
 * dedup.ids ("sender\0origin-id" -> the time it was seen, u64 BE), so the
 * window survives a restart. A sender's ids are loaded at its first
 * message after a start. */
#include "counters.h"
#include "iq_storage.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"
#include "store/store.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_SID "urn:xmpp:sid:0"

struct dedup_conf {
	int64_t window;
	int64_t max_age_ms;
};

static const struct pl_option dedup_options[] = {
	{ "window", PL_OPT_INT, "1000", 1, 100000, NULL, offsetof(struct dedup_conf, window),
	  "origin-ids remembered per sender" },
	{ "max-age", PL_OPT_DURATION, "24h", 60000, 30LL * 86400000, NULL,
	  offsetof(struct dedup_conf, max_age_ms), "how long an origin-id is remembered" },
	{ NULL }
};

static struct dedup_conf conf;
static struct pl_module *self;
static struct pl_store_space *ids_space;
static struct pl_counter *duplicates_dropped;

struct seen {
	char *id;              /* owned */
	uint64_t at;           /* unix seconds */
};

/* One sender's window: a ring, oldest at `head`. */
struct sender {
	char *jid;             /* owned */
	struct seen *ring;     /* owned, `conf.window` slots */
	size_t head, count;
	struct sender *next;
};

#define SENDER_BUCKETS 4096
static struct sender *senders[SENDER_BUCKETS];

static struct seen *slot(struct sender *s, size_t i)
{
	return &s->ring[(s->head + i) % (size_t)conf.window];
}

/* Appends, returning the id pushed out of the window (caller frees) or NULL. */
static char *remember(struct sender *s, const char *id, uint64_t at)
{
	char *evicted = NULL;
	if (s->count == (size_t)conf.window) {
		evicted = slot(s, 0)->id;
		s->head = (s->head + 1) % (size_t)conf.window;
		s->count--;
	}
	*slot(s, s->count++) = (struct seen){ pl_strdup(id), at };
	return evicted;
}

static int load_id(void *arg, const void *key, size_t key_len, const void *value,
		   size_t value_len)
{
	struct sender *s = arg;
	size_t prefix = strlen(s->jid) + 1;
	uint64_t at = 0;
	if (key_len <= prefix || value_len != 8 || !pl_store_key_read_u64(value, 8, &at))
		return 0;
	char *id = pl_strndup((const char *)key + prefix, key_len - prefix);
	free(remember(s, id, at));
	free(id);
	return 0;
}

static int by_time(const void *a, const void *b)
{
	const struct seen *x = a, *y = b;
	return x->at < y->at ? -1 : x->at > y->at;
}

static struct sender *sender_get(const char *jid)
{
	struct sender **link = &senders[pl_hash_string(jid) % SENDER_BUCKETS];
	for (; *link; link = &(*link)->next)
		if (strcmp((*link)->jid, jid) == 0)
			return *link;
	struct sender *s = pl_calloc(1, sizeof(*s));
	s->jid = pl_strdup(jid);
	s->ring = pl_calloc((size_t)conf.window, sizeof(*s->ring));
	size_t prefix_len;
	void *prefix = pl_user_key(jid, "", &prefix_len);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (read) {
		pl_store_scan(read, ids_space, prefix, prefix_len, NULL, 0, load_id, s);
		pl_store_read_end(read);
	}
	free(prefix);
	/* Stored in key order; the window's order is by time. */
	if (s->count > 1 && s->head == 0)
		qsort(s->ring, s->count, sizeof(*s->ring), by_time);
	*link = s;
	return s;
}

static int on_stanza_out(struct pl_event *event, void *userdata)
{
	struct pl_route_event *e = event->data;
	if (strcmp(e->stanza->name, "message") != 0)
		return PL_CONTINUE;
	struct pl_xnode *origin = pl_xnode_find(e->stanza, "origin-id", NS_SID);
	const char *id = origin ? pl_xnode_attr(origin, "id") : NULL;
	if (!id || !*id || strlen(id) > 256)
		return PL_CONTINUE;
	struct sender *s = sender_get(e->origin->bare_jid);
	uint64_t now = (uint64_t)time(NULL);
	uint64_t oldest = now - (uint64_t)(conf.max_age_ms / 1000);
	for (size_t i = 0; i < s->count; i++) {
		struct seen *seen = slot(s, i);
		if (seen->at >= oldest && strcmp(seen->id, id) == 0) {
			pl_counter_add(duplicates_dropped, 1);
			pl_module_log(self, 2, "%s: dropped a message sent again (origin-id %s)",
				      e->origin->full_jid, id);
			return PL_HANDLED;
		}
	}
	/* Remembered durably before the stanza is acknowledged (ack.h). */
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	char *evicted = remember(s, id, now);
	if (evicted) {
		size_t key_len;
		void *key = pl_user_key(s->jid, evicted, &key_len);
		pl_store_del(w, ids_space, key, key_len);
		free(key);
		free(evicted);
	}
	struct pl_store_key stamp;
	pl_store_key_init(&stamp);
	pl_store_key_u64(&stamp, now);
	size_t key_len;
	void *key = pl_user_key(s->jid, id, &key_len);
	pl_store_put(w, ids_space, key, key_len, stamp.data, stamp.len);
	free(key);
	pl_store_write_submit(w, NULL, NULL);
	return PL_CONTINUE;
}

static void sender_free(struct sender *s)
{
	for (size_t i = 0; i < s->count; i++)
		free(slot(s, i)->id);
	free(s->ring);
	free(s->jid);
	free(s);
}

static int on_user_deleted(struct pl_event *event, void *userdata)
{
	struct sender **link = &senders[pl_hash_string(event->data) % SENDER_BUCKETS];
	for (; *link; link = &(*link)->next) {
		if (strcmp((*link)->jid, event->data) == 0) {
			struct sender *gone = *link;
			*link = gone->next;
			sender_free(gone);
			break;
		}
	}
	return PL_CONTINUE;
}

static int dedup_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct dedup_conf *)conf_ptr;
	self = m;
	ids_space = pl_store_open(m, "ids");
	if (!ids_space)
		return pl_error(error, -EIO, "cannot open the origin-id store space");
	memset(senders, 0, sizeof(senders));
	duplicates_dropped = pl_counter("duplicates-dropped");
	/* After blocking (priority 100): a blocked message is not remembered. */
	pl_hook(m, "stanza/out", on_stanza_out, NULL, 50);
	pl_hook(m, "user-deleted", on_user_deleted, NULL, 0);
	return 0;
}

static void dedup_unload(struct pl_module *m)
{
	for (size_t b = 0; b < SENDER_BUCKETS; b++) {
		while (senders[b]) {
			struct sender *s = senders[b];
			senders[b] = s->next;
			sender_free(s);
		}
	}
}

PL_MODULE(dedup, .version = "0.1", .options = dedup_options,
	  .conf_size = sizeof(struct dedup_conf), .load = dedup_load, .unload = dedup_unload);
