/* mod_pep: XEP-0163 personal eventing, the subset of XEP-0060 publish-
 * subscribe that OMEMO keys, avatars, bookmarks and "read up to" markers
 * ride on. Every account is a pubsub service on its bare JID: publishing
 * creates a node (with the publish-options of XEP-0060 7.1.5 as its
 * configuration, or checked as preconditions once it exists), items are
 * kept in LMDB, and each publish, retraction, purge or deletion is
 * notified to the resources that want it: the owner's own, and contacts'
 * resources whose XEP-0115 entity capabilities list "<node>+notify" and
 * whom the node's access model lets in. Capabilities are learnt from the
 * presence that reaches the account, verified (the ver hash is recomputed
 * from the disco#info answer) and cached by ver for everyone. A resource
 * that comes online gets the last item of each node it wants.
 *
 * Store: pep.nodes "owner\0node" -> <node/> (configuration),
 * pep.items "owner\0node\0seq" -> <item id=.../> in publication order,
 * pep.ids "owner\0node\0id" -> seq, so an id republished replaces the
 * older item and max_items drops the oldest. A publish is answered, and
 * notified, once it is on disk.
 *
 * Bookmarks (XEP-0402 #compat, XEP-0411): the bookmarks:1 node is the one
 * truth; a client that still keeps XEP-0048 bookmarks in private XML
 * storage reads a <storage/> made from that node and writes through it, so
 * old and new clients of one account see the same rooms. */
#include "caps.h"
#include "counters.h"
#include "hooks.h"
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "scram.h"
#include "server.h"
#include "store/store.h"
#include "util.h"
#include "xml/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_PUBSUB_OWNER "http://jabber.org/protocol/pubsub#owner"
#define NS_PUBSUB_EVENT "http://jabber.org/protocol/pubsub#event"
#define NS_PUBSUB_ERRORS "http://jabber.org/protocol/pubsub#errors"
#define NS_NODE_CONFIG "http://jabber.org/protocol/pubsub#node_config"
#define NS_PUBLISH_OPTIONS "http://jabber.org/protocol/pubsub#publish-options"
#define NS_CAPS "http://jabber.org/protocol/caps"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DATA "jabber:x:data"
#define NS_RECORD "urn:parley:pep:0"
#define NS_PRIVATE "jabber:iq:private"
#define NS_LEGACY_BOOKMARKS "storage:bookmarks"
#define NS_BOOKMARKS "urn:xmpp:bookmarks:1"

struct pep_conf {
	int64_t max_nodes;
	uint64_t max_item_size;
	int64_t max_items;
	int64_t max_watchers;
};

static const struct pl_option pep_options[] = {
	{ "max-nodes", PL_OPT_INT, "100", 1, 100000, NULL, offsetof(struct pep_conf, max_nodes),
	  "nodes per account" },
	{ "max-item-size", PL_OPT_SIZE, "256KiB", 256, 16 << 20, NULL,
	  offsetof(struct pep_conf, max_item_size), "bytes of one item's payload" },
	{ "max-items", PL_OPT_INT, "256", 1, 100000, NULL, offsetof(struct pep_conf, max_items),
	  "items per node (what max_items=max means)" },
	{ "max-watchers", PL_OPT_INT, "5000", 16, 1000000, NULL,
	  offsetof(struct pep_conf, max_watchers),
	  "online resources whose presence one account tracks for notifications" },
	{ NULL }
};

static struct pep_conf conf;
static struct pl_module *self;
static struct pl_store_space *nodes_space, *items_space, *ids_space;
static struct pl_counter *published;

enum access { ACCESS_PRESENCE, ACCESS_OPEN, ACCESS_ROSTER, ACCESS_WHITELIST };
static const char *const access_names[] = { "presence", "open", "roster", "whitelist", NULL };
enum send_last { SEND_NEVER, SEND_ON_SUB, SEND_ON_SUB_AND_PRESENCE };
static const char *const send_last_names[] = { "never", "on_sub", "on_sub_and_presence", NULL };

static int name_index(const char *const *names, const char *name)
{
	for (int i = 0; name && names[i]; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

/* ---- entity capabilities (XEP-0115) ------------------------------------------ */

/* What one capabilities hash stands for: the nodes it wants notifications
 * of. Shared by every resource that announces the same hash. */
struct caps {
	char *ver;                       /* owned: the announced hash */
	char **notify;                   /* owned: node names with "+notify" */
	size_t notify_count;
	bool known;                      /* verified disco#info answer seen */
	bool asked;                      /* a disco#info request is out */
	struct caps *next;
};
#define CAPS_BUCKETS 1024
static struct caps *caps_table[CAPS_BUCKETS];
static size_t caps_count;
#define MAX_CAPS 10000

static struct caps *caps_get(const char *ver, bool create)
{
	struct caps **link = &caps_table[pl_hash_string(ver) % CAPS_BUCKETS];
	for (; *link; link = &(*link)->next)
		if (strcmp((*link)->ver, ver) == 0)
			return *link;
	if (!create || caps_count >= MAX_CAPS)
		return NULL;
	struct caps *c = pl_calloc(1, sizeof(*c));
	c->ver = pl_strdup(ver);
	*link = c;
	caps_count++;
	return c;
}

static bool caps_wants(const struct caps *c, const char *node)
{
	for (size_t i = 0; c && c->known && i < c->notify_count; i++)
		if (strcmp(c->notify[i], node) == 0)
			return true;
	return false;
}

/* ---- owners, nodes, watchers ------------------------------------------------ */

struct node {
	char *name;                      /* owned */
	enum access access;
	int64_t max_items;
	bool persist;
	enum send_last send_last;
	char *title;                     /* owned, "" if none */
	uint64_t next_seq;
	size_t item_count;
	struct node *next;
};

/* A resource whose presence reached the account: a possible recipient. */
struct watcher {
	char *full_jid;                  /* owned */
	char *bare_jid;                  /* owned */
	struct caps *caps;               /* borrowed from caps_table, NULL: none */
	struct watcher *next;
};

struct owner {
	char *bare_jid;                  /* owned */
	struct node *nodes;              /* owned; loaded from the store on first use */
	bool loaded;
	size_t node_count;
	struct watcher *watchers;        /* owned */
	size_t watcher_count;
	struct owner *next;
};
#define OWNER_BUCKETS 4096
static struct owner *owners[OWNER_BUCKETS];

static void node_free(struct node *n)
{
	free(n->name);
	free(n->title);
	free(n);
}

static void node_defaults(struct node *n)
{
	n->access = ACCESS_PRESENCE;
	n->max_items = 1;
	n->persist = true;
	n->send_last = SEND_ON_SUB_AND_PRESENCE;
	n->title = pl_strdup("");
}

static void node_key(struct pl_store_key *k, const char *owner, const char *node)
{
	pl_store_key_init(k);
	pl_store_key_str(k, owner);
	if (node)
		pl_store_key_str(k, node);
}

struct load_state {
	struct owner *owner;
	struct pl_store_read *read;
};

static int count_item(void *arg, const void *key, size_t key_len, const void *value,
		      size_t value_len)
{
	struct node *n = arg;
	uint64_t seq;
	if (key_len >= 8 && pl_store_key_read_u64((const uint8_t *)key + key_len - 8, 8, &seq) &&
	    seq >= n->next_seq)
		n->next_seq = seq + 1;
	n->item_count++;
	(void)value, (void)value_len;
	return 0;
}

static int load_node(void *arg, const void *key, size_t key_len, const void *value,
		     size_t value_len)
{
	struct load_state *state = arg;
	const char *owner, *name;
	size_t owner_len, name_len;
	size_t used = pl_store_key_read_str(key, key_len, &owner, &owner_len);
	if (!used || !pl_store_key_read_str((const uint8_t *)key + used, key_len - used, &name,
					    &name_len))
		return 0;
	struct pl_xnode *record = pl_xml_parse_element(value, value_len, NS_RECORD);
	if (!record)
		return 0;
	struct node *n = pl_calloc(1, sizeof(*n));
	n->name = pl_strndup(name, name_len);
	node_defaults(n);
	int access = name_index(access_names, pl_xnode_attr(record, "access"));
	n->access = access < 0 ? ACCESS_PRESENCE : (enum access)access;
	const char *max = pl_xnode_attr(record, "max-items");
	n->max_items = max ? strtoll(max, NULL, 10) : 1;
	if (n->max_items < 1 || n->max_items > conf.max_items)
		n->max_items = conf.max_items;
	const char *persist = pl_xnode_attr(record, "persist");
	n->persist = !persist || strcmp(persist, "0") != 0;
	int send_last = name_index(send_last_names, pl_xnode_attr(record, "send-last"));
	n->send_last = send_last < 0 ? SEND_ON_SUB_AND_PRESENCE : (enum send_last)send_last;
	if (pl_xnode_attr(record, "title")) {
		free(n->title);
		n->title = pl_strdup(pl_xnode_attr(record, "title"));
	}
	pl_xnode_unref(&record);
	n->next_seq = 1;
	struct pl_store_key prefix;
	node_key(&prefix, state->owner->bare_jid, n->name);
	if (!prefix.overflow)
		pl_store_scan(state->read, items_space, prefix.data, prefix.len, NULL, 0, count_item, n);
	n->next = state->owner->nodes;
	state->owner->nodes = n;
	state->owner->node_count++;
	return 0;
}

static struct owner *owner_get(const char *bare_jid, bool create)
{
	struct owner **link = &owners[pl_hash_string(bare_jid) % OWNER_BUCKETS];
	for (; *link; link = &(*link)->next)
		if (strcmp((*link)->bare_jid, bare_jid) == 0)
			return *link;
	if (!create)
		return NULL;
	struct owner *o = pl_calloc(1, sizeof(*o));
	o->bare_jid = pl_strdup(bare_jid);
	*link = o;
	return o;
}

static void owner_load(struct owner *o)
{
	if (o->loaded)
		return;
	o->loaded = true;
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (!read)
		return;
	struct pl_store_key prefix;
	node_key(&prefix, o->bare_jid, NULL);
	struct load_state state = { o, read };
	if (!prefix.overflow)
		pl_store_scan(read, nodes_space, prefix.data, prefix.len, NULL, 0, load_node, &state);
	pl_store_read_end(read);
}

static struct node *find_node(struct owner *o, const char *name)
{
	owner_load(o);
	for (struct node *n = o->nodes; n; n = n->next)
		if (strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

static void watcher_free(struct watcher *w)
{
	free(w->full_jid);
	free(w->bare_jid);
	free(w);
}

static void owner_free(struct owner *o)
{
	while (o->nodes) {
		struct node *n = o->nodes;
		o->nodes = n->next;
		node_free(n);
	}
	while (o->watchers) {
		struct watcher *w = o->watchers;
		o->watchers = w->next;
		watcher_free(w);
	}
	free(o->bare_jid);
	free(o);
}

/* ---- access -------------------------------------------------------------------- */

/* 0 when `who` (a bare JID) may read the node, or the XEP-0060 6.5.9 error
 * as a hook result (*app_error names the pubsub#errors child). */
static int check_access(const struct owner *o, const struct node *n, const char *who,
			const char **app_error)
{
	*app_error = NULL;
	if (strcmp(who, o->bare_jid) == 0 || n->access == ACCESS_OPEN)
		return 0;
	struct pl_subscription_query query = { o->bare_jid, who, false, false };
	pl_hooks_fire("roster/subscribed", &query);
	if (n->access == ACCESS_PRESENCE && !query.subscribed) {
		*app_error = "presence-subscription-required";
		return PL_HOOK_ERROR(PL_ERR_NOT_AUTHORIZED);
	}
	if (n->access == ACCESS_ROSTER && !query.in_roster) {
		*app_error = "not-in-roster-group";
		return PL_HOOK_ERROR(PL_ERR_NOT_AUTHORIZED);
	}
	if (n->access == ACCESS_WHITELIST) {
		*app_error = "closed-node";
		return PL_HOOK_ERROR(PL_ERR_NOT_ALLOWED);
	}
	return 0;
}

/* A stanza error with a pubsub#errors child (XEP-0060 needs both). */
static int pubsub_error(const struct pl_xnode *iq, enum pl_stanza_error condition,
			const char *app_error, const char *text)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	pl_xnode_set_attr(reply, "type", "error");
	struct pl_xnode *error = pl_xnode_add_element(reply, "error", NULL);
	pl_xnode_set_attr(error, "type", pl_stanza_error_type(condition));
	pl_xnode_add_element(error, pl_stanza_error_name(condition), PL_NS_STANZAS);
	if (app_error)
		pl_xnode_add_element(error, app_error, NS_PUBSUB_ERRORS);
	if (text)
		pl_xnode_add_text(pl_xnode_add_element(error, "text", PL_NS_STANZAS), text,
				  strlen(text));
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

/* ---- notifications -------------------------------------------------------------- */

/* Sends `event` (a <message/> without 'to') to every resource that wants
 * node n: the owner's own that announce +notify, and watchers allowed by
 * the access model. */
static void notify(struct owner *o, const struct node *n, struct pl_xnode *message)
{
	for (struct watcher *w = o->watchers; w; w = w->next) {
		if (!caps_wants(w->caps, n->name))
			continue;
		const char *app_error;
		if (check_access(o, n, w->bare_jid, &app_error) != 0)
			continue;
		pl_xnode_set_attr(message, "to", w->full_jid);
		pl_route(message, NULL);
	}
	pl_xnode_set_attr(message, "to", NULL);
}

static struct pl_xnode *event_message(const struct owner *o, const struct node *n,
				      struct pl_xnode **items_out)
{
	struct pl_xnode *m = pl_xnode_new("message", PL_NS_CLIENT);
	pl_xnode_set_attr(m, "from", o->bare_jid);
	pl_xnode_set_attr(m, "type", "headline");
	char id[32];
	snprintf(id, sizeof(id), "pep-%" PRIu64, (uint64_t)pl_now_ms());
	pl_xnode_set_attr(m, "id", id);
	struct pl_xnode *event = pl_xnode_add_element(m, "event", NS_PUBSUB_EVENT);
	if (items_out) {
		*items_out = pl_xnode_add_element(event, "items", NULL);
		pl_xnode_set_attr(*items_out, "node", n->name);
	}
	return m;
}

struct last_item {
	struct pl_xnode *item;           /* owned */
};

static int take_last(void *arg, const void *key, size_t key_len, const void *value,
		     size_t value_len)
{
	struct last_item *last = arg;
	last->item = pl_xml_parse_element(value, value_len, NS_PUBSUB_EVENT);
	(void)key, (void)key_len;
	return 1;
}

/* XEP-0163 4.3.2: a resource that comes online gets the newest item of
 * each node it wants. */
static void send_last_items(struct owner *o, struct watcher *w)
{
	owner_load(o);
	if (!w->caps || !w->caps->known)
		return;
	struct pl_store_read *read = NULL;
	for (struct node *n = o->nodes; n; n = n->next) {
		const char *app_error;
		if (n->send_last != SEND_ON_SUB_AND_PRESENCE || !n->item_count ||
		    !caps_wants(w->caps, n->name) || check_access(o, n, w->bare_jid, &app_error))
			continue;
		if (!read && !(read = pl_store_read_begin(pl_server.store)))
			return;
		struct pl_store_key prefix;
		node_key(&prefix, o->bare_jid, n->name);
		struct last_item last = { NULL };
		if (!prefix.overflow)
			pl_store_scan_reverse(read, items_space, prefix.data, prefix.len, NULL, 0,
					      take_last, &last);
		if (!last.item)
			continue;
		pl_module_log(self, 3, "last item of %s %s to %s", o->bare_jid, n->name, w->full_jid);
		struct pl_xnode *items;
		struct pl_xnode *m = event_message(o, n, &items);
		pl_xnode_add_child(items, last.item);
		pl_xnode_set_attr(m, "to", w->full_jid);
		pl_route(m, NULL);
		pl_xnode_unref(&m);
	}
	if (read)
		pl_store_read_end(read);
}

/* ---- learning capabilities ----------------------------------------------------------- */

/* A request for the disco#info behind a hash, and who waits for it. */
struct caps_request {
	char *id;                        /* owned */
	char *ver;                       /* owned */
	char *owner;                     /* owned: whose watcher asked first */
	char *full_jid;                  /* owned */
	struct caps_request *next;
};
static struct caps_request *caps_requests;
static uint64_t request_counter;

static void ask_caps(struct caps *c, const char *node, const char *owner, const char *full_jid)
{
	if (c->asked)
		return;
	c->asked = true;
	struct caps_request *q = pl_calloc(1, sizeof(*q));
	q->id = pl_asprintf("caps%" PRIu64, ++request_counter);
	q->ver = pl_strdup(c->ver);
	q->owner = pl_strdup(owner);
	q->full_jid = pl_strdup(full_jid);
	q->next = caps_requests;
	caps_requests = q;
	struct pl_xnode *iq = pl_xnode_new("iq", PL_NS_CLIENT);
	pl_xnode_set_attr(iq, "type", "get");
	pl_xnode_set_attr(iq, "id", q->id);
	pl_xnode_set_attr(iq, "from", owner);
	pl_xnode_set_attr(iq, "to", full_jid);
	struct pl_xnode *query = pl_xnode_add_element(iq, "query", NS_DISCO_INFO);
	char *full_node = pl_asprintf("%s#%s", node, c->ver);
	pl_xnode_set_attr(query, "node", full_node);
	free(full_node);
	pl_route(iq, NULL);
	pl_xnode_unref(&iq);
}

static int on_iq_response(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *id = pl_xnode_attr(iq->stanza, "id");
	if (!id || strncmp(id, "caps", 4) != 0)
		return PL_CONTINUE;
	struct caps_request **link = &caps_requests;
	while (*link && strcmp((*link)->id, id) != 0)
		link = &(*link)->next;
	struct caps_request *q = *link;
	const char *from = pl_xnode_attr(iq->stanza, "from");
	if (!q || !from || strcmp(from, q->full_jid) != 0)
		return PL_CONTINUE;
	*link = q->next;
	struct caps *c = caps_get(q->ver, false);
	struct pl_xnode *query = pl_xnode_find(iq->stanza, "query", NS_DISCO_INFO);
	const char *type = pl_xnode_attr(iq->stanza, "type");
	if (c && query && strcmp(type, "result") == 0) {
		char *hash = pl_caps_hash(query);
		if (strcmp(hash, c->ver) == 0) {
			c->known = true;
			for (struct pl_xnode *f = pl_xnode_first_element(query); f;
			     f = pl_xnode_next_element(f)) {
				const char *var = pl_xnode_attr(f, "var");
				size_t len = var ? strlen(var) : 0;
				if (strcmp(f->name, "feature") != 0 || len <= 7 ||
				    strcmp(var + len - 7, "+notify") != 0)
					continue;
				c->notify = pl_realloc(c->notify, (c->notify_count + 1) * sizeof(char *));
				c->notify[c->notify_count++] = pl_strndup(var, len - 7);
			}
			/* Everyone already waiting with this hash gets their items. */
			for (size_t b = 0; b < OWNER_BUCKETS; b++)
				for (struct owner *o = owners[b]; o; o = o->next)
					for (struct watcher *w = o->watchers; w; w = w->next)
						if (w->caps == c)
							send_last_items(o, w);
		} else {
			pl_module_log(self, 2, "%s: capabilities %s do not match their disco#info (%s)",
				      from, c->ver, hash);
		}
		free(hash);
	}
	if (c && !c->known)
		c->asked = false; /* the next resource with this hash asks again */
	free(q->id);
	free(q->ver);
	free(q->owner);
	free(q->full_jid);
	free(q);
	return PL_HANDLED;
}

/* A presence reached `owner`'s account (or one of its own resources sent
 * one): track the sender as a possible recipient. */
static void track_presence(const char *owner_jid, const char *full_jid,
			   const struct pl_xnode *presence, bool available)
{
	struct owner *o = owner_get(owner_jid, available);
	if (!o)
		return;
	struct watcher **link = &o->watchers;
	while (*link && strcmp((*link)->full_jid, full_jid) != 0)
		link = &(*link)->next;
	struct watcher *w = *link;
	if (!available) {
		if (w) {
			*link = w->next;
			watcher_free(w);
			o->watcher_count--;
		}
		return;
	}
	bool arrived = !w;
	if (!w) {
		if ((int64_t)o->watcher_count >= conf.max_watchers)
			return;
		w = pl_calloc(1, sizeof(*w));
		w->full_jid = pl_strdup(full_jid);
		w->bare_jid = pl_jid_normalize_bare(full_jid);
		if (!w->bare_jid) {
			free(w->full_jid);
			free(w);
			return;
		}
		w->next = o->watchers;
		o->watchers = w;
		o->watcher_count++;
	}
	struct pl_xnode *c = pl_xnode_find(presence, "c", NS_CAPS);
	const char *ver = c ? pl_xnode_attr(c, "ver") : NULL;
	const char *hash = c ? pl_xnode_attr(c, "hash") : NULL;
	const char *node = c ? pl_xnode_attr(c, "node") : NULL;
	struct caps *caps = ver && hash && strcmp(hash, "sha-1") == 0 ? caps_get(ver, true) : NULL;
	bool changed = caps != w->caps;
	w->caps = caps;
	if (caps && !caps->known)
		ask_caps(caps, node ? node : "", owner_jid, full_jid);
	else if (caps && (arrived || changed))
		send_last_items(o, w);
}

/* Contacts' presence on its way to the account. */
static int on_stanza_in(struct pl_event *event, void *userdata)
{
	struct pl_route_event *e = event->data;
	if (strcmp(e->stanza->name, "presence") != 0)
		return PL_CONTINUE;
	const char *type = pl_xnode_attr(e->stanza, "type");
	const char *from = pl_xnode_attr(e->stanza, "from");
	if (!from || !strchr(from, '/') || (type && strcmp(type, "unavailable") != 0))
		return PL_CONTINUE;
	track_presence(e->to->bare, from, e->stanza, !type);
	return PL_CONTINUE;
}

/* The account's own resources. */
static int on_presence_broadcast(struct pl_event *event, void *userdata)
{
	struct pl_presence_event *e = event->data;
	const char *type = pl_xnode_attr(e->stanza, "type");
	track_presence(e->session->bare_jid, e->session->full_jid, e->stanza, !type);
	return PL_CONTINUE;
}

static int on_session_unbound(struct pl_event *event, void *userdata)
{
	struct pl_session *s = event->data;
	track_presence(s->bare_jid, s->full_jid, NULL, false);
	return PL_CONTINUE;
}

/* ---- node configuration ------------------------------------------------------------ */

static char *field_value(const struct pl_xnode *form, const char *var)
{
	for (struct pl_xnode *f = pl_xnode_first_element(form); f; f = pl_xnode_next_element(f)) {
		const char *name = pl_xnode_attr(f, "var");
		if (strcmp(f->name, "field") == 0 && name && strcmp(name, var) == 0) {
			struct pl_xnode *v = pl_xnode_find(f, "value", NULL);
			return v ? pl_xnode_text(v) : pl_strdup("");
		}
	}
	return NULL;
}

static bool parse_bool(const char *value, bool *out)
{
	if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0)
		*out = true;
	else if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0)
		*out = false;
	else
		return false;
	return true;
}

/* Reads the configuration fields Parley knows from a form into n. With
 * `check`, nothing changes: the result says whether n already has those
 * values (publish-options preconditions). Returns 0, -EINVAL for a bad
 * value, -EEXIST for a precondition that does not hold. */
static int apply_form(struct node *n, const struct pl_xnode *form, bool check)
{
	static const char *const vars[] = { "pubsub#access_model", "pubsub#max_items",
					    "pubsub#persist_items", "pubsub#send_last_published_item",
					    "pubsub#title" };
	for (size_t i = 0; i < PL_ARRAY_LEN(vars); i++) {
		char *value = field_value(form, vars[i]);
		if (!value)
			continue;
		int rc = 0;
		bool flag;
		if (i == 0) {
			int access = name_index(access_names, value);
			if (access < 0)
				rc = -EINVAL;
			else if (check && (enum access)access != n->access)
				rc = -EEXIST;
			else
				n->access = (enum access)access;
		} else if (i == 1) {
			char *end;
			long long max = strcmp(value, "max") == 0 ? conf.max_items : strtoll(value, &end, 10);
			if (strcmp(value, "max") != 0 && (*end || max < 1))
				rc = -EINVAL;
			else if (max > conf.max_items)
				rc = -EINVAL;
			else if (check && max != n->max_items)
				rc = -EEXIST;
			else
				n->max_items = max;
		} else if (i == 2) {
			if (!parse_bool(value, &flag))
				rc = -EINVAL;
			else if (check && flag != n->persist)
				rc = -EEXIST;
			else
				n->persist = flag;
		} else if (i == 3) {
			int send_last = name_index(send_last_names, value);
			if (send_last < 0)
				rc = -EINVAL;
			else if (check && (enum send_last)send_last != n->send_last)
				rc = -EEXIST;
			else
				n->send_last = (enum send_last)send_last;
		} else if (!check) {
			free(n->title);
			n->title = pl_strdup(value);
		}
		free(value);
		if (rc)
			return rc;
	}
	return 0;
}

static void put_node(struct pl_store_write *w, const struct owner *o, const struct node *n)
{
	struct pl_xnode *record = pl_xnode_new("node", NS_RECORD);
	pl_xnode_set_attr(record, "access", access_names[n->access]);
	char max[24];
	snprintf(max, sizeof(max), "%" PRId64, n->max_items);
	pl_xnode_set_attr(record, "max-items", max);
	pl_xnode_set_attr(record, "persist", n->persist ? "1" : "0");
	pl_xnode_set_attr(record, "send-last", send_last_names[n->send_last]);
	if (*n->title)
		pl_xnode_set_attr(record, "title", n->title);
	struct pl_buf value = { 0 };
	pl_xnode_serialize(record, NULL, &value);
	struct pl_store_key k;
	node_key(&k, o->bare_jid, n->name);
	pl_store_put(w, nodes_space, k.data, k.len, value.data, value.len);
	pl_buf_free(&value);
	pl_xnode_unref(&record);
}

static struct pl_xnode *config_form(const struct node *n, const char *type)
{
	struct pl_xnode *form = pl_xnode_new("x", NS_DATA);
	pl_xnode_set_attr(form, "type", type);
	char max[24];
	snprintf(max, sizeof(max), "%" PRId64, n->max_items);
	const char *fields[][3] = {
		{ "FORM_TYPE", "hidden", NS_NODE_CONFIG },
		{ "pubsub#access_model", "list-single", access_names[n->access] },
		{ "pubsub#max_items", "text-single", max },
		{ "pubsub#persist_items", "boolean", n->persist ? "1" : "0" },
		{ "pubsub#send_last_published_item", "list-single", send_last_names[n->send_last] },
		{ "pubsub#title", "text-single", n->title },
	};
	for (size_t i = 0; i < PL_ARRAY_LEN(fields); i++) {
		struct pl_xnode *f = pl_xnode_add_element(form, "field", NULL);
		pl_xnode_set_attr(f, "var", fields[i][0]);
		pl_xnode_set_attr(f, "type", fields[i][1]);
		pl_xnode_add_text(pl_xnode_add_element(f, "value", NULL), fields[i][2],
				  strlen(fields[i][2]));
		const char *const *choices = i == 1 ? access_names : i == 4 ? send_last_names : NULL;
		for (size_t k = 0; choices && choices[k]; k++)
			pl_xnode_add_text(pl_xnode_add_element(pl_xnode_add_element(f, "option", NULL),
							       "value", NULL),
					  choices[k], strlen(choices[k]));
	}
	return form;
}

/* ---- publishing and the rest of XEP-0060 that PEP needs ------------------------------ */

static void item_key(struct pl_store_key *k, const char *owner, const char *node, uint64_t seq)
{
	node_key(k, owner, node);
	pl_store_key_u64(k, seq);
}

static void id_key(struct pl_store_key *k, const char *owner, const char *node, const char *id)
{
	node_key(k, owner, node);
	pl_store_key_str(k, id);
}

/* What happens once a change is on disk: the answer, then the news. */
struct change {
	char *owner;                     /* owned */
	char *node;                      /* owned */
	struct pl_xnode *iq;             /* owned copy of the request */
	struct pl_xnode *reply;          /* owned: the IQ result to send */
	struct pl_xnode *event;          /* owned: the <event/> child to notify, or NULL */
};

static struct pl_xnode *legacy_storage(struct owner *o);

static void on_change_stored(void *arg, int status)
{
	struct change *c = arg;
	if (status != 0) {
		pl_module_log(self, 0, "%s: a change of node %s was not saved: %s", c->owner, c->node,
			      strerror(-status));
		pl_route_error(c->iq, status == -ENOSPC ? PL_ERR_RESOURCE_CONSTRAINT
							: PL_ERR_INTERNAL_SERVER_ERROR,
			       NULL);
	} else {
		pl_route(c->reply, NULL);
		struct owner *o = owner_get(c->owner, false);
		struct node *n = o ? find_node(o, c->node) : NULL;
		/* A deleted node is told about once, from the copy kept here. */
		struct node gone = { .name = c->node, .access = ACCESS_PRESENCE };
		if (c->event && o) {
			struct pl_xnode *m = event_message(o, n ? n : &gone, NULL);
			struct pl_xnode *event = pl_xnode_find(m, "event", NS_PUBSUB_EVENT);
			for (struct pl_xnode *child = pl_xnode_first_element(c->event); child;
			     child = pl_xnode_next_element(child))
				pl_xnode_add_child(event, pl_xnode_copy(child));
			notify(o, n ? n : &gone, m);
			pl_xnode_unref(&m);
			if (strcmp(c->node, NS_BOOKMARKS) == 0) {
				/* XEP-0411: clients that follow the XEP-0048 node
				 * get the whole <storage/> again. */
				struct node legacy = { .name = NS_LEGACY_BOOKMARKS,
						       .access = ACCESS_WHITELIST };
				struct pl_xnode *items;
				m = event_message(o, &legacy, &items);
				struct pl_xnode *item = pl_xnode_add_element(items, "item", NULL);
				pl_xnode_set_attr(item, "id", "current");
				pl_xnode_add_child(item, legacy_storage(o));
				notify(o, &legacy, m);
				pl_xnode_unref(&m);
			}
		}
	}
	pl_xnode_unref(&c->iq);
	pl_xnode_unref(&c->reply);
	pl_xnode_unref(&c->event);
	free(c->owner);
	free(c->node);
	free(c);
}

static void submit_change(struct pl_store_write *w, const struct owner *o, const char *node,
			  const struct pl_xnode *iq, struct pl_xnode *reply, struct pl_xnode *event)
{
	struct change *c = pl_calloc(1, sizeof(*c));
	c->owner = pl_strdup(o->bare_jid);
	c->node = pl_strdup(node);
	c->iq = pl_xnode_copy(iq);
	c->reply = reply;
	c->event = event;
	pl_store_write_submit(w, on_change_stored, c);
}

static struct pl_xnode *event_with(const char *name, const char *node)
{
	struct pl_xnode *event = pl_xnode_new("event", NS_PUBSUB_EVENT);
	struct pl_xnode *child = pl_xnode_add_element(event, name, NULL);
	pl_xnode_set_attr(child, "node", node);
	return event;
}

struct oldest {
	uint64_t seq;
	char *id;                        /* owned */
	bool found;
};

static int take_oldest(void *arg, const void *key, size_t key_len, const void *value,
		       size_t value_len)
{
	struct oldest *o = arg;
	struct pl_xnode *item = pl_xml_parse_element(value, value_len, NS_PUBSUB_EVENT);
	if (item && pl_xnode_attr(item, "id") && key_len >= 8 &&
	    pl_store_key_read_u64((const uint8_t *)key + key_len - 8, 8, &o->seq)) {
		o->id = pl_strdup(pl_xnode_attr(item, "id"));
		o->found = true;
	}
	pl_xnode_unref(&item);
	return 1;
}

/* Deletes the item stored under `id` (if any) in the write set. */
static bool delete_item(struct pl_store_read *read, struct pl_store_write *w, const struct owner *o,
			const struct node *n, const char *id)
{
	struct pl_store_key k;
	id_key(&k, o->bare_jid, n->name, id);
	const void *value;
	size_t len;
	uint64_t seq;
	if (k.overflow || pl_store_get(read, ids_space, k.data, k.len, &value, &len) != 0 ||
	    len != 8 || !pl_store_key_read_u64(value, 8, &seq))
		return false;
	pl_store_del(w, ids_space, k.data, k.len);
	item_key(&k, o->bare_jid, n->name, seq);
	pl_store_del(w, items_space, k.data, k.len);
	return true;
}

static int legacy_set(const struct pl_xnode *iq, struct pl_session *session,
		      const struct pl_xnode *storage, struct pl_xnode *reply);
static int legacy_pep_get(const struct pl_xnode *iq, struct owner *o);

static int publish(const struct pl_xnode *iq, struct pl_session *session,
		   const struct pl_xnode *pubsub, const struct pl_xnode *request)
{
	const char *node_name = pl_xnode_attr(request, "node");
	if (!node_name || !*node_name)
		return pubsub_error(iq, PL_ERR_BAD_REQUEST, "nodeid-required", NULL);
	struct pl_xnode *item = pl_xnode_find(request, "item", NULL);
	if (!item || pl_xnode_next_element(item))
		return pubsub_error(iq, PL_ERR_BAD_REQUEST, "item-required",
				    "publish exactly one item");
	struct pl_xnode *payload = pl_xnode_first_element(item);
	if (!payload || pl_xnode_next_element(payload))
		return pubsub_error(iq, PL_ERR_BAD_REQUEST, "invalid-payload",
				    "an item carries exactly one payload element");
	if (strcmp(node_name, NS_LEGACY_BOOKMARKS) == 0) {
		/* XEP-0411: XEP-0048 bookmarks published to PEP land in the
		 * bookmarks:1 node, like those in private storage. */
		if (strcmp(payload->name, "storage") != 0 || !payload->ns ||
		    strcmp(payload->ns, NS_LEGACY_BOOKMARKS) != 0)
			return pubsub_error(iq, PL_ERR_BAD_REQUEST, "invalid-payload",
					    "storage:bookmarks holds a <storage/>");
		struct pl_xnode *reply = pl_iq_result(iq);
		struct pl_xnode *p = pl_xnode_add_element(pl_xnode_add_element(reply, "pubsub", NS_PUBSUB),
							  "publish", NULL);
		pl_xnode_set_attr(p, "node", NS_LEGACY_BOOKMARKS);
		pl_xnode_set_attr(pl_xnode_add_element(p, "item", NULL), "id", "current");
		return legacy_set(iq, session, payload, reply);
	}
	struct pl_buf size = { 0 };
	pl_xnode_serialize(payload, NULL, &size);
	bool too_big = size.len > conf.max_item_size;
	pl_buf_free(&size);
	if (too_big)
		return pubsub_error(iq, PL_ERR_NOT_ACCEPTABLE, "payload-too-big", NULL);
	struct pl_xnode *options = pl_xnode_find(pubsub, "publish-options", NULL);
	struct pl_xnode *form = options ? pl_xnode_find(options, "x", NS_DATA) : NULL;
	struct owner *o = owner_get(session->bare_jid, true);
	struct node *n = find_node(o, node_name);
	bool created = false;
	if (!n) {
		if ((int64_t)o->node_count >= conf.max_nodes)
			return pubsub_error(iq, PL_ERR_NOT_ALLOWED, "max-nodes-exceeded", NULL);
		n = pl_calloc(1, sizeof(*n));
		n->name = pl_strdup(node_name);
		node_defaults(n);
		n->next_seq = 1;
		if (form && apply_form(n, form, false) != 0) {
			node_free(n);
			return pubsub_error(iq, PL_ERR_CONFLICT, "precondition-not-met",
					    "the publish-options cannot be applied");
		}
		n->next = o->nodes;
		o->nodes = n;
		o->node_count++;
		created = true;
	} else if (form && apply_form(n, form, true) != 0) {
		/* XEP-0060 7.1.5: the client reconfigures the node and retries. */
		return pubsub_error(iq, PL_ERR_CONFLICT, "precondition-not-met", NULL);
	}
	char generated[40];
	const char *id = pl_xnode_attr(item, "id");
	if (!id || !*id) {
		uint8_t random[12];
		pl_random_bytes(random, sizeof(random));
		for (size_t i = 0; i < sizeof(random); i++)
			snprintf(generated + i * 2, 3, "%02x", random[i]);
		id = generated;
	}
	struct pl_xnode *stored = pl_xnode_new("item", NS_PUBSUB_EVENT);
	pl_xnode_set_attr(stored, "id", id);
	pl_xnode_add_child(stored, pl_xnode_copy(payload));
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (created)
		put_node(w, o, n);
	if (read && delete_item(read, w, o, n, id))
		n->item_count--;
	if (n->persist) {
		struct pl_store_key k;
		uint64_t seq = n->next_seq++;
		item_key(&k, o->bare_jid, n->name, seq);
		/* Kept without its namespace: read back as pubsub or pubsub#event. */
		struct pl_buf value = { 0 };
		pl_xnode_serialize(stored, NS_PUBSUB_EVENT, &value);
		pl_store_put(w, items_space, k.data, k.len, value.data, value.len);
		pl_buf_free(&value);
		struct pl_store_key seq_value;
		pl_store_key_init(&seq_value);
		pl_store_key_u64(&seq_value, seq);
		id_key(&k, o->bare_jid, n->name, id);
		pl_store_put(w, ids_space, k.data, k.len, seq_value.data, seq_value.len);
		n->item_count++;
		/* max_items: the oldest go (those on disk; the new one is not). */
		struct pl_store_key prefix;
		node_key(&prefix, o->bare_jid, n->name);
		uint64_t skip_after = 0;
		while ((int64_t)n->item_count > n->max_items && read) {
			struct oldest oldest = { 0 };
			struct pl_store_key start;
			item_key(&start, o->bare_jid, n->name, skip_after + 1);
			pl_store_scan(read, items_space, prefix.data, prefix.len, start.data, start.len,
				      take_oldest, &oldest);
			if (!oldest.found || oldest.seq >= seq) {
				free(oldest.id);
				break;
			}
			if (strcmp(oldest.id, id) != 0) {
				item_key(&k, o->bare_jid, n->name, oldest.seq);
				pl_store_del(w, items_space, k.data, k.len);
				id_key(&k, o->bare_jid, n->name, oldest.id);
				pl_store_del(w, ids_space, k.data, k.len);
				n->item_count--;
			}
			skip_after = oldest.seq;
			free(oldest.id);
		}
	}
	if (read)
		pl_store_read_end(read);
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *answer = pl_xnode_add_element(reply, "pubsub", NS_PUBSUB);
	struct pl_xnode *p = pl_xnode_add_element(answer, "publish", NULL);
	pl_xnode_set_attr(p, "node", n->name);
	pl_xnode_set_attr(pl_xnode_add_element(p, "item", NULL), "id", id);
	struct pl_xnode *event = pl_xnode_new("event", NS_PUBSUB_EVENT);
	struct pl_xnode *items = pl_xnode_add_element(event, "items", NULL);
	pl_xnode_set_attr(items, "node", n->name);
	pl_xnode_add_child(items, stored);
	submit_change(w, o, n->name, iq, reply, event);
	pl_counter_add(published, 1);
	return PL_HANDLED;
}

static int retract(const struct pl_xnode *iq, struct pl_session *session,
		   const struct pl_xnode *request)
{
	const char *node_name = pl_xnode_attr(request, "node");
	struct pl_xnode *item = pl_xnode_find(request, "item", NULL);
	const char *id = item ? pl_xnode_attr(item, "id") : NULL;
	if (!node_name || !id)
		return pubsub_error(iq, PL_ERR_BAD_REQUEST, node_name ? "item-required" : "nodeid-required",
				    NULL);
	struct owner *o = owner_get(session->bare_jid, true);
	struct node *n = find_node(o, node_name);
	if (!n)
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	bool found = read && delete_item(read, w, o, n, id);
	if (read)
		pl_store_read_end(read);
	if (!found) {
		pl_store_write_abort(w);
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	}
	n->item_count--;
	const char *notify_attr = pl_xnode_attr(request, "notify");
	struct pl_xnode *event = NULL;
	if (notify_attr && (strcmp(notify_attr, "1") == 0 || strcmp(notify_attr, "true") == 0)) {
		event = event_with("items", n->name);
		pl_xnode_set_attr(pl_xnode_add_element(pl_xnode_first_element(event), "retract", NULL),
				  "id", id);
	}
	submit_change(w, o, n->name, iq, pl_iq_result(iq), event);
	return PL_HANDLED;
}

struct collected {
	struct pl_xnode **items;         /* owned, newest first */
	size_t count, max;
};

static int collect_item(void *arg, const void *key, size_t key_len, const void *value,
			size_t value_len)
{
	struct collected *c = arg;
	struct pl_xnode *item = pl_xml_parse_element(value, value_len, NS_PUBSUB);
	if (item)
		c->items[c->count++] = item;
	(void)key, (void)key_len;
	return c->count >= c->max;
}

/* XEP-0060 6.5: items by id, or the newest max_items, oldest first. */
static int retrieve(const struct pl_xnode *iq, const char *requester, const struct pl_xnode *request)
{
	const char *to = pl_xnode_attr(iq, "to");
	const char *owner_jid = to ? to : requester;
	const char *node_name = pl_xnode_attr(request, "node");
	if (!node_name)
		return pubsub_error(iq, PL_ERR_BAD_REQUEST, "nodeid-required", NULL);
	struct owner *o = owner_get(owner_jid, true);
	if (strcmp(node_name, NS_LEGACY_BOOKMARKS) == 0 && strcmp(requester, o->bare_jid) == 0)
		return legacy_pep_get(iq, o);
	struct node *n = find_node(o, node_name);
	if (!n)
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	const char *app_error;
	int denied = check_access(o, n, requester, &app_error);
	if (denied)
		return pubsub_error(iq, PL_HOOK_ERROR_CONDITION(denied), app_error, NULL);
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *items = pl_xnode_add_element(pl_xnode_add_element(reply, "pubsub", NS_PUBSUB),
						      "items", NULL);
	pl_xnode_set_attr(items, "node", n->name);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (read && pl_xnode_find(request, "item", NULL)) {
		for (struct pl_xnode *wanted = pl_xnode_first_element(request); wanted;
		     wanted = pl_xnode_next_element(wanted)) {
			const char *id = pl_xnode_attr(wanted, "id");
			struct pl_store_key k;
			const void *value;
			size_t len;
			uint64_t seq;
			if (!id)
				continue;
			id_key(&k, o->bare_jid, n->name, id);
			if (k.overflow || pl_store_get(read, ids_space, k.data, k.len, &value, &len) != 0 ||
			    !pl_store_key_read_u64(value, len, &seq))
				continue;
			item_key(&k, o->bare_jid, n->name, seq);
			if (pl_store_get(read, items_space, k.data, k.len, &value, &len) == 0) {
				struct pl_xnode *item = pl_xml_parse_element(value, len, NS_PUBSUB);
				if (item)
					pl_xnode_add_child(items, item);
			}
		}
	} else if (read) {
		const char *max_text = pl_xnode_attr(request, "max_items");
		long long max = max_text ? strtoll(max_text, NULL, 10) : conf.max_items;
		if (max < 1 || max > conf.max_items)
			max = conf.max_items;
		struct collected c = { pl_calloc((size_t)max, sizeof(struct pl_xnode *)), 0, (size_t)max };
		struct pl_store_key prefix;
		node_key(&prefix, o->bare_jid, n->name);
		pl_store_scan_reverse(read, items_space, prefix.data, prefix.len, NULL, 0, collect_item, &c);
		for (size_t i = c.count; i-- > 0;)
			pl_xnode_add_child(items, c.items[i]);
		free(c.items);
	}
	if (read)
		pl_store_read_end(read);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int owner_request(const struct pl_xnode *iq, struct pl_session *session, bool get)
{
	struct pl_xnode *pubsub = pl_xnode_find(iq, "pubsub", NS_PUBSUB_OWNER);
	struct pl_xnode *request = pubsub ? pl_xnode_first_element(pubsub) : NULL;
	if (!request)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	const char *node_name = pl_xnode_attr(request, "node");
	struct owner *o = owner_get(session->bare_jid, true);
	struct node *n = node_name ? find_node(o, node_name) : NULL;
	if (strcmp(request->name, "default") == 0 && get) {
		struct node defaults = { 0 };
		node_defaults(&defaults);
		struct pl_xnode *reply = pl_iq_result(iq);
		struct pl_xnode *d = pl_xnode_add_element(pl_xnode_add_element(reply, "pubsub", NS_PUBSUB_OWNER),
							  "default", NULL);
		pl_xnode_add_child(d, config_form(&defaults, "form"));
		free(defaults.title);
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
		return PL_HANDLED;
	}
	if (!node_name)
		return pubsub_error(iq, PL_ERR_BAD_REQUEST, "nodeid-required", NULL);
	if (!n)
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	struct pl_store_key prefix;
	node_key(&prefix, o->bare_jid, n->name);
	if (strcmp(request->name, "configure") == 0 && get) {
		struct pl_xnode *reply = pl_iq_result(iq);
		struct pl_xnode *c = pl_xnode_add_element(pl_xnode_add_element(reply, "pubsub", NS_PUBSUB_OWNER),
							  "configure", NULL);
		pl_xnode_set_attr(c, "node", n->name);
		pl_xnode_add_child(c, config_form(n, "form"));
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
		return PL_HANDLED;
	}
	if (get)
		return PL_HOOK_ERROR(PL_ERR_FEATURE_NOT_IMPLEMENTED);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	if (strcmp(request->name, "configure") == 0) {
		struct pl_xnode *form = pl_xnode_find(request, "x", NS_DATA);
		struct node changed = *n;
		changed.title = pl_strdup(n->title);
		if (!form || apply_form(&changed, form, false) != 0) {
			free(changed.title);
			pl_store_write_abort(w);
			return PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
		}
		free(n->title);
		*n = changed;
		put_node(w, o, n);
		submit_change(w, o, n->name, iq, pl_iq_result(iq), NULL);
		return PL_HANDLED;
	}
	if (strcmp(request->name, "purge") == 0 || strcmp(request->name, "delete") == 0) {
		bool purge = strcmp(request->name, "purge") == 0;
		pl_store_del_prefix(w, items_space, prefix.data, prefix.len);
		pl_store_del_prefix(w, ids_space, prefix.data, prefix.len);
		n->item_count = 0;
		struct pl_xnode *event = event_with(purge ? "purge" : "delete", n->name);
		char *name = pl_strdup(n->name);
		if (!purge) {
			pl_store_del(w, nodes_space, prefix.data, prefix.len);
			for (struct node **link = &o->nodes; *link; link = &(*link)->next) {
				if (*link == n) {
					*link = n->next;
					break;
				}
			}
			node_free(n);
			o->node_count--;
		}
		pl_module_log(self, 3, "%s %s node %s", o->bare_jid, purge ? "purges" : "deletes", name);
		submit_change(w, o, name, iq, pl_iq_result(iq), event);
		free(name);
		return PL_HANDLED;
	}
	pl_store_write_abort(w);
	return PL_HOOK_ERROR(PL_ERR_FEATURE_NOT_IMPLEMENTED);
}

static bool to_own_account(const struct pl_iq_event *iq)
{
	const char *to = pl_xnode_attr(iq->stanza, "to");
	return iq->session && (!to || strcmp(to, iq->session->bare_jid) == 0);
}

static int on_pubsub(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (to && !strchr(to, '@'))
		return PL_CONTINUE; /* the server itself is no pubsub service */
	bool get = strcmp(pl_xnode_attr(iq->stanza, "type"), "get") == 0;
	struct pl_xnode *pubsub = pl_xnode_find(iq->stanza, "pubsub", NS_PUBSUB);
	struct pl_xnode *request = pubsub ? pl_xnode_first_element(pubsub) : NULL;
	if (!request)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	if (get && strcmp(request->name, "items") == 0) {
		const char *from = pl_xnode_attr(iq->stanza, "from");
		char *requester = from ? pl_jid_normalize_bare(from) : NULL;
		if (!requester)
			return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
		int result = retrieve(iq->stanza, requester, request);
		free(requester);
		return result;
	}
	if (!to_own_account(iq))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	if (!get && strcmp(request->name, "publish") == 0)
		return publish(iq->stanza, iq->session, pubsub, request);
	if (!get && strcmp(request->name, "retract") == 0)
		return retract(iq->stanza, iq->session, request);
	if (!get && strcmp(request->name, "create") == 0) {
		const char *name = pl_xnode_attr(request, "node");
		struct owner *o = owner_get(iq->session->bare_jid, true);
		if (!name || !*name)
			return pubsub_error(iq->stanza, PL_ERR_NOT_ACCEPTABLE, "nodeid-required", NULL);
		if (find_node(o, name))
			return PL_HOOK_ERROR(PL_ERR_CONFLICT);
		if ((int64_t)o->node_count >= conf.max_nodes)
			return pubsub_error(iq->stanza, PL_ERR_NOT_ALLOWED, "max-nodes-exceeded", NULL);
		struct node *n = pl_calloc(1, sizeof(*n));
		n->name = pl_strdup(name);
		node_defaults(n);
		n->next_seq = 1;
		struct pl_xnode *configure = pl_xnode_find(pubsub, "configure", NULL);
		struct pl_xnode *form = configure ? pl_xnode_find(configure, "x", NS_DATA) : NULL;
		if (form && apply_form(n, form, false) != 0) {
			node_free(n);
			return PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
		}
		n->next = o->nodes;
		o->nodes = n;
		o->node_count++;
		struct pl_store_write *w = pl_store_write_begin(pl_server.store);
		put_node(w, o, n);
		submit_change(w, o, n->name, iq->stanza, pl_iq_result(iq->stanza), NULL);
		return PL_HANDLED;
	}
	return pubsub_error(iq->stanza, PL_ERR_FEATURE_NOT_IMPLEMENTED, "unsupported",
			    "PEP notifications follow entity capabilities (XEP-0163)");
}

/* ---- XEP-0048 bookmarks in private storage, kept in bookmarks:1 ----------------------- */

static void copy_child_text(struct pl_xnode *to, const struct pl_xnode *from, const char *name)
{
	struct pl_xnode *child = pl_xnode_find(from, name, NULL);
	if (!child)
		return;
	char *text = pl_xnode_text(child);
	if (*text)
		pl_xnode_add_text(pl_xnode_add_element(to, name, NULL), text, strlen(text));
	free(text);
}

/* XEP-0402's node: every item kept, only the owner reads it. */
static struct node *bookmarks_node(struct owner *o, struct pl_store_write *w)
{
	struct node *n = find_node(o, NS_BOOKMARKS);
	if (n)
		return n;
	n = pl_calloc(1, sizeof(*n));
	n->name = pl_strdup(NS_BOOKMARKS);
	node_defaults(n);
	n->access = ACCESS_WHITELIST;
	n->max_items = conf.max_items;
	n->send_last = SEND_NEVER;
	n->next_seq = 1;
	n->next = o->nodes;
	o->nodes = n;
	o->node_count++;
	put_node(w, o, n);
	return n;
}

struct id_list {
	char **ids;                      /* owned */
	size_t count;
};

static int collect_id(void *arg, const void *key, size_t key_len, const void *value,
		      size_t value_len)
{
	struct id_list *list = arg;
	struct pl_xnode *item = pl_xml_parse_element(value, value_len, NS_PUBSUB);
	if (item && pl_xnode_attr(item, "id")) {
		list->ids = pl_realloc(list->ids, (list->count + 1) * sizeof(char *));
		list->ids[list->count++] = pl_strdup(pl_xnode_attr(item, "id"));
	}
	pl_xnode_unref(&item);
	(void)key, (void)key_len;
	return 0;
}

/* A legacy <storage/> replaces the account's bookmarks: one item per
 * conference (id = room JID), the rooms it no longer names retracted. */
static int legacy_set(const struct pl_xnode *iq, struct pl_session *session,
		      const struct pl_xnode *storage, struct pl_xnode *reply)
{
	struct owner *o = owner_get(session->bare_jid, true);
	owner_load(o);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (!read) {
		pl_store_write_abort(w);
		pl_xnode_unref(&reply);
		return PL_HOOK_ERROR(PL_ERR_INTERNAL_SERVER_ERROR);
	}
	struct node *n = bookmarks_node(o, w);
	struct id_list old = { NULL, 0 };
	struct pl_store_key prefix;
	node_key(&prefix, o->bare_jid, n->name);
	pl_store_scan(read, items_space, prefix.data, prefix.len, NULL, 0, collect_id, &old);
	struct pl_xnode *event = event_with("items", n->name);
	struct pl_xnode *items = pl_xnode_first_element(event);
	size_t kept = 0;
	for (struct pl_xnode *c = pl_xnode_first_element(storage); c; c = pl_xnode_next_element(c)) {
		char *jid = strcmp(c->name, "conference") == 0 && pl_xnode_attr(c, "jid")
				    ? pl_jid_normalize_bare(pl_xnode_attr(c, "jid"))
				    : NULL;
		if (!jid)
			continue;
		if ((int64_t)kept >= n->max_items) {
			free(jid);
			break;
		}
		bool repeated = false;
		for (struct pl_xnode *done = pl_xnode_first_element(items); done;
		     done = pl_xnode_next_element(done))
			repeated |= strcmp(pl_xnode_attr(done, "id"), jid) == 0;
		if (repeated) {
			free(jid);
			continue;
		}
		struct pl_xnode *item = pl_xnode_new("item", NS_PUBSUB_EVENT);
		pl_xnode_set_attr(item, "id", jid);
		struct pl_xnode *conference = pl_xnode_add_element(item, "conference", NS_BOOKMARKS);
		if (pl_xnode_attr(c, "name"))
			pl_xnode_set_attr(conference, "name", pl_xnode_attr(c, "name"));
		const char *autojoin = pl_xnode_attr(c, "autojoin");
		if (autojoin && (strcmp(autojoin, "1") == 0 || strcmp(autojoin, "true") == 0))
			pl_xnode_set_attr(conference, "autojoin", "true");
		copy_child_text(conference, c, "nick");
		copy_child_text(conference, c, "password");
		delete_item(read, w, o, n, jid);
		struct pl_store_key k;
		uint64_t seq = n->next_seq++;
		item_key(&k, o->bare_jid, n->name, seq);
		struct pl_buf value = { 0 };
		pl_xnode_serialize(item, NS_PUBSUB_EVENT, &value);
		pl_store_put(w, items_space, k.data, k.len, value.data, value.len);
		pl_buf_free(&value);
		struct pl_store_key seq_value;
		pl_store_key_init(&seq_value);
		pl_store_key_u64(&seq_value, seq);
		id_key(&k, o->bare_jid, n->name, jid);
		pl_store_put(w, ids_space, k.data, k.len, seq_value.data, seq_value.len);
		pl_xnode_add_child(items, item);
		for (size_t i = 0; i < old.count; i++) {
			if (old.ids[i] && strcmp(old.ids[i], jid) == 0) {
				free(old.ids[i]);
				old.ids[i] = NULL;
			}
		}
		kept++;
		free(jid);
	}
	for (size_t i = 0; i < old.count; i++) {
		if (old.ids[i]) {
			delete_item(read, w, o, n, old.ids[i]);
			pl_xnode_set_attr(pl_xnode_add_element(items, "retract", NULL), "id", old.ids[i]);
			free(old.ids[i]);
		}
	}
	free(old.ids);
	pl_store_read_end(read);
	n->item_count = kept;
	submit_change(w, o, n->name, iq, reply ? reply : pl_iq_result(iq), event);
	return PL_HANDLED;
}

/* A XEP-0048 <storage/> made from the bookmarks:1 node (caller unrefs). */
static struct pl_xnode *legacy_storage(struct owner *o)
{
	struct node *n = find_node(o, NS_BOOKMARKS);
	struct pl_xnode *storage = pl_xnode_new("storage", NS_LEGACY_BOOKMARKS);
	struct pl_store_read *read = n ? pl_store_read_begin(pl_server.store) : NULL;
	if (read) {
		size_t max = (size_t)conf.max_items;
		struct collected c = { pl_calloc(max, sizeof(struct pl_xnode *)), 0, max };
		struct pl_store_key prefix;
		node_key(&prefix, o->bare_jid, n->name);
		pl_store_scan_reverse(read, items_space, prefix.data, prefix.len, NULL, 0, collect_item, &c);
		pl_store_read_end(read);
		for (size_t i = c.count; i-- > 0;) {
			struct pl_xnode *b = pl_xnode_find(c.items[i], "conference", NS_BOOKMARKS);
			const char *jid = pl_xnode_attr(c.items[i], "id");
			if (b && jid) {
				struct pl_xnode *conference = pl_xnode_add_element(storage, "conference", NULL);
				pl_xnode_set_attr(conference, "jid", jid);
				if (pl_xnode_attr(b, "name"))
					pl_xnode_set_attr(conference, "name", pl_xnode_attr(b, "name"));
				const char *autojoin = pl_xnode_attr(b, "autojoin");
				pl_xnode_set_attr(conference, "autojoin",
						  autojoin && (strcmp(autojoin, "true") == 0 ||
							       strcmp(autojoin, "1") == 0)
							  ? "true"
							  : "false");
				copy_child_text(conference, b, "nick");
				copy_child_text(conference, b, "password");
			}
			pl_xnode_unref(&c.items[i]);
		}
		free(c.items);
	}
	return storage;
}

static int legacy_get(const struct pl_xnode *iq, struct pl_session *session)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	pl_xnode_add_child(pl_xnode_add_element(reply, "query", NS_PRIVATE),
			   legacy_storage(owner_get(session->bare_jid, true)));
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

/* XEP-0411: the XEP-0048 PEP node, read from bookmarks:1. */
static int legacy_pep_get(const struct pl_xnode *iq, struct owner *o)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *items = pl_xnode_add_element(pl_xnode_add_element(reply, "pubsub", NS_PUBSUB),
						      "items", NULL);
	pl_xnode_set_attr(items, "node", NS_LEGACY_BOOKMARKS);
	struct pl_xnode *item = pl_xnode_add_element(items, "item", NULL);
	pl_xnode_set_attr(item, "id", "current");
	pl_xnode_add_child(item, legacy_storage(o));
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

/* Before mod_private: storage:bookmarks is served from PEP. */
static int on_private(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	struct pl_xnode *query = pl_xnode_find(iq->stanza, "query", NS_PRIVATE);
	struct pl_xnode *storage = query ? pl_xnode_find(query, "storage", NS_LEGACY_BOOKMARKS) : NULL;
	if (!storage || !to_own_account(iq) || pl_xnode_next_element(storage))
		return PL_CONTINUE;
	if (strcmp(pl_xnode_attr(iq->stanza, "type"), "get") == 0)
		return legacy_get(iq->stanza, iq->session);
	return legacy_set(iq->stanza, iq->session, storage, NULL);
}

static int on_pubsub_owner(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (to && !strchr(to, '@'))
		return PL_CONTINUE;
	if (!to_own_account(iq))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	return owner_request(iq->stanza, iq->session,
			     strcmp(pl_xnode_attr(iq->stanza, "type"), "get") == 0);
}

/* The account's disco#info (XEP-0163 6.1). */
static int on_account_features(struct pl_event *event, void *userdata)
{
	struct pl_xnode *query = event->data;
	struct pl_xnode *identity = pl_xnode_add_element(query, "identity", NULL);
	pl_xnode_set_attr(identity, "category", "pubsub");
	pl_xnode_set_attr(identity, "type", "pep");
	static const char *const features[] = {
		NS_PUBSUB,
		NS_PUBSUB "#access-open",
		NS_PUBSUB "#access-presence",
		NS_PUBSUB "#access-roster",
		NS_PUBSUB "#access-whitelist",
		NS_PUBSUB "#auto-create",
		NS_PUBSUB "#config-node",
		NS_PUBSUB "#create-nodes",
		NS_PUBSUB "#delete-items",
		NS_PUBSUB "#delete-nodes",
		NS_PUBSUB "#filtered-notifications",
		NS_PUBSUB "#item-ids",
		NS_PUBSUB "#last-published",
		NS_PUBSUB "#persistent-items",
		NS_PUBSUB "#publish",
		NS_PUBSUB "#publish-options",
		NS_PUBSUB "#purge-nodes",
		NS_PUBSUB "#retract-items",
		NS_PUBSUB "#retrieve-default",
		NS_PUBSUB "#retrieve-items",
		NS_BOOKMARKS "#compat",
		"urn:xmpp:bookmarks-conversion:0",
	};
	for (size_t i = 0; i < PL_ARRAY_LEN(features); i++)
		pl_xnode_set_attr(pl_xnode_add_element(query, "feature", NULL), "var", features[i]);
	return PL_CONTINUE;
}

static int on_user_deleted(struct pl_event *event, void *userdata)
{
	const char *bare = event->data;
	struct pl_store_key prefix;
	node_key(&prefix, bare, NULL);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	pl_store_del_prefix(w, nodes_space, prefix.data, prefix.len);
	pl_store_del_prefix(w, items_space, prefix.data, prefix.len);
	pl_store_del_prefix(w, ids_space, prefix.data, prefix.len);
	pl_store_write_submit(w, NULL, NULL);
	struct owner **link = &owners[pl_hash_string(bare) % OWNER_BUCKETS];
	for (; *link; link = &(*link)->next) {
		if (strcmp((*link)->bare_jid, bare) == 0) {
			struct owner *gone = *link;
			*link = gone->next;
			owner_free(gone);
			break;
		}
	}
	return PL_CONTINUE;
}

static int pep_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct pep_conf *)conf_ptr;
	self = m;
	nodes_space = pl_store_open(m, "nodes");
	items_space = pl_store_open(m, "items");
	ids_space = pl_store_open(m, "ids");
	if (!nodes_space || !items_space || !ids_space)
		return pl_error(error, -EIO, "cannot open the PEP store spaces");
	memset(owners, 0, sizeof(owners));
	memset(caps_table, 0, sizeof(caps_table));
	caps_count = 0;
	published = pl_counter("pep-items-published");
	pl_hook(m, "iq/get/" NS_PUBSUB, on_pubsub, NULL, 0);
	pl_hook(m, "iq/set/" NS_PUBSUB, on_pubsub, NULL, 0);
	pl_hook(m, "iq/get/" NS_PUBSUB_OWNER, on_pubsub_owner, NULL, 0);
	pl_hook(m, "iq/set/" NS_PUBSUB_OWNER, on_pubsub_owner, NULL, 0);
	pl_hook(m, "iq/response", on_iq_response, NULL, 0);
	pl_hook(m, "iq/get/" NS_PRIVATE, on_private, NULL, 10);
	pl_hook(m, "iq/set/" NS_PRIVATE, on_private, NULL, 10);
	/* After blocking (100): a blocked contact's presence is no subscription. */
	pl_hook(m, "stanza/in", on_stanza_in, NULL, 5);
	pl_hook(m, "presence/broadcast", on_presence_broadcast, NULL, 0);
	pl_hook(m, "session/unbound", on_session_unbound, NULL, 0);
	pl_hook(m, "disco/account", on_account_features, NULL, 0);
	pl_hook(m, "user-deleted", on_user_deleted, NULL, 0);
	return 0;
}

static void pep_unload(struct pl_module *m)
{
	for (size_t b = 0; b < OWNER_BUCKETS; b++) {
		while (owners[b]) {
			struct owner *o = owners[b];
			owners[b] = o->next;
			owner_free(o);
		}
	}
	for (size_t b = 0; b < CAPS_BUCKETS; b++) {
		while (caps_table[b]) {
			struct caps *c = caps_table[b];
			caps_table[b] = c->next;
			for (size_t i = 0; i < c->notify_count; i++)
				free(c->notify[i]);
			free(c->notify);
			free(c->ver);
			free(c);
		}
	}
	while (caps_requests) {
		struct caps_request *q = caps_requests;
		caps_requests = q->next;
		free(q->id);
		free(q->ver);
		free(q->owner);
		free(q->full_jid);
		free(q);
	}
	(void)m;
}

static const char *const pep_requires[] = { "roster", NULL };

PL_MODULE(pep, .version = "0.1", .requires = pep_requires, .options = pep_options,
	  .conf_size = sizeof(struct pep_conf), .load = pep_load, .unload = pep_unload);
