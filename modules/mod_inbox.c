/* mod_inbox: the conversation list with unread counts (the inbox of
 * MongooseIM's XEP-0430 draft, namespace erlang-solutions.com:xmpp:inbox:0),
 * so that a phone that starts cold shows every chat's last message and
 * badge in one round trip instead of paging each archive. The server
 * keeps, per account and correspondent, the last message and how many
 * came in since the account last read the chat: an incoming message with
 * a body counts one; the account's own message in the chat, or a XEP-0333
 * <displayed/> marker it sends, or an explicit reset, brings it to zero.
 * Every device of the account sees the same counts. Kept in inbox.entries
 * ("owner\0with" -> <entry/>), written with the message (so an ack means
 * the count is on disk too). */
#include "datetime.h"
#include "hooks.h"
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
#include <time.h>

#define NS_INBOX "erlang-solutions.com:xmpp:inbox:0"
#define NS_INBOX_CONVERSATION "erlang-solutions.com:xmpp:inbox:0#conversation"
#define NS_RSM "http://jabber.org/protocol/rsm"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_DELAY "urn:xmpp:delay"
#define NS_MARKERS "urn:xmpp:chat-markers:0"
#define NS_HINTS "urn:xmpp:hints"
#define NS_RECORD "urn:parley:inbox:0"

struct inbox_conf {
	int64_t max_entries;
	int64_t default_page;
};

static const struct pl_option inbox_options[] = {
	{ "max-entries", PL_OPT_INT, "1000", 1, 100000, NULL, offsetof(struct inbox_conf, max_entries),
	  "conversations listed per account at most" },
	{ "default-page", PL_OPT_INT, "50", 1, 1000, NULL, offsetof(struct inbox_conf, default_page),
	  "conversations per page when the client does not say" },
	{ NULL }
};

static struct inbox_conf conf;
static struct pl_module *self;
static struct pl_store_space *entries_space;

static void entry_key(struct pl_store_key *k, const char *owner, const char *with)
{
	pl_store_key_init(k);
	pl_store_key_str(k, owner);
	if (with)
		pl_store_key_str(k, with);
}

/* The stored entry (caller unrefs) or NULL. */
static struct pl_xnode *read_entry(const char *owner, const char *with)
{
	struct pl_store_key k;
	entry_key(&k, owner, with);
	if (k.overflow)
		return NULL;
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	const void *value;
	size_t len;
	struct pl_xnode *entry = NULL;
	if (read && pl_store_get(read, entries_space, k.data, k.len, &value, &len) == 0)
		entry = pl_xml_parse_element(value, len, NS_RECORD);
	if (read)
		pl_store_read_end(read);
	return entry;
}

/* Writes the entry for (owner, with): `message` (may be NULL: keep the
 * last one) and the new unread count (-1: one more). */
static void update_entry(const char *owner, const char *with, const struct pl_xnode *message,
			 int64_t unread)
{
	struct pl_xnode *old = read_entry(owner, with);
	if (!old && !message)
		return; /* a marker for a chat that has no entry */
	const char *old_unread = old ? pl_xnode_attr(old, "unread") : NULL;
	int64_t count = old_unread ? strtoll(old_unread, NULL, 10) : 0;
	count = unread < 0 ? count + 1 : unread;
	struct pl_xnode *entry = pl_xnode_new("entry", NS_RECORD);
	char number[24];
	snprintf(number, sizeof(number), "%" PRId64, count);
	pl_xnode_set_attr(entry, "unread", number);
	const char *old_at = old ? pl_xnode_attr(old, "at") : NULL;
	int64_t at = message ? pl_unix_ms() : (old_at ? (int64_t)strtoll(old_at, NULL, 10) : 0);
	snprintf(number, sizeof(number), "%" PRId64, at);
	pl_xnode_set_attr(entry, "at", number);
	struct pl_xnode *last = message ? pl_xnode_copy(message)
				       : (old && pl_xnode_first_element(old) ? pl_xnode_copy(pl_xnode_first_element(old)) : NULL);
	if (last)
		pl_xnode_add_child(entry, last);
	struct pl_buf value = { 0 };
	pl_xnode_serialize(entry, NULL, &value);
	struct pl_store_key k;
	entry_key(&k, owner, with);
	if (!k.overflow) {
		struct pl_store_write *w = pl_store_write_begin(pl_server.store);
		pl_store_put(w, entries_space, k.data, k.len, value.data, value.len);
		pl_store_write_submit(w, NULL, NULL);
	}
	pl_buf_free(&value);
	pl_xnode_unref(&entry);
	pl_xnode_unref(&old);
}

static bool conversation_message(const struct pl_xnode *message)
{
	const char *type = pl_xnode_attr(message, "type");
	if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
		return false;
	return pl_xnode_find(message, "body", NULL) && !pl_xnode_find(message, "no-store", NS_HINTS);
}

/* Incoming: one more unread (after mod_mam, so the stanza-id is on it). */
static int on_stanza_in(struct pl_event *event, void *userdata)
{
	struct pl_route_event *e = event->data;
	if (strcmp(e->stanza->name, "message") != 0 || !e->to->local || !conversation_message(e->stanza))
		return PL_CONTINUE;
	const char *from = pl_xnode_attr(e->stanza, "from");
	char *with = from ? pl_jid_normalize_bare(from) : NULL;
	if (with && strcmp(with, e->to->bare) != 0)
		update_entry(e->to->bare, with, e->stanza, -1);
	free(with);
	return PL_CONTINUE;
}

/* Outgoing: the account's own message, or its <displayed/> marker, means
 * it has read the chat. */
static int on_stanza_out(struct pl_event *event, void *userdata)
{
	struct pl_route_event *e = event->data;
	if (strcmp(e->stanza->name, "message") != 0 || !e->origin ||
	    strcmp(e->to->bare, e->origin->bare_jid) == 0)
		return PL_CONTINUE;
	if (conversation_message(e->stanza))
		update_entry(e->origin->bare_jid, e->to->bare, e->stanza, 0);
	else if (pl_xnode_find(e->stanza, "displayed", NS_MARKERS))
		update_entry(e->origin->bare_jid, e->to->bare, NULL, 0);
	return PL_CONTINUE;
}

struct listing {
	struct pl_xnode **entries;       /* owned */
	char **withs;                    /* owned */
	size_t count, cap;
};

static int collect(void *arg, const void *key, size_t key_len, const void *value, size_t value_len)
{
	struct listing *l = arg;
	const char *owner, *with;
	size_t owner_len, with_len;
	size_t used = pl_store_key_read_str(key, key_len, &owner, &owner_len);
	if (!used || !pl_store_key_read_str((const uint8_t *)key + used, key_len - used, &with, &with_len))
		return 0;
	struct pl_xnode *entry = pl_xml_parse_element(value, value_len, NS_RECORD);
	if (!entry)
		return 0;
	if (l->count == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->entries = pl_realloc(l->entries, l->cap * sizeof(*l->entries));
		l->withs = pl_realloc(l->withs, l->cap * sizeof(*l->withs));
	}
	l->entries[l->count] = entry;
	l->withs[l->count++] = pl_strndup(with, with_len);
	return l->count >= (size_t)conf.max_entries;
}

static int64_t entry_at(const struct pl_xnode *entry)
{
	const char *at = pl_xnode_attr(entry, "at");
	return at ? strtoll(at, NULL, 10) : 0;
}

static struct listing *sorting;

static int newest_first(const void *a, const void *b)
{
	int64_t x = entry_at(sorting->entries[*(const size_t *)a]);
	int64_t y = entry_at(sorting->entries[*(const size_t *)b]);
	return x < y ? 1 : x > y ? -1 : 0;
}

/* The inbox query: conversations newest first, each with its last message
 * and unread count, paged with RSM (max, after = the JID of the last
 * conversation of the previous page). */
static int on_query(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!iq->session || (to && strcmp(to, iq->session->bare_jid) != 0))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *request = pl_xnode_find(iq->stanza, "inbox", NS_INBOX);
	if (!request)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	const char *query_id = pl_xnode_attr(request, "queryid");
	struct pl_xnode *set = pl_xnode_find(request, "set", NS_RSM);
	size_t max = (size_t)conf.default_page;
	char *after = NULL;
	if (set) {
		struct pl_xnode *n = pl_xnode_find(set, "max", NULL);
		if (n) {
			char *text = pl_xnode_text(n);
			long long value = atoll(text);
			free(text);
			if (value >= 0)
				max = (size_t)value;
		}
		n = pl_xnode_find(set, "after", NULL);
		after = n ? pl_xnode_text(n) : NULL;
	}
	struct listing l = { 0 };
	struct pl_store_key prefix;
	entry_key(&prefix, iq->session->bare_jid, NULL);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (read) {
		pl_store_scan(read, entries_space, prefix.data, prefix.len, NULL, 0, collect, &l);
		pl_store_read_end(read);
	}
	size_t *order = pl_calloc(l.count ? l.count : 1, sizeof(*order));
	for (size_t i = 0; i < l.count; i++)
		order[i] = i;
	sorting = &l;
	if (l.count > 1)
		qsort(order, l.count, sizeof(*order), newest_first);
	sorting = NULL;
	size_t start = 0;
	if (after) {
		for (size_t i = 0; i < l.count; i++)
			if (strcmp(l.withs[order[i]], after) == 0)
				start = i + 1;
	}
	uint64_t unread_total = 0, active = 0;
	for (size_t i = 0; i < l.count; i++) {
		const char *unread = pl_xnode_attr(l.entries[i], "unread");
		uint64_t n = unread ? strtoull(unread, NULL, 10) : 0;
		unread_total += n;
		active += n > 0;
	}
	size_t sent = 0;
	const char *first = NULL, *last = NULL;
	for (size_t i = start; i < l.count && sent < max; i++, sent++) {
		const struct pl_xnode *entry = l.entries[order[i]];
		struct pl_xnode *m = pl_xnode_new("message", PL_NS_CLIENT);
		pl_xnode_set_attr(m, "to", iq->session->full_jid);
		pl_xnode_set_attr(m, "from", iq->session->bare_jid);
		struct pl_xnode *result = pl_xnode_add_element(m, "result", NS_INBOX);
		pl_xnode_set_attr(result, "unread", pl_xnode_attr(entry, "unread"));
		pl_xnode_set_attr(result, "jid", l.withs[order[i]]);
		if (query_id)
			pl_xnode_set_attr(result, "queryid", query_id);
		struct pl_xnode *forwarded = pl_xnode_add_element(result, "forwarded", NS_FORWARD);
		char stamp[40];
		pl_format_datetime(entry_at(entry), stamp, sizeof(stamp));
		pl_xnode_set_attr(pl_xnode_add_element(forwarded, "delay", NS_DELAY), "stamp", stamp);
		if (pl_xnode_first_element(entry))
			pl_xnode_add_child(forwarded, pl_xnode_copy(pl_xnode_first_element(entry)));
		iq->session->deliver(iq->session, m);
		pl_xnode_unref(&m);
		if (!first)
			first = l.withs[order[i]];
		last = l.withs[order[i]];
	}
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *fin = pl_xnode_add_element(reply, "fin", NS_INBOX);
	char number[24];
	snprintf(number, sizeof(number), "%zu", l.count);
	pl_xnode_add_text(pl_xnode_add_element(fin, "count", NULL), number, strlen(number));
	snprintf(number, sizeof(number), "%" PRIu64, unread_total);
	pl_xnode_add_text(pl_xnode_add_element(fin, "unread-messages", NULL), number, strlen(number));
	snprintf(number, sizeof(number), "%" PRIu64, active);
	pl_xnode_add_text(pl_xnode_add_element(fin, "active-conversations", NULL), number, strlen(number));
	struct pl_xnode *page = pl_xnode_add_element(fin, "set", NS_RSM);
	if (first) {
		pl_xnode_add_text(pl_xnode_add_element(page, "first", NULL), first, strlen(first));
		pl_xnode_add_text(pl_xnode_add_element(page, "last", NULL), last, strlen(last));
	}
	snprintf(number, sizeof(number), "%zu", l.count);
	pl_xnode_add_text(pl_xnode_add_element(page, "count", NULL), number, strlen(number));
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	for (size_t i = 0; i < l.count; i++) {
		pl_xnode_unref(&l.entries[i]);
		free(l.withs[i]);
	}
	free(l.entries);
	free(l.withs);
	free(order);
	free(after);
	return PL_HANDLED;
}

/* <reset jid=.../>: the chat was read somewhere the server cannot see. */
static int on_reset(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!iq->session || (to && strcmp(to, iq->session->bare_jid) != 0))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *reset = pl_xnode_find(iq->stanza, "reset", NS_INBOX_CONVERSATION);
	char *with = reset && pl_xnode_attr(reset, "jid") ? pl_jid_normalize_bare(pl_xnode_attr(reset, "jid"))
							   : NULL;
	if (!with)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	update_entry(iq->session->bare_jid, with, NULL, 0);
	free(with);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int on_account_features(struct pl_event *event, void *userdata)
{
	struct pl_xnode *query = event->data;
	pl_xnode_set_attr(pl_xnode_add_element(query, "feature", NULL), "var", NS_INBOX);
	return PL_CONTINUE;
}

static int inbox_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct inbox_conf *)conf_ptr;
	self = m;
	entries_space = pl_store_open(m, "entries");
	if (!entries_space)
		return pl_error(error, -EIO, "cannot open the inbox store space");
	pl_hook(m, "iq/set/" NS_INBOX, on_query, NULL, 0);
	pl_hook(m, "iq/set/" NS_INBOX_CONVERSATION, on_reset, NULL, 0);
	/* After mod_mam (10): the stanza-id is on the message. */
	pl_hook(m, "stanza/in", on_stanza_in, NULL, 4);
	pl_hook(m, "stanza/out", on_stanza_out, NULL, 4);
	pl_hook(m, "disco/account", on_account_features, NULL, 0);
	return 0;
}

PL_MODULE(inbox, .version = "0.1", .options = inbox_options, .conf_size = sizeof(struct inbox_conf),
	  .load = inbox_load);
