/* mod_mam: XEP-0313 message archive management for accounts, the
 * "message roaming" that lets a phone and a laptop see one history in one
 * order. Every one-to-one message with a body is stored once in the
 * archive of each local party, under a per-archive sequence number that
 * is also its XEP-0359 stanza-id (added to the message the recipient
 * gets). mam.messages holds "owner\0seq" -> the record; mam.with indexes
 * "owner\0correspondent\0seq" for conversation queries; mam.meta keeps
 * each archive's next sequence. Queries take the XEP-0313 form filters
 * (with, start, end, before-id, after-id, ids) and XEP-0059 paging (max,
 * after, before, flip-page); a page costs one prefix scan that stops
 * after max+1 records, forwards or backwards, whatever the archive size.
 * Archive writes are part of the message's processing, so a stream
 * management ack for a message means it is archived on disk. Other
 * modules keep archives of their own here (a MUC room's) through the
 * "archive/..." hooks of src/archive.h. */
#include "accounts.h"
#include "archive.h"
#include "datetime.h"
#include "hooks.h"
#include "counters.h"
#include "iq_storage.h"
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"
#include "store/store.h"
#include "util.h"
#include "xml/stream.h"
#include "ctl/ctl.h"

#include <event2/event.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_MAM "urn:xmpp:mam:2"
#define NS_MAM_EXTENDED "urn:xmpp:mam:2#extended"
#define NS_SID "urn:xmpp:sid:0"
#define NS_RSM "http://jabber.org/protocol/rsm"
#define NS_DATA "jabber:x:data"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_DELAY "urn:xmpp:delay"
#define NS_HINTS "urn:xmpp:hints"
#define NS_RECORD "urn:parley:mam:0"
#define NS_RETRACT "urn:xmpp:message-retract:1"

enum policy { POLICY_ALWAYS, POLICY_NEVER, POLICY_ROSTER };
static const char *const policy_names[] = { "always", "never", "roster", NULL };

struct mam_conf {
	int64_t default_page;
	int64_t max_page;
	int default_policy;
	int64_t max_age_ms;
	int64_t expiry_interval_ms;
};

static const struct pl_option mam_options[] = {
	{ "default-page", PL_OPT_INT, "50", 1, 1000, NULL, offsetof(struct mam_conf, default_page),
	  "messages per page when the client does not say" },
	{ "max-page", PL_OPT_INT, "250", 1, 10000, NULL, offsetof(struct mam_conf, max_page),
	  "messages per page at most" },
	{ "default-policy", PL_OPT_ENUM, "always", 0, 0, policy_names,
	  offsetof(struct mam_conf, default_policy),
	  "what is archived for users who did not choose (XEP-0441)" },
	{ "max-age", PL_OPT_DURATION, "0", 0, 100LL * 365 * 86400000, NULL,
	  offsetof(struct mam_conf, max_age_ms), "messages older than this are deleted (0: kept)" },
	{ "expiry-interval", PL_OPT_DURATION, "1h", 1000, 86400000, NULL,
	  offsetof(struct mam_conf, expiry_interval_ms), "how often old messages are looked for" },
	{ NULL }
};

static struct mam_conf conf;
static struct pl_module *self;
static struct pl_store_space *messages_space, *with_space, *meta_space, *prefs_space;
/* "owner\0origin-id" -> seq (u64 BE): what a retraction names. */
static struct pl_store_space *origin_space;
static struct pl_counter *archived;

/* Next sequence number and preferences per archive, loaded on first use. */
struct archive {
	char *owner;
	uint64_t next;
	int policy;                /* enum policy */
	struct pl_string_list always, never;  /* bare JIDs, owned */
	/* Archive writes in flight, and the queries that wait for them: a
	 * query sees every message its owner already has (read your writes). */
	unsigned pending;
	struct waiting_query *waiting;
	/* Records in the archive, kept with `next` in mam.meta so that an
	 * unfiltered query can say how many there are (RSM count). */
	uint64_t count;
	bool count_known;
	struct archive *chain;
};

struct waiting_query {
	struct pl_xnode *iq;       /* owned copy */
	char *full_jid;            /* owned: who asked */
	uint64_t session_id;
	int64_t not_before_ms;
	struct waiting_query *next;
};

static void free_list(struct pl_string_list *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

static void archive_free(struct archive *a)
{
	while (a->waiting) {
		struct waiting_query *w = a->waiting;
		a->waiting = w->next;
		pl_xnode_unref(&w->iq);
		free(w->full_jid);
		free(w);
	}
	free_list(&a->always);
	free_list(&a->never);
	free(a->owner);
	free(a);
}

static void read_list(const struct pl_xnode *prefs, const char *name, struct pl_string_list *out)
{
	struct pl_xnode *list = pl_xnode_find(prefs, name, NULL);
	for (struct pl_xnode *j = list ? pl_xnode_first_element(list) : NULL; j;
	     j = pl_xnode_next_element(j)) {
		char *text = pl_xnode_text(j);
		char *bare = pl_jid_normalize_bare(text);
		free(text);
		if (!bare)
			continue;
		out->items = pl_realloc(out->items, (out->count + 1) * sizeof(*out->items));
		out->items[out->count++] = bare;
	}
}

static void apply_prefs(struct archive *a, const struct pl_xnode *prefs)
{
	free_list(&a->always);
	free_list(&a->never);
	const char *policy = pl_xnode_attr(prefs, "default");
	a->policy = conf.default_policy;
	for (int i = 0; policy && policy_names[i]; i++)
		if (strcmp(policy, policy_names[i]) == 0)
			a->policy = i;
	read_list(prefs, "always", &a->always);
	read_list(prefs, "never", &a->never);
}
#define ARCHIVE_BUCKETS 4096
static struct archive *archives[ARCHIVE_BUCKETS];

static struct archive *archive_get(const char *owner)
{
	struct archive **link = &archives[pl_hash_string(owner) % ARCHIVE_BUCKETS];
	for (; *link; link = &(*link)->chain)
		if (strcmp((*link)->owner, owner) == 0)
			return *link;
	struct archive *a = pl_calloc(1, sizeof(*a));
	a->owner = pl_strdup(owner);
	a->next = 1;
	size_t key_len;
	void *key = pl_user_key(owner, "", &key_len);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	const void *value;
	size_t value_len;
	a->count_known = true; /* an archive without meta is empty */
	if (read && pl_store_get(read, meta_space, key, key_len, &value, &value_len) == 0 &&
	    (value_len == 8 || value_len == 16)) {
		pl_store_key_read_u64(value, 8, &a->next);
		a->count_known = value_len == 16 &&
				 pl_store_key_read_u64((const uint8_t *)value + 8, 8, &a->count);
	}
	a->policy = conf.default_policy;
	if (read && pl_store_get(read, prefs_space, key, key_len, &value, &value_len) == 0) {
		struct pl_xnode *prefs = pl_xml_parse_element(value, value_len, NS_MAM);
		if (prefs)
			apply_prefs(a, prefs);
		pl_xnode_unref(&prefs);
	}
	if (read)
		pl_store_read_end(read);
	free(key);
	*link = a;
	return a;
}

static void message_key(struct pl_store_key *k, const char *owner, uint64_t seq)
{
	pl_store_key_init(k);
	pl_store_key_str(k, owner);
	pl_store_key_u64(k, seq);
}

static void with_key(struct pl_store_key *k, const char *owner, const char *with, uint64_t seq,
		     bool with_seq)
{
	pl_store_key_init(k);
	pl_store_key_str(k, owner);
	pl_store_key_str(k, with);
	if (with_seq)
		pl_store_key_u64(k, seq);
}

/* ---- archiving --------------------------------------------------------------- */

static bool archivable(const struct pl_xnode *message)
{
	const char *type = pl_xnode_attr(message, "type");
	if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
		return false;
	return pl_xnode_find(message, "body", NULL) &&
	       !pl_xnode_find(message, "no-store", NS_HINTS) &&
	       !pl_xnode_find(message, "no-permanent-store", NS_HINTS);
}

static bool listed(const struct pl_string_list *l, const char *jid)
{
	for (size_t i = 0; i < l->count; i++)
		if (strcmp(l->items[i], jid) == 0)
			return true;
	return false;
}

/* XEP-0441: does the owner want messages with `with` archived? */
static bool wanted(const char *owner, const char *with)
{
	struct archive *a = archive_get(owner);
	if (listed(&a->never, with))
		return false;
	if (listed(&a->always, with) || a->policy == POLICY_ALWAYS)
		return true;
	if (a->policy == POLICY_NEVER)
		return false;
	struct pl_subscription_query query = { owner, with, false, false };
	pl_hooks_fire("roster/subscribed", &query);
	return query.in_roster;
}

static int run_query(const struct pl_xnode *stanza, const char *owner,
		     struct pl_session *session, const char *remote_jid, int64_t not_before_ms);

static void on_archived(void *arg, int status)
{
	char *owner = arg;
	struct archive **link = &archives[pl_hash_string(owner) % ARCHIVE_BUCKETS];
	while (*link && strcmp((*link)->owner, owner) != 0)
		link = &(*link)->chain;
	struct archive *a = *link;
	if (status != 0)
		pl_module_log(self, 0, "%s: a message was not archived: %s", owner, strerror(-status));
	if (a && a->pending && --a->pending == 0) {
		while (a->waiting && !a->pending) {
			struct waiting_query *w = a->waiting;
			a->waiting = w->next;
			struct pl_session *s = w->session_id ? pl_router_find(w->full_jid) : NULL;
			if (!w->session_id || (s && s->id == w->session_id)) {
				int result = run_query(w->iq, a->owner, s, w->full_jid, w->not_before_ms);
				if (PL_HOOK_IS_ERROR(result))
					pl_route_error(w->iq, PL_HOOK_ERROR_CONDITION(result), NULL);
			}
			pl_xnode_unref(&w->iq);
			free(w->full_jid);
			free(w);
		}
	}
	free(owner);
}

/* mam.meta: the next sequence number and the record count. */
static void put_meta(struct pl_store_write *w, const struct archive *a)
{
	struct pl_store_key value;
	pl_store_key_init(&value);
	pl_store_key_u64(&value, a->next);
	if (a->count_known)
		pl_store_key_u64(&value, a->count);
	size_t key_len;
	void *key = pl_user_key(a->owner, "", &key_len);
	pl_store_put(w, meta_space, key, key_len, value.data, value.len);
	free(key);
}

/* Stores `message` in owner's archive; returns its sequence number.
 * `with` may be NULL (a room's archive is not indexed by correspondent). */
static uint64_t archive_message(const char *owner, const char *with,
				const struct pl_xnode *message)
{
	struct archive *a = archive_get(owner);
	uint64_t seq = a->next++;
	struct pl_xnode *record = pl_xnode_new("archived", NS_RECORD);
	if (with)
		pl_xnode_set_attr(record, "with", with);
	char at[24];
	snprintf(at, sizeof(at), "%" PRId64, pl_unix_ms());
	pl_xnode_set_attr(record, "at", at);
	pl_xnode_add_child(record, pl_xnode_copy(message));
	struct pl_buf value = { 0 };
	pl_xnode_serialize(record, NULL, &value);
	pl_xnode_unref(&record);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	struct pl_store_key key;
	message_key(&key, owner, seq);
	pl_store_put(w, messages_space, key.data, key.len, value.data, value.len);
	if (with) {
		with_key(&key, owner, with, seq, true);
		if (!key.overflow)
			pl_store_put(w, with_space, key.data, key.len, "", 0);
	}
	struct pl_xnode *origin = pl_xnode_find(message, "origin-id", NS_SID);
	const char *origin_id = origin ? pl_xnode_attr(origin, "id") : NULL;
	if (origin_id && *origin_id) {
		struct pl_store_key k, value_key;
		pl_store_key_init(&k);
		pl_store_key_str(&k, owner);
		pl_store_key_str(&k, origin_id);
		pl_store_key_init(&value_key);
		pl_store_key_u64(&value_key, seq);
		if (!k.overflow)
			pl_store_put(w, origin_space, k.data, k.len, value_key.data, value_key.len);
	}
	a->count++;
	put_meta(w, a);
	a->pending++;
	pl_store_write_submit(w, on_archived, pl_strdup(owner));
	pl_buf_free(&value);
	pl_counter_add(archived, 1);
	return seq;
}

/* XEP-0424: `retracting` names a message by its origin-id; if owner's
 * archive holds it and it came from `sender`, it becomes a tombstone: the
 * same message without its payload, marked <retracted/>, for every reader
 * of the archive. */
static void apply_retraction(const char *owner, const char *sender,
			     const struct pl_xnode *retracting)
{
	struct pl_xnode *retract = pl_xnode_find(retracting, "retract", NS_RETRACT);
	const char *id = retract ? pl_xnode_attr(retract, "id") : NULL;
	if (!id || !*id)
		return;
	struct pl_store_key k;
	pl_store_key_init(&k);
	pl_store_key_str(&k, owner);
	pl_store_key_str(&k, id);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	const void *value;
	size_t len;
	uint64_t seq = 0;
	struct pl_xnode *record = NULL;
	if (read && !k.overflow && pl_store_get(read, origin_space, k.data, k.len, &value, &len) == 0 &&
	    len == 8 && pl_store_key_read_u64(value, 8, &seq)) {
		struct pl_store_key mk;
		message_key(&mk, owner, seq);
		if (pl_store_get(read, messages_space, mk.data, mk.len, &value, &len) == 0)
			record = pl_xml_parse_element(value, len, NS_RECORD);
	}
	if (read)
		pl_store_read_end(read);
	struct pl_xnode *original = record ? pl_xnode_first_element(record) : NULL;
	const char *from = original ? pl_xnode_attr(original, "from") : NULL;
	char *original_sender = from ? pl_jid_normalize_bare(from) : NULL;
	if (original && original_sender && strcmp(original_sender, sender) == 0) {
		struct pl_xnode *tombstone = pl_xnode_new("archived", NS_RECORD);
		pl_xnode_set_attr(tombstone, "with", pl_xnode_attr(record, "with"));
		pl_xnode_set_attr(tombstone, "at", pl_xnode_attr(record, "at"));
		struct pl_xnode *m = pl_xnode_add_element(tombstone, "message", PL_NS_CLIENT);
		static const char *const kept[] = { "from", "to", "type", "id" };
		for (size_t i = 0; i < PL_ARRAY_LEN(kept); i++)
			if (pl_xnode_attr(original, kept[i]))
				pl_xnode_set_attr(m, kept[i], pl_xnode_attr(original, kept[i]));
		struct pl_xnode *mark = pl_xnode_add_element(m, "retracted", NS_RETRACT);
		char stamp[40];
		pl_format_datetime(pl_unix_ms(), stamp, sizeof(stamp));
		pl_xnode_set_attr(mark, "stamp", stamp);
		pl_xnode_set_attr(mark, "id", id);
		for (struct pl_xnode *c = pl_xnode_first_element(original); c; c = pl_xnode_next_element(c))
			if (strcmp(c->name, "origin-id") == 0 || strcmp(c->name, "stanza-id") == 0)
				pl_xnode_add_child(m, pl_xnode_copy(c));
		struct pl_buf out = { 0 };
		pl_xnode_serialize(tombstone, NULL, &out);
		struct pl_store_key mk;
		message_key(&mk, owner, seq);
		struct pl_store_write *w = pl_store_write_begin(pl_server.store);
		pl_store_put(w, messages_space, mk.data, mk.len, out.data, out.len);
		pl_store_write_submit(w, NULL, NULL);
		pl_buf_free(&out);
		pl_xnode_unref(&tombstone);
		pl_module_log(self, 3, "%s: message %llu retracted by %s", owner,
			      (unsigned long long)seq, sender);
	}
	free(original_sender);
	pl_xnode_unref(&record);
}

/* Inbound: archived for the recipient, who gets the stanza-id with it.
 * A stanza-id claiming to be ours is the sender's forgery: removed. */
static int on_stanza_in(struct pl_event *event, void *userdata)
{
	struct pl_route_event *e = event->data;
	if (strcmp(e->stanza->name, "message") != 0 || !e->to->local || !archivable(e->stanza))
		return PL_CONTINUE;
	const char *from = pl_xnode_attr(e->stanza, "from");
	char *with = from ? pl_jid_normalize_bare(from) : NULL;
	if (!with || !pl_accounts_exists(e->to->bare)) {
		free(with);
		return PL_CONTINUE;
	}
	struct pl_xnode *next;
	for (struct pl_xnode *c = pl_xnode_first_element(e->stanza); c; c = next) {
		next = pl_xnode_next_element(c);
		const char *by = pl_xnode_attr(c, "by");
		if (strcmp(c->name, "stanza-id") == 0 && c->ns && strcmp(c->ns, NS_SID) == 0 && by &&
		    strcmp(by, e->to->bare) == 0) {
			if (!e->origin) {
				/* The server routes again a message it archived
				 * already (an unacknowledged one whose session
				 * ended): it keeps its archive id. */
				free(with);
				return PL_CONTINUE;
			}
			pl_xnode_detach(c);
			pl_xnode_unref(&c);
		}
	}
	apply_retraction(e->to->bare, with, e->stanza);
	if (!wanted(e->to->bare, with)) {
		free(with);
		return PL_CONTINUE;
	}
	uint64_t seq = archive_message(e->to->bare, with, e->stanza);
	char id[24];
	snprintf(id, sizeof(id), "%" PRIu64, seq);
	struct pl_xnode *sid = pl_xnode_add_element(e->stanza, "stanza-id", NS_SID);
	pl_xnode_set_attr(sid, "by", e->to->bare);
	pl_xnode_set_attr(sid, "id", id);
	free(with);
	return PL_CONTINUE;
}

/* Outbound: archived for the sender. */
static int on_stanza_out(struct pl_event *event, void *userdata)
{
	struct pl_route_event *e = event->data;
	if (strcmp(e->stanza->name, "message") != 0 || !archivable(e->stanza))
		return PL_CONTINUE;
	apply_retraction(e->origin->bare_jid, e->origin->bare_jid, e->stanza);
	if (!wanted(e->origin->bare_jid, e->to->bare))
		return PL_CONTINUE;
	archive_message(e->origin->bare_jid, e->to->bare, e->stanza);
	return PL_CONTINUE;
}

/* ---- queries ---------------------------------------------------------------- */

struct query {
	const char *owner;
	char *with;              /* bare or full JID filter, owned */
	bool with_full;
	int64_t start_ms, end_ms;  /* 0: open */
	size_t max;
	/* collected records, in scan order */
	uint64_t *seqs;
	char **records;          /* owned serialized <archived/> */
	size_t count, cap;
	bool more;               /* a record beyond max exists */
};

static bool record_matches(struct query *q, struct pl_xnode *record)
{
	const char *at = pl_xnode_attr(record, "at");
	int64_t when = at ? strtoll(at, NULL, 10) : 0;
	if (q->start_ms && when < q->start_ms)
		return false;
	if (q->end_ms && when > q->end_ms)
		return false;
	if (q->with && q->with_full) {
		struct pl_xnode *m = pl_xnode_first_element(record);
		const char *from = m ? pl_xnode_attr(m, "from") : NULL;
		const char *to = m ? pl_xnode_attr(m, "to") : NULL;
		if (!(from && strcmp(from, q->with) == 0) && !(to && strcmp(to, q->with) == 0))
			return false;
	}
	return true;
}

static int take_record(struct query *q, uint64_t seq, const void *value, size_t len)
{
	struct pl_xnode *record = pl_xml_parse_element(value, len, NS_RECORD);
	bool match = record && record_matches(q, record);
	pl_xnode_unref(&record);
	if (!match)
		return 0;
	if (q->count == q->max) {
		q->more = true;
		return 1;
	}
	if (q->count == q->cap) {
		q->cap = q->cap ? q->cap * 2 : 16;
		q->seqs = pl_realloc(q->seqs, q->cap * sizeof(*q->seqs));
		q->records = pl_realloc(q->records, q->cap * sizeof(*q->records));
	}
	q->seqs[q->count] = seq;
	q->records[q->count++] = pl_strndup(value, len);
	return 0;
}

static bool seq_of_key(const void *key, size_t key_len, uint64_t *seq)
{
	return key_len >= 8 && pl_store_key_read_u64((const uint8_t *)key + key_len - 8, 8, seq);
}

struct scan {
	struct query *q;
	struct pl_store_read *read;
};

static int on_message_key(void *arg, const void *key, size_t key_len, const void *value,
			  size_t value_len)
{
	struct scan *s = arg;
	uint64_t seq;
	return seq_of_key(key, key_len, &seq) ? take_record(s->q, seq, value, value_len) : 0;
}

static int on_with_key(void *arg, const void *key, size_t key_len, const void *value,
		       size_t value_len)
{
	struct scan *s = arg;
	uint64_t seq;
	if (!seq_of_key(key, key_len, &seq))
		return 0;
	struct pl_store_key k;
	message_key(&k, s->q->owner, seq);
	const void *record;
	size_t record_len;
	if (pl_store_get(s->read, messages_space, k.data, k.len, &record, &record_len) != 0)
		return 0;
	return take_record(s->q, seq, record, record_len);
}

static bool parse_id(const char *text, uint64_t *seq)
{
	char *end = NULL;
	if (!text || !*text)
		return false;
	*seq = strtoull(text, &end, 10);
	return end && *end == '\0' && *seq > 0;
}

static bool record_exists(struct pl_store_read *read, const char *owner, uint64_t seq)
{
	struct pl_store_key k;
	message_key(&k, owner, seq);
	const void *value;
	size_t len;
	return pl_store_get(read, messages_space, k.data, k.len, &value, &len) == 0;
}

static char *field_value(const struct pl_xnode *form, const char *var)
{
	for (struct pl_xnode *f = pl_xnode_first_element(form); f; f = pl_xnode_next_element(f)) {
		const char *name = pl_xnode_attr(f, "var");
		if (name && strcmp(name, var) == 0) {
			struct pl_xnode *v = pl_xnode_find(f, "value", NULL);
			return v ? pl_xnode_text(v) : NULL;
		}
	}
	return NULL;
}

/* To a local session directly, or routed to a remote JID (a room's
 * archive asked over federation). */
static void send_result(struct pl_session *to, const char *remote_jid, const char *owner,
			const char *query_id, uint64_t seq, const char *record_text)
{
	struct pl_xnode *record = pl_xml_parse_element(record_text, strlen(record_text), NS_RECORD);
	struct pl_xnode *original = record ? pl_xnode_first_element(record) : NULL;
	if (!original) {
		pl_xnode_unref(&record);
		return;
	}
	struct pl_xnode *m = pl_xnode_new("message", PL_NS_CLIENT);
	pl_xnode_set_attr(m, "to", to ? to->full_jid : remote_jid);
	pl_xnode_set_attr(m, "from", owner);
	struct pl_xnode *result = pl_xnode_add_element(m, "result", NS_MAM);
	if (query_id)
		pl_xnode_set_attr(result, "queryid", query_id);
	char id[24];
	snprintf(id, sizeof(id), "%" PRIu64, seq);
	pl_xnode_set_attr(result, "id", id);
	struct pl_xnode *forwarded = pl_xnode_add_element(result, "forwarded", NS_FORWARD);
	struct pl_xnode *delay = pl_xnode_add_element(forwarded, "delay", NS_DELAY);
	const char *at = pl_xnode_attr(record, "at");
	char stamp[40];
	pl_format_datetime(at ? strtoll(at, NULL, 10) : 0, stamp, sizeof(stamp));
	pl_xnode_set_attr(delay, "stamp", stamp);
	pl_xnode_add_child(forwarded, pl_xnode_copy(original));
	if (to)
		to->deliver(to, m);
	else
		pl_route(m, NULL);
	pl_xnode_unref(&m);
	pl_xnode_unref(&record);
}

/* A query sees every message already archived for its owner, written
 * or not yet (read your writes): while writes are in flight it waits. */
static int query_when_written(const struct pl_xnode *stanza, const char *owner,
			      struct pl_session *session, const char *remote_jid,
			      int64_t not_before_ms)
{
	struct archive *a = archive_get(owner);
	if (a->pending) {
		struct waiting_query *w = pl_calloc(1, sizeof(*w));
		w->iq = pl_xnode_copy(stanza);
		w->full_jid = pl_strdup(session ? session->full_jid : remote_jid);
		w->session_id = session ? session->id : 0; /* ids start at 1 */
		w->not_before_ms = not_before_ms;
		struct waiting_query **tail = &a->waiting;
		while (*tail)
			tail = &(*tail)->next;
		*tail = w;
		return PL_HANDLED;
	}
	return run_query(stanza, owner, session, remote_jid, not_before_ms);
}

static int on_query(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	if (!pl_xnode_find(iq->stanza, "query", NS_MAM))
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!iq->session || (to && strcmp(to, iq->session->bare_jid) != 0))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	return query_when_written(iq->stanza, iq->session->bare_jid, iq->session, NULL, 0);
}

/* "archive/query" (src/archive.h): another module's archive. */
static int on_archive_query(struct pl_event *event, void *userdata)
{
	struct pl_archive_query *q = event->data;
	if (!q->recipient && !q->recipient_jid)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	return query_when_written(q->iq, q->owner, q->recipient, q->recipient_jid,
				  q->not_before_ms);
}

static int run_query(const struct pl_xnode *stanza, const char *owner,
		     struct pl_session *session, const char *remote_jid, int64_t not_before_ms)
{
	struct pl_xnode *request = pl_xnode_find(stanza, "query", NS_MAM);
	struct pl_xnode *form = pl_xnode_find(request, "x", NS_DATA);
	struct pl_xnode *set = pl_xnode_find(request, "set", NS_RSM);
	const char *query_id = pl_xnode_attr(request, "queryid");
	struct query q = { .owner = owner, .max = (size_t)conf.default_page };
	int result = PL_HANDLED;
	char *with = form ? field_value(form, "with") : NULL;
	char *start = form ? field_value(form, "start") : NULL;
	char *end = form ? field_value(form, "end") : NULL;
	char *after_id = form ? field_value(form, "after-id") : NULL;
	char *before_id = form ? field_value(form, "before-id") : NULL;
	char *rsm_after = NULL, *rsm_before = NULL;
	if (set) {
		struct pl_xnode *n = pl_xnode_find(set, "max", NULL);
		if (n) {
			char *text = pl_xnode_text(n);
			long long max = atoll(text);
			free(text);
			if (max >= 0)
				q.max = (size_t)(max > conf.max_page ? conf.max_page : max);
		}
		n = pl_xnode_find(set, "after", NULL);
		rsm_after = n ? pl_xnode_text(n) : NULL;
		n = pl_xnode_find(set, "before", NULL);
		if (n)
			rsm_before = pl_xnode_text(n); /* empty: the last page */
	}
	bool flip = pl_xnode_find(request, "flip-page", NULL) != NULL;
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	uint64_t after_seq = 0, before_seq = 0, seq;
	if (with) {
		struct pl_jid jid;
		if (pl_jid_parse(with, &jid) != PL_JID_OK) {
			result = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
		} else {
			q.with = pl_strdup(jid.resource ? jid.full : jid.bare);
			q.with_full = jid.resource != NULL;
			pl_jid_free(&jid);
		}
	}
	if (!PL_HOOK_IS_ERROR(result) && start && (q.start_ms = pl_parse_datetime(start)) < 0)
		result = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	if (not_before_ms > q.start_ms)
		q.start_ms = not_before_ms;
	if (!PL_HOOK_IS_ERROR(result) && end && (q.end_ms = pl_parse_datetime(end)) < 0)
		result = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	/* Ids the client names must exist (XEP-0313 4.1.5: item-not-found). */
	const char *after_text = rsm_after && *rsm_after ? rsm_after : after_id;
	const char *before_text = rsm_before && *rsm_before ? rsm_before : before_id;
	if (!PL_HOOK_IS_ERROR(result) && after_text &&
	    (!parse_id(after_text, &after_seq) || !record_exists(read, q.owner, after_seq)))
		result = PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	if (!PL_HOOK_IS_ERROR(result) && before_text &&
	    (!parse_id(before_text, &before_seq) || !record_exists(read, q.owner, before_seq)))
		result = PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	char **ids = NULL;
	size_t id_count = 0;
	if (!PL_HOOK_IS_ERROR(result) && form) {
		/* XEP-0313 #extended: ids, a list of archive ids. */
		for (struct pl_xnode *f = pl_xnode_first_element(form); f; f = pl_xnode_next_element(f)) {
			const char *var = pl_xnode_attr(f, "var");
			if (!var || strcmp(var, "ids") != 0)
				continue;
			for (struct pl_xnode *v = pl_xnode_first_element(f); v; v = pl_xnode_next_element(v)) {
				ids = pl_realloc(ids, (id_count + 1) * sizeof(*ids));
				ids[id_count++] = pl_xnode_text(v);
			}
		}
	}
	bool backwards = rsm_before != NULL;
	struct scan scan = { &q, read };
	if (PL_HOOK_IS_ERROR(result)) {
		/* answered below */
	} else if (ids) {
		for (size_t i = 0; i < id_count; i++) {
			struct pl_store_key k;
			const void *value;
			size_t len;
			if (!parse_id(ids[i], &seq)) {
				result = PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
				break;
			}
			message_key(&k, q.owner, seq);
			if (pl_store_get(read, messages_space, k.data, k.len, &value, &len) != 0) {
				result = PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
				break;
			}
			take_record(&q, seq, value, len);
		}
	} else {
		struct pl_store_key prefix, bound;
		pl_store_key_init(&bound);
		struct pl_space_choice {
			struct pl_store_space *space;
			pl_store_scan_fn fn;
		} choice = { q.with ? with_space : messages_space,
			     q.with ? on_with_key : on_message_key };
		if (q.with) {
			char *bare = pl_jid_normalize_bare(q.with);
			with_key(&prefix, q.owner, bare, 0, false);
			if (!backwards)
				with_key(&bound, q.owner, bare, after_seq + 1, true);
			else
				with_key(&bound, q.owner, bare, before_seq ? before_seq : 0, before_seq != 0);
			free(bare);
		} else {
			pl_store_key_init(&prefix);
			pl_store_key_str(&prefix, q.owner);
			if (!backwards)
				message_key(&bound, q.owner, after_seq + 1);
			else if (before_seq)
				message_key(&bound, q.owner, before_seq);
		}
		if (prefix.overflow || bound.overflow) {
			result = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
		} else if (!backwards) {
			/* before-id in the form bounds a forward page. */
			pl_store_scan(read, choice.space, prefix.data, prefix.len, bound.data, bound.len,
				      choice.fn, &scan);
			if (before_seq) {
				while (q.count && q.seqs[q.count - 1] >= before_seq) {
					free(q.records[--q.count]);
					q.more = false;
				}
			}
		} else {
			pl_store_scan_reverse(read, choice.space, prefix.data, prefix.len,
					      before_seq ? bound.data : NULL, before_seq ? bound.len : 0,
					      choice.fn, &scan);
			/* Collected newest first: put the page in archive order. */
			for (size_t i = 0; i < q.count / 2; i++) {
				size_t j = q.count - 1 - i;
				uint64_t s = q.seqs[i];
				q.seqs[i] = q.seqs[j];
				q.seqs[j] = s;
				char *r = q.records[i];
				q.records[i] = q.records[j];
				q.records[j] = r;
			}
		}
	}
	pl_store_read_end(read);
	if (!PL_HOOK_IS_ERROR(result)) {
		for (size_t k = 0; k < q.count; k++) {
			size_t i = flip ? q.count - 1 - k : k;
			send_result(session, remote_jid, owner, query_id, q.seqs[i], q.records[i]);
		}
		struct pl_xnode *reply = pl_iq_result(stanza);
		struct pl_xnode *fin = pl_xnode_add_element(reply, "fin", NS_MAM);
		if (!q.more)
			pl_xnode_set_attr(fin, "complete", "true");
		struct pl_xnode *page = pl_xnode_add_element(fin, "set", NS_RSM);
		struct archive *a = archive_get(q.owner);
		bool unfiltered = !q.with && !q.start_ms && !q.end_ms && !ids && !not_before_ms;
		if (unfiltered && a->count_known) {
			char total[24];
			snprintf(total, sizeof(total), "%" PRIu64, a->count);
			pl_xnode_add_text(pl_xnode_add_element(page, "count", NULL), total, strlen(total));
		}
		if (q.count) {
			char id[24];
			snprintf(id, sizeof(id), "%" PRIu64, q.seqs[flip ? q.count - 1 : 0]);
			pl_xnode_add_text(pl_xnode_add_element(page, "first", NULL), id, strlen(id));
			snprintf(id, sizeof(id), "%" PRIu64, q.seqs[flip ? 0 : q.count - 1]);
			pl_xnode_add_text(pl_xnode_add_element(page, "last", NULL), id, strlen(id));
		}
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
	}
	for (size_t i = 0; i < q.count; i++)
		free(q.records[i]);
	free(q.records);
	free(q.seqs);
	for (size_t i = 0; i < id_count; i++)
		free(ids[i]);
	free(ids);
	free(q.with);
	free(with);
	free(start);
	free(end);
	free(after_id);
	free(before_id);
	free(rsm_after);
	free(rsm_before);
	return result;
}

/* The query form (XEP-0313 4.1.1). */
static int on_form(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	if (!pl_xnode_find(iq->stanza, "query", NS_MAM))
		return PL_CONTINUE;
	if (!iq->session)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_MAM);
	struct pl_xnode *form = pl_xnode_add_element(query, "x", NS_DATA);
	pl_xnode_set_attr(form, "type", "form");
	static const char *const fields[][2] = {
		{ "FORM_TYPE", "hidden" }, { "with", "jid-single" },  { "start", "text-single" },
		{ "end", "text-single" },  { "before-id", "text-single" }, { "after-id", "text-single" },
		{ "ids", "list-multi" },
	};
	for (size_t i = 0; i < PL_ARRAY_LEN(fields); i++) {
		struct pl_xnode *f = pl_xnode_add_element(form, "field", NULL);
		pl_xnode_set_attr(f, "var", fields[i][0]);
		pl_xnode_set_attr(f, "type", fields[i][1]);
		if (i == 0)
			pl_xnode_add_text(pl_xnode_add_element(f, "value", NULL), NS_MAM, strlen(NS_MAM));
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

struct edge {
	uint64_t seq;
	int64_t at;
};

static int take_edge(void *arg, const void *key, size_t key_len, const void *value,
		     size_t value_len)
{
	struct edge *e = arg;
	struct pl_xnode *record = pl_xml_parse_element(value, value_len, NS_RECORD);
	const char *at = record ? pl_xnode_attr(record, "at") : NULL;
	e->at = at ? strtoll(at, NULL, 10) : 0;
	pl_xnode_unref(&record);
	return seq_of_key(key, key_len, &e->seq) ? 1 : 0;
}

/* XEP-0313 metadata: the first and last message of the archive. */
static int on_metadata(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	if (!pl_xnode_find(iq->stanza, "metadata", NS_MAM))
		return PL_CONTINUE;
	if (!iq->session)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_store_key prefix;
	pl_store_key_init(&prefix);
	pl_store_key_str(&prefix, iq->session->bare_jid);
	struct edge first = { 0, 0 }, last = { 0, 0 };
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	pl_store_scan(read, messages_space, prefix.data, prefix.len, NULL, 0, take_edge, &first);
	pl_store_scan_reverse(read, messages_space, prefix.data, prefix.len, NULL, 0, take_edge, &last);
	pl_store_read_end(read);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *metadata = pl_xnode_add_element(reply, "metadata", NS_MAM);
	if (first.seq) {
		struct edge *edges[] = { &first, &last };
		const char *names[] = { "start", "end" };
		for (size_t i = 0; i < 2; i++) {
			struct pl_xnode *n = pl_xnode_add_element(metadata, names[i], NULL);
			char id[24], stamp[40];
			snprintf(id, sizeof(id), "%" PRIu64, edges[i]->seq);
			pl_format_datetime(edges[i]->at, stamp, sizeof(stamp));
			pl_xnode_set_attr(n, "id", id);
			pl_xnode_set_attr(n, "timestamp", stamp);
		}
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static struct pl_xnode *prefs_element(const struct archive *a)
{
	struct pl_xnode *prefs = pl_xnode_new("prefs", NS_MAM);
	pl_xnode_set_attr(prefs, "default", policy_names[a->policy]);
	const struct pl_string_list *lists[] = { &a->always, &a->never };
	const char *names[] = { "always", "never" };
	for (size_t i = 0; i < 2; i++) {
		struct pl_xnode *list = pl_xnode_add_element(prefs, names[i], NULL);
		for (size_t j = 0; j < lists[i]->count; j++)
			pl_xnode_add_text(pl_xnode_add_element(list, "jid", NULL), lists[i]->items[j],
					  strlen(lists[i]->items[j]));
	}
	return prefs;
}

/* XEP-0441 preferences: read them, or replace them (answered once on disk). */
static int on_prefs(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	struct pl_xnode *request = pl_xnode_find(iq->stanza, "prefs", NS_MAM);
	if (!request)
		return PL_CONTINUE;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!iq->session || (to && strcmp(to, iq->session->bare_jid) != 0))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct archive *a = archive_get(iq->session->bare_jid);
	if (strcmp(pl_xnode_attr(iq->stanza, "type"), "get") == 0) {
		struct pl_xnode *reply = pl_iq_result(iq->stanza);
		pl_xnode_add_child(reply, prefs_element(a));
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
		return PL_HANDLED;
	}
	const char *policy = pl_xnode_attr(request, "default");
	bool known = false;
	for (int i = 0; policy && policy_names[i]; i++)
		known |= strcmp(policy, policy_names[i]) == 0;
	if (!known)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	apply_prefs(a, request);
	struct pl_xnode *stored = prefs_element(a);
	size_t key_len;
	void *key = pl_user_key(a->owner, "", &key_len);
	/* The answer (the preferences now in force) goes out after the commit. */
	struct pl_xnode *reply_to = pl_xnode_copy(iq->stanza);
	struct pl_buf value = { 0 };
	pl_xnode_serialize(stored, NULL, &value);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	pl_store_put(w, prefs_space, key, key_len, value.data, value.len);
	pl_store_write_submit(w, pl_iq_reply_when_stored, reply_to);
	pl_buf_free(&value);
	pl_xnode_unref(&stored);
	free(key);
	return PL_HANDLED;
}

/* ---- deleting -------------------------------------------------------------- */

struct expiry {
	const char *owner;
	int64_t cutoff_ms;
	struct pl_store_write *w;
	size_t deleted, budget;
};

/* Deletes records (and their index entries) older than the cutoff, from
 * the oldest on: sequence order is arrival order, so the scan stops at the
 * first record young enough. */
static int expire_record(void *arg, const void *key, size_t key_len, const void *value,
			 size_t value_len)
{
	struct expiry *x = arg;
	struct pl_xnode *record = pl_xml_parse_element(value, value_len, NS_RECORD);
	const char *at = record ? pl_xnode_attr(record, "at") : NULL;
	const char *with = record ? pl_xnode_attr(record, "with") : NULL;
	uint64_t seq;
	int stop = 0;
	if (!record || !seq_of_key(key, key_len, &seq)) {
		stop = 0;
	} else if (x->cutoff_ms && at && strtoll(at, NULL, 10) >= x->cutoff_ms) {
		stop = 1;
	} else {
		pl_store_del(x->w, messages_space, key, key_len);
		if (with) {
			struct pl_store_key k;
			with_key(&k, x->owner, with, seq, true);
			if (!k.overflow)
				pl_store_del(x->w, with_space, k.data, k.len);
		}
		x->deleted++;
		stop = x->deleted >= x->budget;
	}
	pl_xnode_unref(&record);
	return stop;
}

static size_t expire_archive(struct pl_store_read *read, struct pl_store_write *w,
			     const char *owner, int64_t cutoff_ms, size_t budget)
{
	struct expiry x = { owner, cutoff_ms, w, 0, budget };
	struct pl_store_key prefix;
	pl_store_key_init(&prefix);
	pl_store_key_str(&prefix, owner);
	pl_store_scan(read, messages_space, prefix.data, prefix.len, NULL, 0, expire_record, &x);
	return x.deleted;
}

/* The whole archive goes, its numbering stays (ids are never reused). */
static void delete_archive(struct pl_store_write *w, const char *owner)
{
	struct pl_store_key prefix;
	pl_store_key_init(&prefix);
	pl_store_key_str(&prefix, owner);
	pl_store_del_prefix(w, messages_space, prefix.data, prefix.len);
	pl_store_del_prefix(w, with_space, prefix.data, prefix.len);
	pl_store_del_prefix(w, origin_space, prefix.data, prefix.len);
	struct archive *a = archive_get(owner);
	a->count = 0;
	a->count_known = true;
	put_meta(w, a);
}

/* parleyctl delete-archive JID. */
static int on_ctl_delete(struct pl_event *event, void *userdata)
{
	struct pl_ctl_command *command = event->data;
	char *owner = command->count == 2 ? pl_jid_normalize_bare(command->fields[1]) : NULL;
	if (!owner || !strchr(owner, '@')) {
		command->usage = pl_strdup("usage: delete-archive JID (an account)");
		free(owner);
		return PL_HANDLED;
	}
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	delete_archive(w, owner);
	pl_module_log(self, 2, "deleting the archive of %s (parleyctl)", owner);
	free(owner);
	pl_store_write_submit(w, pl_ctl_command_done_status, command->request);
	return PL_HANDLED;
}

/* "archive/delete" (src/archive.h): a destroyed room's archive. */
static int on_archive_delete(struct pl_event *event, void *userdata)
{
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	delete_archive(w, event->data);
	pl_store_write_submit(w, NULL, NULL);
	return PL_HANDLED;
}

/* "archive/append" (src/archive.h). */
static int on_archive_append(struct pl_event *event, void *userdata)
{
	struct pl_archive_append *append = event->data;
	append->id = archive_message(append->owner, append->with, append->message);
	return PL_HANDLED;
}

struct recent {
	struct pl_archive_recent *request;
	struct pl_xnode **records;       /* owned, newest first */
	uint64_t *ids;
	size_t count;
};

static int take_recent(void *arg, const void *key, size_t key_len, const void *value,
		       size_t value_len)
{
	struct recent *r = arg;
	uint64_t seq;
	if (!seq_of_key(key, key_len, &seq))
		return 0;
	struct pl_xnode *record = pl_xml_parse_element(value, value_len, NS_RECORD);
	if (!record)
		return 0;
	const char *at = pl_xnode_attr(record, "at");
	if (r->request->since_ms && (!at || strtoll(at, NULL, 10) < r->request->since_ms)) {
		pl_xnode_unref(&record);
		return 1; /* older still from here on */
	}
	r->records[r->count] = record;
	r->ids[r->count++] = seq;
	return r->count == r->request->max;
}

/* "archive/recent" (src/archive.h): one reverse scan of `max` records. */
static int on_archive_recent(struct pl_event *event, void *userdata)
{
	struct pl_archive_recent *request = event->data;
	if (!request->max)
		return PL_HANDLED;
	struct recent r = { request, pl_calloc(request->max, sizeof(*r.records)),
			    pl_calloc(request->max, sizeof(*r.ids)), 0 };
	struct pl_store_key prefix;
	pl_store_key_init(&prefix);
	pl_store_key_str(&prefix, request->owner);
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (read && !prefix.overflow) {
		pl_store_scan_reverse(read, messages_space, prefix.data, prefix.len, NULL, 0,
				      take_recent, &r);
		pl_store_read_end(read);
	} else if (read) {
		pl_store_read_end(read);
	}
	for (size_t i = r.count; i-- > 0;) {
		const char *at = pl_xnode_attr(r.records[i], "at");
		struct pl_xnode *message = pl_xnode_first_element(r.records[i]);
		if (message)
			request->each(request->arg, r.ids[i], at ? strtoll(at, NULL, 10) : 0, message);
		pl_xnode_unref(&r.records[i]);
	}
	free(r.records);
	free(r.ids);
	return PL_HANDLED;
}

static struct event *expiry_timer;

struct owners {
	char **names;
	size_t count, cap;
};

static int collect_owner(void *arg, const void *key, size_t key_len, const void *value,
			 size_t value_len)
{
	struct owners *o = arg;
	const char *name;
	size_t name_len;
	if (!pl_store_key_read_str(key, key_len, &name, &name_len))
		return 0;
	pl_grow((void **)&o->names, &o->cap, o->count + 1, sizeof(*o->names));
	o->names[o->count++] = pl_strndup(name, name_len);
	return 0;
}

/* Retention: every expiry-interval, messages older than max-age go, at
 * most 10000 per round so a first run on a big store does not stall the
 * loop (the rest goes next round). */
static void on_expiry(evutil_socket_t fd, short what, void *arg)
{
	int64_t cutoff = pl_unix_ms() - conf.max_age_ms;
	struct owners owners = { NULL, 0, 0 };
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (!read)
		return;
	pl_store_scan(read, meta_space, NULL, 0, NULL, 0, collect_owner, &owners);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	size_t deleted = 0, budget = 10000;
	size_t *gone = pl_calloc(owners.count ? owners.count : 1, sizeof(*gone));
	for (size_t i = 0; i < owners.count && deleted < budget; i++) {
		gone[i] = expire_archive(read, w, owners.names[i], cutoff, budget - deleted);
		deleted += gone[i];
	}
	/* The counts after the scan: archive_get may read the store itself. */
	pl_store_read_end(read);
	for (size_t i = 0; i < owners.count; i++) {
		if (gone[i]) {
			struct archive *a = archive_get(owners.names[i]);
			a->count = a->count > gone[i] ? a->count - gone[i] : 0;
			put_meta(w, a);
		}
		free(owners.names[i]);
	}
	free(gone);
	free(owners.names);
	if (deleted) {
		pl_store_write_submit(w, NULL, NULL);
		pl_module_log(self, 2, "expired %zu archived messages older than %lld s", deleted,
			      (long long)(conf.max_age_ms / 1000));
		pl_counter_add(pl_counter("archive-expired"), deleted);
	} else {
		pl_store_write_abort(w);
	}
}

/* Account features for disco#info on the user's own bare JID. */
static int on_account_features(struct pl_event *event, void *userdata)
{
	struct pl_xnode *query = event->data;
	pl_xnode_set_attr(pl_xnode_add_element(query, "feature", NULL), "var", NS_MAM);
	pl_xnode_set_attr(pl_xnode_add_element(query, "feature", NULL), "var", NS_MAM_EXTENDED);
	pl_xnode_set_attr(pl_xnode_add_element(query, "feature", NULL), "var", NS_RETRACT);
	return PL_CONTINUE;
}

static int on_user_deleted(struct pl_event *event, void *userdata)
{
	struct archive **link = &archives[pl_hash_string(event->data) % ARCHIVE_BUCKETS];
	for (; *link; link = &(*link)->chain) {
		if (strcmp((*link)->owner, event->data) == 0) {
			struct archive *gone = *link;
			*link = gone->chain;
			archive_free(gone);
			break;
		}
	}
	return PL_CONTINUE;
}

static int mam_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct mam_conf *)conf_ptr;
	self = m;
	messages_space = pl_store_open(m, "messages");
	with_space = pl_store_open(m, "with");
	meta_space = pl_store_open(m, "meta");
	prefs_space = pl_store_open(m, "prefs");
	origin_space = pl_store_open(m, "origin");
	if (!messages_space || !with_space || !meta_space || !prefs_space || !origin_space)
		return pl_error(error, -EIO, "cannot open the archive's store spaces");
	memset(archives, 0, sizeof(archives));
	archived = pl_counter("archived-messages");
	pl_hook(m, "iq/set/" NS_MAM, on_query, NULL, 0);
	pl_hook(m, "iq/get/" NS_MAM, on_form, NULL, 0);
	pl_hook(m, "iq/get/" NS_MAM, on_metadata, NULL, 10);
	pl_hook(m, "iq/get/" NS_MAM, on_prefs, NULL, 20);
	pl_hook(m, "iq/set/" NS_MAM, on_prefs, NULL, 20);
	/* After blocking (100) and de-duplication (50): only what is routed. */
	pl_hook(m, "stanza/in", on_stanza_in, NULL, 10);
	pl_hook(m, "stanza/out", on_stanza_out, NULL, 10);
	pl_hook(m, "disco/account", on_account_features, NULL, 0);
	pl_hook(m, "user-deleted", on_user_deleted, NULL, 0);
	pl_hook(m, "ctl/delete-archive", on_ctl_delete, NULL, 0);
	pl_hook(m, "archive/append", on_archive_append, NULL, 0);
	pl_hook(m, "archive/query", on_archive_query, NULL, 0);
	pl_hook(m, "archive/recent", on_archive_recent, NULL, 0);
	pl_hook(m, "archive/delete", on_archive_delete, NULL, 0);
	if (conf.max_age_ms > 0) {
		expiry_timer = event_new(pl_server.base, -1, EV_PERSIST, on_expiry, NULL);
		struct timeval every = { conf.expiry_interval_ms / 1000,
					 (conf.expiry_interval_ms % 1000) * 1000 };
		event_add(expiry_timer, &every);
	}
	return 0;
}

static void mam_unload(struct pl_module *m)
{
	if (expiry_timer) {
		event_free(expiry_timer);
		expiry_timer = NULL;
	}
	for (size_t b = 0; b < ARCHIVE_BUCKETS; b++) {
		while (archives[b]) {
			struct archive *a = archives[b];
			archives[b] = a->chain;
			archive_free(a);
		}
	}
}

PL_MODULE(mam, .version = "0.1", .options = mam_options, .conf_size = sizeof(struct mam_conf),
	  .load = mam_load, .unload = mam_unload);
