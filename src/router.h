/* The router: the one place that decides where a stanza goes (RFC 6120
 * section 10, RFC 6121 section 8). It keeps the table of bound resources
 * (bare JID -> sessions), stamps nothing itself (the stream front ends
 * stamp `from`), delivers to sessions, hands stanzas addressed to the
 * server to the modules' hooks ("iq/get/<namespace>", ...), and answers
 * with the RFC's stanza errors when nothing can take a stanza. A stream
 * front end (c2s today; s2s and components later) fills a pl_session and
 * binds it. Domains that are not one of our hosts go to a registered
 * domain service (a module's service such as MUC, a connected component)
 * or else to the remote route (s2s) when one is set. Network thread only. */
#ifndef PL_ROUTER_H
#define PL_ROUTER_H

#include <stdbool.h>

#include "jid.h"
#include "parley/module.h"
#include "xml/xnode.h"

#define PL_NS_CLIENT "jabber:client"
#define PL_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* One stanza serialized once for many recipients (a room's fan-out):
 * `bytes` is its XML without a 'to' attribute; a recipient's copy is
 * bytes[0, to_at) + " to='JID'" + bytes[to_at, len). */
struct pl_shared_stanza {
	const char *bytes;
	size_t len;
	size_t to_at;
};

struct pl_session {
	char *full_jid;          /* owned; normalised user@host/resource */
	char *bare_jid;          /* owned */
	const char *host;        /* the host's name (owned by pl_server) */
	uint64_t id;             /* unique for the process's life, set at bind:
				  * tells a later session on the same JID apart */
	int priority;            /* of the last available presence */
	bool available;          /* sent initial presence, not yet unavailable */
	/* The last broadcast available presence (without 'to'), answered to
	 * probes; owned reference, NULL while unavailable. */
	struct pl_xnode *presence;
	/* Asked for the roster: an "interested resource" that gets roster
	 * pushes (RFC 6121 2.1.6). */
	bool roster_requested;
	/* The connection is lost and the session waits to be resumed
	 * (XEP-0198): messages for it go to the offline queue. */
	bool suspended;
	/* Writes the stanza to the client (borrowed: serialize, don't keep). */
	void (*deliver)(struct pl_session *session, const struct pl_xnode *stanza);
	/* The same for a stanza serialized once for many recipients (may be
	 * NULL: deliver is used). */
	void (*deliver_shared)(struct pl_session *session, const struct pl_xnode *stanza,
			       const struct pl_shared_stanza *shared);
	/* Another login took this resource: end this stream with <conflict/>;
	 * it must call pl_router_unbind. */
	void (*replaced)(struct pl_session *session);
	struct pl_session *next_of_user; /* router's list; not for the owner */
};

/* Presence events. "presence/broadcast": a session sent presence without
 * 'to' (or ended: an implicit unavailable), its state is already updated,
 * `initial` says it was unavailable before; handlers send it to contacts
 * and return PL_CONTINUE (c2s itself then serves the user's own
 * resources). "presence/out": a session sends a subscription presence
 * (subscribe, subscribed, unsubscribe, unsubscribed) with 'to' stamped
 * with its full JID. "presence/in": the router has a subscription
 * presence or a probe for a local user (`to` is that user's bare JID).
 * For out and in, PL_HANDLED means the handler took care of routing;
 * otherwise the stanza goes on as the RFC's plain routing says. */
struct pl_presence_event {
	struct pl_xnode *stanza;        /* borrowed */
	struct pl_session *session;     /* the local sender, or NULL */
	const char *to;                 /* presence/in: the local bare JID */
	bool initial;
};

/* "roster/subscribed": does `contact` receive `owner`'s presence (the
 * owner's roster item has subscription from or both)? The roster module
 * sets `subscribed`; modules that reveal presence-like data (last
 * activity, PEP) ask before answering a contact. */
struct pl_subscription_query {
	const char *owner;              /* local bare JID */
	const char *contact;            /* bare JID */
	bool subscribed;
	bool in_roster;                 /* listed in the owner's roster at all */
};

/* "message/offline": a message for a local account with no available
 * resource. A handler that stores it (or bounces it itself) returns
 * PL_HANDLED; otherwise the router bounces it with service-unavailable. */
struct pl_offline_event {
	struct pl_xnode *stanza;        /* borrowed */
	const char *to;                 /* the recipient's bare JID */
};

/* "message/delivered": a message reached these sessions of a local
 * account (carbons copy it to the others). */
struct pl_delivered_event {
	const struct pl_xnode *stanza;  /* borrowed */
	const char *to;                 /* the account's bare JID */
	struct pl_session *const *sessions;
	size_t count;
};

/* "user/display-name": a human name for an account (the vCard's FN or
 * NICKNAME), for contact search. A handler sets `name` (malloc'd, the
 * caller frees) if it is still NULL. */
struct pl_display_name {
	const char *bare_jid;
	char *name;
};

/* "stanza/out" (a local session sends, fired for every routed stanza
 * with an origin) and "stanza/in" (a stanza is about to reach a local
 * user's account): a handler returning PL_HANDLED has dealt with it
 * (dropped or bounced it) and routing stops. */
struct pl_route_event {
	struct pl_xnode *stanza;        /* borrowed */
	struct pl_session *origin;      /* the local sender, or NULL */
	const struct pl_jid *to;        /* the parsed destination */
};

/* "push/wake": something kept for an account deserves a push
 * notification although it is no message to it (mod_muc: a mention of an
 * absent room member). mod_push notifies the devices that are not live. */
struct pl_push_wake {
	const char *bare_jid;
	const char *sender;             /* who said it (a room occupant's JID) */
	const char *body;               /* may be NULL */
};

/* "bind2/inline": a client bound with XEP-0386 Bind2 and asked for
 * features inline (in `bind`, its <bind xmlns='urn:xmpp:bind:0'/>); a
 * module enables its own (carbons) for `session` and may append its
 * answer to `answer` (inside <bound/>). "stream-features/bind2" (data: a
 * struct pl_buf *) lets modules list such features as <feature var=.../>. */
struct pl_bind2_event {
	struct pl_session *session;
	const struct pl_xnode *bind;
	struct pl_buf *answer;
};

/* "disco/items": the server `host` is asked for its items (XEP-0030);
 * handlers add <item jid=.../> children to `query` and continue. */
struct pl_disco_items {
	const char *host;
	struct pl_xnode *query;
};

/* What iq hooks receive as event data: "iq/<type>/<namespace>" for
 * requests to the server or an account's bare JID, and "iq/response" for
 * results and errors addressed there (answers to requests modules sent). */
struct pl_iq_event {
	struct pl_xnode *stanza;        /* borrowed */
	struct pl_session *session;     /* the sender, NULL if not local */
};

void pl_router_init(void);
void pl_router_shutdown(void);
/* Adds a bound resource; an existing session on the same full JID is
 * replaced first. */
void pl_router_bind(struct pl_session *session);
/* c2s fires "session/resumed" (data: the session) when a stream resumes
 * a session (XEP-0198): modules deliver what they kept for it meanwhile. */
/* Removes it and fires "session/unbound" (data: the session, no longer in
 * the table) so that modules can drop per-user state. */
void pl_router_unbind(struct pl_session *session);
struct pl_session *pl_router_find(const char *full_jid);
/* Every session of a bare JID (linked through next_of_user). */
struct pl_session *pl_router_sessions_of(const char *bare_jid);
size_t pl_router_session_count(void);
/* Calls fn for every account with bound sessions (fn must not bind or
 * unbind: collect first, act after). */
void pl_router_each_user(void (*fn)(void *arg, const char *bare_jid, struct pl_session *sessions),
			 void *arg);

/* A domain served in this process by something other than the user
 * tables: a module's service (conference.<host>) or a connected
 * component. `route` receives every stanza addressed to the domain or to
 * a JID at it, after "stanza/out"; it borrows the stanza and owns the
 * answer (errors included). */
typedef void pl_domain_route_fn(void *context, struct pl_xnode *stanza,
				struct pl_session *origin, const struct pl_jid *to);
/* 0, or -EEXIST when the domain is a host or already served. The domain
 * must be normalised; the router copies it. */
int pl_router_add_domain(const char *domain, pl_domain_route_fn *route, void *context);
void pl_router_remove_domain(const char *domain);
/* Is `domain` one of ours (a host or a domain service)? */
bool pl_router_is_local_domain(const char *domain);
/* Stanzas for a domain that is neither a host nor a domain service go to
 * `route` (federation); NULL: they bounce with remote-server-not-found. */
void pl_router_set_remote(pl_domain_route_fn *route, void *context);

/* Routes a stanza whose from/to are set (from a session or the server).
 * Borrows the stanza. */
void pl_route(struct pl_xnode *stanza, struct pl_session *origin);
/* pl_route for a destination parsed already (the stanza's 'to' says the
 * same: hooks read it), with the stanza's shared serialization (may be
 * NULL) when one stanza goes to many recipients: each then costs no JID
 * parse and no serialization. */
void pl_route_parsed(struct pl_xnode *stanza, struct pl_session *origin, const struct pl_jid *to,
		     const struct pl_shared_stanza *shared);
/* Bounces `stanza` back to its sender as a stanza error (RFC 6120 8.3);
 * errors are never answered with errors. */
void pl_route_error(const struct pl_xnode *stanza, enum pl_stanza_error condition,
		    const char *text);
/* The reply skeleton of an IQ: type result, to = from, from = to, same id. */
struct pl_xnode *pl_iq_result(const struct pl_xnode *iq);
const char *pl_stanza_error_name(enum pl_stanza_error condition);
/* The error type RFC 6120 8.3.3 pairs with a condition (cancel, modify...). */
const char *pl_stanza_error_type(enum pl_stanza_error condition);

#endif
