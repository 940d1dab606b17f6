/* mod_last: XEP-0012 Last Activity for accounts and the server. When a
 * user's last available resource goes offline, the time and the status
 * text of that unavailable presence are stored; a contact allowed to see
 * the user's presence (or the user) asks the bare JID and learns how long
 * ago that was ("0" while the user is online). Asked of the server, it
 * answers the uptime. A record on its way to the store is answered from
 * memory, so that a question right after the presence never reads the
 * record before it. */
#include "accounts.h"
#include "hooks.h"
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_LAST "jabber:iq:last"

static struct pl_module *self;
static struct pl_store_space *last_space;

/* Records submitted and not yet committed, the newest per user; each
 * leaves when its own write completes (a newer one for the same user
 * replaces it and waits for its own). Owned here. */
struct pending {
	struct pending *next;
	char *bare;
	char *value;   /* the serialized <last/> */
	uint64_t seq;
};
static struct pending *pending;
static uint64_t pending_seq;

static void free_pending(struct pending *p)
{
	free(p->bare);
	free(p->value);
	free(p);
}

static struct pending **find_pending(const char *bare)
{
	struct pending **at = &pending;
	while (*at && strcmp((*at)->bare, bare) != 0)
		at = &(*at)->next;
	return at;
}

static void on_written(void *arg, int status)
{
	uint64_t seq = (uint64_t)(uintptr_t)arg;
	for (struct pending **at = &pending; *at; at = &(*at)->next) {
		if ((*at)->seq == seq) {
			struct pending *done = *at;
			*at = done->next;
			free_pending(done);
			return;
		}
	}
}

static bool has_available_resource(const char *bare, const struct pl_session *except)
{
	for (struct pl_session *s = pl_router_sessions_of(bare); s; s = s->next_of_user)
		if (s != except && s->available)
			return true;
	return false;
}

/* The last available resource went offline: remember when, and why. */
static int on_broadcast(struct pl_event *event, void *userdata)
{
	struct pl_presence_event *e = event->data;
	const char *type = pl_xnode_attr(e->stanza, "type");
	if (!type || strcmp(type, "unavailable") != 0 ||
	    has_available_resource(e->session->bare_jid, e->session))
		return PL_CONTINUE;
	struct pl_xnode *record = pl_xnode_new("last", NS_LAST);
	char seconds[24];
	snprintf(seconds, sizeof(seconds), "%lld", (long long)time(NULL));
	pl_xnode_set_attr(record, "at", seconds);
	struct pl_xnode *status = pl_xnode_find(e->stanza, "status", NULL);
	if (status) {
		char *text = pl_xnode_text(status);
		pl_xnode_add_text(record, text, strlen(text));
		free(text);
	}
	struct pl_buf value = { 0 };
	pl_xnode_serialize(record, NULL, &value);
	pl_xnode_unref(&record);
	size_t key_len;
	void *key = pl_user_key(e->session->bare_jid, "", &key_len);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	pl_store_put(w, last_space, key, key_len, value.data, value.len);
	struct pending **at = find_pending(e->session->bare_jid);
	if (*at) {
		struct pending *old = *at;
		*at = old->next;
		free_pending(old);
	}
	struct pending *p = pl_calloc(1, sizeof(*p));
	p->bare = pl_strdup(e->session->bare_jid);
	p->value = pl_strndup(value.data, value.len);
	p->seq = ++pending_seq;
	p->next = pending;
	pending = p;
	pl_store_write_submit(w, on_written, (void *)(uintptr_t)p->seq);
	free(key);
	pl_buf_free(&value);
	return PL_CONTINUE;
}

static void answer(const struct pl_xnode *iq, long long seconds, const char *text)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_LAST);
	char value[24];
	snprintf(value, sizeof(value), "%lld", seconds < 0 ? 0 : seconds);
	pl_xnode_set_attr(query, "seconds", value);
	if (text && *text)
		pl_xnode_add_text(query, text, strlen(text));
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
}

static int on_get(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	const char *from = pl_xnode_attr(iq->stanza, "from");
	if (!to || !strchr(to, '@')) {
		/* The server: its uptime (XEP-0012 section 5). */
		answer(iq->stanza, (long long)(time(NULL) - pl_server.started), NULL);
		return PL_HANDLED;
	}
	struct pl_account account;
	if (pl_accounts_get(to, &account) != 0)
		return PL_HOOK_ERROR(PL_ERR_SERVICE_UNAVAILABLE);
	char *asker = from ? pl_jid_normalize_bare(from) : NULL;
	bool allowed = asker && strcmp(asker, to) == 0;
	if (asker && !allowed) {
		/* Only those who may see the user's presence (XEP-0012 4). */
		struct pl_subscription_query query = { to, asker, false, false };
		pl_hooks_fire("roster/subscribed", &query);
		allowed = query.subscribed;
	}
	free(asker);
	if (!allowed)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	if (has_available_resource(to, NULL)) {
		answer(iq->stanza, 0, NULL);
		return PL_HANDLED;
	}
	struct pending *p = *find_pending(to);
	struct pl_xnode *record = NULL;
	if (p) {
		record = pl_xml_parse_element(p->value, strlen(p->value), NS_LAST);
	} else {
		size_t key_len;
		void *key = pl_user_key(to, "", &key_len);
		record = pl_store_get_element(last_space, key, key_len);
		free(key);
	}
	if (!record)
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	const char *at = pl_xnode_attr(record, "at");
	char *text = pl_xnode_text(record);
	answer(iq->stanza, at ? (long long)(time(NULL) - strtoll(at, NULL, 10)) : 0, text);
	free(text);
	pl_xnode_unref(&record);
	return PL_HANDLED;
}

static int last_load(struct pl_module *m, const void *conf, char **error)
{
	self = m;
	last_space = pl_store_open(m, "items");
	if (!last_space)
		return pl_error(error, -EIO, "cannot open the last-activity store space");
	pl_feature(m, NS_LAST);
	pl_hook(m, "iq/get/" NS_LAST, on_get, NULL, 0);
	pl_hook(m, "presence/broadcast", on_broadcast, NULL, 0);
	return 0;
}

/* Authorization asks the roster, so it must be there. */
static const char *const last_requires[] = { "roster", NULL };

/* The store is destroyed before modules unload, so every write has
 * completed; anything left is only freed. */
static void last_unload(struct pl_module *m)
{
	while (pending) {
		struct pending *p = pending;
		pending = p->next;
		free_pending(p);
	}
}

PL_MODULE(last, .version = "0.1", .requires = last_requires, .load = last_load,
	  .unload = last_unload);
