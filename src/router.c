/* Routing per RFC 6121 section 8: stanzas to a full JID go to that
 * resource (or are handled as if sent to the bare JID when it is gone),
 * messages to a bare JID go to the available resources of highest
 * non-negative priority (all of them for type chat, RFC 6121 8.5.2.1.1),
 * IQs to a bare JID or to the server are the server's to answer, and
 * what nobody can take is bounced with service-unavailable. Stanzas for
 * a domain service (MUC, components) go to its handler; other domains to
 * the remote route, or back as remote-server-not-found without one. */
#include "router.h"
#include "hooks.h"
#include "jid.h"
#include "log.h"
#include "server.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define USER_BUCKETS 4096

struct user_entry {
	char *bare_jid;               /* owned */
	struct pl_session *sessions;  /* borrowed: owned by their streams */
	struct user_entry *next;
};

static struct user_entry *buckets[USER_BUCKETS];
static size_t session_total;

/* Few domains (a MUC service per host, some components): a list. */
struct domain_service {
	char *domain;                 /* owned */
	pl_domain_route_fn *route;
	void *context;                /* the registrant's */
	struct domain_service *next;
};
static struct domain_service *domain_services;
static pl_domain_route_fn *remote_route;
static void *remote_context;

static const char *const error_names[] = {
	NULL, "bad-request", "conflict", "feature-not-implemented", "forbidden", "gone",
	"internal-server-error", "item-not-found", "jid-malformed", "not-acceptable",
	"not-allowed", "not-authorized", "policy-violation", "recipient-unavailable", "redirect",
	"registration-required", "remote-server-not-found", "remote-server-timeout",
	"resource-constraint", "service-unavailable", "subscription-required",
	"undefined-condition", "unexpected-request",
};

const char *pl_stanza_error_name(enum pl_stanza_error condition)
{
	if ((size_t)condition < PL_ARRAY_LEN(error_names) && error_names[condition])
		return error_names[condition];
	return "undefined-condition";
}

/* RFC 6120 8.3.3: the error type that goes with each condition. */
const char *pl_stanza_error_type(enum pl_stanza_error condition)
{
	switch (condition) {
	case PL_ERR_BAD_REQUEST:
	case PL_ERR_JID_MALFORMED:
	case PL_ERR_NOT_ACCEPTABLE:
	case PL_ERR_POLICY_VIOLATION:
	case PL_ERR_UNEXPECTED_REQUEST:
		return "modify";
	case PL_ERR_FEATURE_NOT_IMPLEMENTED:
	case PL_ERR_SERVICE_UNAVAILABLE:
	case PL_ERR_REMOTE_SERVER_NOT_FOUND:
	case PL_ERR_ITEM_NOT_FOUND:
	case PL_ERR_GONE:
	case PL_ERR_REDIRECT:
	case PL_ERR_INTERNAL_SERVER_ERROR:
		return "cancel";
	case PL_ERR_RESOURCE_CONSTRAINT:
	case PL_ERR_RECIPIENT_UNAVAILABLE:
	case PL_ERR_REMOTE_SERVER_TIMEOUT:
		return "wait";
	default:
		return "auth";
	}
}

static struct user_entry *find_user(const char *bare, bool create)
{
	uint32_t b = pl_hash_string(bare) % USER_BUCKETS;
	for (struct user_entry *u = buckets[b]; u; u = u->next)
		if (strcmp(u->bare_jid, bare) == 0)
			return u;
	if (!create)
		return NULL;
	struct user_entry *u = pl_calloc(1, sizeof(*u));
	u->bare_jid = pl_strdup(bare);
	u->next = buckets[b];
	buckets[b] = u;
	return u;
}

static void drop_user(struct user_entry *gone)
{
	uint32_t b = pl_hash_string(gone->bare_jid) % USER_BUCKETS;
	for (struct user_entry **link = &buckets[b]; *link; link = &(*link)->next) {
		if (*link == gone) {
			*link = gone->next;
			free(gone->bare_jid);
			free(gone);
			return;
		}
	}
}

void pl_router_init(void)
{
	memset(buckets, 0, sizeof(buckets));
	session_total = 0;
}

void pl_router_shutdown(void)
{
	while (domain_services) {
		struct domain_service *gone = domain_services;
		domain_services = gone->next;
		free(gone->domain);
		free(gone);
	}
	remote_route = NULL;
	remote_context = NULL;
	for (size_t b = 0; b < USER_BUCKETS; b++) {
		while (buckets[b]) {
			struct user_entry *u = buckets[b];
			buckets[b] = u->next;
			free(u->bare_jid);
			free(u);
		}
	}
	session_total = 0;
}

static struct domain_service *find_domain_service(const char *domain)
{
	for (struct domain_service *d = domain_services; d; d = d->next)
		if (strcmp(d->domain, domain) == 0)
			return d;
	return NULL;
}

int pl_router_add_domain(const char *domain, pl_domain_route_fn *route, void *context)
{
	if (pl_server_find_host(domain) || find_domain_service(domain))
		return -EEXIST;
	struct domain_service *d = pl_calloc(1, sizeof(*d));
	d->domain = pl_strdup(domain);
	d->route = route;
	d->context = context;
	d->next = domain_services;
	domain_services = d;
	return 0;
}

void pl_router_remove_domain(const char *domain)
{
	for (struct domain_service **link = &domain_services; *link; link = &(*link)->next) {
		if (strcmp((*link)->domain, domain) == 0) {
			struct domain_service *gone = *link;
			*link = gone->next;
			free(gone->domain);
			free(gone);
			return;
		}
	}
}

bool pl_router_is_local_domain(const char *domain)
{
	return pl_server_find_host(domain) || find_domain_service(domain);
}

void pl_router_set_remote(pl_domain_route_fn *route, void *context)
{
	remote_route = route;
	remote_context = context;
}

struct pl_session *pl_router_find(const char *full_jid)
{
	char *slash = strchr(full_jid, '/');
	if (!slash)
		return NULL;
	char *bare = pl_strndup(full_jid, (size_t)(slash - full_jid));
	struct user_entry *u = find_user(bare, false);
	free(bare);
	for (struct pl_session *s = u ? u->sessions : NULL; s; s = s->next_of_user)
		if (strcmp(s->full_jid, full_jid) == 0)
			return s;
	return NULL;
}

struct pl_session *pl_router_sessions_of(const char *bare_jid)
{
	struct user_entry *u = find_user(bare_jid, false);
	return u ? u->sessions : NULL;
}

void pl_router_each_user(void (*fn)(void *arg, const char *bare_jid, struct pl_session *sessions),
			 void *arg)
{
	for (size_t b = 0; b < USER_BUCKETS; b++)
		for (struct user_entry *u = buckets[b]; u; u = u->next)
			fn(arg, u->bare_jid, u->sessions);
}

size_t pl_router_session_count(void)
{
	return session_total;
}

void pl_router_bind(struct pl_session *session)
{
	struct pl_session *old = pl_router_find(session->full_jid);
	if (old) {
		pl_log(PL_LOG_INFO, "router", "%s logged in again: replacing the older session",
		       session->full_jid);
		old->replaced(old);
		/* replaced() unbinds; make sure even if it did not. */
		if (pl_router_find(session->full_jid) == old)
			pl_router_unbind(old);
	}
	struct user_entry *u = find_user(session->bare_jid, true);
	static uint64_t session_counter;
	session->id = ++session_counter;
	session->next_of_user = u->sessions;
	u->sessions = session;
	session_total++;
	pl_server.session_count = session_total;
}

void pl_router_unbind(struct pl_session *session)
{
	struct user_entry *u = find_user(session->bare_jid, false);
	if (!u)
		return;
	for (struct pl_session **link = &u->sessions; *link; link = &(*link)->next_of_user) {
		if (*link == session) {
			*link = session->next_of_user;
			session->next_of_user = NULL;
			session_total--;
			break;
		}
	}
	if (!u->sessions)
		drop_user(u);
	pl_server.session_count = session_total;
	pl_hooks_fire("session/unbound", session);
}

struct pl_xnode *pl_iq_result(const struct pl_xnode *iq)
{
	struct pl_xnode *reply = pl_xnode_new("iq", PL_NS_CLIENT);
	pl_xnode_set_attr(reply, "type", "result");
	const char *id = pl_xnode_attr(iq, "id");
	pl_xnode_set_attr(reply, "id", id ? id : "");
	const char *from = pl_xnode_attr(iq, "from"), *to = pl_xnode_attr(iq, "to");
	if (from)
		pl_xnode_set_attr(reply, "to", from);
	if (to)
		pl_xnode_set_attr(reply, "from", to);
	return reply;
}

void pl_route_error(const struct pl_xnode *stanza, enum pl_stanza_error condition,
		    const char *text)
{
	const char *type = pl_xnode_attr(stanza, "type");
	if (type && strcmp(type, "error") == 0)
		return;
	if (strcmp(stanza->name, "iq") == 0 && type &&
	    (strcmp(type, "result") == 0))
		return;
	const char *from = pl_xnode_attr(stanza, "from");
	if (!from)
		return;
	/* RFC 6120 8.3.1: the error carries the original payload's element
	 * name and attributes; we return the stanza itself with its children. */
	struct pl_xnode *error = pl_xnode_copy(stanza);
	const char *to = pl_xnode_attr(stanza, "to");
	char *original_from = pl_strdup(from);
	char *original_to = to ? pl_strdup(to) : NULL;
	pl_xnode_set_attr(error, "to", original_from);
	pl_xnode_set_attr(error, "from", original_to ? original_to : pl_server.hosts[0].name);
	pl_xnode_set_attr(error, "type", "error");
	struct pl_xnode *e = pl_xnode_add_element(error, "error", PL_NS_CLIENT);
	pl_xnode_set_attr(e, "type", pl_stanza_error_type(condition));
	pl_xnode_add_element(e, pl_stanza_error_name(condition), PL_NS_STANZAS);
	if (text) {
		struct pl_xnode *t = pl_xnode_add_element(e, "text", PL_NS_STANZAS);
		pl_xnode_set_attr(t, "xml:lang", "en");
		pl_xnode_add_text(t, text, strlen(text));
	}
	pl_route(error, NULL);
	pl_xnode_unref(&error);
	free(original_from);
	free(original_to);
}

static void deliver(struct pl_session *s, const struct pl_xnode *stanza)
{
	s->deliver(s, stanza);
}

/* The server answers IQs addressed to it (or to a user's bare JID) through
 * the hooks "iq/<type>/<namespace of the payload>". */
static void handle_iq_for_server(struct pl_xnode *stanza, struct pl_session *origin)
{
	const char *type = pl_xnode_attr(stanza, "type");
	if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)) {
		if (!type || (strcmp(type, "result") != 0 && strcmp(type, "error") != 0)) {
			pl_route_error(stanza, PL_ERR_BAD_REQUEST, "IQ type must be get or set");
			return;
		}
		/* An answer to a request the server (or a module acting for an
		 * account) sent: modules that asked match it by id. */
		struct pl_iq_event data = { stanza, origin };
		pl_hooks_fire("iq/response", &data);
		return;
	}
	struct pl_xnode *payload = pl_xnode_first_element(stanza);
	if (!payload || pl_xnode_next_element(payload)) {
		pl_route_error(stanza, PL_ERR_BAD_REQUEST, "an IQ get/set has exactly one child");
		return;
	}
	char *event = pl_asprintf("iq/%s/%s", type, payload->ns ? payload->ns : "");
	struct pl_iq_event data = { stanza, origin };
	int result = pl_hooks_fire(event, &data);
	free(event);
	if (PL_HOOK_IS_ERROR(result))
		pl_route_error(stanza, PL_HOOK_ERROR_CONDITION(result), NULL);
	else if (result != PL_HANDLED)
		pl_route_error(stanza, PL_ERR_SERVICE_UNAVAILABLE, NULL);
}

/* RFC 6121 8.5.2: a message to a bare JID. */
static void message_to_bare(struct pl_xnode *stanza, const char *bare)
{
	const char *type = pl_xnode_attr(stanza, "type");
	if (type && strcmp(type, "groupchat") == 0) {
		pl_route_error(stanza, PL_ERR_SERVICE_UNAVAILABLE, NULL);
		return;
	}
	int best = -1;
	for (struct pl_session *s = pl_router_sessions_of(bare); s; s = s->next_of_user)
		if (s->available && s->priority >= 0 && s->priority > best)
			best = s->priority;
	if (best < 0) {
		/* No available resource of non-negative priority: offline
		 * storage may take it (RFC 6121 8.5.2.1.1); otherwise the sender
		 * learns that nothing took the message. */
		struct pl_offline_event event = { stanza, bare };
		if (pl_hooks_fire("message/offline", &event) == PL_HANDLED)
			return;
		if (!type || strcmp(type, "error") != 0)
			pl_route_error(stanza, PL_ERR_SERVICE_UNAVAILABLE,
				       "the recipient is offline");
		return;
	}
	bool to_all = type && strcmp(type, "chat") == 0;
	struct pl_session *delivered[64];
	size_t count = 0;
	for (struct pl_session *s = pl_router_sessions_of(bare); s; s = s->next_of_user) {
		if (!s->available || s->priority < 0)
			continue;
		if (to_all || s->priority == best) {
			deliver(s, stanza);
			if (count < PL_ARRAY_LEN(delivered))
				delivered[count++] = s;
			if (!to_all)
				break;
		}
	}
	struct pl_delivered_event event = { stanza, bare, delivered, count };
	pl_hooks_fire("message/delivered", &event);
}

static bool subscription_or_probe(const struct pl_xnode *presence)
{
	const char *type = pl_xnode_attr(presence, "type");
	return type && (strcmp(type, "subscribe") == 0 || strcmp(type, "subscribed") == 0 ||
			strcmp(type, "unsubscribe") == 0 || strcmp(type, "unsubscribed") == 0 ||
			strcmp(type, "probe") == 0);
}

void pl_route(struct pl_xnode *stanza, struct pl_session *origin)
{
	const char *to = pl_xnode_attr(stanza, "to");
	struct pl_jid jid;
	if (!to || pl_jid_parse(to, &jid) != PL_JID_OK) {
		pl_route_error(stanza, PL_ERR_JID_MALFORMED, NULL);
		return;
	}
	pl_route_parsed(stanza, origin, &jid, NULL);
	pl_jid_free(&jid);
}

void pl_route_parsed(struct pl_xnode *stanza, struct pl_session *origin,
		     const struct pl_jid *to_jid, const struct pl_shared_stanza *shared)
{
	const struct pl_jid jid = *to_jid;
	bool is_iq = strcmp(stanza->name, "iq") == 0;
	bool is_message = strcmp(stanza->name, "message") == 0;
	/* Policy on what a local user sends (blocking, later privacy rules). */
	if (origin) {
		struct pl_route_event event = { stanza, origin, &jid };
		if (pl_hooks_fire("stanza/out", &event) == PL_HANDLED)
			goto out;
	}
	if (!pl_server_find_host(jid.domain)) {
		struct domain_service *service = find_domain_service(jid.domain);
		if (service)
			service->route(service->context, stanza, origin, &jid);
		else if (remote_route)
			remote_route(remote_context, stanza, origin, &jid);
		else
			pl_route_error(stanza, PL_ERR_REMOTE_SERVER_NOT_FOUND,
				       "federation is not enabled");
		goto out;
	}
	if (!jid.local) {
		if (is_iq && !jid.resource)
			handle_iq_for_server(stanza, origin);
		else if (!is_iq && strcmp(stanza->name, "presence") != 0)
			pl_route_error(stanza, PL_ERR_SERVICE_UNAVAILABLE, NULL);
		goto out;
	}
	{
		/* ... and on what reaches one, before anything else sees it. */
		struct pl_route_event event = { stanza, origin, &jid };
		if (pl_hooks_fire("stanza/in", &event) == PL_HANDLED)
			goto out;
	}
	if (!is_iq && !is_message && subscription_or_probe(stanza)) {
		/* RFC 6121 3 and 4.3: these concern the account, whichever
		 * resource they name. */
		struct pl_presence_event event = { stanza, origin, jid.bare, false };
		if (pl_hooks_fire("presence/in", &event) == PL_HANDLED)
			goto out;
	}
	if (jid.resource) {
		struct pl_session *target = pl_router_find(jid.full);
		if (target) {
			if (shared && target->deliver_shared)
				target->deliver_shared(target, stanza, shared);
			else
				deliver(target, stanza);
			if (is_message) {
				struct pl_delivered_event event = { stanza, jid.bare, &target, 1 };
				pl_hooks_fire("message/delivered", &event);
			}
		} else if (is_message) {
			message_to_bare(stanza, jid.bare);
		} else if (is_iq) {
			pl_route_error(stanza, PL_ERR_SERVICE_UNAVAILABLE, NULL);
		}
		/* Presence to a gone resource is dropped silently (RFC 6121 8.5.3.2.1). */
		goto out;
	}
	if (is_message) {
		message_to_bare(stanza, jid.bare);
	} else if (is_iq) {
		handle_iq_for_server(stanza, origin);
	} else {
		/* Presence to a bare JID: every available resource (subscriptions
		 * and rosters arrive with the contacts work). */
		for (struct pl_session *s = pl_router_sessions_of(jid.bare); s; s = s->next_of_user)
			if (s->available && s != origin)
				deliver(s, stanza);
	}
out:
	return;
}
