/* mod_blocking: XEP-0191 Blocking Command. A user keeps a list of JIDs
 * (full, bare or domain) whose stanzas never reach them and to whom they
 * send nothing: inbound presence from a blocked JID is dropped silently,
 * messages and IQ requests get service-unavailable (as if the user did
 * not exist); outbound messages and IQs to a blocked JID are refused with
 * not-acceptable and <blocked/>, outbound presence is dropped. Blocking a
 * JID also sends it unavailable presence from the user's resources.
 *
 * The list lives in blocking.items, one key "user\0jid" per entry, and is
 * cached for users that have sessions. Block and unblock are answered
 * and pushed to the interested resources once they are on disk.
 *
 * XEP-0377: a block may carry a spam or abuse report; it is logged for
 * the operator (reporter, reported JID, reason, the reported stanza ids
 * and text) and counted, so that abuse shows up in the logs and in
 * `parleyctl status` without anyone reading users' messages. */
#include "counters.h"
#include "iq_storage.h"
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"
#include "store/store.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_BLOCKING "urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"
#define NS_REPORTING "urn:xmpp:reporting:1"

struct blocking_conf {
	int64_t max_items;
};

static const struct pl_option blocking_options[] = {
	{ "max-items", PL_OPT_INT, "1000", 1, 100000, NULL,
	  offsetof(struct blocking_conf, max_items), "blocked JIDs per user" },
	{ NULL }
};

static struct blocking_conf conf;
static struct pl_module *self;
static struct pl_store_space *items_space;
static struct pl_counter *reports;

struct blocklist {
	char *owner;              /* bare JID, owned */
	char **jids;              /* owned strings, unsorted */
	size_t count, cap;
	/* Full JIDs of the sessions that asked for the list: they get pushes
	 * (XEP-0191 3.3). Owned strings. */
	char **interested;
	size_t interested_count, interested_cap;
	unsigned pending_writes;  /* keeps it cached while commits are in flight */
	struct blocklist *next;
};

#define CACHE_BUCKETS 4096
static struct blocklist *cache[CACHE_BUCKETS];

static void free_strings(char **strings, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(strings[i]);
	free(strings);
}

static void blocklist_free(struct blocklist *b)
{
	free_strings(b->jids, b->count);
	free_strings(b->interested, b->interested_count);
	free(b->owner);
	free(b);
}

static struct blocklist **cache_slot(const char *owner)
{
	struct blocklist **link = &cache[pl_hash_string(owner) % CACHE_BUCKETS];
	while (*link && strcmp((*link)->owner, owner) != 0)
		link = &(*link)->next;
	return link;
}

static ssize_t find_jid(const struct blocklist *b, const char *jid)
{
	for (size_t i = 0; i < b->count; i++)
		if (strcmp(b->jids[i], jid) == 0)
			return (ssize_t)i;
	return -1;
}

static void add_jid(struct blocklist *b, const char *jid)
{
	pl_grow((void **)&b->jids, &b->cap, b->count + 1, sizeof(*b->jids));
	b->jids[b->count++] = pl_strdup(jid);
}

static int load_entry(void *arg, const void *key, size_t key_len, const void *value,
		      size_t value_len)
{
	struct blocklist *b = arg;
	size_t owner_len = strlen(b->owner) + 1;
	if (key_len <= owner_len)
		return 0;
	char *jid = pl_strndup((const char *)key + owner_len, key_len - owner_len);
	if (find_jid(b, jid) < 0)
		add_jid(b, jid);
	free(jid);
	return 0;
}

/* Loads (or finds) the list of a local user; NULL if the store fails. */
static struct blocklist *blocklist_get(const char *owner)
{
	struct blocklist **slot = cache_slot(owner);
	if (*slot)
		return *slot;
	struct blocklist *b = pl_calloc(1, sizeof(*b));
	b->owner = pl_strdup(owner);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	size_t prefix_len;
	void *prefix = pl_user_key(owner, "", &prefix_len);
	int rc = read ? pl_store_scan(read, items_space, prefix, prefix_len, NULL, 0, load_entry, b)
		      : -EIO;
	if (read)
		pl_store_read_end(read);
	free(prefix);
	if (rc < 0) {
		pl_module_log(self, 0, "%s: cannot read the block list", owner);
		blocklist_free(b);
		return NULL;
	}
	*slot = b;
	return b;
}

static void blocklist_release(struct blocklist *b)
{
	if (!b || b->pending_writes || pl_router_sessions_of(b->owner))
		return;
	struct blocklist **slot = cache_slot(b->owner);
	if (*slot == b) {
		*slot = b->next;
		blocklist_free(b);
	}
}

/* XEP-0016 2.1 matching: an entry blocks a JID if it equals its full
 * JID, its bare JID, its domain/resource, or its domain. */
static bool blocks(const struct blocklist *b, const struct pl_jid *jid)
{
	if (!b || b->count == 0)
		return false;
	if (find_jid(b, jid->full) >= 0 || find_jid(b, jid->bare) >= 0 ||
	    find_jid(b, jid->domain) >= 0)
		return true;
	if (jid->resource) {
		char *domain_resource = pl_asprintf("%s/%s", jid->domain, jid->resource);
		bool found = find_jid(b, domain_resource) >= 0;
		free(domain_resource);
		return found;
	}
	return false;
}

/* ---- routing policy ---------------------------------------------------------- */

static bool is_request(const struct pl_xnode *stanza)
{
	const char *type = pl_xnode_attr(stanza, "type");
	if (strcmp(stanza->name, "iq") == 0)
		return type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0);
	if (strcmp(stanza->name, "message") == 0)
		return !type || strcmp(type, "error") != 0;
	return false;
}

static int on_stanza_out(struct pl_event *event, void *userdata)
{
	struct pl_route_event *e = event->data;
	/* The user's own account and the server are never blocked. */
	if (!e->to->local || strcmp(e->to->bare, e->origin->bare_jid) == 0)
		return PL_CONTINUE;
	/* The sender is online, so this is a cache hit. */
	struct blocklist *b = blocklist_get(e->origin->bare_jid);
	if (!blocks(b, e->to))
		return PL_CONTINUE;
	if (is_request(e->stanza)) {
		/* XEP-0191 3.5: not-acceptable with the blocking condition. */
		struct pl_xnode *error = pl_xnode_copy(e->stanza);
		const char *to = pl_xnode_attr(e->stanza, "to");
		pl_xnode_set_attr(error, "from", to);
		pl_xnode_set_attr(error, "to", e->origin->full_jid);
		pl_xnode_set_attr(error, "type", "error");
		struct pl_xnode *condition = pl_xnode_add_element(error, "error", PL_NS_CLIENT);
		pl_xnode_set_attr(condition, "type", "cancel");
		pl_xnode_add_element(condition, "not-acceptable", PL_NS_STANZAS);
		pl_xnode_add_element(condition, "blocked", NS_BLOCKING_ERRORS);
		e->origin->deliver(e->origin, error);
		pl_xnode_unref(&error);
	}
	return PL_HANDLED;
}

static int on_stanza_in(struct pl_event *event, void *userdata)
{
	struct pl_route_event *e = event->data;
	const char *from = pl_xnode_attr(e->stanza, "from");
	struct pl_jid sender;
	if (!from || pl_jid_parse(from, &sender) != PL_JID_OK)
		return PL_CONTINUE;
	if (!sender.local || strcmp(sender.bare, e->to->bare) == 0) {
		pl_jid_free(&sender);
		return PL_CONTINUE;
	}
	/* For an offline user this reads the store (a short prefix scan) and
	 * forgets the list again: nothing is kept for users who are away. */
	struct blocklist *b = blocklist_get(e->to->bare);
	bool blocked = blocks(b, &sender);
	pl_jid_free(&sender);
	blocklist_release(b);
	if (!blocked)
		return PL_CONTINUE;
	/* XEP-0191 3.4: presence silently, requests as if nobody were here. */
	if (is_request(e->stanza))
		pl_route_error(e->stanza, PL_ERR_SERVICE_UNAVAILABLE, NULL);
	return PL_HANDLED;
}

/* ---- the protocol ------------------------------------------------------------ */

static void remember_interested(struct blocklist *b, const char *full_jid)
{
	for (size_t i = 0; i < b->interested_count; i++)
		if (strcmp(b->interested[i], full_jid) == 0)
			return;
	pl_grow((void **)&b->interested, &b->interested_cap, b->interested_count + 1,
		sizeof(*b->interested));
	b->interested[b->interested_count++] = pl_strdup(full_jid);
}

static struct pl_xnode *item_list(const char *element, char **jids, size_t count)
{
	struct pl_xnode *n = pl_xnode_new(element, NS_BLOCKING);
	for (size_t i = 0; i < count; i++)
		pl_xnode_set_attr(pl_xnode_add_element(n, "item", NULL), "jid", jids[i]);
	return n;
}

static int on_get(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!iq->session || (to && strcmp(to, iq->session->bare_jid) != 0))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct blocklist *b = blocklist_get(iq->session->bare_jid);
	if (!b)
		return PL_HOOK_ERROR(PL_ERR_INTERNAL_SERVER_ERROR);
	remember_interested(b, iq->session->full_jid);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	pl_xnode_add_child(reply, item_list("blocklist", b->jids, b->count));
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

/* A block or unblock in flight: answered and pushed after the commit. */
struct change {
	char *owner;
	struct pl_xnode *iq;     /* owned copy */
	struct pl_xnode *push;   /* <block/> or <unblock/>, owned */
};

static void on_committed(void *arg, int status)
{
	struct change *c = arg;
	struct blocklist *b = *cache_slot(c->owner);
	if (b)
		b->pending_writes--;
	if (status == 0) {
		struct pl_xnode *reply = pl_iq_result(c->iq);
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
		struct pl_xnode *push = pl_xnode_new("iq", PL_NS_CLIENT);
		pl_xnode_set_attr(push, "type", "set");
		pl_xnode_set_attr(push, "id", "block-push");
		pl_xnode_add_child(push, pl_xnode_ref(c->push));
		for (size_t i = 0; b && i < b->interested_count; i++) {
			struct pl_session *s = pl_router_find(b->interested[i]);
			if (!s)
				continue;
			pl_xnode_set_attr(push, "to", s->full_jid);
			s->deliver(s, push);
		}
		pl_xnode_unref(&push);
	} else {
		pl_module_log(self, 0, "%s: block list change not stored: %s", c->owner,
			      strerror(-status));
		pl_route_error(c->iq, PL_ERR_INTERNAL_SERVER_ERROR, "the block list could not be stored");
	}
	blocklist_release(b);
	pl_xnode_unref(&c->iq);
	pl_xnode_unref(&c->push);
	free(c->owner);
	free(c);
}

static void submit(struct blocklist *b, struct pl_store_write *w, const struct pl_xnode *iq,
		   struct pl_xnode *push)
{
	struct change *c = pl_calloc(1, sizeof(*c));
	c->owner = pl_strdup(b->owner);
	c->iq = pl_xnode_copy(iq);
	c->push = push;
	b->pending_writes++;
	pl_store_write_submit(w, on_committed, c);
}

static void put_entry(struct pl_store_write *w, const char *owner, const char *jid, bool add)
{
	size_t key_len;
	void *key = pl_user_key(owner, jid, &key_len);
	if (add)
		pl_store_put(w, items_space, key, key_len, "", 0);
	else
		pl_store_del(w, items_space, key, key_len);
	free(key);
}

/* The normalised JIDs of the <item/>s, or an error: jid-malformed for a
 * bad one, bad-request for an item without jid. */
static int collect_items(const struct pl_xnode *command, char ***out, size_t *count)
{
	size_t cap = 0;
	*out = NULL;
	*count = 0;
	for (struct pl_xnode *item = pl_xnode_first_element(command); item;
	     item = pl_xnode_next_element(item)) {
		if (strcmp(item->name, "item") != 0)
			continue;
		const char *text = pl_xnode_attr(item, "jid");
		struct pl_jid jid;
		int error = !text ? PL_ERR_BAD_REQUEST
			    : pl_jid_parse(text, &jid) != PL_JID_OK ? PL_ERR_JID_MALFORMED
								    : 0;
		if (error) {
			free_strings(*out, *count);
			*out = NULL;
			*count = 0;
			return PL_HOOK_ERROR(error);
		}
		bool seen = false;
		for (size_t i = 0; i < *count; i++)
			seen |= strcmp((*out)[i], jid.full) == 0;
		if (!seen) {
			pl_grow((void **)out, &cap, *count + 1, sizeof(**out));
			(*out)[(*count)++] = pl_strdup(jid.full);
		}
		pl_jid_free(&jid);
	}
	return 0;
}

/* XEP-0377 reports inside a block command. */
static void log_reports(const char *reporter, const struct pl_xnode *command)
{
	for (struct pl_xnode *item = pl_xnode_first_element(command); item;
	     item = pl_xnode_next_element(item)) {
		struct pl_xnode *report = pl_xnode_find(item, "report", NS_REPORTING);
		if (!report)
			continue;
		const char *reason = pl_xnode_attr(report, "reason");
		struct pl_buf ids = { 0 };
		for (struct pl_xnode *c = pl_xnode_first_element(report); c; c = pl_xnode_next_element(c))
			if (strcmp(c->name, "stanza-id") == 0 && pl_xnode_attr(c, "id"))
				pl_buf_printf(&ids, " %s", pl_xnode_attr(c, "id"));
		struct pl_xnode *text_node = pl_xnode_find(report, "text", NULL);
		char *text = text_node ? pl_xnode_text(text_node) : NULL;
		/* The text is the reporter's words: bounded and on one line. */
		for (char *p = text; p && *p; p++)
			if (*p == '\n' || *p == '\r')
				*p = ' ';
		if (text && strlen(text) > 500)
			text[500] = 0;
		pl_module_log(self, 1, "abuse report from %s about %s: %s%s%s%s%s", reporter,
			      pl_xnode_attr(item, "jid") ? pl_xnode_attr(item, "jid") : "?",
			      reason ? reason : "(no reason)", ids.len ? "; stanza ids" : "",
			      ids.len ? ids.data : "", text ? "; text: " : "", text ? text : "");
		pl_counter_add(reports, 1);
		pl_buf_free(&ids);
		free(text);
	}
}

static int on_set(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!iq->session || (to && strcmp(to, iq->session->bare_jid) != 0))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *command = pl_xnode_first_element(iq->stanza);
	bool block = strcmp(command->name, "block") == 0;
	if (!block && strcmp(command->name, "unblock") != 0)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	char **jids;
	size_t count;
	int rc = collect_items(command, &jids, &count);
	if (rc)
		return rc;
	struct blocklist *b = blocklist_get(iq->session->bare_jid);
	if (!b) {
		free_strings(jids, count);
		return PL_HOOK_ERROR(PL_ERR_INTERNAL_SERVER_ERROR);
	}
	int result = PL_HANDLED;
	if (block && count == 0) {
		/* XEP-0191 3.3: a block needs at least one item. */
		result = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	} else if (block) {
		log_reports(iq->session->full_jid, command);
		size_t new_ones = 0;
		for (size_t i = 0; i < count; i++)
			new_ones += find_jid(b, jids[i]) < 0;
		if (b->count + new_ones > (size_t)conf.max_items) {
			pl_module_log(self, 2, "%s: block list full (%lld)", b->owner,
				      (long long)conf.max_items);
			result = PL_HOOK_ERROR(PL_ERR_RESOURCE_CONSTRAINT);
		} else {
			struct pl_store_write *w = pl_store_write_begin(pl_server.store);
			for (size_t i = 0; i < count; i++) {
				if (find_jid(b, jids[i]) >= 0)
					continue;
				add_jid(b, jids[i]);
				put_entry(w, b->owner, jids[i], true);
				/* Blocked contacts see the user go offline. */
				for (struct pl_session *s = pl_router_sessions_of(b->owner); s;
				     s = s->next_of_user) {
					if (!s->available)
						continue;
					struct pl_xnode *gone = pl_xnode_new("presence", PL_NS_CLIENT);
					pl_xnode_set_attr(gone, "type", "unavailable");
					pl_xnode_set_attr(gone, "from", s->full_jid);
					pl_xnode_set_attr(gone, "to", jids[i]);
					pl_route(gone, NULL);
					pl_xnode_unref(&gone);
				}
			}
			submit(b, w, iq->stanza, item_list("block", jids, count));
		}
	} else {
		struct pl_store_write *w = pl_store_write_begin(pl_server.store);
		if (count == 0) {
			/* Unblock everything. */
			for (size_t i = 0; i < b->count; i++)
				put_entry(w, b->owner, b->jids[i], false);
			free_strings(b->jids, b->count);
			b->jids = NULL;
			b->count = b->cap = 0;
			submit(b, w, iq->stanza, item_list("unblock", NULL, 0));
		} else {
			for (size_t i = 0; i < count; i++) {
				ssize_t at = find_jid(b, jids[i]);
				if (at < 0)
					continue;
				free(b->jids[at]);
				b->jids[at] = b->jids[--b->count];
				put_entry(w, b->owner, jids[i], false);
			}
			submit(b, w, iq->stanza, item_list("unblock", jids, count));
		}
	}
	free_strings(jids, count);
	return result;
}

/* ---- lifecycle ------------------------------------------------------------------- */

static int on_session_unbound(struct pl_event *event, void *userdata)
{
	struct pl_session *session = event->data;
	struct blocklist *b = *cache_slot(session->bare_jid);
	if (!b)
		return PL_CONTINUE;
	for (size_t i = 0; i < b->interested_count; i++) {
		if (strcmp(b->interested[i], session->full_jid) == 0) {
			free(b->interested[i]);
			b->interested[i] = b->interested[--b->interested_count];
			break;
		}
	}
	blocklist_release(b);
	return PL_CONTINUE;
}

static int on_user_deleted(struct pl_event *event, void *userdata)
{
	struct blocklist **slot = cache_slot(event->data);
	struct blocklist *b = *slot;
	if (b) {
		*slot = b->next;
		blocklist_free(b);
	}
	return PL_CONTINUE;
}

static int blocking_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct blocking_conf *)conf_ptr;
	self = m;
	items_space = pl_store_open(m, "items");
	if (!items_space)
		return pl_error(error, -EIO, "cannot open the block list's store space");
	memset(cache, 0, sizeof(cache));
	pl_feature(m, NS_BLOCKING);
	pl_feature(m, NS_REPORTING);
	reports = pl_counter("abuse-reports");
	pl_hook(m, "iq/get/" NS_BLOCKING, on_get, NULL, 0);
	pl_hook(m, "iq/set/" NS_BLOCKING, on_set, NULL, 0);
	/* Before the roster sees subscription stanzas from blocked JIDs. */
	pl_hook(m, "stanza/in", on_stanza_in, NULL, 100);
	pl_hook(m, "stanza/out", on_stanza_out, NULL, 100);
	pl_hook(m, "session/unbound", on_session_unbound, NULL, 0);
	pl_hook(m, "user-deleted", on_user_deleted, NULL, 0);
	return 0;
}

static void blocking_unload(struct pl_module *m)
{
	for (size_t b = 0; b < CACHE_BUCKETS; b++) {
		while (cache[b]) {
			struct blocklist *list = cache[b];
			cache[b] = list->next;
			blocklist_free(list);
		}
	}
}

PL_MODULE(blocking, .version = "0.1", .options = blocking_options,
	  .conf_size = sizeof(struct blocking_conf), .load = blocking_load,
	  .unload = blocking_unload);
