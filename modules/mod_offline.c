/* mod_offline: XEP-0160 offline storage as a queue, not fire-and-forget.
 * A message for an account with no available resource is appended to
 * the account's queue in offline.queue under "user\0seq" (seq a
 * big-endian u64, so keys sort in arrival order) with a XEP-0203 delay
 * stamp, and delivered in order when the user next sends initial
 * presence. Delivered messages leave the queue only once they are safe:
 * for a stream without stream management, after they were written and
 * the session then stayed up for the delivery grace period; a session
 * that drops before that gets them again at the next login (a duplicate
 * is possible, a loss is not). Over the per-user quota the sender gets
 * resource-constraint, never silence. Headlines are dropped (unless
 * configured), as are messages marked no-store (XEP-0334) and bare
 * chat-state notifications, which mean nothing later. */
#include "accounts.h"
#include "counters.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"
#include "store/store.h"
#include "util.h"
#include "xml/stream.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_DELAY "urn:xmpp:delay"
#define NS_HINTS "urn:xmpp:hints"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"

struct offline_conf {
	int64_t max_messages;
	bool store_headlines;
	int64_t grace_ms;
};

static const struct pl_option offline_options[] = {
	{ "max-messages", PL_OPT_INT, "1000", 1, 1000000, NULL,
	  offsetof(struct offline_conf, max_messages), "messages queued for one user" },
	{ "store-headlines", PL_OPT_BOOL, "false", 0, 0, NULL,
	  offsetof(struct offline_conf, store_headlines), NULL },
	{ "delivery-grace", PL_OPT_DURATION, "10s", 0, 600000, NULL,
	  offsetof(struct offline_conf, grace_ms),
	  "how long a session must stay up after delivery before the queue forgets" },
	{ NULL }
};

static struct offline_conf conf;
static struct pl_module *self;
static struct pl_store_space *queue_space;
static struct pl_counter *stored_counter, *delivered_counter, *refused_counter;

/* What is known of a user's queue; loaded on first use, forgotten when
 * empty. `next` is the sequence number the
 * next message gets. */
struct queue {
	char *owner;               /* bare JID, owned */
	uint64_t next, count;
	/* Deliveries removed messages: count again from the store before the
	 * count is used (it may be a little high while deletes are in flight,
	 * never low). `next` only ever grows, so sequence numbers are never
	 * reused while deliveries that name them may still be pending. */
	bool stale;
	/* Deletes of delivered messages in flight: until they commit, a
	 * read of the store still sees those messages, and a second login
	 * must not get them again. Sequence numbers only grow, so everything
	 * up to the highest one being removed was delivered. */
	uint64_t removing_up_to;
	unsigned removals;
	struct queue *chain;
};

#define QUEUE_BUCKETS 4096
static struct queue *queues[QUEUE_BUCKETS];

/* Messages written to a session, waiting for the grace period. */
struct delivery {
	char *owner;               /* owned */
	char *full_jid;            /* owned */
	uint64_t session_id;
	uint64_t *seqs;            /* owned */
	size_t count;
	struct event *timer;       /* owned */
	struct delivery *prev, *next;
};
static struct delivery *deliveries;

static void make_key(struct pl_store_key *key, const char *owner, uint64_t seq, bool with_seq)
{
	pl_store_key_init(key);
	pl_store_key_str(key, owner);
	if (with_seq)
		pl_store_key_u64(key, seq);
}

static struct queue **queue_slot(const char *owner)
{
	struct queue **link = &queues[pl_hash_string(owner) % QUEUE_BUCKETS];
	while (*link && strcmp((*link)->owner, owner) != 0)
		link = &(*link)->chain;
	return link;
}

static int count_entry(void *arg, const void *key, size_t key_len, const void *value,
		       size_t value_len)
{
	struct queue *q = arg;
	uint64_t seq;
	if (key_len < 8 || !pl_store_key_read_u64((const uint8_t *)key + key_len - 8, 8, &seq))
		return 0;
	if (seq >= q->next)
		q->next = seq + 1;
	q->count++;
	return 0;
}

static struct queue *queue_get(const char *owner)
{
	struct queue **slot = queue_slot(owner);
	struct queue *q = *slot;
	if (q && !q->stale)
		return q;
	bool fresh = !q;
	if (fresh) {
		q = pl_calloc(1, sizeof(*q));
		q->owner = pl_strdup(owner);
		q->next = 1;
	}
	q->count = 0;
	q->stale = false;
	struct pl_store_key prefix;
	make_key(&prefix, owner, 0, false);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	int rc = read ? pl_store_scan(read, queue_space, prefix.data, prefix.len, NULL, 0,
				      count_entry, q)
		      : -EIO;
	if (read)
		pl_store_read_end(read);
	if (rc < 0 || prefix.overflow) {
		if (fresh) {
			free(q->owner);
			free(q);
		} else {
			q->stale = true;
		}
		return NULL;
	}
	if (fresh)
		*slot = q;
	return q;
}

static void queue_forget_if_empty(struct queue *q)
{
	if (!q || q->count || q->stale || q->removals)
		return;
	struct queue **slot = queue_slot(q->owner);
	if (*slot == q) {
		*slot = q->chain;
		free(q->owner);
		free(q);
	}
}

/* ---- storing --------------------------------------------------------------- */

static bool worth_keeping(const struct pl_xnode *message)
{
	if (pl_xnode_find(message, "no-store", NS_HINTS))
		return false;
	/* A chat state alone ("typing...") means nothing later. */
	for (struct pl_xnode *c = pl_xnode_first_element(message); c; c = pl_xnode_next_element(c)) {
		bool transient = (c->ns && strcmp(c->ns, NS_CHATSTATES) == 0) ||
				 strcmp(c->name, "thread") == 0;
		if (!transient)
			return true;
	}
	return false;
}

/* XEP-0082 UTC time with milliseconds. */
static void timestamp(char *out, size_t size)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct tm utc;
	gmtime_r(&now.tv_sec, &utc);
	char seconds[24];
	strftime(seconds, sizeof(seconds), "%Y-%m-%dT%H:%M:%S", &utc);
	snprintf(out, size, "%.20s.%03dZ", seconds, (int)(now.tv_nsec / 1000000) % 1000);
}

/* A message whose commit completes. */
struct stored {
	char *owner;
	uint64_t seq;
};

static void deliver_late(const char *owner, uint64_t seq);

static void on_stored(void *arg, int status)
{
	struct stored *st = arg;
	if (status != 0) {
		/* The queue count is now one too high; reload it next time. */
		pl_module_log(self, 0, "%s: an offline message was not stored: %s", st->owner,
			      strerror(-status));
		struct queue **slot = queue_slot(st->owner);
		struct queue *q = *slot;
		if (q) {
			*slot = q->chain;
			free(q->owner);
			free(q);
		}
	} else {
		deliver_late(st->owner, st->seq);
	}
	free(st->owner);
	free(st);
}

static int on_offline_message(struct pl_event *event, void *userdata)
{
	struct pl_offline_event *e = event->data;
	const char *type = pl_xnode_attr(e->stanza, "type");
	if (type && (strcmp(type, "groupchat") == 0 || strcmp(type, "error") == 0))
		return PL_CONTINUE;
	if (!pl_accounts_exists(e->to))
		return PL_CONTINUE;
	/* RFC 6121 8.5.2.2.1: headlines for nobody are dropped silently. */
	if ((type && strcmp(type, "headline") == 0 && !conf.store_headlines) ||
	    !worth_keeping(e->stanza))
		return PL_HANDLED;
	struct queue *q = queue_get(e->to);
	if (!q) {
		pl_route_error(e->stanza, PL_ERR_INTERNAL_SERVER_ERROR, "the offline queue is unreadable");
		return PL_HANDLED;
	}
	if (q->count >= (uint64_t)conf.max_messages) {
		pl_module_log(self, 1, "%s: offline queue full (%" PRIu64 "), refusing a message from %s",
			      e->to, q->count, pl_xnode_attr(e->stanza, "from"));
		pl_route_error(e->stanza, PL_ERR_RESOURCE_CONSTRAINT,
			       "the recipient's offline queue is full");
		pl_counter_add(refused_counter, 1);
		return PL_HANDLED;
	}
	struct pl_xnode *copy = pl_xnode_copy(e->stanza);
	struct pl_xnode *delay = pl_xnode_add_element(copy, "delay", NS_DELAY);
	const char *at = strchr(e->to, '@');
	pl_xnode_set_attr(delay, "from", at ? at + 1 : e->to);
	char stamp[48];
	timestamp(stamp, sizeof(stamp));
	pl_xnode_set_attr(delay, "stamp", stamp);
	struct pl_buf value = { 0 };
	pl_xnode_serialize(copy, PL_NS_CLIENT, &value);
	pl_xnode_unref(&copy);
	struct pl_store_key key;
	make_key(&key, e->to, q->next, true);
	struct stored *st = pl_malloc(sizeof(*st));
	st->owner = pl_strdup(e->to);
	st->seq = q->next;
	q->next++;
	q->count++;
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	pl_store_put(w, queue_space, key.data, key.len, value.data, value.len);
	pl_store_write_submit(w, on_stored, st);
	pl_buf_free(&value);
	pl_counter_add(stored_counter, 1);
	return PL_HANDLED;
}

/* ---- delivering -------------------------------------------------------------- */

static void delivery_free(struct delivery *d)
{
	if (d->prev)
		d->prev->next = d->next;
	else
		deliveries = d->next;
	if (d->next)
		d->next->prev = d->prev;
	if (d->timer)
		event_free(d->timer);
	free(d->owner);
	free(d->full_jid);
	free(d->seqs);
	free(d);
}

/* The grace period is over: if the session is still the same one and
 * still up, what it was given is safe, and leaves the queue. */
static void on_removed(void *arg, int status)
{
	char *owner = arg;
	struct queue *q = *queue_slot(owner);
	if (status != 0)
		pl_module_log(self, 0, "%s: delivered offline messages were not removed: %s", owner,
			      strerror(-status));
	if (q && q->removals && --q->removals == 0) {
		q->removing_up_to = 0;
		queue_forget_if_empty(q);
	}
	free(owner);
}

static void forget_delivered(struct delivery *d)
{
	struct pl_session *s = pl_router_find(d->full_jid);
	if (s && s->id == d->session_id) {
		struct queue *q = *queue_slot(d->owner);
		struct pl_store_write *w = pl_store_write_begin(pl_server.store);
		uint64_t highest = 0;
		for (size_t i = 0; i < d->count; i++) {
			struct pl_store_key key;
			make_key(&key, d->owner, d->seqs[i], true);
			pl_store_del(w, queue_space, key.data, key.len);
			if (d->seqs[i] > highest)
				highest = d->seqs[i];
		}
		if (q) {
			q->stale = true;
			q->removals++;
			if (highest > q->removing_up_to)
				q->removing_up_to = highest;
		}
		pl_store_write_submit(w, on_removed, pl_strdup(d->owner));
		pl_module_log(self, 3, "%s: %zu offline messages delivered and safe: removed from the queue",
			      d->full_jid, d->count);
	} else if (d->count) {
		pl_module_log(self, 3, "%s: left before the grace period; %zu offline messages stay queued",
			      d->full_jid, d->count);
	}
	delivery_free(d);
}

static void on_grace_over(evutil_socket_t fd, short what, void *arg)
{
	forget_delivered(arg);
}

struct scan {
	struct pl_session *session;
	struct delivery *delivery;
	size_t cap;
	uint64_t skip_up_to;       /* delivered already, delete not yet committed */
};

static int deliver_entry(void *arg, const void *key, size_t key_len, const void *value,
			 size_t value_len)
{
	struct scan *scan = arg;
	uint64_t seq;
	if (key_len < 8 || !pl_store_key_read_u64((const uint8_t *)key + key_len - 8, 8, &seq))
		return 0;
	if (seq <= scan->skip_up_to)
		return 0;
	struct pl_xnode *message = pl_xml_parse_element(value, value_len, PL_NS_CLIENT);
	if (message) {
		scan->session->deliver(scan->session, message);
		pl_xnode_unref(&message);
	} else {
		pl_module_log(self, 0, "%s: dropping an unreadable offline message",
			      scan->delivery->owner);
	}
	struct delivery *d = scan->delivery;
	pl_grow((void **)&d->seqs, &scan->cap, d->count + 1, sizeof(*d->seqs));
	d->seqs[d->count++] = seq;
	return 0;
}

static void deliver_queue(struct pl_session *session);

static int on_broadcast(struct pl_event *event, void *userdata)
{
	struct pl_presence_event *e = event->data;
	/* XEP-0160: at initial presence of non-negative priority. */
	if (e->initial && e->session->available && e->session->priority >= 0)
		deliver_queue(e->session);
	return PL_CONTINUE;
}

/* A resumed session (XEP-0198) gets what was queued while it was away. */
static int on_resumed(struct pl_event *event, void *userdata)
{
	struct pl_session *session = event->data;
	if (session->available && session->priority >= 0)
		deliver_queue(session);
	return PL_CONTINUE;
}

static void deliver_queue(struct pl_session *session)
{
	struct queue *q = queue_get(session->bare_jid);
	if (!q || q->count == 0) {
		queue_forget_if_empty(q);
		return;
	}
	struct delivery *d = pl_calloc(1, sizeof(*d));
	d->owner = pl_strdup(session->bare_jid);
	d->full_jid = pl_strdup(session->full_jid);
	d->session_id = session->id;
	d->next = deliveries;
	if (deliveries)
		deliveries->prev = d;
	deliveries = d;
	struct scan scan = { session, d, 0, q->removing_up_to };
	struct pl_store_key prefix;
	make_key(&prefix, d->owner, 0, false);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (read) {
		pl_store_scan(read, queue_space, prefix.data, prefix.len, NULL, 0, deliver_entry,
			      &scan);
		pl_store_read_end(read);
	}
	pl_module_log(self, 3, "%s: delivered %zu offline messages", d->full_jid, d->count);
	pl_counter_add(delivered_counter, d->count);
	if (conf.grace_ms == 0 || d->count == 0) {
		forget_delivered(d);
	} else {
		d->timer = evtimer_new(pl_server.base, on_grace_over, d);
		struct timeval tv = { conf.grace_ms / 1000, (conf.grace_ms % 1000) * 1000 };
		evtimer_add(d->timer, &tv);
	}
}

/* A message committed after its recipient came online (the login's scan
 * could not see it yet) is delivered now rather than at the next login;
 * one the scan did see is not delivered twice. */
static void deliver_late(const char *owner, uint64_t seq)
{
	struct pl_session *target = NULL;
	for (struct pl_session *s = pl_router_sessions_of(owner); s; s = s->next_of_user)
		if (s->available && !s->suspended && s->priority >= 0 &&
		    (!target || s->priority > target->priority))
			target = s;
	if (!target)
		return;
	for (struct delivery *d = deliveries; d; d = d->next)
		for (size_t i = 0; d->session_id == target->id && i < d->count; i++)
			if (d->seqs[i] == seq)
				return;
	struct pl_store_key key;
	make_key(&key, owner, seq, true);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	const void *value;
	size_t len;
	if (!read || pl_store_get(read, queue_space, key.data, key.len, &value, &len) != 0) {
		if (read)
			pl_store_read_end(read);
		return;
	}
	struct delivery *d = pl_calloc(1, sizeof(*d));
	d->owner = pl_strdup(owner);
	d->full_jid = pl_strdup(target->full_jid);
	d->session_id = target->id;
	struct scan scan = { target, d, 0, 0 };
	deliver_entry(&scan, key.data, key.len, value, len);
	pl_store_read_end(read);
	d->next = deliveries;
	if (deliveries)
		deliveries->prev = d;
	deliveries = d;
	pl_counter_add(delivered_counter, 1);
	if (conf.grace_ms == 0) {
		forget_delivered(d);
	} else {
		d->timer = evtimer_new(pl_server.base, on_grace_over, d);
		struct timeval tv = { conf.grace_ms / 1000, (conf.grace_ms % 1000) * 1000 };
		evtimer_add(d->timer, &tv);
	}
}

static int on_user_deleted(struct pl_event *event, void *userdata)
{
	struct queue **slot = queue_slot(event->data);
	struct queue *q = *slot;
	if (q) {
		*slot = q->chain;
		free(q->owner);
		free(q);
	}
	return PL_CONTINUE;
}

static int offline_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct offline_conf *)conf_ptr;
	self = m;
	queue_space = pl_store_open(m, "queue");
	if (!queue_space)
		return pl_error(error, -EIO, "cannot open the offline queue's store space");
	memset(queues, 0, sizeof(queues));
	deliveries = NULL;
	stored_counter = pl_counter("offline-stored");
	delivered_counter = pl_counter("offline-delivered");
	refused_counter = pl_counter("offline-refused-full");
	pl_feature(m, "msgoffline");
	pl_hook(m, "message/offline", on_offline_message, NULL, 0);
	/* After the roster: contacts learn of the login first. */
	pl_hook(m, "presence/broadcast", on_broadcast, NULL, -10);
	pl_hook(m, "session/resumed", on_resumed, NULL, 0);
	pl_hook(m, "user-deleted", on_user_deleted, NULL, 0);
	return 0;
}

/* Deliveries still in their grace period stay queued: they come again at
 * the next login. */
static void offline_unload(struct pl_module *m)
{
	while (deliveries)
		delivery_free(deliveries);
	for (size_t b = 0; b < QUEUE_BUCKETS; b++) {
		while (queues[b]) {
			struct queue *q = queues[b];
			queues[b] = q->chain;
			free(q->owner);
			free(q);
		}
	}
}

PL_MODULE(offline, .version = "0.1", .options = offline_options,
	  .conf_size = sizeof(struct offline_conf), .load = offline_load,
	  .unload = offline_unload);
