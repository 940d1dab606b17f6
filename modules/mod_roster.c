/* mod_roster: the contact list and presence subscriptions of RFC 6121
 * sections 2-4, with roster versioning (XEP-0237) and pre-approval
 * (RFC 6121 3.4). One module rather than separate roster and presence
 * modules, because every presence broadcast and every subscription
 * stanza reads or changes the roster: splitting them would put a
 * cross-module call on the hottest presence path.
 *
 * Data. Each entry of a user's roster is one key "user\0contact" in
 * roster.items, so a change writes one item, never the whole roster
 * (Prosody rewrites all of it: O(n^2) to build a large roster). An entry
 * may be hidden (not "listed"): a friend request from someone the user
 * has not added, or a tombstone of a removed item kept so that a client
 * behind by a few versions gets just the changes. roster.meta holds the
 * roster's version and the oldest version deltas can start from.
 * Rosters of online users (and of users with writes in flight) are cached
 * in memory; everything reads the cache, so a subscription right after
 * a roster set sees it even before the commit.
 *
 * Durability. Roster results, pushes and the IQ answer of a set go out
 * only after the change is committed, so nothing a client saw can be
 * lost by a crash. Pending inbound requests are stored and delivered at
 * every initial presence until answered: a friend request is never lost
 * while the user is offline. */
#include "accounts.h"
#include "iq_storage.h"
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"
#include "store/store.h"
#include "util.h"
#include "xml/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ROSTER "jabber:iq:roster"

struct roster_conf {
	int64_t max_items;
	int64_t max_pending;
	int64_t max_name_length;
	int64_t max_group_length;
	int64_t max_groups;
	int64_t change_log;
};

static const struct pl_option roster_options[] = {
	{ "max-items", PL_OPT_INT, "1000", 1, 100000, NULL,
	  offsetof(struct roster_conf, max_items), "contacts in one roster" },
	{ "max-pending", PL_OPT_INT, "1000", 1, 100000, NULL,
	  offsetof(struct roster_conf, max_pending),
	  "unanswered subscription requests kept for one user" },
	{ "max-name-length", PL_OPT_INT, "1023", 1, 65535, NULL,
	  offsetof(struct roster_conf, max_name_length), "bytes in an item's name" },
	{ "max-group-length", PL_OPT_INT, "1023", 1, 65535, NULL,
	  offsetof(struct roster_conf, max_group_length), "bytes in a group's name" },
	{ "max-groups", PL_OPT_INT, "64", 1, 10000, NULL, offsetof(struct roster_conf, max_groups),
	  "groups of one item" },
	{ "change-log", PL_OPT_INT, "200", 0, 100000, NULL,
	  offsetof(struct roster_conf, change_log),
	  "removed items remembered so that clients get deltas (XEP-0237)" },
	{ NULL }
};

static struct roster_conf conf;
static struct pl_module *self;
static struct pl_store_space *items_space, *meta_space;

/* Subscription bits: "to" = the user receives the contact's presence,
 * "from" = the contact receives the user's. */
enum { SUB_TO = 1, SUB_FROM = 2 };
static const char *const subscription_names[] = { "none", "to", "from", "both" };

struct item {
	char *jid;                 /* the contact's bare JID, owned */
	char *name;                /* owned, NULL for none */
	char **groups;             /* owned strings */
	size_t group_count;
	unsigned subscription;     /* SUB_TO | SUB_FROM */
	bool ask;                  /* our subscribe awaits an answer (pending out) */
	bool pending_in;           /* their subscribe awaits our answer */
	bool approved;             /* pre-approved (RFC 6121 3.4) */
	bool listed;               /* part of the roster the user sees */
	struct pl_xnode *request;  /* pending_in: the subscribe as received, owned */
	uint64_t version;          /* roster version of its last visible change */
	struct item *next_in_bucket;
};

struct roster {
	char *owner;               /* bare JID, owned */
	uint64_t version;          /* of the last visible change */
	uint64_t floor;            /* deltas can start from any version >= floor */
	struct item **buckets;     /* owned, with the items */
	size_t bucket_count, count, listed, pending;
	unsigned pending_writes;   /* commits in flight: keeps it cached */
	/* Roster gets that arrived while changes were in flight: answered
	 * once those are on disk, so that no client sees what a crash could
	 * still undo (and the answer comes after the pushes). Owned. */
	struct deferred_get *deferred;
	struct roster *next;       /* cache chain */
};

struct deferred_get {
	struct pl_xnode *iq;       /* owned copy */
	char *full_jid;            /* owned */
	uint64_t session_id;
	struct deferred_get *next;
};

#define CACHE_BUCKETS 4096
static struct roster *cache[CACHE_BUCKETS];

/* ---- items and rosters in memory ------------------------------------------- */

static void item_free(struct item *it)
{
	free(it->jid);
	free(it->name);
	for (size_t i = 0; i < it->group_count; i++)
		free(it->groups[i]);
	free(it->groups);
	pl_xnode_unref(&it->request);
	free(it);
}

static struct item *roster_find(const struct roster *r, const char *jid)
{
	if (!r->bucket_count)
		return NULL;
	for (struct item *it = r->buckets[pl_hash_string(jid) & (r->bucket_count - 1)]; it;
	     it = it->next_in_bucket)
		if (strcmp(it->jid, jid) == 0)
			return it;
	return NULL;
}

static void roster_insert(struct roster *r, struct item *it)
{
	if (r->count + 1 > r->bucket_count) {
		size_t size = r->bucket_count ? r->bucket_count * 2 : 16;
		struct item **grown = pl_calloc(size, sizeof(*grown));
		for (size_t b = 0; b < r->bucket_count; b++) {
			struct item *next;
			for (struct item *i = r->buckets[b]; i; i = next) {
				next = i->next_in_bucket;
				size_t at = pl_hash_string(i->jid) & (size - 1);
				i->next_in_bucket = grown[at];
				grown[at] = i;
			}
		}
		free(r->buckets);
		r->buckets = grown;
		r->bucket_count = size;
	}
	size_t at = pl_hash_string(it->jid) & (r->bucket_count - 1);
	it->next_in_bucket = r->buckets[at];
	r->buckets[at] = it;
	r->count++;
	r->listed += it->listed;
	r->pending += it->pending_in;
}

static void roster_remove(struct roster *r, struct item *gone)
{
	size_t at = pl_hash_string(gone->jid) & (r->bucket_count - 1);
	for (struct item **link = &r->buckets[at]; *link; link = &(*link)->next_in_bucket) {
		if (*link == gone) {
			*link = gone->next_in_bucket;
			r->count--;
			r->listed -= gone->listed;
			r->pending -= gone->pending_in;
			item_free(gone);
			return;
		}
	}
}

#define FOR_EACH_ITEM(r, it)                                    \
	for (size_t bucket_ = 0; bucket_ < (r)->bucket_count; bucket_++) \
		for (struct item *it = (r)->buckets[bucket_]; it; it = it->next_in_bucket)

static void roster_free(struct roster *r)
{
	while (r->deferred) {
		struct deferred_get *d = r->deferred;
		r->deferred = d->next;
		pl_xnode_unref(&d->iq);
		free(d->full_jid);
		free(d);
	}
	for (size_t b = 0; b < r->bucket_count; b++) {
		struct item *next;
		for (struct item *it = r->buckets[b]; it; it = next) {
			next = it->next_in_bucket;
			item_free(it);
		}
	}
	free(r->buckets);
	free(r->owner);
	free(r);
}

/* ---- storage format ----------------------------------------------------------- */

/* What the user sees of an item (RFC 6121 2.1.2), or NULL when hidden. */
static struct pl_xnode *public_item(const struct item *it)
{
	if (!it->listed)
		return NULL;
	struct pl_xnode *n = pl_xnode_new("item", NS_ROSTER);
	pl_xnode_set_attr(n, "jid", it->jid);
	if (it->name)
		pl_xnode_set_attr(n, "name", it->name);
	pl_xnode_set_attr(n, "subscription", subscription_names[it->subscription]);
	if (it->ask)
		pl_xnode_set_attr(n, "ask", "subscribe");
	if (it->approved)
		pl_xnode_set_attr(n, "approved", "true");
	for (size_t i = 0; i < it->group_count; i++) {
		struct pl_xnode *g = pl_xnode_add_element(n, "group", NULL);
		pl_xnode_add_text(g, it->groups[i], strlen(it->groups[i]));
	}
	return n;
}

static char *public_view(const struct item *it)
{
	struct pl_xnode *n = public_item(it);
	if (!n)
		return NULL;
	char *text = pl_xnode_to_string(n, NULL);
	pl_xnode_unref(&n);
	return text;
}

static void serialize_item(const struct item *it, struct pl_buf *out)
{
	struct pl_xnode *n = pl_xnode_new("item", NS_ROSTER);
	pl_xnode_set_attr(n, "jid", it->jid);
	if (it->name)
		pl_xnode_set_attr(n, "name", it->name);
	pl_xnode_set_attr(n, "subscription", subscription_names[it->subscription]);
	if (it->ask)
		pl_xnode_set_attr(n, "ask", "subscribe");
	if (it->approved)
		pl_xnode_set_attr(n, "approved", "true");
	if (it->pending_in)
		pl_xnode_set_attr(n, "pending-in", "true");
	if (it->listed)
		pl_xnode_set_attr(n, "listed", "true");
	char version[24];
	snprintf(version, sizeof(version), "%" PRIu64, it->version);
	pl_xnode_set_attr(n, "ver", version);
	for (size_t i = 0; i < it->group_count; i++) {
		struct pl_xnode *g = pl_xnode_add_element(n, "group", NULL);
		pl_xnode_add_text(g, it->groups[i], strlen(it->groups[i]));
	}
	if (it->request)
		pl_xnode_add_child(n, pl_xnode_copy(it->request));
	pl_xnode_serialize(n, NULL, out);
	pl_xnode_unref(&n);
}

static bool attr_true(const struct pl_xnode *n, const char *name)
{
	const char *v = pl_xnode_attr(n, name);
	return v && strcmp(v, "true") == 0;
}

static struct item *parse_item(const void *value, size_t len)
{
	struct pl_xnode *n = pl_xml_parse_element(value, len, NS_ROSTER);
	const char *jid = n ? pl_xnode_attr(n, "jid") : NULL;
	if (!jid) {
		pl_xnode_unref(&n);
		return NULL;
	}
	struct item *it = pl_calloc(1, sizeof(*it));
	it->jid = pl_strdup(jid);
	const char *name = pl_xnode_attr(n, "name");
	it->name = name ? pl_strdup(name) : NULL;
	const char *sub = pl_xnode_attr(n, "subscription");
	for (unsigned s = 0; sub && s < 4; s++)
		if (strcmp(sub, subscription_names[s]) == 0)
			it->subscription = s;
	it->ask = pl_xnode_attr(n, "ask") != NULL;
	it->approved = attr_true(n, "approved");
	it->pending_in = attr_true(n, "pending-in");
	it->listed = attr_true(n, "listed");
	const char *version = pl_xnode_attr(n, "ver");
	it->version = version ? strtoull(version, NULL, 10) : 0;
	size_t cap = 0;
	for (struct pl_xnode *c = pl_xnode_first_element(n); c; c = pl_xnode_next_element(c)) {
		if (strcmp(c->name, "group") == 0) {
			pl_grow((void **)&it->groups, &cap, it->group_count + 1, sizeof(*it->groups));
			it->groups[it->group_count++] = pl_xnode_text(c);
		} else if (strcmp(c->name, "presence") == 0 && !it->request) {
			it->request = pl_xnode_copy(c);
		}
	}
	pl_xnode_unref(&n);
	return it;
}

static int load_item(void *arg, const void *key, size_t key_len, const void *value,
		     size_t value_len)
{
	struct roster *r = arg;
	struct item *it = parse_item(value, value_len);
	if (!it) {
		pl_module_log(self, 1, "%s: skipping an unreadable roster entry", r->owner);
		return 0;
	}
	if (roster_find(r, it->jid))
		item_free(it);
	else
		roster_insert(r, it);
	return 0;
}

static struct roster **cache_slot(const char *owner)
{
	struct roster **link = &cache[pl_hash_string(owner) % CACHE_BUCKETS];
	while (*link && strcmp((*link)->owner, owner) != 0)
		link = &(*link)->next;
	return link;
}

/* The roster of a local bare JID, from the cache or the store. NULL only
 * when the store cannot be read. */
static struct roster *roster_get(const char *owner)
{
	struct roster **slot = cache_slot(owner);
	if (*slot)
		return *slot;
	struct roster *r = pl_calloc(1, sizeof(*r));
	r->owner = pl_strdup(owner);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (!read) {
		roster_free(r);
		return NULL;
	}
	size_t key_len;
	void *key = pl_user_key(owner, "", &key_len);
	const void *value;
	size_t value_len;
	if (pl_store_get(read, meta_space, key, key_len, &value, &value_len) == 0) {
		struct pl_xnode *meta = pl_xml_parse_element(value, value_len, NS_ROSTER);
		const char *version = meta ? pl_xnode_attr(meta, "ver") : NULL;
		const char *floor = meta ? pl_xnode_attr(meta, "floor") : NULL;
		r->version = version ? strtoull(version, NULL, 10) : 0;
		r->floor = floor ? strtoull(floor, NULL, 10) : 0;
		pl_xnode_unref(&meta);
	}
	int rc = pl_store_scan(read, items_space, key, key_len, NULL, 0, load_item, r);
	pl_store_read_end(read);
	free(key);
	if (rc < 0) {
		pl_module_log(self, 0, "%s: cannot read the roster", owner);
		roster_free(r);
		return NULL;
	}
	*slot = r;
	return r;
}

/* Forgets a cached roster nobody needs: no session and no commit in flight. */
static void roster_release(struct roster *r)
{
	if (!r || r->pending_writes || pl_router_sessions_of(r->owner))
		return;
	struct roster **slot = cache_slot(r->owner);
	if (*slot == r) {
		*slot = r->next;
		roster_free(r);
	}
}

/* ---- changes: commit, then push ------------------------------------------------ */

struct change {
	char *owner;               /* owned */
	struct pl_xnode *push;     /* the <item/> to push, owned, NULL for none */
	uint64_t version;
	struct pl_xnode *iq;       /* owned copy of a roster set to answer, or NULL */
	/* The subscription stanza that caused the change goes on only once
	 * the change is on disk (and after the push), so that what others see
	 * never runs ahead of what is stored: delivered to the owner's
	 * resources (inbound) or routed to the contact (outbound). Owned. */
	struct pl_xnode *after;
	bool after_inbound;
	bool unavailable_first;    /* outbound unsubscribed: we leave their view first */
	bool presence_after;       /* outbound subscribed: then our presence */
	char *contact;             /* owned */
	char *origin_jid;          /* the sending session, owned */
	uint64_t origin_id;
};

static void send_push(const char *owner, struct pl_xnode *item, uint64_t version,
		      struct pl_session *only)
{
	static uint64_t push_counter;
	char id[32], ver[24];
	snprintf(id, sizeof(id), "push-%" PRIu64, ++push_counter);
	snprintf(ver, sizeof(ver), "%" PRIu64, version);
	struct pl_xnode *iq = pl_xnode_new("iq", PL_NS_CLIENT);
	pl_xnode_set_attr(iq, "type", "set");
	pl_xnode_set_attr(iq, "id", id);
	struct pl_xnode *query = pl_xnode_add_element(iq, "query", NS_ROSTER);
	pl_xnode_set_attr(query, "ver", ver);
	pl_xnode_add_child(query, pl_xnode_copy(item));
	for (struct pl_session *s = pl_router_sessions_of(owner); s; s = s->next_of_user) {
		if ((only && s != only) || !s->roster_requested)
			continue;
		pl_xnode_set_attr(iq, "to", s->full_jid);
		s->deliver(s, iq);
	}
	pl_xnode_unref(&iq);
}

static void answer_get(struct roster *r, const struct pl_xnode *stanza,
		       struct pl_session *session);
static void send_current_presence(const char *owner, const char *to);
static void send_unavailable_from_resources(const char *owner, const char *to);
static void deliver_to_available(const char *owner, struct pl_xnode *stanza);

/* The roster's writes are all on disk: answer the gets that waited. */
static void answer_deferred(struct roster *r)
{
	while (r->deferred && !r->pending_writes) {
		struct deferred_get *d = r->deferred;
		r->deferred = d->next;
		struct pl_session *s = pl_router_find(d->full_jid);
		if (s && s->id == d->session_id)
			answer_get(r, d->iq, s);
		pl_xnode_unref(&d->iq);
		free(d->full_jid);
		free(d);
	}
}

static void on_committed(void *arg, int status)
{
	struct change *c = arg;
	struct roster *r = *cache_slot(c->owner);
	if (r)
		r->pending_writes--;
	if (status == 0) {
		if (c->push)
			send_push(c->owner, c->push, c->version, NULL);
		if (c->iq) {
			struct pl_xnode *reply = pl_iq_result(c->iq);
			pl_route(reply, NULL);
			pl_xnode_unref(&reply);
		}
	} else {
		pl_module_log(self, 0, "%s: roster change not stored: %s", c->owner,
			      strerror(-status));
		if (c->iq)
			pl_route_error(c->iq,
				       status == -ENOSPC ? PL_ERR_RESOURCE_CONSTRAINT
							 : PL_ERR_INTERNAL_SERVER_ERROR,
				       "the roster could not be stored");
	}
	if (status == 0 && c->after && c->after_inbound) {
		deliver_to_available(c->owner, c->after);
	} else if (status == 0 && c->after) {
		if (c->unavailable_first)
			send_unavailable_from_resources(c->owner, c->contact);
		struct pl_session *origin = c->origin_jid ? pl_router_find(c->origin_jid) : NULL;
		pl_route(c->after, origin && origin->id == c->origin_id ? origin : NULL);
		if (c->presence_after)
			send_current_presence(c->owner, c->contact);
	}
	if (r) {
		answer_deferred(r);
		roster_release(r);
	}
	pl_xnode_unref(&c->after);
	free(c->contact);
	free(c->origin_jid);
	pl_xnode_unref(&c->push);
	pl_xnode_unref(&c->iq);
	free(c->owner);
	free(c);
}

static bool deletable(const struct roster *r, const struct item *it)
{
	return !it->listed && !it->pending_in && !it->approved && it->version <= r->floor;
}

static void put_or_delete(struct pl_store_write *w, const struct roster *r,
			  const struct item *it)
{
	size_t key_len;
	void *key = pl_user_key(r->owner, it->jid, &key_len);
	if (deletable(r, it)) {
		pl_store_del(w, items_space, key, key_len);
	} else {
		struct pl_buf value = { 0 };
		serialize_item(it, &value);
		pl_store_put(w, items_space, key, key_len, value.data, value.len);
		pl_buf_free(&value);
	}
	free(key);
}

/* Records a change to `it` made since `before` (its public view then):
 * bumps the version if what the user sees changed, keeps the change log
 * bounded, writes the item and the meta record in one set, and after the
 * commit pushes the item and answers `iq` (borrowed; may be NULL). */
static struct change *commit_change(struct roster *r, struct item *it, const char *before,
				    const struct pl_xnode *iq)
{
	char *after = public_view(it);
	bool visible_change = (before == NULL) != (after == NULL) ||
			      (before && after && strcmp(before, after) != 0);
	free(after);
	struct change *c = pl_calloc(1, sizeof(*c));
	c->owner = pl_strdup(r->owner);
	c->iq = iq ? pl_xnode_copy(iq) : NULL;
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	if (visible_change) {
		it->version = ++r->version;
		c->version = r->version;
		c->push = public_item(it);
		if (!c->push) {
			c->push = pl_xnode_new("item", NS_ROSTER);
			pl_xnode_set_attr(c->push, "jid", it->jid);
			pl_xnode_set_attr(c->push, "subscription", "remove");
		}
	}
	/* Hidden entries newer than the floor are the change log; beyond its
	 * size the oldest go and the floor rises past them. Only a change
	 * that hides an entry can grow the log, so only then is it counted. */
	while (visible_change && !it->listed) {
		size_t logged = 0;
		struct item *oldest = NULL;
		FOR_EACH_ITEM(r, i) {
			if (!i->listed && i->version > r->floor) {
				logged++;
				if (!oldest || i->version < oldest->version)
					oldest = i;
			}
		}
		if (logged <= (size_t)conf.change_log || !oldest)
			break;
		r->floor = oldest->version;
		if (oldest != it && deletable(r, oldest)) {
			put_or_delete(w, r, oldest);
			roster_remove(r, oldest);
		}
	}
	put_or_delete(w, r, it);
	char meta[80];
	snprintf(meta, sizeof(meta), "<roster xmlns='" NS_ROSTER "' ver='%" PRIu64 "' floor='%" PRIu64 "'/>",
		 r->version, r->floor);
	size_t key_len;
	void *key = pl_user_key(r->owner, "", &key_len);
	pl_store_put(w, meta_space, key, key_len, meta, strlen(meta));
	free(key);
	if (deletable(r, it))
		roster_remove(r, it);
	r->pending_writes++;
	/* The completion runs later on this thread: the caller may still add
	 * what goes on after the commit. */
	pl_store_write_submit(w, on_committed, c);
	return c;
}

/* The item for a contact, created hidden when missing. NULL when the
 * roster is full of hidden entries (a flood of requests). */
static struct item *item_for(struct roster *r, const char *jid)
{
	struct item *it = roster_find(r, jid);
	if (it)
		return it;
	if (r->count >= (size_t)(conf.max_items + conf.max_pending + conf.change_log))
		return NULL;
	it = pl_calloc(1, sizeof(*it));
	it->jid = pl_strdup(jid);
	roster_insert(r, it);
	return it;
}

static void set_listed(struct roster *r, struct item *it, bool listed)
{
	r->listed += (size_t)listed - (size_t)it->listed;
	it->listed = listed;
}

static void set_pending_in(struct roster *r, struct item *it, bool pending,
			   const struct pl_xnode *request)
{
	r->pending += (size_t)pending - (size_t)it->pending_in;
	it->pending_in = pending;
	pl_xnode_unref(&it->request);
	if (pending && request)
		it->request = pl_xnode_copy(request);
}

/* ---- presence helpers -------------------------------------------------------- */

static bool is_local(const char *bare)
{
	const char *at = strchr(bare, '@');
	return at && pl_server_find_host(at + 1) != NULL;
}

/* Sends a presence of `type` (NULL: the stanza as is) from `from` to `to`. */
static void send_presence(const char *from, const char *to, const char *type)
{
	struct pl_xnode *p = pl_xnode_new("presence", PL_NS_CLIENT);
	pl_xnode_set_attr(p, "from", from);
	pl_xnode_set_attr(p, "to", to);
	if (type)
		pl_xnode_set_attr(p, "type", type);
	pl_route(p, NULL);
	pl_xnode_unref(&p);
}

/* The current presence of each available resource of `owner`, to `to`. */
static void send_current_presence(const char *owner, const char *to)
{
	for (struct pl_session *s = pl_router_sessions_of(owner); s; s = s->next_of_user) {
		if (!s->available || !s->presence)
			continue;
		struct pl_xnode *copy = pl_xnode_copy(s->presence);
		pl_xnode_set_attr(copy, "to", to);
		pl_route(copy, s);
		pl_xnode_unref(&copy);
	}
}

static void send_unavailable_from_resources(const char *owner, const char *to)
{
	for (struct pl_session *s = pl_router_sessions_of(owner); s; s = s->next_of_user)
		if (s->available)
			send_presence(s->full_jid, to, "unavailable");
}

/* Inbound subscription stanzas go to every available resource. */
static void deliver_to_available(const char *owner, struct pl_xnode *stanza)
{
	for (struct pl_session *s = pl_router_sessions_of(owner); s; s = s->next_of_user)
		if (s->available)
			s->deliver(s, stanza);
}

/* ---- outbound subscriptions (the user's server, RFC 6121 A.2) ------------------ */

static int on_presence_out(struct pl_event *event, void *userdata)
{
	struct pl_presence_event *e = event->data;
	const char *type = pl_xnode_attr(e->stanza, "type");
	const char *to = pl_xnode_attr(e->stanza, "to");
	char *contact = to ? pl_jid_normalize_bare(to) : NULL;
	struct roster *r = contact ? roster_get(e->session->bare_jid) : NULL;
	if (!contact || !r) {
		pl_route_error(e->stanza, contact ? PL_ERR_INTERNAL_SERVER_ERROR : PL_ERR_JID_MALFORMED,
			       NULL);
		free(contact);
		return PL_HANDLED;
	}
	/* RFC 6121 3.1.2: stamped with the bare JID, sent to the bare JID. */
	pl_xnode_set_attr(e->stanza, "from", e->session->bare_jid);
	pl_xnode_set_attr(e->stanza, "to", contact);
	struct item *it = roster_find(r, contact);
	char *before = it ? public_view(it) : NULL;
	bool route = true, changed = false, had_from = false;
	if (strcmp(type, "subscribe") == 0) {
		if (!it && r->listed >= (size_t)conf.max_items) {
			pl_route_error(e->stanza, PL_ERR_NOT_ALLOWED, "the roster is full");
			route = false;
		} else if ((it = item_for(r, contact)) != NULL) {
			if (!it->listed) {
				set_listed(r, it, true);
				changed = true;
			}
			if (!(it->subscription & SUB_TO) && !it->ask) {
				it->ask = true;
				changed = true;
			}
		}
	} else if (strcmp(type, "unsubscribe") == 0) {
		if (it && ((it->subscription & SUB_TO) || it->ask)) {
			it->subscription &= ~SUB_TO;
			it->ask = false;
			changed = true;
		}
	} else if (strcmp(type, "subscribed") == 0) {
		if (it && it->pending_in) {
			it->subscription |= SUB_FROM;
			set_pending_in(r, it, false, NULL);
			it->approved = false;
			set_listed(r, it, true);
			changed = true;
		} else if (!it || !(it->subscription & SUB_FROM)) {
			/* Pre-approval (RFC 6121 3.4): remembered, not routed. */
			route = false;
			if (!it && r->listed >= (size_t)conf.max_items) {
				pl_route_error(e->stanza, PL_ERR_NOT_ALLOWED, "the roster is full");
			} else if ((it = item_for(r, contact)) != NULL && !it->approved) {
				it->approved = true;
				set_listed(r, it, true);
				changed = true;
			}
		} else {
			route = false;
		}
	} else { /* unsubscribed */
		if (it && (it->pending_in || (it->subscription & SUB_FROM) || it->approved)) {
			route = it->pending_in || (it->subscription & SUB_FROM);
			had_from = it->subscription & SUB_FROM;
			it->subscription &= ~SUB_FROM;
			set_pending_in(r, it, false, NULL);
			it->approved = false;
			changed = true;
		} else {
			route = false;
		}
	}
	bool subscribed = strcmp(type, "subscribed") == 0;
	if (changed && it) {
		struct change *c = commit_change(r, it, before, NULL);
		if (route) {
			c->after = pl_xnode_copy(e->stanza);
			c->unavailable_first = had_from;
			c->presence_after = subscribed;
			c->contact = pl_strdup(contact);
			c->origin_jid = pl_strdup(e->session->full_jid);
			c->origin_id = e->session->id;
			route = false;
		}
	}
	free(before);
	if (route) {
		if (had_from)
			send_unavailable_from_resources(r->owner, contact);
		pl_route(e->stanza, e->session);
		if (subscribed)
			send_current_presence(r->owner, contact);
	}
	roster_release(r);
	free(contact);
	return PL_HANDLED;
}

/* ---- inbound subscriptions and probes (the contact's server, RFC 6121 A.3) ----- */

static int on_presence_in(struct pl_event *event, void *userdata)
{
	struct pl_presence_event *e = event->data;
	const char *type = pl_xnode_attr(e->stanza, "type");
	const char *from_attribute = pl_xnode_attr(e->stanza, "from");
	char *sender = from_attribute ? pl_jid_normalize_bare(from_attribute) : NULL;
	struct pl_account account;
	if (!sender)
		return PL_HANDLED;
	/* Probes are answered to the full JID that asked. */
	char *from = pl_strdup(from_attribute);
	if (pl_accounts_get(e->to, &account) == -ENOENT) {
		/* RFC 6121 3.1.3: no such user; say so to a subscriber. */
		if (strcmp(type, "subscribe") == 0)
			send_presence(e->to, sender, "unsubscribed");
		free(sender);
		free(from);
		return PL_HANDLED;
	}
	struct roster *r = roster_get(e->to);
	if (!r) {
		free(sender);
		free(from);
		return PL_HANDLED;
	}
	struct item *it = roster_find(r, sender);
	char *before = it ? public_view(it) : NULL;
	bool deliver = false, changed = false;
	/* Subscription stanzas reach the user from the bare JID. */
	pl_xnode_set_attr(e->stanza, "from", sender);
	if (strcmp(type, "probe") == 0) {
		if (it && (it->subscription & SUB_FROM))
			send_current_presence(r->owner, from);
	} else if (strcmp(type, "subscribe") == 0) {
		if (it && (it->subscription & SUB_FROM)) {
			send_presence(r->owner, sender, "subscribed");
		} else if (it && it->approved) {
			it->subscription |= SUB_FROM;
			it->approved = false;
			changed = true;
			send_presence(r->owner, sender, "subscribed");
			send_current_presence(r->owner, sender);
		} else if (!it || !it->pending_in) {
			if (r->pending >= (size_t)conf.max_pending || !(it = item_for(r, sender))) {
				pl_module_log(self, 1, "%s: too many pending subscription requests; "
						       "refusing the one from %s", r->owner, sender);
				send_presence(r->owner, sender, "unsubscribed");
			} else {
				set_pending_in(r, it, true, e->stanza);
				changed = true;
				deliver = true;
			}
		}
	} else if (strcmp(type, "unsubscribe") == 0) {
		if (it && (it->pending_in || (it->subscription & SUB_FROM))) {
			/* RFC 6121 3.3.3: the former subscriber sees us go offline. */
			if (it->subscription & SUB_FROM)
				send_unavailable_from_resources(r->owner, sender);
			it->subscription &= ~SUB_FROM;
			set_pending_in(r, it, false, NULL);
			changed = deliver = true;
		}
	} else if (strcmp(type, "subscribed") == 0) {
		if (it && it->ask) {
			it->subscription |= SUB_TO;
			it->ask = false;
			changed = deliver = true;
		}
	} else if (strcmp(type, "unsubscribed") == 0) {
		if (it && (it->ask || (it->subscription & SUB_TO))) {
			it->subscription &= ~SUB_TO;
			it->ask = false;
			changed = deliver = true;
		}
	}
	if (changed) {
		struct change *c = commit_change(r, it, before, NULL);
		if (deliver) {
			c->after = pl_xnode_copy(e->stanza);
			c->after_inbound = true;
			deliver = false;
		}
	}
	free(before);
	if (deliver)
		deliver_to_available(r->owner, e->stanza);
	roster_release(r);
	free(sender);
	free(from);
	return PL_HANDLED;
}

/* ---- broadcast presence (RFC 6121 4.2-4.5) --------------------------------------- */

static int on_presence_broadcast(struct pl_event *event, void *userdata)
{
	struct pl_presence_event *e = event->data;
	struct pl_session *session = e->session;
	struct roster *r = roster_get(session->bare_jid);
	if (!r)
		return PL_CONTINUE;
	FOR_EACH_ITEM(r, it) {
		if ((it->subscription & SUB_FROM) && strcmp(it->jid, r->owner) != 0) {
			pl_xnode_set_attr(e->stanza, "to", it->jid);
			pl_route(e->stanza, session);
		}
	}
	pl_xnode_set_attr(e->stanza, "to", NULL);
	if (!e->initial)
		return PL_CONTINUE;
	/* Probes (4.3): the new resource learns its contacts' presence. Local
	 * contacts are answered from their sessions directly; remote ones get
	 * a probe from the bare JID (4.3.1), which their server answers with
	 * their current presence, to every resource of the user. */
	FOR_EACH_ITEM(r, it) {
		if (!(it->subscription & SUB_TO) || strcmp(it->jid, r->owner) == 0)
			continue;
		if (!is_local(it->jid)) {
			if (!pl_router_is_local_domain(strchr(it->jid, '@') ? strchr(it->jid, '@') + 1
									    : it->jid))
				send_presence(r->owner, it->jid, "probe");
			continue;
		}
		struct roster *theirs = roster_get(it->jid);
		struct item *back = theirs ? roster_find(theirs, r->owner) : NULL;
		if (back && (back->subscription & SUB_FROM)) {
			for (struct pl_session *s = pl_router_sessions_of(it->jid); s;
			     s = s->next_of_user) {
				if (!s->available || !s->presence)
					continue;
				/* Routed, not delivered, so that blocking applies. */
				struct pl_xnode *copy = pl_xnode_copy(s->presence);
				pl_xnode_set_attr(copy, "to", session->full_jid);
				pl_route(copy, s);
				pl_xnode_unref(&copy);
			}
		}
		roster_release(theirs);
	}
	/* Friend requests that wait for an answer (3.1.3): at every login. */
	FOR_EACH_ITEM(r, it) {
		if (it->pending_in && it->request)
			session->deliver(session, it->request);
	}
	return PL_CONTINUE;
}

/* ---- jabber:iq:roster ------------------------------------------------------------ */

static bool own_roster(const struct pl_iq_event *iq)
{
	const char *to = pl_xnode_attr(iq->stanza, "to");
	return iq->session && (!to || strcmp(to, iq->session->bare_jid) == 0);
}

static int compare_versions(const void *a, const void *b)
{
	const struct item *x = *(struct item *const *)a, *y = *(struct item *const *)b;
	return x->version < y->version ? -1 : x->version > y->version;
}

static int on_roster_get(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	if (!own_roster(iq))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct roster *r = roster_get(iq->session->bare_jid);
	if (!r)
		return PL_HOOK_ERROR(PL_ERR_INTERNAL_SERVER_ERROR);
	iq->session->roster_requested = true;
	if (r->pending_writes) {
		struct deferred_get *d = pl_calloc(1, sizeof(*d));
		d->iq = pl_xnode_copy(iq->stanza);
		d->full_jid = pl_strdup(iq->session->full_jid);
		d->session_id = iq->session->id;
		struct deferred_get **tail = &r->deferred;
		while (*tail)
			tail = &(*tail)->next;
		*tail = d;
		return PL_HANDLED;
	}
	answer_get(r, iq->stanza, iq->session);
	return PL_HANDLED;
}

static void answer_get(struct roster *r, const struct pl_xnode *stanza,
		       struct pl_session *session)
{
	struct pl_xnode *request = pl_xnode_find(stanza, "query", NS_ROSTER);
	const char *client_version = request ? pl_xnode_attr(request, "ver") : NULL;
	char *end = NULL;
	uint64_t known = client_version && *client_version
				 ? strtoull(client_version, &end, 10)
				 : 0;
	bool delta = client_version && *client_version && end && *end == '\0' &&
		     known >= r->floor && known <= r->version;
	struct pl_xnode *reply = pl_iq_result(stanza);
	if (delta) {
		/* XEP-0237: an empty result, then the changes as pushes. */
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
		struct item **changed = NULL;
		size_t count = 0, cap = 0;
		FOR_EACH_ITEM(r, it) {
			if (it->version > known) {
				pl_grow((void **)&changed, &cap, count + 1, sizeof(*changed));
				changed[count++] = it;
			}
		}
		if (count)
			qsort(changed, count, sizeof(*changed), compare_versions);
		for (size_t i = 0; i < count; i++) {
			struct pl_xnode *n = public_item(changed[i]);
			if (!n) {
				n = pl_xnode_new("item", NS_ROSTER);
				pl_xnode_set_attr(n, "jid", changed[i]->jid);
				pl_xnode_set_attr(n, "subscription", "remove");
			}
			send_push(r->owner, n, changed[i]->version, session);
			pl_xnode_unref(&n);
		}
		free(changed);
		return;
	}
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_ROSTER);
	if (client_version) {
		char ver[24];
		snprintf(ver, sizeof(ver), "%" PRIu64, r->version);
		pl_xnode_set_attr(query, "ver", ver);
	}
	FOR_EACH_ITEM(r, it) {
		struct pl_xnode *n = public_item(it);
		if (n)
			pl_xnode_add_child(query, n);
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
}

/* RFC 6121 2.5: removing an item cancels the subscriptions both ways. */
static void remove_item(struct roster *r, struct item *it)
{
	if ((it->subscription & SUB_TO) || it->ask)
		send_presence(r->owner, it->jid, "unsubscribe");
	if ((it->subscription & SUB_FROM) || it->pending_in) {
		if (it->subscription & SUB_FROM)
			send_unavailable_from_resources(r->owner, it->jid);
		send_presence(r->owner, it->jid, "unsubscribed");
	}
	it->subscription = 0;
	it->ask = it->approved = false;
	set_pending_in(r, it, false, NULL);
	set_listed(r, it, false);
	free(it->name);
	it->name = NULL;
	for (size_t i = 0; i < it->group_count; i++)
		free(it->groups[i]);
	free(it->groups);
	it->groups = NULL;
	it->group_count = 0;
}

static int on_roster_set(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	if (!own_roster(iq))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *query = pl_xnode_find(iq->stanza, "query", NS_ROSTER);
	struct pl_xnode *element = query ? pl_xnode_first_element(query) : NULL;
	/* RFC 6121 2.3.3: exactly one item. */
	if (!element || strcmp(element->name, "item") != 0 || pl_xnode_next_element(element))
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	const char *jid_text = pl_xnode_attr(element, "jid");
	if (!jid_text)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	struct pl_jid jid;
	if (pl_jid_parse(jid_text, &jid) != PL_JID_OK)
		return PL_HOOK_ERROR(PL_ERR_JID_MALFORMED);
	char *contact = pl_strdup(jid.bare);
	bool has_resource = jid.resource != NULL;
	pl_jid_free(&jid);
	int result = PL_HANDLED;
	struct roster *r = roster_get(iq->session->bare_jid);
	const char *subscription = pl_xnode_attr(element, "subscription");
	if (!r) {
		result = PL_HOOK_ERROR(PL_ERR_INTERNAL_SERVER_ERROR);
	} else if (has_resource) {
		/* Roster items are bare JIDs (RFC 6121 2.1.2.3). */
		result = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	} else if (subscription && strcmp(subscription, "remove") == 0) {
		struct item *it = roster_find(r, contact);
		if (!it || !it->listed) {
			result = PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
		} else {
			char *before = public_view(it);
			remove_item(r, it);
			commit_change(r, it, before, iq->stanza);
			free(before);
		}
	} else {
		/* Validate everything before touching the item. */
		const char *name = pl_xnode_attr(element, "name");
		size_t group_count = 0;
		for (struct pl_xnode *g = pl_xnode_first_element(element); g && !PL_HOOK_IS_ERROR(result);
		     g = pl_xnode_next_element(g)) {
			if (strcmp(g->name, "group") != 0)
				continue;
			char *text = pl_xnode_text(g);
			if (!*text || strlen(text) > (size_t)conf.max_group_length)
				result = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
			for (struct pl_xnode *h = pl_xnode_first_element(element); h && h != g;
			     h = pl_xnode_next_element(h)) {
				char *other = strcmp(h->name, "group") == 0 ? pl_xnode_text(h) : NULL;
				if (other && strcmp(other, text) == 0)
					result = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
				free(other);
			}
			free(text);
			group_count++;
		}
		struct item *it = roster_find(r, contact);
		if (PL_HOOK_IS_ERROR(result)) {
			/* keep the condition found above */
		} else if ((name && strlen(name) > (size_t)conf.max_name_length) ||
			   group_count > (size_t)conf.max_groups) {
			result = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
		} else if ((!it || !it->listed) && r->listed >= (size_t)conf.max_items) {
			pl_module_log(self, 2, "%s: roster full (%lld items)", r->owner,
				      (long long)conf.max_items);
			result = PL_HOOK_ERROR(PL_ERR_NOT_ALLOWED);
		} else if (!(it = item_for(r, contact))) {
			result = PL_HOOK_ERROR(PL_ERR_RESOURCE_CONSTRAINT);
		} else {
			char *before = public_view(it);
			free(it->name);
			it->name = name && *name ? pl_strdup(name) : NULL;
			for (size_t i = 0; i < it->group_count; i++)
				free(it->groups[i]);
			free(it->groups);
			it->groups = group_count ? pl_calloc(group_count, sizeof(*it->groups)) : NULL;
			it->group_count = 0;
			for (struct pl_xnode *g = pl_xnode_first_element(element); g;
			     g = pl_xnode_next_element(g))
				if (strcmp(g->name, "group") == 0)
					it->groups[it->group_count++] = pl_xnode_text(g);
			set_listed(r, it, true);
			commit_change(r, it, before, iq->stanza);
			free(before);
		}
	}
	roster_release(r);
	free(contact);
	return result;
}

/* ---- lifecycle ------------------------------------------------------------------- */

static int on_session_unbound(struct pl_event *event, void *userdata)
{
	struct pl_session *session = event->data;
	struct roster *r = *cache_slot(session->bare_jid);
	roster_release(r);
	return PL_CONTINUE;
}

static int on_user_deleted(struct pl_event *event, void *userdata)
{
	const char *bare = event->data;
	struct roster **slot = cache_slot(bare);
	struct roster *r = *slot;
	/* Its entries are gone from the store; commits still in flight find
	 * no roster and only answer their IQ. */
	if (r) {
		*slot = r->next;
		roster_free(r);
	}
	return PL_CONTINUE;
}

/* An account goes: its subscriptions end as if the user had cancelled
 * them (RFC 6121 3.2 and 3.3), so contacts here and elsewhere drop the
 * deleted account from their presence and see it in their rosters as
 * "none" rather than as a friend that never answers. */
static int on_user_deleting(struct pl_event *event, void *userdata)
{
	const char *bare = event->data;
	struct roster *r = roster_get(bare);
	if (!r)
		return PL_CONTINUE;
	struct pl_xnode *presence = pl_xnode_new("presence", PL_NS_CLIENT);
	pl_xnode_set_attr(presence, "from", bare);
	size_t told = 0;
	FOR_EACH_ITEM(r, it) {
		if (strcmp(it->jid, bare) == 0)
			continue;
		pl_xnode_set_attr(presence, "to", it->jid);
		if ((it->subscription & SUB_TO) || it->ask) {
			pl_xnode_set_attr(presence, "type", "unsubscribe");
			pl_route(presence, NULL);
		}
		if ((it->subscription & SUB_FROM) || it->pending_in) {
			pl_xnode_set_attr(presence, "type", "unsubscribed");
			pl_route(presence, NULL);
		}
		told++;
	}
	pl_xnode_unref(&presence);
	if (told)
		pl_module_log(self, 2, "%s is deleted: %zu contacts told", bare, told);
	roster_release(r);
	return PL_CONTINUE;
}

static int on_subscription_query(struct pl_event *event, void *userdata)
{
	struct pl_subscription_query *q = event->data;
	struct roster *r = roster_get(q->owner);
	struct item *it = r ? roster_find(r, q->contact) : NULL;
	q->subscribed = it && (it->subscription & SUB_FROM);
	q->in_roster = it && it->listed;
	roster_release(r);
	return PL_HANDLED;
}

/* RFC 6121 2.6 (versioning) and 3.4 (pre-approval) are stream features. */
static int on_stream_features(struct pl_event *event, void *userdata)
{
	struct pl_buf *out = event->data;
	pl_buf_puts(out, "<ver xmlns='urn:xmpp:features:rosterver'/>"
			 "<sub xmlns='urn:xmpp:features:pre-approval'/>");
	return PL_CONTINUE;
}

static int roster_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct roster_conf *)conf_ptr;
	self = m;
	items_space = pl_store_open(m, "items");
	meta_space = pl_store_open(m, "meta");
	if (!items_space || !meta_space)
		return pl_error(error, -EIO, "cannot open the roster's store spaces");
	memset(cache, 0, sizeof(cache));
	pl_hook(m, "iq/get/" NS_ROSTER, on_roster_get, NULL, 0);
	pl_hook(m, "iq/set/" NS_ROSTER, on_roster_set, NULL, 0);
	pl_hook(m, "presence/out", on_presence_out, NULL, 0);
	pl_hook(m, "presence/in", on_presence_in, NULL, 0);
	pl_hook(m, "presence/broadcast", on_presence_broadcast, NULL, 0);
	pl_hook(m, "session/unbound", on_session_unbound, NULL, 0);
	pl_hook(m, "user-deleted", on_user_deleted, NULL, 0);
	pl_hook(m, "user-deleting", on_user_deleting, NULL, 0);
	pl_hook(m, "stream-features/bind", on_stream_features, NULL, 0);
	pl_hook(m, "roster/subscribed", on_subscription_query, NULL, 0);
	return 0;
}

static void roster_unload(struct pl_module *m)
{
	for (size_t b = 0; b < CACHE_BUCKETS; b++) {
		while (cache[b]) {
			struct roster *r = cache[b];
			cache[b] = r->next;
			roster_free(r);
		}
	}
}

PL_MODULE(roster, .version = "0.1", .options = roster_options,
	  .conf_size = sizeof(struct roster_conf), .load = roster_load, .unload = roster_unload);
