/* mod_push: XEP-0357 push notifications, so that a phone whose app sleeps
 * learns that something waits for it. A client enables push with its app
 * server's JID, a node and publish-options (its secret); the registration
 * is kept on disk (push.registrations "user\0app-server\0node" ->
 * <registration/>) together with the resource that enabled it. When a
 * message (or a subscription request, or a group chat mention that
 * mod_muc reports through the "push/wake" hook) is kept for a user while
 * that resource has no live stream (gone, or hibernating under XEP-0198),
 * a urn:xmpp:push:summary notification is published to the app server
 * through normal routing. An app server that answers with a permanent
 * error (cancel, auth) loses the registration, with a log line; transient
 * errors (wait, modify) keep it: iOS users must not silently lose push
 * because their app server had a bad minute. Notifications are spaced by
 * `min-interval` per registration. */
#include "counters.h"
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

#define NS_PUSH "urn:xmpp:push:0"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_DATA "jabber:x:data"
#define NS_SUMMARY "urn:xmpp:push:summary"
#define NS_PUBLISH_OPTIONS "http://jabber.org/protocol/pubsub#publish-options"
#define NS_RECORD "urn:parley:push:0"

struct push_conf {
	bool include_body;
	bool include_sender;
	int64_t min_interval_ms;
	int64_t max_registrations;
};

static const struct pl_option push_options[] = {
	{ "include-body", PL_OPT_BOOL, "false", 0, 0, NULL, offsetof(struct push_conf, include_body),
	  "send message bodies to app servers (a privacy choice; off by default)" },
	{ "include-sender", PL_OPT_BOOL, "true", 0, 0, NULL,
	  offsetof(struct push_conf, include_sender), "name the last sender in notifications" },
	{ "min-interval", PL_OPT_DURATION, "1s", 0, 3600000, NULL,
	  offsetof(struct push_conf, min_interval_ms),
	  "at most one notification per registration this often" },
	{ "max-registrations", PL_OPT_INT, "20", 1, 1000, NULL,
	  offsetof(struct push_conf, max_registrations), "push registrations per account" },
	{ NULL }
};

static struct push_conf conf;
static struct pl_module *self;
static struct pl_store_space *registrations_space;
static struct pl_counter *sent_counter, *failed_counter;

struct registration {
	char *app_server;                /* owned: JID */
	char *node;                      /* owned */
	char *resource;                  /* owned: the resource that enabled it, or NULL */
	struct pl_xnode *options;        /* owned: the publish-options form, or NULL */
	int64_t last_sent_ms;            /* pl_now_ms(), 0: never */
	uint64_t pending;                /* messages since the user was last live */
	struct registration *next;
};

struct user {
	char *bare_jid;                  /* owned */
	struct registration *registrations;  /* owned */
	size_t count;
	bool loaded;
	struct user *next;
};
#define USER_BUCKETS 4096
static struct user *users[USER_BUCKETS];

/* Notifications waiting for the app server's answer. */
struct in_flight {
	char *id;                        /* owned */
	char *user;                      /* owned */
	char *app_server;                /* owned */
	char *node;                      /* owned */
	int64_t sent_ms;
	struct in_flight *next;
};
static struct in_flight *in_flight;
static size_t in_flight_count;
static uint64_t id_counter;
#define MAX_IN_FLIGHT 10000
#define IN_FLIGHT_TTL_MS 120000

static void registration_free(struct registration *r)
{
	free(r->app_server);
	free(r->node);
	free(r->resource);
	pl_xnode_unref(&r->options);
	free(r);
}

static void registration_key(struct pl_store_key *k, const char *user, const char *app_server,
			     const char *node)
{
	pl_store_key_init(k);
	pl_store_key_str(k, user);
	if (app_server)
		pl_store_key_str(k, app_server);
	if (node)
		pl_store_key_str(k, node);
}

static int load_registration(void *arg, const void *key, size_t key_len, const void *value,
			     size_t value_len)
{
	struct user *u = arg;
	struct pl_xnode *record = pl_xml_parse_element(value, value_len, NS_RECORD);
	const char *app_server = record ? pl_xnode_attr(record, "jid") : NULL;
	const char *node = record ? pl_xnode_attr(record, "node") : NULL;
	if (app_server && node) {
		struct registration *r = pl_calloc(1, sizeof(*r));
		r->app_server = pl_strdup(app_server);
		r->node = pl_strdup(node);
		if (pl_xnode_attr(record, "resource"))
			r->resource = pl_strdup(pl_xnode_attr(record, "resource"));
		struct pl_xnode *options = pl_xnode_find(record, "x", NS_DATA);
		if (options)
			r->options = pl_xnode_copy(options);
		r->next = u->registrations;
		u->registrations = r;
		u->count++;
	}
	pl_xnode_unref(&record);
	(void)key, (void)key_len;
	return 0;
}

static struct user *user_get(const char *bare_jid, bool create)
{
	struct user **link = &users[pl_hash_string(bare_jid) % USER_BUCKETS];
	for (; *link; link = &(*link)->next)
		if (strcmp((*link)->bare_jid, bare_jid) == 0)
			break;
	struct user *u = *link;
	if (!u) {
		/* Most accounts never enable push: look on disk once, remember
		 * the answer (an empty entry) only for those that did. */
		struct user probe = { .bare_jid = (char *)bare_jid };
		struct pl_store_read *read = pl_store_read_begin(pl_server.store);
		if (read) {
			struct pl_store_key prefix;
			registration_key(&prefix, bare_jid, NULL, NULL);
			pl_store_scan(read, registrations_space, prefix.data, prefix.len, NULL, 0,
				      load_registration, &probe);
			pl_store_read_end(read);
		}
		if (!probe.registrations && !create)
			return NULL;
		u = pl_calloc(1, sizeof(*u));
		u->bare_jid = pl_strdup(bare_jid);
		u->registrations = probe.registrations;
		u->count = probe.count;
		u->loaded = true;
		*link = u;
	}
	return u;
}

static void remove_registration(struct user *u, struct registration *gone)
{
	for (struct registration **link = &u->registrations; *link; link = &(*link)->next) {
		if (*link == gone) {
			*link = gone->next;
			u->count--;
			break;
		}
	}
	struct pl_store_key k;
	registration_key(&k, u->bare_jid, gone->app_server, gone->node);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	pl_store_del(w, registrations_space, k.data, k.len);
	pl_store_write_submit(w, NULL, NULL);
	registration_free(gone);
}

/* ---- sending ---------------------------------------------------------------------- */

/* The resource that enabled push still has a live stream: it needs none. */
static bool resource_is_live(const struct user *u, const struct registration *r)
{
	if (!r->resource)
		return false;
	char *full = pl_asprintf("%s/%s", u->bare_jid, r->resource);
	struct pl_session *s = pl_router_find(full);
	free(full);
	return s && !s->suspended;
}

static void add_field(struct pl_xnode *form, const char *var, const char *value)
{
	struct pl_xnode *f = pl_xnode_add_element(form, "field", NULL);
	pl_xnode_set_attr(f, "var", var);
	pl_xnode_add_text(pl_xnode_add_element(f, "value", NULL), value, strlen(value));
}

static void expire_in_flight(void)
{
	int64_t now = pl_now_ms();
	for (struct in_flight **link = &in_flight; *link;) {
		struct in_flight *f = *link;
		if (now - f->sent_ms > IN_FLIGHT_TTL_MS) {
			*link = f->next;
			free(f->id);
			free(f->user);
			free(f->app_server);
			free(f->node);
			free(f);
			in_flight_count--;
		} else {
			link = &f->next;
		}
	}
}

static void send_notification(struct user *u, struct registration *r, const char *sender,
			      const char *body, bool subscription)
{
	int64_t now = pl_now_ms();
	/* pl_now_ms is monotonic (from boot): 0 means "never sent". */
	if (r->last_sent_ms && now - r->last_sent_ms < conf.min_interval_ms)
		return;
	expire_in_flight();
	if (in_flight_count >= MAX_IN_FLIGHT)
		return;
	r->last_sent_ms = now;
	struct in_flight *f = pl_calloc(1, sizeof(*f));
	f->id = pl_asprintf("push%" PRIu64, ++id_counter);
	f->user = pl_strdup(u->bare_jid);
	f->app_server = pl_strdup(r->app_server);
	f->node = pl_strdup(r->node);
	f->sent_ms = now;
	f->next = in_flight;
	in_flight = f;
	in_flight_count++;
	struct pl_xnode *iq = pl_xnode_new("iq", PL_NS_CLIENT);
	pl_xnode_set_attr(iq, "type", "set");
	pl_xnode_set_attr(iq, "id", f->id);
	pl_xnode_set_attr(iq, "from", u->bare_jid);
	pl_xnode_set_attr(iq, "to", r->app_server);
	struct pl_xnode *pubsub = pl_xnode_add_element(iq, "pubsub", NS_PUBSUB);
	struct pl_xnode *publish = pl_xnode_add_element(pubsub, "publish", NULL);
	pl_xnode_set_attr(publish, "node", r->node);
	struct pl_xnode *notification = pl_xnode_add_element(pl_xnode_add_element(publish, "item", NULL),
							     "notification", NS_PUSH);
	struct pl_xnode *form = pl_xnode_add_element(notification, "x", NS_DATA);
	pl_xnode_set_attr(form, "type", "form");
	add_field(form, "FORM_TYPE", NS_SUMMARY);
	char count[24];
	snprintf(count, sizeof(count), "%" PRIu64, r->pending);
	add_field(form, subscription ? "pending-subscription-count" : "message-count",
		  subscription ? "1" : count);
	if (sender && conf.include_sender)
		add_field(form, "last-message-sender", sender);
	if (body && conf.include_body)
		add_field(form, "last-message-body", body);
	if (r->options) {
		struct pl_xnode *options = pl_xnode_add_element(pubsub, "publish-options", NULL);
		pl_xnode_add_child(options, pl_xnode_copy(r->options));
	}
	pl_module_log(self, 3, "push to %s (node %s) for %s", r->app_server, r->node, u->bare_jid);
	pl_route(iq, NULL);
	pl_xnode_unref(&iq);
	pl_counter_add(sent_counter, 1);
}

/* Something waits for `user`: every registration whose device is not
 * live gets a notification. */
static void wake(const char *bare_jid, const char *sender, const char *body, bool subscription)
{
	struct user *u = user_get(bare_jid, false);
	if (!u)
		return;
	struct registration *next;
	for (struct registration *r = u->registrations; r; r = next) {
		next = r->next;
		if (resource_is_live(u, r))
			continue;
		if (!subscription)
			r->pending++;
		send_notification(u, r, sender, body, subscription);
	}
}

static char *body_of(const struct pl_xnode *message)
{
	struct pl_xnode *body = pl_xnode_find(message, "body", NULL);
	return body ? pl_xnode_text(body) : NULL;
}

/* Before mod_offline stores it (also what c2s hands over for a
 * hibernating session): a message with a body wakes the user. */
static int on_offline_message(struct pl_event *event, void *userdata)
{
	struct pl_offline_event *e = event->data;
	const char *type = pl_xnode_attr(e->stanza, "type");
	if (type && (strcmp(type, "error") == 0 || strcmp(type, "headline") == 0))
		return PL_CONTINUE;
	char *body = body_of(e->stanza);
	if (body || pl_xnode_find(e->stanza, "encrypted", NULL)) {
		const char *sender = pl_xnode_attr(e->stanza, "from");
		wake(e->to, sender, body, false);
	}
	free(body);
	return PL_CONTINUE;
}

static bool user_has_live_session(const char *bare_jid)
{
	for (struct pl_session *s = pl_router_sessions_of(bare_jid); s; s = s->next_of_user)
		if (!s->suspended && s->available)
			return true;
	return false;
}

/* A friend request for someone whose phones sleep. */
static int on_presence_in(struct pl_event *event, void *userdata)
{
	struct pl_presence_event *e = event->data;
	const char *type = pl_xnode_attr(e->stanza, "type");
	if (type && strcmp(type, "subscribe") == 0 && !user_has_live_session(e->to))
		wake(e->to, pl_xnode_attr(e->stanza, "from"), NULL, true);
	return PL_CONTINUE;
}

/* "push/wake" (mod_muc: a mention of an absent member). */
static int on_wake(struct pl_event *event, void *userdata)
{
	struct pl_push_wake *w = event->data;
	wake(w->bare_jid, w->sender, w->body, false);
	return PL_CONTINUE;
}

/* The user is back: counts start again. */
static int on_live(struct pl_event *event, void *userdata)
{
	struct pl_session *s = event->data;
	struct user *u = user_get(s->bare_jid, false);
	for (struct registration *r = u ? u->registrations : NULL; r; r = r->next)
		if (!r->resource || strcmp(r->resource, strchr(s->full_jid, '/') + 1) == 0)
			r->pending = 0;
	return PL_CONTINUE;
}

static int on_broadcast(struct pl_event *event, void *userdata)
{
	struct pl_presence_event *e = event->data;
	if (e->initial) {
		struct pl_event live = { event->name, e->session };
		on_live(&live, userdata);
	}
	return PL_CONTINUE;
}

/* The app server's answer. */
static int on_iq_response(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *id = pl_xnode_attr(iq->stanza, "id");
	if (!id || strncmp(id, "push", 4) != 0)
		return PL_CONTINUE;
	struct in_flight **link = &in_flight;
	while (*link && strcmp((*link)->id, id) != 0)
		link = &(*link)->next;
	struct in_flight *f = *link;
	if (!f)
		return PL_CONTINUE;
	*link = f->next;
	in_flight_count--;
	if (strcmp(pl_xnode_attr(iq->stanza, "type"), "error") == 0) {
		struct pl_xnode *error = pl_xnode_find(iq->stanza, "error", NULL);
		const char *error_type = error ? pl_xnode_attr(error, "type") : NULL;
		bool permanent = error_type && (strcmp(error_type, "cancel") == 0 ||
						strcmp(error_type, "auth") == 0);
		struct pl_xnode *condition = error ? pl_xnode_first_element(error) : NULL;
		pl_counter_add(failed_counter, 1);
		struct user *u = permanent ? user_get(f->user, false) : NULL;
		struct registration *r = u ? u->registrations : NULL;
		while (r && (strcmp(r->app_server, f->app_server) != 0 || strcmp(r->node, f->node) != 0))
			r = r->next;
		if (r) {
			pl_module_log(self, 2, "%s: push service %s refused node %s (%s %s): registration removed",
				      f->user, f->app_server, f->node, error_type,
				      condition ? condition->name : "?");
			remove_registration(u, r);
		} else {
			pl_module_log(self, 2, "%s: push service %s failed for node %s (%s %s): kept",
				      f->user, f->app_server, f->node, error_type ? error_type : "?",
				      condition ? condition->name : "?");
		}
	}
	free(f->id);
	free(f->user);
	free(f->app_server);
	free(f->node);
	free(f);
	return PL_HANDLED;
}

/* ---- enable, disable ---------------------------------------------------------------- */

static void put_registration(struct pl_store_write *w, const struct user *u,
			     const struct registration *r)
{
	struct pl_xnode *record = pl_xnode_new("registration", NS_RECORD);
	pl_xnode_set_attr(record, "jid", r->app_server);
	pl_xnode_set_attr(record, "node", r->node);
	if (r->resource)
		pl_xnode_set_attr(record, "resource", r->resource);
	if (r->options)
		pl_xnode_add_child(record, pl_xnode_copy(r->options));
	struct pl_buf value = { 0 };
	pl_xnode_serialize(record, NULL, &value);
	struct pl_store_key k;
	registration_key(&k, u->bare_jid, r->app_server, r->node);
	pl_store_put(w, registrations_space, k.data, k.len, value.data, value.len);
	pl_buf_free(&value);
	pl_xnode_unref(&record);
}

static void reply_when_stored(void *arg, int status)
{
	struct pl_xnode *iq = arg;
	if (status == 0) {
		struct pl_xnode *reply = pl_iq_result(iq);
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
	} else {
		pl_route_error(iq, PL_ERR_INTERNAL_SERVER_ERROR, NULL);
	}
	pl_xnode_unref(&iq);
}

static int on_push_iq(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!iq->session || (to && strcmp(to, iq->session->bare_jid) != 0))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *request = pl_xnode_first_element(iq->stanza);
	const char *jid_text = pl_xnode_attr(request, "jid");
	char *app_server = jid_text ? pl_jid_normalize_bare(jid_text) : NULL;
	if (jid_text && strchr(jid_text, '/')) {
		/* A full JID is kept as given (normalised). */
		struct pl_jid parsed;
		free(app_server);
		app_server = pl_jid_parse(jid_text, &parsed) == PL_JID_OK ? pl_strdup(parsed.full) : NULL;
		pl_jid_free(&parsed);
	}
	if (!app_server)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	const char *node = pl_xnode_attr(request, "node");
	struct user *u = user_get(iq->session->bare_jid, true);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	if (strcmp(request->name, "enable") == 0) {
		if (!node || !*node) {
			free(app_server);
			pl_store_write_abort(w);
			return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
		}
		struct registration *r = u->registrations;
		while (r && (strcmp(r->app_server, app_server) != 0 || strcmp(r->node, node) != 0))
			r = r->next;
		if (!r) {
			if ((int64_t)u->count >= conf.max_registrations) {
				free(app_server);
				pl_store_write_abort(w);
				return PL_HOOK_ERROR(PL_ERR_RESOURCE_CONSTRAINT);
			}
			r = pl_calloc(1, sizeof(*r));
			r->app_server = pl_strdup(app_server);
			r->node = pl_strdup(node);
			r->next = u->registrations;
			u->registrations = r;
			u->count++;
		}
		free(r->resource);
		r->resource = pl_strdup(strchr(iq->session->full_jid, '/') + 1);
		pl_xnode_unref(&r->options);
		struct pl_xnode *form = pl_xnode_find(request, "x", NS_DATA);
		if (form) {
			r->options = pl_xnode_copy(form);
			pl_xnode_set_attr(r->options, "type", "submit");
		}
		put_registration(w, u, r);
		pl_module_log(self, 2, "%s enables push to %s (node %s)", iq->session->full_jid,
			      app_server, node);
	} else {
		/* disable: one node, or every node of that app server. */
		struct registration *next;
		for (struct registration *r = u->registrations; r; r = next) {
			next = r->next;
			if (strcmp(r->app_server, app_server) != 0 || (node && strcmp(r->node, node) != 0))
				continue;
			struct pl_store_key k;
			registration_key(&k, u->bare_jid, r->app_server, r->node);
			pl_store_del(w, registrations_space, k.data, k.len);
			for (struct registration **link = &u->registrations; *link; link = &(*link)->next) {
				if (*link == r) {
					*link = r->next;
					break;
				}
			}
			u->count--;
			registration_free(r);
		}
		pl_module_log(self, 2, "%s disables push to %s", iq->session->full_jid, app_server);
	}
	free(app_server);
	pl_store_write_submit(w, reply_when_stored, pl_xnode_copy(iq->stanza));
	return PL_HANDLED;
}

static int on_account_features(struct pl_event *event, void *userdata)
{
	struct pl_xnode *query = event->data;
	pl_xnode_set_attr(pl_xnode_add_element(query, "feature", NULL), "var", NS_PUSH);
	return PL_CONTINUE;
}

static void user_free(struct user *u)
{
	while (u->registrations) {
		struct registration *r = u->registrations;
		u->registrations = r->next;
		registration_free(r);
	}
	free(u->bare_jid);
	free(u);
}

static int on_user_deleted(struct pl_event *event, void *userdata)
{
	for (struct user **link = &users[pl_hash_string(event->data) % USER_BUCKETS]; *link;
	     link = &(*link)->next) {
		if (strcmp((*link)->bare_jid, event->data) == 0) {
			struct user *gone = *link;
			*link = gone->next;
			user_free(gone);
			break;
		}
	}
	return PL_CONTINUE;
}

static int push_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct push_conf *)conf_ptr;
	self = m;
	registrations_space = pl_store_open(m, "registrations");
	if (!registrations_space)
		return pl_error(error, -EIO, "cannot open the push store space");
	memset(users, 0, sizeof(users));
	sent_counter = pl_counter("push-notifications-sent");
	failed_counter = pl_counter("push-notifications-failed");
	pl_hook(m, "iq/set/" NS_PUSH, on_push_iq, NULL, 0);
	/* Before mod_offline takes the message (it returns HANDLED). */
	pl_hook(m, "message/offline", on_offline_message, NULL, 10);
	pl_hook(m, "presence/in", on_presence_in, NULL, 10);
	pl_hook(m, "push/wake", on_wake, NULL, 0);
	pl_hook(m, "session/resumed", on_live, NULL, 0);
	pl_hook(m, "presence/broadcast", on_broadcast, NULL, 0);
	pl_hook(m, "iq/response", on_iq_response, NULL, 0);
	pl_hook(m, "disco/account", on_account_features, NULL, 0);
	pl_hook(m, "user-deleted", on_user_deleted, NULL, 0);
	return 0;
}

static void push_unload(struct pl_module *m)
{
	for (size_t b = 0; b < USER_BUCKETS; b++) {
		while (users[b]) {
			struct user *u = users[b];
			users[b] = u->next;
			user_free(u);
		}
	}
	while (in_flight) {
		struct in_flight *f = in_flight;
		in_flight = f->next;
		free(f->id);
		free(f->user);
		free(f->app_server);
		free(f->node);
		free(f);
	}
	in_flight_count = 0;
	(void)m;
}

PL_MODULE(push, .version = "0.1", .options = push_options, .conf_size = sizeof(struct push_conf),
	  .load = push_load, .unload = push_unload);
