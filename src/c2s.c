/* Client streams. Each connection owns an expat stream parser and, once
 * authenticated and bound, a pl_session in the router. Negotiation follows
 * RFC 6120 section 4-7: features on each stream header; STARTTLS (required
 * unless the configuration allows plaintext on loopback); SASL with the
 * mechanisms of sasl.c (PLAIN only inside TLS); then bind and the optional
 * session. Before authentication only negotiation elements are allowed
 * (anything else is a not-authorized stream error). Every stream error is
 * logged with its condition and the peer address. */
#include "c2s.h"
#include "c2s_transport.h"
#include "ack.h"
#include "counters.h"
#include "accounts.h"
#include "datetime.h"
#include "hooks.h"
#include "jid.h"
#include "log.h"
#include "net/conn.h"
#include "net/listener.h"
#include "router.h"
#include "sasl.h"
#include "scram.h"
#include "server.h"
#include "util.h"
#include "xml/stream.h"

#include <errno.h>
#include <malloc.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_REGISTER "jabber:iq:register"
#define NS_SM "urn:xmpp:sm:3"
#define NS_CSI "urn:xmpp:csi:0"
#define NS_SASL2 "urn:xmpp:sasl:2"
#define NS_BIND2 "urn:xmpp:bind:0"
#define NS_FAST "urn:xmpp:fast:0"
#define MAX_HELD 1000

struct c2s_conf {
	char *address;
	int64_t port;
	int64_t tls_port;
	bool require_tls;
	bool allow_plaintext_loopback;
	uint64_t max_stanza_size;
	int64_t negotiation_timeout_ms;
	int64_t max_resources;
	int64_t auth_backoff_base_ms;
	int64_t auth_backoff_max_ms;
	int64_t ping_idle_ms;
	int64_t ping_timeout_ms;
	uint64_t max_bytes_per_second;
	int64_t max_stanzas_per_second;
	int64_t stanza_burst;
	int64_t resumption_timeout_ms;
	int64_t max_unacked;
	int64_t fast_lifetime_ms;
};

static const struct pl_option c2s_options[] = {
	{ "address", PL_OPT_STRING, "*", 0, 0, NULL, offsetof(struct c2s_conf, address),
	  "listen address" },
	{ "port", PL_OPT_INT, "5222", 0, 65535, NULL, offsetof(struct c2s_conf, port),
	  "STARTTLS port, 0 for none" },
	{ "tls-port", PL_OPT_INT, "5223", 0, 65535, NULL, offsetof(struct c2s_conf, tls_port),
	  "direct TLS port (XEP-0368), 0 for none" },
	{ "require-tls", PL_OPT_BOOL, "true", 0, 0, NULL, offsetof(struct c2s_conf, require_tls),
	  NULL },
	{ "allow-plaintext-loopback", PL_OPT_BOOL, "false", 0, 0, NULL,
	  offsetof(struct c2s_conf, allow_plaintext_loopback), NULL },
	{ "max-stanza-size", PL_OPT_SIZE, "256KiB", 4096, 64 << 20, NULL,
	  offsetof(struct c2s_conf, max_stanza_size), NULL },
	{ "negotiation-timeout", PL_OPT_DURATION, "30s", 1000, 600000, NULL,
	  offsetof(struct c2s_conf, negotiation_timeout_ms), NULL },
	{ "max-resources", PL_OPT_INT, "32", 1, 1000, NULL,
	  offsetof(struct c2s_conf, max_resources), NULL },
	{ "auth-backoff-base", PL_OPT_DURATION, "500ms", 0, 60000, NULL,
	  offsetof(struct c2s_conf, auth_backoff_base_ms), "delay after a first failed login" },
	{ "auth-backoff-max", PL_OPT_DURATION, "30s", 0, 3600000, NULL,
	  offsetof(struct c2s_conf, auth_backoff_max_ms), "cap of the doubling delay" },
	{ "max-bytes-per-second", PL_OPT_SIZE, "128KiB", 0, 1 << 30, NULL,
	  offsetof(struct c2s_conf, max_bytes_per_second),
	  "read rate of one client connection (0: unlimited); files go over HTTP upload" },
	{ "max-stanzas-per-second", PL_OPT_INT, "100", 0, 1000000, NULL,
	  offsetof(struct c2s_conf, max_stanzas_per_second),
	  "stanzas one session may send per second on average (0: unlimited)" },
	{ "stanza-burst", PL_OPT_INT, "400", 1, 10000000, NULL,
	  offsetof(struct c2s_conf, stanza_burst),
	  "stanzas a quiet session may send at once above that rate" },
	{ "resumption-timeout", PL_OPT_DURATION, "5m", 1000, 86400000, NULL,
	  offsetof(struct c2s_conf, resumption_timeout_ms),
	  "how long a dropped stream-management session waits to be resumed" },
	{ "max-unacked", PL_OPT_INT, "10000", 16, 1000000, NULL,
	  offsetof(struct c2s_conf, max_unacked),
	  "stanzas sent to a client and not yet acknowledged, at most" },
	{ "fast-token-lifetime", PL_OPT_DURATION, "30d", 60000, 365LL * 86400000, NULL,
	  offsetof(struct c2s_conf, fast_lifetime_ms),
	  "how long a XEP-0484 FAST token stays valid without being used" },
	{ "ping-idle", PL_OPT_DURATION, "5m", 1000, 86400000, NULL,
	  offsetof(struct c2s_conf, ping_idle_ms), "ping a client silent for this long" },
	{ "ping-timeout", PL_OPT_DURATION, "1m", 1000, 3600000, NULL,
	  offsetof(struct c2s_conf, ping_timeout_ms), "close it when it stays silent this long more" },
	{ NULL }
};

enum c2s_state { WAIT_HEADER, NEGOTIATING, BOUND, CLOSING };

struct pl_c2s {
	/* The connection carrying the stream (c2s_transport.h); NULL while
	 * the session hibernates. The transport owns itself and reports its
	 * end through pl_c2s_transport_gone; drop() releases it early. */
	const struct pl_c2s_transport *ops;
	void *t;
	struct pl_sasl *sasl;           /* owned while SASL runs */
	struct pl_session session;      /* in the router once bound */
	enum c2s_state state;
	const struct pl_host *host;
	char *username;                 /* localpart after SASL */
	char stream_id[33];             /* new for every stream header (RFC 6120 4.7.3) */
	char log_id[24];                /* stable for the connection, for log lines */
	uint64_t number;                /* the same, as a number (pl_c2s_reply) */
	bool authenticated;
	bool bound;
	bool plus_offered;
	/* XEP-0388: this authentication runs in SASL2, and its <authenticate/>
	 * (owned copy) carries what to do inline on success (Bind2, resume). */
	bool sasl2;
	struct pl_xnode *sasl2_request;
	struct event *delayed_failure;  /* pending back-off timer, owned */
	int64_t last_heard_ms;          /* when the client last sent anything */
	int64_t pinged_ms;              /* when we pinged it, 0 when not waiting */
	/* Stanza token bucket: refilled at max-stanzas-per-second up to
	 * stanza-burst; below zero, reading pauses until it is paid back. */
	double stanza_tokens;
	int64_t tokens_at_ms;
	int64_t throttle_logged_ms;
	/* Who got directed presence (RFC 6121 4.6): they get our unavailable
	 * presence when the session ends. Owned strings; bounded. */
	char **directed;
	size_t directed_count, directed_cap;
	char *delayed_condition;        /* the <failure/> it will send */
	/* XEP-0198 stream management. Counters wrap at 2^32 as the XEP says. */
	bool sm_enabled, sm_resumable;
	bool sm_ack_requested;          /* our <r/> awaits an <a/> */
	bool sm_ack_wanted;             /* the client's <r/> was answered short */
	char sm_id[33];                 /* resumption id ("" when not resumable) */
	uint32_t sm_received;           /* client stanzas handled */
	uint32_t sm_sent;               /* stanzas sent since enable */
	uint32_t sm_acked;              /* the client's last h */
	struct pl_ack_tracker *tracker; /* durable count of sm_received; owned ref */
	struct unacked *unacked, *unacked_tail; /* owned, oldest first */
	size_t unacked_count;
	struct event *hibernation;      /* connection lost, waiting for a resume; owned */
	int64_t sm_max_ms;              /* resumption timeout granted */
	/* XEP-0352: while the client says it is inactive, presence updates
	 * and other stanzas nobody waits for are held (the latest presence
	 * per sender only) and go out with the next urgent stanza. Owned. */
	bool csi_inactive;
	struct held *held, *held_tail;
	size_t held_count;
	struct pl_c2s *prev, *next;
};

/* A stanza held back for an inactive client. */
struct held {
	struct held *next;
	char *from;             /* presence: its sender, to keep only the latest; owned */
	size_t len;
	char data[];
};

/* A stanza sent but not yet acknowledged: its bytes, to resend on resume
 * or to route elsewhere if the session ends. */
struct unacked {
	struct unacked *next;
	uint32_t seq;
	size_t len;
	char data[];
};

/* Failed logins per client address: each failure doubles the delay
 * before the next <failure/> is sent, so guessing passwords gets slow for
 * the guesser only (other connections are not delayed: it is a timer, not
 * a sleep). Entries are forgotten after ten quiet minutes or a success. */
struct failure_record {
	char address[46];
	unsigned count;
	int64_t last_ms;
};
#define FAILURE_TABLE_SIZE 4096
#define FAILURE_MEMORY_MS (10 * 60 * 1000)
static struct failure_record failure_table[FAILURE_TABLE_SIZE];

static struct failure_record *failure_slot(const char *address, bool create)
{
	uint32_t h = pl_hash_string(address);
	/* Open addressing over a few slots; the oldest one is reused, so the
	 * table stays bounded under a flood of addresses. */
	struct failure_record *oldest = NULL;
	int64_t now = pl_now_ms();
	for (unsigned probe = 0; probe < 8; probe++) {
		struct failure_record *r = &failure_table[(h + probe) % FAILURE_TABLE_SIZE];
		if (r->count && now - r->last_ms > FAILURE_MEMORY_MS)
			r->count = 0;
		if (r->count && strcmp(r->address, address) == 0)
			return r;
		/* Prefer an empty slot, then the least recently used one. */
		if (!oldest || (oldest->count && (!r->count || r->last_ms < oldest->last_ms)))
			oldest = r;
	}
	if (!create)
		return NULL;
	memset(oldest, 0, sizeof(*oldest));
	snprintf(oldest->address, sizeof(oldest->address), "%s", address);
	return oldest;
}

static struct c2s_conf conf;
/* XEP-0484 tokens: "user@host\0user-agent-id" -> <fast/> record (the
 * current and the previous token, expiry, replay counter). Under the
 * account's prefix, so deleting the account deletes them. */
static struct pl_store_space *fast_space;
static struct pl_listener *plain_listener, *tls_listener;
static struct event_base *loop;
static struct pl_c2s *streams;
static struct pl_xml_limits limits;
static struct event *keepalive_timer;
/* Every few seconds, parsers of streams that went quiet are freed
 * (pl_xml_stream_hibernate): most connections are idle most of the time,
 * and expat's ~11 KB would be most of what an idle session costs. */
static struct event *parser_sweep;
#define PARSER_IDLE_MS 2000

/* Every write is one whole element, so that transports with their own
 * framing can frame it; nothing is written while hibernating. */
static void emit(struct pl_c2s *c, const char *data, size_t len)
{
	if (c->t)
		c->ops->element(c->t, data, len);
}

static void emit_buf(struct pl_c2s *c, const struct pl_buf *out)
{
	emit(c, out->data, out->len);
}

static void write_text(struct pl_c2s *c, const char *text)
{
	emit(c, text, strlen(text));
}

static void write_node(struct pl_c2s *c, const struct pl_xnode *n)
{
	struct pl_buf out = { 0 };
	pl_xnode_serialize(n, PL_NS_CLIENT, &out);
	emit_buf(c, &out);
	pl_buf_free(&out);
}

static const char *peer_address(struct pl_c2s *c)
{
	return c->t ? c->ops->peer_address(c->t) : "(hibernating)";
}

static bool is_secure(struct pl_c2s *c)
{
	return c->t && c->ops->is_secure(c->t);
}

static SSL *ssl_of(struct pl_c2s *c)
{
	return c->t ? c->ops->ssl(c->t) : NULL;
}

static void stream_error(struct pl_c2s *c, const char *condition, const char *text);
static void drop_held(struct pl_c2s *c);

/* ---- stream management (XEP-0198) -------------------------------------------- */

/* Every stanza to the client goes through here. With stream management
 * it is numbered and kept until the client acknowledges it; while the
 * connection is lost (hibernation) it is only kept. */
static void send_stanza_bytes(struct pl_c2s *c, const char *data, size_t len)
{
	if (!c->sm_enabled) {
		emit(c, data, len);
		return;
	}
	struct unacked *u = pl_malloc(sizeof(*u) + len);
	u->next = NULL;
	u->seq = ++c->sm_sent;
	u->len = len;
	memcpy(u->data, data, len);
	if (c->unacked_tail)
		c->unacked_tail->next = u;
	else
		c->unacked = u;
	c->unacked_tail = u;
	if (++c->unacked_count > (size_t)conf.max_unacked && c->hibernation) {
		/* Not from inside a delivery: the router may be iterating. */
		event_active(c->hibernation, EV_TIMEOUT, 0);
	}
	if (!c->t)
		return;
	emit(c, data, len);
	if (!c->sm_ack_requested) {
		write_text(c, "<r xmlns='" NS_SM "'/>");
		c->sm_ack_requested = true;
	}
}

static void send_stanza(struct pl_c2s *c, const struct pl_xnode *n)
{
	struct pl_buf out = { 0 };
	pl_xnode_serialize(n, PL_NS_CLIENT, &out);
	send_stanza_bytes(c, out.data, out.len);
	pl_buf_free(&out);
}

static void send_ack(struct pl_c2s *c)
{
	char a[80];
	snprintf(a, sizeof(a), "<a xmlns='" NS_SM "' h='%u'/>", pl_ack_durable(c->tracker));
	write_text(c, a);
}

/* The durable count moved on after a commit: a client that asked gets
 * the news without asking again. */
static void on_durable(void *owner, uint32_t durable)
{
	struct pl_c2s *c = owner;
	if (c->t && c->sm_ack_wanted && c->state == BOUND) {
		send_ack(c);
		if (durable == c->sm_received)
			c->sm_ack_wanted = false;
	}
}

static void free_unacked(struct pl_c2s *c)
{
	while (c->unacked) {
		struct unacked *u = c->unacked;
		c->unacked = u->next;
		free(u);
	}
	c->unacked_tail = NULL;
	c->unacked_count = 0;
}

/* The client has handled h stanzas: forget them. False when h claims
 * more than was sent. */
static bool acknowledge(struct pl_c2s *c, uint32_t h)
{
	if (pl_ack_after(h, c->sm_sent))
		return false;
	while (c->unacked && !pl_ack_after(c->unacked->seq, h)) {
		struct unacked *u = c->unacked;
		c->unacked = u->next;
		free(u);
		c->unacked_count--;
	}
	if (!c->unacked)
		c->unacked_tail = NULL;
	c->sm_acked = h;
	c->sm_ack_requested = false;
	return true;
}

/* The session ends for good: what the client never acknowledged must not
 * vanish. Messages are routed again (to another resource or the offline
 * queue, now that this resource is gone), requests get an error. Messages
 * that came from the offline queue are still in it and are skipped. */
static void reroute_unacked(struct pl_c2s *c)
{
	size_t rerouted = 0, host_len = c->host ? strlen(c->host->name) : 0;
	for (struct unacked *u = c->unacked; u; u = u->next) {
		struct pl_xnode *stanza = pl_xml_parse_element(u->data, u->len, PL_NS_CLIENT);
		if (!stanza)
			continue;
		const char *type = pl_xnode_attr(stanza, "type");
		if (strcmp(stanza->name, "message") == 0) {
			struct pl_xnode *delay = pl_xnode_find(stanza, "delay", "urn:xmpp:delay");
			const char *delay_from = delay ? pl_xnode_attr(delay, "from") : NULL;
			bool from_offline = delay_from && host_len &&
					    strcmp(delay_from, c->host->name) == 0;
			if (!from_offline &&
			    (!type || (strcmp(type, "error") != 0 && strcmp(type, "groupchat") != 0))) {
				pl_route(stanza, NULL);
				rerouted++;
			}
		} else if (strcmp(stanza->name, "iq") == 0 && type &&
			   (strcmp(type, "get") == 0 || strcmp(type, "set") == 0)) {
			pl_route_error(stanza, PL_ERR_SERVICE_UNAVAILABLE, "the recipient went away");
		}
		pl_xnode_unref(&stanza);
	}
	if (rerouted)
		pl_log_session(PL_LOG_INFO, "c2s", c->log_id,
			       "%zu unacknowledged messages routed again (other resource or offline)",
			       rerouted);
	free_unacked(c);
}

static void unlink_stream(struct pl_c2s *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else if (streams == c)
		streams = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

#define MAX_DIRECTED 256

static void forget_directed(struct pl_c2s *c, const char *to)
{
	for (size_t i = 0; i < c->directed_count; i++) {
		if (strcmp(c->directed[i], to) == 0) {
			free(c->directed[i]);
			c->directed[i] = c->directed[--c->directed_count];
			return;
		}
	}
}

static void remember_directed(struct pl_c2s *c, const char *to)
{
	forget_directed(c, to);
	if (c->directed_count >= MAX_DIRECTED)
		return;
	pl_grow((void **)&c->directed, &c->directed_cap, c->directed_count + 1,
		sizeof(*c->directed));
	c->directed[c->directed_count++] = pl_strdup(to);
}

static void free_stream(struct pl_c2s *c)
{
	pl_xnode_unref(&c->sasl2_request);
	drop_held(c);
	free_unacked(c);
	pl_ack_tracker_detach(c->tracker);
	if (c->hibernation)
		event_free(c->hibernation);
	for (size_t i = 0; i < c->directed_count; i++)
		free(c->directed[i]);
	free(c->directed);
	if (c->delayed_failure)
		event_free(c->delayed_failure);
	free(c->delayed_condition);
	if (c->bound) {
		pl_router_unbind(&c->session);
		c->bound = false;
	}
	unlink_stream(c);
	pl_sasl_free(c->sasl);
	pl_xnode_unref(&c->session.presence);
	free(c->session.full_jid);
	free(c->session.bare_jid);
	free(c->username);
	free(c);
}

static void session_deliver(struct pl_session *s, const struct pl_xnode *stanza);

/* Broadcast presence (RFC 6121 4.2-4.5) once the session's state has
 * been updated: modules send it to contacts, then the user's other
 * available resources get it here. */
static void broadcast_presence(struct pl_c2s *c, struct pl_xnode *presence, bool initial)
{
	struct pl_presence_event event = { presence, &c->session, NULL, initial };
	pl_hooks_fire("presence/broadcast", &event);
	pl_xnode_set_attr(presence, "to", NULL);
	for (struct pl_session *s = pl_router_sessions_of(c->session.bare_jid); s;
	     s = s->next_of_user) {
		if (s == &c->session || !s->available)
			continue;
		pl_xnode_set_attr(presence, "to", s->full_jid);
		s->deliver(s, presence);
		/* A new resource learns about the others (as contacts do
		 * through probes). */
		if (initial && s->presence) {
			pl_xnode_set_attr(s->presence, "to", c->session.full_jid);
			session_deliver(&c->session, s->presence);
			pl_xnode_set_attr(s->presence, "to", NULL);
		}
	}
	pl_xnode_set_attr(presence, "to", NULL);
}

static void broadcast_unavailable(struct pl_c2s *c)
{
	if (!c->bound || !c->session.available)
		return;
	c->session.available = false;
	pl_xnode_unref(&c->session.presence);
	struct pl_xnode *presence = pl_xnode_new("presence", PL_NS_CLIENT);
	pl_xnode_set_attr(presence, "type", "unavailable");
	pl_xnode_set_attr(presence, "from", c->session.full_jid);
	broadcast_presence(c, presence, false);
	for (size_t i = 0; i < c->directed_count; i++) {
		pl_xnode_set_attr(presence, "to", c->directed[i]);
		pl_route(presence, &c->session);
	}
	pl_xnode_unref(&presence);
}

/* The session is over (not resumed elsewhere): contacts learn it, the
 * resource leaves the router, unacknowledged stanzas find another way. */
static void end_session(struct pl_c2s *c)
{
	broadcast_unavailable(c);
	if (c->bound) {
		pl_router_unbind(&c->session);
		c->bound = false;
	}
	c->sm_resumable = false;
	reroute_unacked(c);
}

/* Ends the stream with an RFC 6120 4.9 stream error. */
static void stream_error(struct pl_c2s *c, const char *condition, const char *text)
{
	if (c->state == CLOSING)
		return;
	if (!c->t) {
		/* A hibernating session has nobody to tell: it just ends. */
		pl_log_session(PL_LOG_INFO, "c2s", c->log_id, "hibernating session ends: %s",
			       condition);
		end_session(c);
		free_stream(c);
		return;
	}
	pl_log_session(PL_LOG_INFO, "c2s", c->log_id, "%s: stream error %s%s%s",
		       peer_address(c), condition, text ? ": " : "", text ? text : "");
	struct pl_buf out = { 0 };
	if (c->state == WAIT_HEADER)
		c->ops->open(c->t, c->stream_id, NULL);
	pl_buf_printf(&out, "<stream:error><%s xmlns='" NS_STREAM_ERRORS "'/>", condition);
	if (text) {
		pl_buf_puts(&out, "<text xmlns='" NS_STREAM_ERRORS "' xml:lang='en'>");
		pl_xml_escape(&out, text, strlen(text));
		pl_buf_puts(&out, "</text>");
	}
	pl_buf_puts(&out, "</stream:error>");
	emit_buf(c, &out);
	pl_buf_free(&out);
	end_session(c);
	c->state = CLOSING;
	c->ops->close(c->t);
}

/* ---- the router's view of this stream -------------------------------------- */

static struct pl_c2s *from_session(struct pl_session *s)
{
	return (struct pl_c2s *)((char *)s - offsetof(struct pl_c2s, session));
}

/* What an inactive client must still get at once: anything a person or a
 * program waits for (messages with a body, IQs, errors, friend requests). */
static bool urgent(const struct pl_xnode *stanza)
{
	const char *type = pl_xnode_attr(stanza, "type");
	if (strcmp(stanza->name, "iq") == 0 || (type && strcmp(type, "error") == 0))
		return true;
	if (strcmp(stanza->name, "message") == 0)
		return pl_xnode_find(stanza, "body", NULL) != NULL;
	return type && strcmp(type, "unavailable") != 0;
}

static void flush_held(struct pl_c2s *c)
{
	while (c->held) {
		struct held *h = c->held;
		c->held = h->next;
		send_stanza_bytes(c, h->data, h->len);
		free(h->from);
		free(h);
	}
	c->held_tail = NULL;
	c->held_count = 0;
}

static void drop_held(struct pl_c2s *c)
{
	while (c->held) {
		struct held *h = c->held;
		c->held = h->next;
		free(h->from);
		free(h);
	}
	c->held_tail = NULL;
	c->held_count = 0;
}

static void hold(struct pl_c2s *c, const struct pl_xnode *stanza)
{
	const char *from = strcmp(stanza->name, "presence") == 0 ? pl_xnode_attr(stanza, "from")
								  : NULL;
	if (from) {
		/* Only the latest presence of each sender matters. */
		struct held *previous = NULL;
		for (struct held *h = c->held; h; previous = h, h = h->next) {
			if (h->from && strcmp(h->from, from) == 0) {
				if (previous)
					previous->next = h->next;
				else
					c->held = h->next;
				if (c->held_tail == h)
					c->held_tail = previous;
				free(h->from);
				free(h);
				c->held_count--;
				break;
			}
		}
	}
	struct pl_buf out = { 0 };
	pl_xnode_serialize(stanza, PL_NS_CLIENT, &out);
	struct held *h = pl_malloc(sizeof(*h) + out.len);
	h->next = NULL;
	h->from = from ? pl_strdup(from) : NULL;
	h->len = out.len;
	memcpy(h->data, out.data, out.len);
	pl_buf_free(&out);
	if (c->held_tail)
		c->held_tail->next = h;
	else
		c->held = h;
	c->held_tail = h;
	if (++c->held_count > MAX_HELD)
		flush_held(c);
}

static void session_deliver(struct pl_session *s, const struct pl_xnode *stanza)
{
	struct pl_c2s *c = from_session(s);
	if (c->state != BOUND)
		return;
	if (!c->t && strcmp(stanza->name, "message") == 0) {
		/* Hibernating: memory is not a safe place for a message whose
		 * sender gets an ack, so it goes to the offline queue (on disk),
		 * which the resumed session or the next login then delivers. */
		struct pl_offline_event event = { (struct pl_xnode *)stanza, c->session.bare_jid };
		if (pl_hooks_fire("message/offline", &event) == PL_HANDLED)
			return;
	}
	if (c->csi_inactive) {
		if (!urgent(stanza)) {
			hold(c, stanza);
			return;
		}
		flush_held(c);
	}
	send_stanza(c, stanza);
}

/* Where a shared stanza gets its recipient's 'to': reused, network thread. */
static struct pl_buf shared_copy;

/* A room's message serialized once: only this recipient's 'to' is new.
 * The unusual paths (hibernating, CSI holding) take the plain route. */
static void session_deliver_shared(struct pl_session *s, const struct pl_xnode *stanza,
				   const struct pl_shared_stanza *shared)
{
	struct pl_c2s *c = from_session(s);
	if (c->state != BOUND)
		return;
	if (!c->t || c->csi_inactive) {
		session_deliver(s, stanza);
		return;
	}
	struct pl_buf *out = &shared_copy;
	pl_buf_reset(out);
	pl_buf_append(out, shared->bytes, shared->to_at);
	pl_buf_puts(out, " to='");
	pl_xml_escape(out, s->full_jid, strlen(s->full_jid));
	pl_buf_puts(out, "'");
	pl_buf_append(out, shared->bytes + shared->to_at, shared->len - shared->to_at);
	send_stanza_bytes(c, out->data, out->len);
	if (out->cap > 65536)
		pl_buf_free(out); /* one big message does not pin its buffer */
}

static void session_replaced(struct pl_session *s)
{
	stream_error(from_session(s), "conflict", "replaced by a new login for this resource");
}

/* ---- SASL -------------------------------------------------------------------- */

static int get_credentials(void *userdata, const char *username, struct pl_scram_credentials *out)
{
	struct pl_c2s *c = userdata;
	char *local = pl_jid_prep_local(username);
	if (!local)
		return -ENOENT;
	char *bare = pl_asprintf("%s@%s", local, c->host->name);
	free(local);
	struct pl_account account;
	int rc = pl_accounts_get(bare, &account);
	free(bare);
	if (rc)
		return rc;
	*out = account.credentials;
	return account.flags & PL_ACCOUNT_DISABLED ? -EACCES : 0;
}

static int channel_binding(void *userdata, const char *type, uint8_t *out, size_t *out_len)
{
	struct pl_c2s *c = userdata;
	SSL *ssl = ssl_of(c);
	return ssl ? pl_tls_channel_binding(ssl, type, out, out_len) : -ENOTSUP;
}

static const struct pl_sasl_callbacks sasl_callbacks = { get_credentials, channel_binding };

static const char *binding_type(struct pl_c2s *c)
{
	SSL *ssl = ssl_of(c);
	if (!ssl)
		return NULL;
	return SSL_version(ssl) == TLS1_3_VERSION ? "tls-exporter" : "tls-server-end-point";
}

static void send_sasl(struct pl_c2s *c, const char *element, const struct pl_buf *data)
{
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<%s xmlns='%s'>", element, c->sasl2 ? NS_SASL2 : NS_SASL);
	if (data && data->len) {
		char *encoded = pl_base64_encode(data->data, data->len);
		pl_buf_puts(&out, encoded);
		free(encoded);
	} else if (strcmp(element, "success") != 0) {
		pl_buf_puts(&out, "=");
	}
	pl_buf_printf(&out, "</%s>", element);
	emit_buf(c, &out);
	pl_buf_free(&out);
}

static void send_failure(struct pl_c2s *c, const char *condition)
{
	struct pl_buf out = { 0 };
	if (c->sasl2)
		pl_buf_printf(&out, "<failure xmlns='" NS_SASL2 "'><%s xmlns='" NS_SASL "'/></failure>",
			      condition);
	else
		pl_buf_printf(&out, "<failure xmlns='" NS_SASL "'><%s/></failure>", condition);
	emit_buf(c, &out);
	pl_buf_free(&out);
}

static void on_delayed_failure(evutil_socket_t fd, short what, void *arg)
{
	struct pl_c2s *c = arg;
	event_free(c->delayed_failure);
	c->delayed_failure = NULL;
	send_failure(c, c->delayed_condition);
	free(c->delayed_condition);
	c->delayed_condition = NULL;
}

static void sasl_failure(struct pl_c2s *c, const char *condition, const char *reason)
{
	pl_sasl_free(c->sasl);
	c->sasl = NULL;
	bool guess = strcmp(condition, "not-authorized") == 0 ||
		     strcmp(condition, "invalid-authzid") == 0;
	struct failure_record *record =
		guess ? failure_slot(peer_address(c), true) : NULL;
	int64_t delay = 0;
	if (record) {
		record->count++;
		record->last_ms = pl_now_ms();
		delay = conf.auth_backoff_base_ms;
		for (unsigned i = 1; i < record->count && delay < conf.auth_backoff_max_ms; i++)
			delay *= 2;
		if (delay > conf.auth_backoff_max_ms)
			delay = conf.auth_backoff_max_ms;
	}
	pl_log_session(PL_LOG_WARN, "c2s", c->log_id,
		       "%s: authentication failed: %s (%s); failure %u from this address, "
		       "answering in %lld ms",
		       peer_address(c), condition, reason,
		       record ? record->count : 0, (long long)delay);
	if (delay <= 0 || c->delayed_failure) {
		send_failure(c, condition);
		return;
	}
	c->delayed_condition = pl_strdup(condition);
	c->delayed_failure = evtimer_new(loop, on_delayed_failure, c);
	struct timeval tv = { delay / 1000, (delay % 1000) * 1000 };
	evtimer_add(c->delayed_failure, &tv);
}

static void sasl2_success(struct pl_c2s *c, const struct pl_buf *additional_data);

static void sasl_step(struct pl_c2s *c, struct pl_xnode *element)
{
	char *text = pl_xnode_text(element);
	uint8_t *decoded = NULL;
	size_t decoded_len = 0;
	/* RFC 6120 6.4.2: no text is "no initial response", "=" is an empty
	 * one; the mechanism must tell them apart. */
	bool has_data = text[0] != '\0';
	bool empty = strcmp(text, "=") == 0 || !has_data;
	if (!empty && pl_base64_decode(text, strlen(text), &decoded, &decoded_len) != 0) {
		free(text);
		sasl_failure(c, "incorrect-encoding", "bad base64");
		return;
	}
	free(text);
	struct pl_buf out = { 0 };
	enum pl_sasl_condition condition;
	const char *reason = NULL;
	enum pl_sasl_result result =
		pl_sasl_step_data(c->sasl, decoded ? decoded : (const uint8_t *)"", decoded_len,
				  has_data, &out, &condition, &reason);
	/* PLAIN carries the password in clear: do not leave it in freed heap. */
	if (decoded)
		OPENSSL_cleanse(decoded, decoded_len);
	free(decoded);
	if (result == PL_SASL_CONTINUE) {
		send_sasl(c, "challenge", &out);
	} else if (result == PL_SASL_FAILURE) {
		sasl_failure(c, pl_sasl_condition_name(condition), reason ? reason : "");
	} else {
		c->username = pl_jid_prep_local(pl_sasl_username(c->sasl));
		pl_sasl_free(c->sasl);
		c->sasl = NULL;
		if (!c->username) {
			sasl_failure(c, "not-authorized", "username is not a valid localpart");
		} else {
			c->authenticated = true;
			struct failure_record *record =
				failure_slot(peer_address(c), false);
			if (record)
				record->count = 0;
			pl_log_session(PL_LOG_INFO, "c2s", c->log_id, "%s: authenticated as %s@%s%s",
				       peer_address(c), c->username, c->host->name,
				       c->sasl2 ? " (SASL2)" : "");
			if (c->sasl2) {
				/* XEP-0388: no stream restart; what the client
				 * asked inline (Bind2, resume) is in <success/>. */
				sasl2_success(c, &out);
			} else {
				send_sasl(c, "success", &out);
				/* The client opens a new stream now (RFC 6120
				 * 6.4.6). */
				c->state = WAIT_HEADER;
				c->ops->restart(c->t);
			}
			/* Negotiation is over: no more negotiation timeout. */
			c->ops->set_idle_timeout(c->t, 0);
		}
	}
	pl_buf_free(&out);
}

static void handle_auth(struct pl_c2s *c, struct pl_xnode *element)
{
	if (c->delayed_failure) {
		/* Still serving the back-off of the last failure: RFC 6120 6.4.5
		 * lets the server fail attempts; this one does not count. */
		send_failure(c, "temporary-auth-failure");
		return;
	}
	if (c->authenticated || c->sasl) {
		sasl_failure(c, "aborted", "authentication already in progress or done");
		return;
	}
	const char *mechanism = pl_xnode_attr(element, "mechanism");
	bool tls = is_secure(c);
	if (mechanism && strcmp(mechanism, "PLAIN") == 0 && !tls) {
		sasl_failure(c, "encryption-required", "PLAIN needs TLS");
		return;
	}
	struct pl_sasl_options options = { .domain = c->host->name,
					   .plus_offered = c->plus_offered,
					   .binding_type = binding_type(c),
					   .iterations = pl_accounts_default_iterations() };
	c->sasl = mechanism ? pl_sasl_new(mechanism, &sasl_callbacks, c, &options) : NULL;
	if (!c->sasl || (strstr(mechanism, "-PLUS") && !c->plus_offered)) {
		pl_sasl_free(c->sasl);
		c->sasl = NULL;
		sasl_failure(c, "invalid-mechanism", mechanism ? mechanism : "(none)");
		return;
	}
	sasl_step(c, element);
}

/* XEP-0388 <authenticate/>: the same mechanisms and back-off as SASL1,
 * with the initial response in a child and inline requests kept for the
 * moment of success. */
static void fast_authenticate(struct pl_c2s *c, struct pl_xnode *element);

static void handle_authenticate(struct pl_c2s *c, struct pl_xnode *element)
{
	c->sasl2 = true;
	pl_xnode_unref(&c->sasl2_request);
	c->sasl2_request = pl_xnode_copy(element);
	const char *requested = pl_xnode_attr(element, "mechanism");
	if (requested && strncmp(requested, "HT-", 3) == 0) {
		fast_authenticate(c, element);
		return;
	}
	struct pl_xnode *initial = pl_xnode_find(element, "initial-response", NS_SASL2);
	/* handle_auth reads the mechanism and the response text of what it
	 * is given: an <auth/> look-alike carries both. */
	struct pl_xnode *auth = pl_xnode_new("auth", NS_SASL);
	const char *mechanism = pl_xnode_attr(element, "mechanism");
	if (mechanism)
		pl_xnode_set_attr(auth, "mechanism", mechanism);
	if (initial) {
		char *text = pl_xnode_text(initial);
		/* An empty initial response is "=" in SASL1's terms. */
		pl_xnode_add_text(auth, *text ? text : "=", *text ? strlen(text) : 1);
		free(text);
	}
	handle_auth(c, auth);
	pl_xnode_unref(&auth);
}

/* ---- FAST (XEP-0484): one-round-trip reconnection with a token ------------------ */

struct fast_record {
	char *current, *previous;        /* owned, base64 tokens (previous may be NULL) */
	int64_t expiry_ms;               /* unix ms */
	uint64_t count;
};

static void fast_key(struct pl_store_key *k, const char *bare_jid, const char *agent_id)
{
	pl_store_key_init(k);
	pl_store_key_str(k, bare_jid);
	pl_store_key_str(k, agent_id);
}

static void fast_record_free(struct fast_record *r)
{
	if (r->current)
		OPENSSL_cleanse(r->current, strlen(r->current));
	if (r->previous)
		OPENSSL_cleanse(r->previous, strlen(r->previous));
	free(r->current);
	free(r->previous);
	memset(r, 0, sizeof(*r));
}

static bool fast_read(const char *bare_jid, const char *agent_id, struct fast_record *out)
{
	memset(out, 0, sizeof(*out));
	struct pl_store_key k;
	fast_key(&k, bare_jid, agent_id);
	struct pl_store_read *read = k.overflow ? NULL : pl_store_read_begin(pl_server.store);
	const void *value;
	size_t len;
	bool found = read && pl_store_get(read, fast_space, k.data, k.len, &value, &len) == 0;
	struct pl_xnode *n = found ? pl_xml_parse_element(value, len, NS_FAST) : NULL;
	if (read)
		pl_store_read_end(read);
	if (!n)
		return false;
	const char *current = pl_xnode_attr(n, "current");
	const char *previous = pl_xnode_attr(n, "previous");
	const char *expiry = pl_xnode_attr(n, "expiry");
	const char *count = pl_xnode_attr(n, "count");
	out->current = current ? pl_strdup(current) : NULL;
	out->previous = previous ? pl_strdup(previous) : NULL;
	out->expiry_ms = expiry ? strtoll(expiry, NULL, 10) : 0;
	out->count = count ? strtoull(count, NULL, 10) : 0;
	pl_xnode_unref(&n);
	return out->current != NULL;
}

static void fast_write(const char *bare_jid, const char *agent_id, const struct fast_record *r)
{
	struct pl_store_key k;
	fast_key(&k, bare_jid, agent_id);
	if (k.overflow)
		return;
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	if (!r) {
		pl_store_del(w, fast_space, k.data, k.len);
	} else {
		struct pl_xnode *n = pl_xnode_new("token", NS_FAST);
		pl_xnode_set_attr(n, "current", r->current);
		if (r->previous)
			pl_xnode_set_attr(n, "previous", r->previous);
		char number[24];
		snprintf(number, sizeof(number), "%" PRId64, r->expiry_ms);
		pl_xnode_set_attr(n, "expiry", number);
		snprintf(number, sizeof(number), "%" PRIu64, r->count);
		pl_xnode_set_attr(n, "count", number);
		struct pl_buf value = { 0 };
		pl_xnode_serialize(n, NULL, &value);
		pl_store_put(w, fast_space, k.data, k.len, value.data, value.len);
		OPENSSL_cleanse(value.data, value.len);
		pl_buf_free(&value);
		pl_xnode_unref(&n);
	}
	pl_store_write_submit(w, NULL, NULL);
}

/* The channel binding of an HT mechanism: "" for NONE, a type for the
 * others, NULL when Parley does not offer it. */
static const char *ht_binding(const char *mechanism)
{
	if (strcmp(mechanism, "HT-SHA-256-NONE") == 0)
		return "";
	if (strcmp(mechanism, "HT-SHA-256-ENDP") == 0)
		return "tls-server-end-point";
	return NULL;
}

/* HMAC-SHA-256(token, label || channel binding data) of the Hashed Token
 * mechanism (draft-ietf-kitten-sasl-ht). */
static bool ht_hash(struct pl_c2s *c, const char *token, const char *label, const char *binding,
		    uint8_t out[32])
{
	uint8_t input[256];
	size_t label_len = strlen(label), cb_len = 0;
	memcpy(input, label, label_len);
	if (*binding) {
		SSL *ssl = ssl_of(c);
		cb_len = sizeof(input) - label_len;
		if (!ssl || pl_tls_channel_binding(ssl, binding, input + label_len, &cb_len) != 0)
			return false;
	}
	uint8_t *key = NULL;
	size_t key_len = 0;
	if (pl_base64_decode(token, strlen(token), &key, &key_len) != 0)
		return false;
	uint8_t digest[64];
	pl_scram_hmac(PL_SCRAM_SHA256, key, key_len, input, label_len + cb_len, digest);
	OPENSSL_cleanse(key, key_len);
	free(key);
	memcpy(out, digest, 32);
	return true;
}

static const char *user_agent_id(const struct pl_xnode *request)
{
	struct pl_xnode *agent = request ? pl_xnode_find(request, "user-agent", NS_SASL2) : NULL;
	const char *id = agent ? pl_xnode_attr(agent, "id") : NULL;
	return id && *id && strlen(id) < 256 ? id : NULL;
}

/* A FAST login: the initial response is the username, a NUL and the
 * token's hash; the current token or, just after a rotation, the
 * previous one matches. The same back-off as passwords applies. */
static void fast_authenticate(struct pl_c2s *c, struct pl_xnode *element)
{
	if (c->delayed_failure) {
		send_failure(c, "temporary-auth-failure");
		return;
	}
	if (c->authenticated || c->sasl) {
		sasl_failure(c, "aborted", "authentication already in progress or done");
		return;
	}
	const char *binding = fast_space ? ht_binding(pl_xnode_attr(element, "mechanism")) : NULL;
	if (!binding || (*binding && !ssl_of(c))) {
		sasl_failure(c, "invalid-mechanism", pl_xnode_attr(element, "mechanism"));
		return;
	}
	const char *agent_id = user_agent_id(element);
	struct pl_xnode *initial = pl_xnode_find(element, "initial-response", NS_SASL2);
	char *text = initial ? pl_xnode_text(initial) : pl_strdup("");
	uint8_t *decoded = NULL;
	size_t decoded_len = 0;
	bool decoded_ok = pl_base64_decode(text, strlen(text), &decoded, &decoded_len) == 0;
	free(text);
	const uint8_t *nul = decoded_ok ? memchr(decoded, 0, decoded_len) : NULL;
	if (!agent_id || !nul || decoded_len - (size_t)(nul - decoded) - 1 != 32) {
		free(decoded);
		sasl_failure(c, "malformed-request", "FAST needs a user-agent id, a username and a hash");
		return;
	}
	char *username = pl_strndup((const char *)decoded, (size_t)(nul - decoded));
	uint8_t given[32];
	memcpy(given, nul + 1, 32);
	free(decoded);
	char *local = pl_jid_prep_local(username);
	free(username);
	char *bare = local ? pl_asprintf("%s@%s", local, c->host->name) : NULL;
	struct pl_account account;
	struct fast_record record = { 0 };
	const char *reason = NULL;
	const char *used = NULL;
	if (!bare || pl_accounts_get(bare, &account) != 0 || (account.flags & PL_ACCOUNT_DISABLED))
		reason = "no such account";
	else if (!fast_read(bare, agent_id, &record))
		reason = "no token for this user agent";
	else if (record.expiry_ms < pl_unix_ms())
		reason = "the token expired";
	if (bare && !reason)
		OPENSSL_cleanse(&account, sizeof(account));
	if (!reason) {
		const char *tokens[2] = { record.current, record.previous };
		for (size_t i = 0; i < 2 && !used; i++) {
			uint8_t expected[32];
			if (tokens[i] && ht_hash(c, tokens[i], "Initiator", binding, expected) &&
			    CRYPTO_memcmp(expected, given, 32) == 0)
				used = tokens[i];
		}
		if (!used)
			reason = "wrong token";
	}
	/* XEP-0484 replay protection: a count must grow. */
	struct pl_xnode *fast = pl_xnode_find(element, "fast", NS_FAST);
	const char *count_text = fast ? pl_xnode_attr(fast, "count") : NULL;
	if (!reason && count_text) {
		uint64_t count = strtoull(count_text, NULL, 10);
		if (count <= record.count)
			reason = "a replayed count";
		else
			record.count = count;
	}
	if (reason) {
		fast_record_free(&record);
		free(bare);
		free(local);
		sasl_failure(c, "not-authorized", reason);
		return;
	}
	struct pl_buf additional = { 0 };
	uint8_t responder[32];
	if (ht_hash(c, used, "Responder", binding, responder))
		pl_buf_append(&additional, responder, 32);
	const char *invalidate = fast ? pl_xnode_attr(fast, "invalidate") : NULL;
	if (invalidate && (strcmp(invalidate, "true") == 0 || strcmp(invalidate, "1") == 0))
		fast_write(bare, agent_id, NULL);
	else if (count_text)
		fast_write(bare, agent_id, &record);
	fast_record_free(&record);
	free(bare);
	c->username = local;
	c->authenticated = true;
	struct failure_record *failures = failure_slot(peer_address(c), false);
	if (failures)
		failures->count = 0;
	pl_log_session(PL_LOG_INFO, "c2s", c->log_id, "%s: authenticated as %s@%s (FAST %s)",
		       peer_address(c), c->username, c->host->name, pl_xnode_attr(element, "mechanism"));
	sasl2_success(c, &additional);
	c->ops->set_idle_timeout(c->t, 0);
	pl_buf_free(&additional);
}

/* <request-token/> in an <authenticate/> that succeeded: a new token for
 * this user agent; the one it replaces stays good until the next use. */
static void fast_issue(struct pl_c2s *c, const struct pl_xnode *request, struct pl_buf *answer)
{
	struct pl_xnode *wanted = pl_xnode_find(request, "request-token", NS_FAST);
	const char *agent_id = user_agent_id(request);
	const char *mechanism = wanted ? pl_xnode_attr(wanted, "mechanism") : NULL;
	if (!wanted || !agent_id || !fast_space || !mechanism || !ht_binding(mechanism))
		return;
	char *bare = pl_asprintf("%s@%s", c->username, c->host->name);
	struct fast_record record = { 0 };
	fast_read(bare, agent_id, &record);
	uint8_t random[32];
	pl_random_bytes(random, sizeof(random));
	char *token = pl_base64_encode(random, sizeof(random));
	OPENSSL_cleanse(random, sizeof(random));
	free(record.previous);
	record.previous = record.current;
	record.current = token;
	record.expiry_ms = pl_unix_ms() + conf.fast_lifetime_ms;
	fast_write(bare, agent_id, &record);
	time_t expiry = (time_t)(record.expiry_ms / 1000);
	struct tm tm;
	gmtime_r(&expiry, &tm);
	char stamp[32];
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pl_buf_printf(answer, "<token xmlns='" NS_FAST "' expiry='%s' token='%s'/>", stamp, token);
	fast_record_free(&record);
	pl_log_session(PL_LOG_DEBUG, "c2s", c->log_id, "FAST token issued to %s", bare);
	free(bare);
}

/* A new password ends every token (XEP-0484: invalidation). */
static int on_password_changed(struct pl_event *event, void *userdata)
{
	const char *bare = event->data;
	if (!fast_space)
		return PL_CONTINUE;
	struct pl_store_key prefix;
	pl_store_key_init(&prefix);
	pl_store_key_str(&prefix, bare);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	pl_store_del_prefix(w, fast_space, prefix.data, prefix.len);
	pl_store_write_submit(w, NULL, NULL);
	(void)userdata;
	return PL_CONTINUE;
}

/* ---- stream header and features ------------------------------------------------ */

static bool tls_available(void)
{
	return pl_server.host_count > 0;
}

static void send_features(struct pl_c2s *c)
{
	struct pl_buf out = { 0 };
	pl_buf_puts(&out, "<stream:features>");
	bool tls = is_secure(c);
	bool plaintext_ok = c->ops->plaintext_ok(c->t);
	if (!tls && tls_available() && c->ops->start_tls) {
		pl_buf_puts(&out, "<starttls xmlns='" NS_TLS "'>");
		if (!plaintext_ok)
			pl_buf_puts(&out, "<required/>");
		pl_buf_puts(&out, "</starttls>");
	}
	if (!c->authenticated && (tls || plaintext_ok)) {
		pl_buf_puts(&out, "<mechanisms xmlns='" NS_SASL "'>");
		c->plus_offered = binding_type(c) != NULL;
		if (c->plus_offered)
			pl_buf_puts(&out, "<mechanism>SCRAM-SHA-256-PLUS</mechanism>"
					  "<mechanism>SCRAM-SHA-1-PLUS</mechanism>");
		pl_buf_puts(&out, "<mechanism>SCRAM-SHA-256</mechanism>"
				  "<mechanism>SCRAM-SHA-1</mechanism>");
		if (tls)
			pl_buf_puts(&out, "<mechanism>PLAIN</mechanism>");
		pl_buf_puts(&out, "</mechanisms>");
		/* XEP-0388 with what may be done inline: Bind2 (XEP-0386) with
		 * its own inline features, and XEP-0198 resumption. */
		pl_buf_puts(&out, "<authentication xmlns='" NS_SASL2 "'>");
		if (c->plus_offered)
			pl_buf_puts(&out, "<mechanism>SCRAM-SHA-256-PLUS</mechanism>"
					  "<mechanism>SCRAM-SHA-1-PLUS</mechanism>");
		pl_buf_puts(&out, "<mechanism>SCRAM-SHA-256</mechanism>"
				  "<mechanism>SCRAM-SHA-1</mechanism>");
		if (tls)
			pl_buf_puts(&out, "<mechanism>PLAIN</mechanism>");
		pl_buf_puts(&out, "<inline><bind xmlns='" NS_BIND2 "'><inline>"
				  "<feature var='" NS_SM "'/><feature var='" NS_CSI "'/>");
		pl_hooks_fire("stream-features/bind2", &out);
		pl_buf_puts(&out, "</inline></bind><sm xmlns='" NS_SM "'/>");
		/* XEP-0484: token mechanisms, listed here only (not above). */
		if (fast_space) {
			pl_buf_puts(&out, "<fast xmlns='" NS_FAST "'><mechanism>HT-SHA-256-NONE</mechanism>");
			if (ssl_of(c))
				pl_buf_puts(&out, "<mechanism>HT-SHA-256-ENDP</mechanism>");
			pl_buf_puts(&out, "</fast>");
		}
		pl_buf_puts(&out, "</inline></authentication>");
		/* Advertised only while a module says registration is open. */
		if (pl_hooks_has("stream-feature/register"))
			pl_buf_puts(&out, "<register xmlns='http://jabber.org/features/iq-register'/>");
	}
	if (c->authenticated) {
		pl_buf_puts(&out, "<bind xmlns='" NS_BIND "'/>"
				  "<session xmlns='" NS_SESSION "'><optional/></session>"
				  "<sm xmlns='" NS_SM "'/><csi xmlns='" NS_CSI "'/>");
		/* Modules add theirs (roster versioning, pre-approval...). */
		pl_hooks_fire("stream-features/bind", &out);
	}
	pl_buf_puts(&out, "</stream:features>");
	emit_buf(c, &out);
	pl_buf_free(&out);
}

static const char *attribute_of(const char *const *attributes, const char *name)
{
	for (size_t i = 0; attributes[i]; i += 2)
		if (strcmp(attributes[i], name) == 0)
			return attributes[i + 1];
	return NULL;
}

static void on_open(void *userdata, const char *name, const char *ns, const char *content_ns,
		    const char *const *attributes)
{
	struct pl_c2s *c = userdata;
	uint8_t random[16];
	pl_random_bytes(random, sizeof(random));
	for (size_t i = 0; i < sizeof(random); i++)
		snprintf(c->stream_id + i * 2, 3, "%02x", random[i]);
	if (strcmp(name, "stream") != 0 || !ns || strcmp(ns, PL_NS_STREAMS) != 0) {
		stream_error(c, "invalid-namespace", "expected <stream:stream>");
		return;
	}
	if (!content_ns || strcmp(content_ns, PL_NS_CLIENT) != 0) {
		stream_error(c, "invalid-namespace", "the content namespace must be jabber:client");
		return;
	}
	const char *to = attribute_of(attributes, "to");
	char *domain = to ? pl_jid_prep_domain(to) : NULL;
	const struct pl_host *host = domain ? pl_server_find_host(domain) : NULL;
	free(domain);
	if (!host) {
		stream_error(c, "host-unknown", to ? "this server does not serve that host" : "no 'to'");
		return;
	}
	if (c->host && host != c->host) {
		stream_error(c, "host-unknown", "the host changed on stream restart");
		return;
	}
	c->host = host;
	const char *version = attribute_of(attributes, "version");
	if (!version || strncmp(version, "1.", 2) != 0) {
		stream_error(c, "unsupported-version", "version 1.0 is required");
		return;
	}
	c->state = NEGOTIATING;
	c->ops->open(c->t, c->stream_id, host->name);
	send_features(c);
	if (c->bound)
		c->state = BOUND;
}

/* ---- binding ------------------------------------------------------------------- */

static void reply_iq_error(struct pl_c2s *c, struct pl_xnode *iq, const char *type,
			   const char *condition)
{
	struct pl_buf out = { 0 };
	const char *id = pl_xnode_attr(iq, "id");
	pl_buf_puts(&out, "<iq type='error' id='");
	if (id)
		pl_xml_escape(&out, id, strlen(id));
	pl_buf_printf(&out, "'><error type='%s'><%s xmlns='" PL_NS_STANZAS "'/></error></iq>",
		      type, condition);
	emit_buf(c, &out);
	pl_buf_free(&out);
}

static size_t resource_count(const char *bare)
{
	size_t n = 0;
	for (struct pl_session *s = pl_router_sessions_of(bare); s; s = s->next_of_user)
		n++;
	return n;
}

static char *random_resource(const char *prefix)
{
	uint8_t random[8];
	char text[17];
	pl_random_bytes(random, sizeof(random));
	for (size_t i = 0; i < sizeof(random); i++)
		snprintf(text + i * 2, 3, "%02x", random[i]);
	return pl_asprintf("%s%s", prefix, text);
}

/* Binds `resource` (owned, prepared) to the session: NULL, or the error
 * condition (resource-constraint). */
static const char *bind_resource(struct pl_c2s *c, char *resource)
{
	c->session.bare_jid = pl_asprintf("%s@%s", c->username, c->host->name);
	c->session.full_jid = pl_asprintf("%s/%s", c->session.bare_jid, resource);
	free(resource);
	if (!pl_router_find(c->session.full_jid) &&
	    resource_count(c->session.bare_jid) >= (size_t)conf.max_resources) {
		free(c->session.bare_jid);
		free(c->session.full_jid);
		c->session.bare_jid = c->session.full_jid = NULL;
		return "resource-constraint";
	}
	c->session.host = c->host->name;
	c->session.deliver = session_deliver;
	c->session.deliver_shared = session_deliver_shared;
	c->session.replaced = session_replaced;
	pl_router_bind(&c->session);
	c->bound = true;
	c->last_heard_ms = pl_now_ms();
	c->stanza_tokens = (double)conf.stanza_burst;
	c->tokens_at_ms = c->last_heard_ms;
	c->state = BOUND;
	pl_log_session(PL_LOG_INFO, "c2s", c->log_id, "%s: bound %s",
		       peer_address(c), c->session.full_jid);
	return NULL;
}

static void handle_bind(struct pl_c2s *c, struct pl_xnode *iq, struct pl_xnode *bind)
{
	struct pl_xnode *resource_node = pl_xnode_find(bind, "resource", NS_BIND);
	char *requested = resource_node ? pl_xnode_text(resource_node) : NULL;
	char *resource = NULL;
	if (requested && *requested) {
		resource = pl_jid_prep_resource(requested);
		if (!resource) {
			free(requested);
			reply_iq_error(c, iq, "modify", "bad-request");
			return;
		}
	} else {
		resource = random_resource("parley-");
	}
	free(requested);
	const char *error = bind_resource(c, resource);
	if (error) {
		reply_iq_error(c, iq, "cancel", error);
		return;
	}
	struct pl_buf out = { 0 };
	const char *id = pl_xnode_attr(iq, "id");
	pl_buf_puts(&out, "<iq type='result' id='");
	if (id)
		pl_xml_escape(&out, id, strlen(id));
	pl_buf_puts(&out, "'><bind xmlns='" NS_BIND "'><jid>");
	pl_xml_escape(&out, c->session.full_jid, strlen(c->session.full_jid));
	pl_buf_puts(&out, "</jid></bind></iq>");
	emit_buf(c, &out);
	pl_buf_free(&out);
}

/* ---- stanzas ------------------------------------------------------------------- */

static void handle_presence(struct pl_c2s *c, struct pl_xnode *presence)
{
	const char *to = pl_xnode_attr(presence, "to");
	const char *type = pl_xnode_attr(presence, "type");
	if (to) {
		/* Directed presence: remembered so that the recipient learns when
		 * we go offline (RFC 6121 4.6.3). */
		if (!type) {
			remember_directed(c, to);
		} else if (strcmp(type, "unavailable") == 0) {
			forget_directed(c, to);
		} else if (strcmp(type, "subscribe") == 0 || strcmp(type, "subscribed") == 0 ||
			   strcmp(type, "unsubscribe") == 0 || strcmp(type, "unsubscribed") == 0) {
			struct pl_presence_event event = { presence, &c->session, NULL, false };
			if (pl_hooks_fire("presence/out", &event) == PL_HANDLED)
				return;
		} else if (strcmp(type, "probe") == 0) {
			/* RFC 6121 4.3: probes are the server's business. */
			return;
		}
		pl_route(presence, &c->session);
		return;
	}
	bool initial = false;
	if (!type) {
		struct pl_xnode *priority = pl_xnode_find(presence, "priority", NULL);
		int value = 0;
		if (priority) {
			char *text = pl_xnode_text(priority);
			value = atoi(text);
			free(text);
			if (value < -128 || value > 127)
				value = 0;
		}
		c->session.priority = value;
		initial = !c->session.available;
		c->session.available = true;
		pl_xnode_unref(&c->session.presence);
		c->session.presence = pl_xnode_copy(presence);
	} else if (strcmp(type, "unavailable") == 0) {
		if (!c->session.available)
			return;
		c->session.available = false;
		pl_xnode_unref(&c->session.presence);
	} else {
		/* error, or probe without 'to': nothing to broadcast. */
		return;
	}
	broadcast_presence(c, presence, initial);
	/* The sender gets its own presence back (RFC 6121 4.2.2). */
	pl_xnode_set_attr(presence, "to", c->session.full_jid);
	send_stanza(c, presence);
}

/* One stanza costs one token; the debt is paid by pausing the socket in
 * on_data, so a flooding client slows itself and nobody else. */
static void take_stanza_token(struct pl_c2s *c)
{
	if (conf.max_stanzas_per_second <= 0)
		return;
	int64_t now = pl_now_ms();
	c->stanza_tokens += (double)(now - c->tokens_at_ms) * (double)conf.max_stanzas_per_second /
			    1000.0;
	if (c->stanza_tokens > (double)conf.stanza_burst)
		c->stanza_tokens = (double)conf.stanza_burst;
	c->tokens_at_ms = now;
	c->stanza_tokens -= 1.0;
}

static void handle_stanza(struct pl_c2s *c, struct pl_xnode *stanza)
{
	take_stanza_token(c);
	if (!stanza->ns || strcmp(stanza->ns, PL_NS_CLIENT) != 0 ||
	    (strcmp(stanza->name, "message") != 0 && strcmp(stanza->name, "presence") != 0 &&
	     strcmp(stanza->name, "iq") != 0)) {
		stream_error(c, "unsupported-stanza-type", stanza->name);
		return;
	}
	/* The server stamps the sender (RFC 6120 8.1.2.1): whatever the client
	 * wrote in 'from' is replaced by its full JID. */
	pl_xnode_set_attr(stanza, "from", c->session.full_jid);
	const char *to = pl_xnode_attr(stanza, "to");
	if (strcmp(stanza->name, "iq") == 0) {
		struct pl_xnode *payload = pl_xnode_first_element(stanza);
		const char *type = pl_xnode_attr(stanza, "type");
		if (!to && payload && type && strcmp(type, "set") == 0 && payload->ns &&
		    strcmp(payload->ns, NS_SESSION) == 0) {
			/* RFC 3921 session establishment: a no-op kept for old
			 * clients, advertised as optional. */
			struct pl_xnode *result = pl_iq_result(stanza);
			pl_xnode_set_attr(result, "to", NULL);
			pl_xnode_set_attr(result, "from", NULL);
			send_stanza(c, result);
			pl_xnode_unref(&result);
			return;
		}
		if (!pl_xnode_attr(stanza, "id")) {
			stream_error(c, "invalid-xml", "an IQ needs an id");
			return;
		}
		if (!to)
			pl_xnode_set_attr(stanza, "to", c->session.bare_jid);
		pl_route(stanza, &c->session);
	} else if (strcmp(stanza->name, "presence") == 0) {
		handle_presence(c, stanza);
	} else {
		if (!to)
			pl_xnode_set_attr(stanza, "to", c->session.bare_jid);
		pl_route(stanza, &c->session);
	}
}

static void sm_failed(struct pl_c2s *c, const char *condition)
{
	char failed[160];
	snprintf(failed, sizeof(failed),
		 "<failed xmlns='" NS_SM "'><%s xmlns='" PL_NS_STANZAS "'/></failed>", condition);
	write_text(c, failed);
}

/* Enables XEP-0198; the <enabled/> goes to `answer` (Bind2 puts it in
 * <bound/>) or, without one, to the stream. */
static void enable_sm(struct pl_c2s *c, struct pl_xnode *enable, struct pl_buf *answer)
{
	c->sm_enabled = true;
	c->sm_received = c->sm_sent = c->sm_acked = 0;
	c->tracker = pl_ack_tracker_new(on_durable, c, 0);
	const char *resume = pl_xnode_attr(enable, "resume");
	const char *max = pl_xnode_attr(enable, "max");
	c->sm_max_ms = conf.resumption_timeout_ms;
	if (max && atoll(max) > 0 && atoll(max) * 1000 < c->sm_max_ms)
		c->sm_max_ms = atoll(max) * 1000;
	char enabled[200];
	if (resume && (strcmp(resume, "true") == 0 || strcmp(resume, "1") == 0)) {
		uint8_t random[16];
		pl_random_bytes(random, sizeof(random));
		for (size_t i = 0; i < sizeof(random); i++)
			snprintf(c->sm_id + i * 2, 3, "%02x", random[i]);
		c->sm_resumable = true;
		snprintf(enabled, sizeof(enabled),
			 "<enabled xmlns='" NS_SM "' id='%s' resume='true' max='%lld'/>", c->sm_id,
			 (long long)(c->sm_max_ms / 1000));
	} else {
		snprintf(enabled, sizeof(enabled), "<enabled xmlns='" NS_SM "'/>");
	}
	if (answer)
		pl_buf_puts(answer, enabled);
	else
		write_text(c, enabled);
	pl_log_session(PL_LOG_DEBUG, "c2s", c->log_id, "stream management enabled%s",
		       c->sm_resumable ? " with resumption" : "");
}

static void handle_enable(struct pl_c2s *c, struct pl_xnode *enable)
{
	if (c->sm_enabled) {
		sm_failed(c, "unexpected-request");
		return;
	}
	enable_sm(c, enable, NULL);
}

/* XEP-0198 5: a new connection takes over a session whose connection was
 * lost (or is about to be found lost). The new stream object inherits the
 * session, its counters and its unacknowledged stanzas; the old one goes
 * away silently, since for contacts nothing happened. */
/* <failed/> to `answer` (SASL2 inline) or to the stream. */
static void resume_refused(struct pl_c2s *c, const char *condition, struct pl_buf *answer)
{
	if (answer)
		pl_buf_printf(answer, "<failed xmlns='" NS_SM "'><%s xmlns='" PL_NS_STANZAS
				      "'/></failed>", condition);
	else
		sm_failed(c, condition);
}

/* Takes the session over; <resumed/> (or <failed/>) goes to `answer` or
 * the stream. On success the caller then calls resume_replay. */
static bool resume_session(struct pl_c2s *c, struct pl_xnode *resume, struct pl_buf *answer)
{
	const char *previd = pl_xnode_attr(resume, "previd");
	const char *h_text = pl_xnode_attr(resume, "h");
	struct pl_c2s *old = NULL;
	for (struct pl_c2s *s = streams; previd && s; s = s->next)
		if (s != c && s->sm_resumable && s->bound && s->state == BOUND &&
		    strcmp(s->sm_id, previd) == 0)
			old = s;
	char *end = NULL;
	unsigned long h = h_text ? strtoul(h_text, &end, 10) : 0;
	if (!old || !end || *end || strcmp(old->username, c->username) != 0 ||
	    old->host != c->host) {
		pl_log_session(PL_LOG_INFO, "c2s", c->log_id, "%s: resumption of '%s' refused: %s",
			       peer_address(c), previd ? previd : "",
			       old ? "another account's session or a bad h" : "no such session");
		resume_refused(c, "item-not-found", answer);
		pl_counter_add(pl_counter("sm-resume-failed"), 1);
		return false;
	}
	if (pl_ack_after((uint32_t)h, old->sm_sent)) {
		pl_counter_add(pl_counter("sm-resume-failed"), 1);
		resume_refused(c, "unexpected-request", answer);
		return false;
	}
	if (old->t) {
		/* The old connection is still open (the client saw it die first);
		 * it may be another kind of transport than this one. */
		old->ops->drop(old->t);
		old->t = NULL;
	}
	struct pl_session moved = old->session;
	pl_router_unbind(&old->session);
	old->bound = false;
	memset(&old->session, 0, sizeof(old->session));
	c->session = moved;
	c->session.next_of_user = NULL;
	c->session.suspended = false;
	pl_router_bind(&c->session);
	c->session.id = moved.id;
	c->bound = true;
	c->state = BOUND;
	c->last_heard_ms = pl_now_ms();
	c->stanza_tokens = (double)conf.stanza_burst;
	c->tokens_at_ms = c->last_heard_ms;
	c->sm_enabled = c->sm_resumable = true;
	memcpy(c->sm_id, old->sm_id, sizeof(c->sm_id));
	c->sm_received = old->sm_received;
	c->sm_sent = old->sm_sent;
	c->sm_max_ms = old->sm_max_ms;
	c->tracker = old->tracker;
	old->tracker = NULL;
	pl_ack_tracker_set_owner(c->tracker, c);
	c->unacked = old->unacked;
	c->unacked_tail = old->unacked_tail;
	c->unacked_count = old->unacked_count;
	old->unacked = old->unacked_tail = NULL;
	old->unacked_count = 0;
	c->directed = old->directed;
	c->directed_count = old->directed_count;
	c->directed_cap = old->directed_cap;
	old->directed = NULL;
	old->directed_count = old->directed_cap = 0;
	old->sm_enabled = old->sm_resumable = false;
	/* Held stanzas are delivered now: the resumed client starts active. */
	c->held = old->held;
	c->held_tail = old->held_tail;
	c->held_count = old->held_count;
	old->held = old->held_tail = NULL;
	old->held_count = 0;
	free_stream(old);
	acknowledge(c, (uint32_t)h);
	char resumed[160];
	snprintf(resumed, sizeof(resumed), "<resumed xmlns='" NS_SM "' h='%u' previd='%s'/>",
		 pl_ack_durable(c->tracker), c->sm_id);
	if (answer)
		pl_buf_puts(answer, resumed);
	else
		write_text(c, resumed);
	return true;
}

/* After <resumed/> went out: what the client did not acknowledge, again. */
static void resume_replay(struct pl_c2s *c)
{
	for (struct unacked *u = c->unacked; u; u = u->next)
		emit(c, u->data, u->len);
	if (c->unacked) {
		write_text(c, "<r xmlns='" NS_SM "'/>");
		c->sm_ack_requested = true;
	}
	pl_counter_add(pl_counter("sm-resumed"), 1);
	pl_counter_add(pl_counter("sm-stanzas-resent"), c->unacked_count);
	flush_held(c);
	/* Messages that arrived while it was away are in the offline queue. */
	pl_hooks_fire("session/resumed", &c->session);
	pl_log_session(PL_LOG_INFO, "c2s", c->log_id, "%s: resumed %s, %zu stanzas resent",
		       peer_address(c), c->session.full_jid, c->unacked_count);
}

static void handle_resume(struct pl_c2s *c, struct pl_xnode *resume)
{
	if (resume_session(c, resume, NULL))
		resume_replay(c);
}

/* ---- SASL2 success with Bind2 (XEP-0388, XEP-0386) --------------------------------- */

/* XEP-0386 4: the server makes the resource from the client's tag and,
 * when the client names itself with a stable user-agent id, a hash of it,
 * so the same device gets the same resource (and replaces its old
 * session) while two devices never collide. */
static char *bind2_resource(struct pl_c2s *c, const struct pl_xnode *bind)
{
	struct pl_xnode *tag_node = pl_xnode_find(bind, "tag", NS_BIND2);
	char *tag = tag_node ? pl_xnode_text(tag_node) : pl_strdup("");
	char *prepared = *tag ? pl_jid_prep_resource(tag) : NULL;
	free(tag);
	if (prepared && strlen(prepared) > 64)
		prepared[64] = 0;
	struct pl_xnode *agent = c->sasl2_request
					 ? pl_xnode_find(c->sasl2_request, "user-agent", NS_SASL2)
					 : NULL;
	const char *agent_id = agent ? pl_xnode_attr(agent, "id") : NULL;
	char *resource;
	if (agent_id && *agent_id) {
		char *input = pl_asprintf("%s@%s\n%s", c->username, c->host->name, agent_id);
		uint8_t digest[64];
		pl_scram_hash(PL_SCRAM_SHA256, input, strlen(input), digest);
		free(input);
		char hex[17];
		for (size_t i = 0; i < 8; i++)
			snprintf(hex + i * 2, 3, "%02x", digest[i]);
		resource = pl_asprintf("%s%s%s", prepared ? prepared : "", prepared ? "." : "", hex);
	} else {
		char *prefix = pl_asprintf("%s%s", prepared ? prepared : "parley", ".");
		resource = random_resource(prefix);
		free(prefix);
	}
	free(prepared);
	return resource;
}

static void sasl2_success(struct pl_c2s *c, const struct pl_buf *additional_data)
{
	struct pl_xnode *request = c->sasl2_request;
	struct pl_xnode *resume = request ? pl_xnode_find(request, "resume", NS_SM) : NULL;
	struct pl_xnode *bind = request ? pl_xnode_find(request, "bind", NS_BIND2) : NULL;
	struct pl_buf inline_answer = { 0 };
	bool resumed = resume && resume_session(c, resume, &inline_answer);
	const char *bind_error = NULL;
	if (!resumed && bind) {
		bind_error = bind_resource(c, bind2_resource(c, bind));
		if (!bind_error) {
			pl_buf_puts(&inline_answer, "<bound xmlns='" NS_BIND2 "'>");
			struct pl_xnode *enable = pl_xnode_find(bind, "enable", NS_SM);
			if (enable)
				enable_sm(c, enable, &inline_answer);
			if (pl_xnode_find(bind, "inactive", NS_CSI))
				c->csi_inactive = true;
			/* Modules take theirs (carbons). */
			struct pl_bind2_event event = { &c->session, bind, &inline_answer };
			pl_hooks_fire("bind2/inline", &event);
			pl_buf_puts(&inline_answer, "</bound>");
		}
	}
	struct pl_buf out = { 0 };
	pl_buf_puts(&out, "<success xmlns='" NS_SASL2 "'>");
	if (additional_data && additional_data->len) {
		char *encoded = pl_base64_encode(additional_data->data, additional_data->len);
		pl_buf_printf(&out, "<additional-data>%s</additional-data>", encoded);
		free(encoded);
	}
	pl_buf_puts(&out, "<authorization-identifier>");
	if (c->bound)
		pl_xml_escape(&out, c->session.full_jid, strlen(c->session.full_jid));
	else
		pl_buf_printf(&out, "%s@%s", c->username, c->host->name);
	pl_buf_puts(&out, "</authorization-identifier>");
	if (request)
		fast_issue(c, request, &out);
	if (inline_answer.len)
		pl_buf_append(&out, inline_answer.data, inline_answer.len);
	pl_buf_puts(&out, "</success>");
	emit_buf(c, &out);
	pl_buf_free(&out);
	pl_buf_free(&inline_answer);
	pl_xnode_unref(&c->sasl2_request);
	if (bind_error)
		pl_log_session(PL_LOG_WARN, "c2s", c->log_id, "%s: Bind2 refused: %s",
			       peer_address(c), bind_error);
	if (resumed)
		resume_replay(c);
	else if (!c->bound)
		c->state = NEGOTIATING; /* bind (RFC 6120 7) may follow on this stream */
}

/* <r/>, <a/> and <enable/> of a bound stream. */
static void handle_sm(struct pl_c2s *c, struct pl_xnode *element)
{
	if (strcmp(element->name, "enable") == 0) {
		handle_enable(c, element);
	} else if (!c->sm_enabled) {
		stream_error(c, "unsupported-stanza-type", "stream management is not enabled");
	} else if (strcmp(element->name, "r") == 0) {
		send_ack(c);
		c->sm_ack_wanted = pl_ack_durable(c->tracker) != c->sm_received;
	} else if (strcmp(element->name, "a") == 0) {
		const char *h_text = pl_xnode_attr(element, "h");
		char *end = NULL;
		unsigned long h = h_text ? strtoul(h_text, &end, 10) : 0;
		if (!h_text || !end || *end || !acknowledge(c, (uint32_t)h))
			stream_error(c, "undefined-condition",
				     "the acknowledged count is higher than the stanzas sent");
	} else if (strcmp(element->name, "resume") == 0) {
		sm_failed(c, "unexpected-request");
	} else {
		stream_error(c, "unsupported-stanza-type", element->name);
	}
}

/* IQs a module answers before authentication (in-band registration).
 * Returns false when nobody takes it. */
static bool handle_unauthenticated_iq(struct pl_c2s *c, struct pl_xnode *element)
{
	struct pl_xnode *payload = strcmp(element->name, "iq") == 0
					   ? pl_xnode_first_element(element)
					   : NULL;
	if (!payload || !payload->ns || !pl_xnode_attr(element, "id"))
		return false;
	char *event = pl_asprintf("iq-unauthenticated/%s", payload->ns);
	bool known = pl_hooks_has(event);
	if (known) {
		/* The client has no address yet: answers go by connection. */
		pl_xnode_set_attr(element, "from", NULL);
		struct pl_unauthenticated_iq data = { element, c->host->name,
						      peer_address(c), c->number,
						      is_secure(c) };
		int result = pl_hooks_fire(event, &data);
		if (PL_HOOK_IS_ERROR(result)) {
			enum pl_stanza_error condition = PL_HOOK_ERROR_CONDITION(result);
			reply_iq_error(c, element, pl_stanza_error_type(condition),
				       pl_stanza_error_name(condition));
		}
	}
	free(event);
	return known;
}

bool pl_c2s_reply(uint64_t connection, const struct pl_xnode *stanza)
{
	for (struct pl_c2s *c = streams; c; c = c->next) {
		if (c->number == connection && c->state != CLOSING) {
			write_node(c, stanza);
			return true;
		}
	}
	return false;
}

static void on_element(void *userdata, struct pl_xnode *element)
{
	struct pl_c2s *c = userdata;
	const char *ns = element->ns ? element->ns : "";
	if (c->state == CLOSING) {
		pl_xnode_unref(&element);
		return;
	}
	if (c->ops->start_tls && !is_secure(c) && strcmp(ns, NS_TLS) == 0 &&
	    strcmp(element->name, "starttls") == 0 && !c->authenticated) {
		write_text(c, "<proceed xmlns='" NS_TLS "'/>");
		c->state = WAIT_HEADER;
		c->ops->start_tls(c->t);
	} else if (!c->authenticated) {
		bool plaintext_ok = is_secure(c) || c->ops->plaintext_ok(c->t);
		if (!plaintext_ok)
			stream_error(c, "policy-violation",
				     c->ops->start_tls ? "STARTTLS is required first"
						       : "authentication needs TLS here");
		else if (strcmp(ns, NS_SASL) == 0 && strcmp(element->name, "auth") == 0)
			c->sasl2 = false, handle_auth(c, element);
		else if (strcmp(ns, NS_SASL) == 0 && strcmp(element->name, "response") == 0 && c->sasl)
			sasl_step(c, element);
		else if (strcmp(ns, NS_SASL) == 0 && strcmp(element->name, "abort") == 0)
			sasl_failure(c, "aborted", "the client aborted");
		else if (strcmp(ns, NS_SASL2) == 0 && strcmp(element->name, "authenticate") == 0)
			handle_authenticate(c, element);
		else if (strcmp(ns, NS_SASL2) == 0 && strcmp(element->name, "response") == 0 &&
			 c->sasl && c->sasl2)
			sasl_step(c, element);
		else if (strcmp(ns, NS_SASL2) == 0 && strcmp(element->name, "abort") == 0)
			sasl_failure(c, "aborted", "the client aborted");
		else if (!handle_unauthenticated_iq(c, element))
			stream_error(c, "not-authorized", "authenticate first");
	} else if (!c->bound) {
		struct pl_xnode *bind = strcmp(element->name, "iq") == 0
						? pl_xnode_find(element, "bind", NS_BIND)
						: NULL;
		const char *type = pl_xnode_attr(element, "type");
		if (bind && type && strcmp(type, "set") == 0)
			handle_bind(c, element, bind);
		else if (strcmp(ns, NS_SM) == 0 && strcmp(element->name, "resume") == 0)
			handle_resume(c, element);
		else if (strcmp(ns, NS_SM) == 0 && strcmp(element->name, "enable") == 0)
			sm_failed(c, "unexpected-request");
		else
			stream_error(c, "not-authorized", "bind a resource first");
	} else if (strcmp(ns, NS_SM) == 0) {
		handle_sm(c, element);
	} else if (strcmp(ns, NS_CSI) == 0) {
		/* XEP-0352 nonzas: not stanzas, not counted. */
		if (strcmp(element->name, "inactive") == 0) {
			c->csi_inactive = true;
		} else if (strcmp(element->name, "active") == 0) {
			c->csi_inactive = false;
			flush_held(c);
		}
	} else if (c->sm_enabled) {
		/* Counted for <a/> only once it is delivered or on disk (ack.h). */
		pl_ack_begin(c->tracker, ++c->sm_received);
		handle_stanza(c, element);
		pl_ack_end();
	} else {
		handle_stanza(c, element);
	}
	pl_xnode_unref(&element);
}

static void on_close(void *userdata)
{
	struct pl_c2s *c = userdata;
	if (c->state == CLOSING)
		return;
	end_session(c);
	c->state = CLOSING;
	c->ops->close(c->t);
}

static void on_xml_error(void *userdata, enum pl_xml_error error, const char *detail)
{
	stream_error(userdata, pl_xml_error_condition(error), detail);
}

const struct pl_xml_stream_callbacks pl_c2s_xml_callbacks = { on_open, on_element, on_close,
							      on_xml_error };

/* ---- what transports call (c2s_transport.h) ---------------------------------- */

void pl_c2s_stream_open(struct pl_c2s *c, const char *name, const char *ns,
			const char *content_ns, const char *const *attributes)
{
	on_open(c, name, ns, content_ns, attributes);
}

void pl_c2s_stream_element(struct pl_c2s *c, struct pl_xnode *element)
{
	on_element(c, element);
}

void pl_c2s_stream_close(struct pl_c2s *c)
{
	on_close(c);
}

void pl_c2s_stream_error(struct pl_c2s *c, const char *condition, const char *text)
{
	stream_error(c, condition, text);
}

/* The session writes elements with a plain start tag, which is all this
 * looks at. */
void pl_c2s_standalone_element(struct pl_buf *out, const char *data, size_t len)
{
	size_t name_end = 1;
	while (name_end < len && !strchr(" \t\r\n/>", data[name_end]))
		name_end++;
	size_t tag_end = name_end;
	char quote = 0;
	for (; tag_end < len; tag_end++) {
		char ch = data[tag_end];
		if (quote) {
			if (ch == quote)
				quote = 0;
		} else if (ch == '\'' || ch == '"') {
			quote = ch;
		} else if (ch == '>') {
			break;
		}
	}
	bool prefixed = name_end > 8 && strncmp(data + 1, "stream:", 7) == 0;
	bool has_xmlns = memmem(data, tag_end, " xmlns=", 7) != NULL;
	pl_buf_append(out, data, name_end);
	if (prefixed)
		pl_buf_puts(out, " xmlns:stream='" PL_NS_STREAMS "'");
	else if (!has_xmlns)
		pl_buf_puts(out, " xmlns='" PL_NS_CLIENT "'");
	pl_buf_append(out, data + name_end, len - name_end);
}

const struct pl_xml_limits *pl_c2s_limits(void)
{
	return &limits;
}

bool pl_c2s_input_begin(struct pl_c2s *c)
{
	if (c->state == CLOSING)
		return false;
	c->last_heard_ms = pl_now_ms();
	c->pinged_ms = 0;
	return true;
}

void pl_c2s_input_end(struct pl_c2s *c)
{
	if (c->state != BOUND || c->stanza_tokens >= 0 || !c->t)
		return;
	int64_t wait_ms = (int64_t)(-c->stanza_tokens * 1000.0 /
				    (double)conf.max_stanzas_per_second) + 1;
	int64_t now = pl_now_ms();
	if (now - c->throttle_logged_ms >= 60000) {
		c->throttle_logged_ms = now;
		pl_log_session(PL_LOG_INFO, "c2s", c->log_id,
			       "%s: %s sends more than %lld stanzas/s; reading paused "
			       "(logged once a minute)",
			       peer_address(c), c->session.full_jid,
			       (long long)conf.max_stanzas_per_second);
	}
	c->ops->pause_reading(c->t, wait_ms);
}

static void on_hibernation_over(evutil_socket_t fd, short what, void *arg)
{
	struct pl_c2s *c = arg;
	if (c->t) {
		stream_error(c, "resource-constraint", "too many unacknowledged stanzas");
		return;
	}
	pl_counter_add(pl_counter("sm-timeouts"), 1);
	pl_log_session(PL_LOG_INFO, "c2s", c->log_id, "%s was not resumed in time%s",
		       c->session.full_jid,
		       c->unacked_count > (size_t)conf.max_unacked ? " (too many stanzas waiting)" : "");
	end_session(c);
	free_stream(c);
}

void pl_c2s_transport_gone(struct pl_c2s *c, bool timed_out)
{
	if (timed_out)
		pl_log_session(PL_LOG_INFO, "c2s", c->log_id, "%s: negotiation timed out",
			       peer_address(c));
	if (c->sm_resumable && c->bound && c->state == BOUND) {
		/* XEP-0198 5: the connection broke, the session waits for the
		 * client to come back; stanzas for it are kept meanwhile. */
		pl_log_session(PL_LOG_INFO, "c2s", c->log_id,
			       "%s: connection lost; %s waits %lld s to be resumed",
			       peer_address(c), c->session.full_jid,
			       (long long)(c->sm_max_ms / 1000));
		c->t = NULL;
		c->session.suspended = true;
		c->sm_ack_requested = c->sm_ack_wanted = false;
		c->hibernation = evtimer_new(loop, on_hibernation_over, c);
		struct timeval tv = { c->sm_max_ms / 1000, (c->sm_max_ms % 1000) * 1000 };
		evtimer_add(c->hibernation, &tv);
		return;
	}
	c->t = NULL;
	end_session(c);
	free_stream(c);
}

struct pl_c2s *pl_c2s_new(const struct pl_c2s_transport *ops, void *t)
{
	struct pl_c2s *c = pl_calloc(1, sizeof(*c));
	c->ops = ops;
	c->t = t;
	static uint64_t connection_counter;
	snprintf(c->stream_id, sizeof(c->stream_id), "new");
	c->number = ++connection_counter;
	snprintf(c->log_id, sizeof(c->log_id), "%llu", (unsigned long long)c->number);
	c->last_heard_ms = pl_now_ms();
	ops->set_idle_timeout(t, conf.negotiation_timeout_ms);
	c->next = streams;
	if (streams)
		streams->prev = c;
	streams = c;
	pl_log_session(PL_LOG_DEBUG, "c2s", c->log_id, "%s: new %s connection",
		       ops->peer_address(t), ops->name);
	return c;
}

/* ---- the TCP transport: RFC 6120 streams, STARTTLS and direct TLS ----------- */

struct tcp {
	struct pl_conn *conn;           /* owned by the conn layer; gone after on_close */
	struct pl_xml_stream *parser;   /* owned */
	struct pl_c2s *c;
	bool restart;                   /* after <proceed/> or <success/> */
	bool start_tls;
};

static void tcp_open(void *t, const char *stream_id, const char *from)
{
	struct tcp *tcp = t;
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
			    "xmlns:stream='http://etherx.jabber.org/streams' id='%s' ",
		      stream_id);
	if (from)
		pl_buf_printf(&out, "from='%s' ", from);
	pl_buf_puts(&out, "version='1.0' xml:lang='en'>");
	pl_conn_write(tcp->conn, out.data, out.len);
	pl_buf_free(&out);
}

static void tcp_element(void *t, const char *data, size_t len)
{
	struct tcp *tcp = t;
	pl_conn_write(tcp->conn, data, len);
}

static void tcp_close(void *t)
{
	struct tcp *tcp = t;
	pl_conn_write(tcp->conn, "</stream:stream>", 16);
	pl_conn_close_after_flush(tcp->conn);
}

static void tcp_drop(void *t)
{
	struct tcp *tcp = t;
	pl_conn_free(tcp->conn);
	pl_xml_stream_free(tcp->parser);
	free(tcp);
}

static void tcp_restart(void *t)
{
	struct tcp *tcp = t;
	tcp->restart = true;
	pl_xml_stream_pause(tcp->parser);
}

static void tcp_start_tls(void *t)
{
	struct tcp *tcp = t;
	tcp->start_tls = true;
	tcp_restart(t);
}

static const char *tcp_peer_address(void *t)
{
	return pl_conn_peer_address(((struct tcp *)t)->conn);
}

static bool tcp_is_secure(void *t)
{
	return pl_conn_is_tls(((struct tcp *)t)->conn);
}

static bool tcp_plaintext_ok(void *t)
{
	return !conf.require_tls ||
	       (conf.allow_plaintext_loopback && pl_conn_peer_is_loopback(((struct tcp *)t)->conn));
}

static SSL *tcp_ssl(void *t)
{
	return pl_conn_ssl(((struct tcp *)t)->conn);
}

static void tcp_pause_reading(void *t, int64_t ms)
{
	pl_conn_pause_reading(((struct tcp *)t)->conn, ms);
}

static void tcp_set_idle_timeout(void *t, int64_t ms)
{
	pl_conn_set_idle_timeout(((struct tcp *)t)->conn, ms);
}

static size_t tcp_idle(void *t)
{
	struct tcp *tcp = t;
	size_t before = pl_xml_stream_memory(tcp->parser);
	if (!pl_xml_stream_hibernate(tcp->parser))
		return 0;
	return before - pl_xml_stream_memory(tcp->parser);
}

static const struct pl_c2s_transport tcp_transport = {
	"tcp", tcp_open, tcp_element, tcp_close, tcp_drop, tcp_restart, tcp_start_tls,
	tcp_peer_address, tcp_is_secure, tcp_plaintext_ok, tcp_ssl, tcp_pause_reading,
	tcp_set_idle_timeout, tcp_idle,
};

static size_t on_data(struct pl_conn *conn, const char *data, size_t len, void *userdata)
{
	struct tcp *tcp = userdata;
	struct pl_c2s *c = tcp->c;
	if (!pl_c2s_input_begin(c))
		return len;
	ssize_t used = pl_xml_stream_feed(tcp->parser, data, len);
	if (used < 0)
		return len;
	if (tcp->restart) {
		tcp->restart = false;
		pl_xml_stream_reset(tcp->parser);
		if (tcp->start_tls) {
			tcp->start_tls = false;
			pl_conn_start_tls(tcp->conn);
			/* Bytes after <starttls/> in the same packet are not XML of
			 * the new stream: RFC 6120 5.4.3.3 forbids them. */
			return len;
		}
		return (size_t)used;
	}
	pl_c2s_input_end(c);
	return len;
}

static void on_conn_close(struct pl_conn *conn, enum pl_conn_close_reason reason, void *userdata)
{
	struct tcp *tcp = userdata;
	pl_c2s_transport_gone(tcp->c, reason == PL_CONN_TIMEOUT);
	pl_xml_stream_free(tcp->parser);
	free(tcp);
}

static const struct pl_conn_callbacks conn_callbacks = { on_data, on_conn_close };

static void accept_connection(int fd, const struct sockaddr *peer, socklen_t peer_len,
			      enum pl_tls_alpn alpn)
{
	struct tcp *tcp = pl_calloc(1, sizeof(*tcp));
	tcp->conn = pl_conn_new(loop, fd, peer, peer_len, alpn, &conn_callbacks, tcp);
	if (!tcp->conn) {
		free(tcp);
		return;
	}
	tcp->c = pl_c2s_new(&tcp_transport, tcp);
	tcp->parser = pl_xml_stream_new(&limits, &pl_c2s_xml_callbacks, tcp->c);
	pl_c2s_limit_reading(tcp->conn);
}

void pl_c2s_limit_reading(struct pl_conn *conn)
{
	/* A flooding client is slowed at the socket: its bytes wait in the
	 * kernel, not in our memory, and the loop serves everyone else. */
	if (conf.max_bytes_per_second)
		pl_conn_set_read_limit(conn, conf.max_bytes_per_second,
				       2 * conf.max_bytes_per_second);
}

static void on_accept_plain(int fd, const struct sockaddr *peer, socklen_t len, void *arg)
{
	accept_connection(fd, peer, len, PL_TLS_ALPN_NONE);
}

static void on_accept_tls(int fd, const struct sockaddr *peer, socklen_t len, void *arg)
{
	accept_connection(fd, peer, len, PL_TLS_ALPN_XMPP_CLIENT);
}

/* XEP-0199 from the server's side: a bound client silent for ping-idle is
 * pinged; if it stays silent ping-timeout longer (no answer, no stanza,
 * not even a whitespace keepalive) its connection is dead and the session
 * ends, so its resources and presence do not linger. */
static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = pl_now_ms();
	struct pl_c2s *next;
	for (struct pl_c2s *c = streams; c; c = next) {
		next = c->next;
		if (c->state != BOUND || !c->t)
			continue;
		if (c->pinged_ms && now - c->pinged_ms >= conf.ping_timeout_ms) {
			stream_error(c, "connection-timeout", "no answer to a ping");
		} else if (!c->pinged_ms && now - c->last_heard_ms >= conf.ping_idle_ms) {
			char ping[160];
			snprintf(ping, sizeof(ping),
				 "<iq type='get' id='keepalive-%llx' from='%s'><ping xmlns='urn:xmpp:ping'/></iq>",
				 (unsigned long long)now, c->host->name);
			send_stanza_bytes(c, ping, strlen(ping));
			c->pinged_ms = now;
		}
	}
}

/* An account was deleted (parleyctl deluser, XEP-0077 cancellation):
 * its streams end, since nothing they do could be stored any more. */
static int on_user_deleted(struct pl_event *event, void *userdata)
{
	const char *bare = event->data;
	size_t at = strcspn(bare, "@");
	for (struct pl_c2s *c = streams; c; c = c->next) {
		if (!c->authenticated || !c->username || !c->host || c->state == CLOSING)
			continue;
		if (strlen(c->username) == at && strncmp(c->username, bare, at) == 0 &&
		    strcmp(c->host->name, bare + at + (bare[at] ? 1 : 0)) == 0)
			stream_error(c, "not-authorized", "the account was deleted");
	}
	return PL_CONTINUE;
}

static void on_parser_sweep(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = pl_now_ms();
	size_t freed = 0;
	for (struct pl_c2s *c = streams; c; c = c->next) {
		if (!c->t || c->state == CLOSING || now - c->last_heard_ms < PARSER_IDLE_MS ||
		    !c->ops->idle)
			continue;
		freed += c->ops->idle(c->t);
	}
	/* Freed parsers sit between live blocks, where the allocator keeps
	 * them; after a wave of logins, give the pages back. */
	if (freed >= 1024 * 1024)
		malloc_trim(0);
}

int pl_c2s_start(struct event_base *base, const struct pl_config *config, char **error)
{
	loop = base;
	int rc = pl_options_apply(c2s_options, &conf, pl_config_find(config, "c2s", NULL),
				  config->path, "<c2s>", error);
	if (rc)
		return rc;
	limits = pl_xml_default_limits;
	limits.max_stanza_bytes = conf.max_stanza_size;
	int64_t tick = (conf.ping_idle_ms < conf.ping_timeout_ms ? conf.ping_idle_ms
								 : conf.ping_timeout_ms) / 4;
	pl_hook(NULL, "user-deleted", on_user_deleted, NULL, 0);
	pl_hook(NULL, "user-password-changed", on_password_changed, NULL, 0);
	fast_space = pl_server.store ? pl_store_space(pl_server.store, "fast.tokens") : NULL;
	parser_sweep = event_new(base, -1, EV_PERSIST, on_parser_sweep, NULL);
	struct timeval sweep_every = { PARSER_IDLE_MS / 1000, (PARSER_IDLE_MS % 1000) * 1000 };
	event_add(parser_sweep, &sweep_every);
	keepalive_timer = event_new(base, -1, EV_PERSIST, on_keepalive, NULL);
	struct timeval every = { tick / 1000, (tick % 1000) * 1000 };
	event_add(keepalive_timer, &every);
	rc = pl_tls_init(error);
	if (rc)
		return rc;
	if (conf.port > 0 &&
	    (rc = pl_listener_open(base, conf.address, (int)conf.port, on_accept_plain, NULL,
				   &plain_listener, error)) != 0)
		return rc;
	if (conf.tls_port > 0 &&
	    (rc = pl_listener_open(base, conf.address, (int)conf.tls_port, on_accept_tls, NULL,
				   &tls_listener, error)) != 0)
		return rc;
	pl_log(PL_LOG_INFO, "c2s", "listening on %s port %lld (STARTTLS%s) and %lld (direct TLS)",
	       conf.address, (long long)conf.port, conf.require_tls ? " required" : "",
	       (long long)conf.tls_port);
	return 0;
}

bool pl_c2s_begin_shutdown(void)
{
	pl_listener_close(plain_listener);
	pl_listener_close(tls_listener);
	plain_listener = tls_listener = NULL;
	struct pl_c2s *next;
	for (struct pl_c2s *c = streams; c; c = next) {
		next = c->next;
		stream_error(c, "system-shutdown", "the server is shutting down");
	}
	return streams != NULL;
}

void pl_c2s_each_transport(void (*fn)(void *arg, const char *transport, size_t sessions,
					size_t hibernating),
			   void *arg)
{
	/* Few transports: count by name in a small table. */
	const char *names[8];
	size_t live[8] = { 0 }, asleep[8] = { 0 }, kinds = 0;
	for (struct pl_c2s *c = streams; c; c = c->next) {
		if (!c->bound)
			continue;
		const char *name = c->ops ? c->ops->name : "tcp";
		size_t k = 0;
		while (k < kinds && strcmp(names[k], name) != 0)
			k++;
		if (k == kinds) {
			if (kinds == PL_ARRAY_LEN(names))
				continue;
			names[kinds++] = name;
		}
		if (c->t)
			live[k]++;
		else
			asleep[k]++;
	}
	for (size_t k = 0; k < kinds; k++)
		fn(arg, names[k], live[k], asleep[k]);
}

bool pl_c2s_idle(void)
{
	return streams == NULL;
}

void pl_c2s_stop(void)
{
	pl_c2s_begin_shutdown();
	while (streams) {
		struct pl_c2s *c = streams;
		unlink_stream(c);
		/* Clients that did not read their <system-shutdown/> in time. */
		if (c->t)
			c->ops->drop(c->t);
		c->t = NULL;
		free_stream(c);
	}
	if (keepalive_timer) {
		event_free(keepalive_timer);
		keepalive_timer = NULL;
	}
	if (parser_sweep) {
		event_free(parser_sweep);
		parser_sweep = NULL;
	}
	pl_tls_shutdown();
	pl_buf_free(&shared_copy);
	pl_options_free(c2s_options, &conf);
}
