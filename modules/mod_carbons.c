/* mod_carbons: XEP-0280 message carbons, so that a user's phone and
 * laptop both see every one-to-one conversation. A resource that enabled
 * carbons gets a <received/> copy of each eligible message delivered to
 * another of the user's resources, and a <sent/> copy of each eligible
 * message another resource sends. Eligible (XEP-0280 6): chat messages,
 * and normal messages with a body; never errors, groupchat, messages
 * marked <private/> or no-copy (XEP-0334), or carbons themselves.
 * Which resources enabled carbons is kept per session (by full JID and
 * session id) and forgotten when the session ends. */
#include "counters.h"
#include "parley/module.h"
#include "router.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_HINTS "urn:xmpp:hints"

/* Sessions with carbons on. */
struct enabled {
	char *full_jid;        /* owned */
	uint64_t session_id;
	struct enabled *next;
};

#define BUCKETS 4096
static struct enabled *table[BUCKETS];
static struct pl_counter *copies;

static struct enabled **find(const char *full_jid)
{
	struct enabled **link = &table[pl_hash_string(full_jid) % BUCKETS];
	while (*link && strcmp((*link)->full_jid, full_jid) != 0)
		link = &(*link)->next;
	return link;
}

static bool is_enabled(const struct pl_session *s)
{
	struct enabled *e = *find(s->full_jid);
	return e && e->session_id == s->id;
}

static void disable(const char *full_jid)
{
	struct enabled **link = find(full_jid);
	struct enabled *e = *link;
	if (e) {
		*link = e->next;
		free(e->full_jid);
		free(e);
	}
}

static void enable(const struct pl_session *session)
{
	disable(session->full_jid);
	struct enabled *e = pl_calloc(1, sizeof(*e));
	e->full_jid = pl_strdup(session->full_jid);
	e->session_id = session->id;
	struct enabled **slot = &table[pl_hash_string(e->full_jid) % BUCKETS];
	e->next = *slot;
	*slot = e;
}

/* XEP-0386: carbons enabled in the same round trip as the bind. */
static int on_bind2(struct pl_event *event, void *userdata)
{
	struct pl_bind2_event *e = event->data;
	if (pl_xnode_find(e->bind, "enable", NS_CARBONS))
		enable(e->session);
	return PL_CONTINUE;
}

static int on_bind2_features(struct pl_event *event, void *userdata)
{
	pl_buf_puts(event->data, "<feature var='" NS_CARBONS "'/>");
	return PL_CONTINUE;
}

static int on_iq(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!iq->session || (to && strcmp(to, iq->session->bare_jid) != 0))
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	struct pl_xnode *command = pl_xnode_first_element(iq->stanza);
	if (strcmp(command->name, "enable") == 0) {
		enable(iq->session);
	} else if (strcmp(command->name, "disable") == 0) {
		disable(iq->session->full_jid);
	} else {
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	}
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static bool eligible(const struct pl_xnode *message)
{
	const char *type = pl_xnode_attr(message, "type");
	bool chat = type && strcmp(type, "chat") == 0;
	bool normal = !type || strcmp(type, "normal") == 0;
	if (!chat && !(normal && pl_xnode_find(message, "body", NULL)))
		return false;
	return !pl_xnode_find(message, "private", NS_CARBONS) &&
	       !pl_xnode_find(message, "no-copy", NS_HINTS) &&
	       !pl_xnode_find(message, "received", NS_CARBONS) &&
	       !pl_xnode_find(message, "sent", NS_CARBONS);
}

/* <message from=bare to=full type=...><direction><forwarded><original/>. */
static void send_copy(const char *direction, const struct pl_xnode *original,
		      struct pl_session *to)
{
	struct pl_xnode *copy = pl_xnode_new("message", PL_NS_CLIENT);
	pl_xnode_set_attr(copy, "from", to->bare_jid);
	pl_xnode_set_attr(copy, "to", to->full_jid);
	const char *type = pl_xnode_attr(original, "type");
	if (type)
		pl_xnode_set_attr(copy, "type", type);
	struct pl_xnode *wrapper = pl_xnode_add_element(copy, direction, NS_CARBONS);
	struct pl_xnode *forwarded = pl_xnode_add_element(wrapper, "forwarded", NS_FORWARD);
	pl_xnode_add_child(forwarded, pl_xnode_copy(original));
	to->deliver(to, copy);
	pl_xnode_unref(&copy);
	pl_counter_add(copies, 1);
}

/* A message reached some of a user's sessions: the other enabled ones
 * get a <received/> copy. */
static int on_delivered(struct pl_event *event, void *userdata)
{
	struct pl_delivered_event *e = event->data;
	if (!eligible(e->stanza))
		return PL_CONTINUE;
	for (struct pl_session *s = pl_router_sessions_of(e->to); s; s = s->next_of_user) {
		bool got_it = false;
		for (size_t i = 0; i < e->count; i++)
			got_it |= e->sessions[i] == s;
		if (!got_it && s->available && is_enabled(s))
			send_copy("received", e->stanza, s);
	}
	return PL_CONTINUE;
}

/* A resource sends a message: the user's other enabled resources get a
 * <sent/> copy. */
static int on_stanza_out(struct pl_event *event, void *userdata)
{
	struct pl_route_event *e = event->data;
	if (strcmp(e->stanza->name, "message") != 0 || !eligible(e->stanza))
		return PL_CONTINUE;
	/* A message to one's own bare JID reaches the resources anyway. */
	if (e->to->local && strcmp(e->to->bare, e->origin->bare_jid) == 0 && !e->to->resource)
		return PL_CONTINUE;
	for (struct pl_session *s = pl_router_sessions_of(e->origin->bare_jid); s;
	     s = s->next_of_user) {
		if (s != e->origin && s->available && is_enabled(s) &&
		    !(e->to->resource && strcmp(e->to->full, s->full_jid) == 0))
			send_copy("sent", e->stanza, s);
	}
	return PL_CONTINUE;
}

static int on_session_unbound(struct pl_event *event, void *userdata)
{
	struct pl_session *s = event->data;
	if (is_enabled(s))
		disable(s->full_jid);
	return PL_CONTINUE;
}

static int carbons_load(struct pl_module *m, const void *conf, char **error)
{
	memset(table, 0, sizeof(table));
	copies = pl_counter("carbon-copies");
	pl_feature(m, NS_CARBONS);
	pl_hook(m, "iq/set/" NS_CARBONS, on_iq, NULL, 0);
	pl_hook(m, "message/delivered", on_delivered, NULL, 0);
	/* After blocking and de-duplication: only what is really sent. */
	pl_hook(m, "stanza/out", on_stanza_out, NULL, 0);
	pl_hook(m, "session/unbound", on_session_unbound, NULL, 0);
	pl_hook(m, "bind2/inline", on_bind2, NULL, 0);
	pl_hook(m, "stream-features/bind2", on_bind2_features, NULL, 0);
	return 0;
}

static void carbons_unload(struct pl_module *m)
{
	for (size_t b = 0; b < BUCKETS; b++) {
		while (table[b]) {
			struct enabled *e = table[b];
			table[b] = e->next;
			free(e->full_jid);
			free(e);
		}
	}
}

PL_MODULE(carbons, .version = "0.1", .load = carbons_load, .unload = carbons_unload);
