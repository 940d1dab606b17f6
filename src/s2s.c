/* Server-to-server streams, RFC 6120 with XEP-0220 Server Dialback and
 * XEP-0178 SASL EXTERNAL.
 *
 * Outgoing: one stream per (local domain, remote domain) pair, made when
 * the first stanza needs it. Stanzas wait in the stream's queue (owned
 * copies, in order) while it connects (a configured route, else DNS),
 * negotiates STARTTLS (always required) and authenticates: SASL EXTERNAL
 * when the peer's certificate is valid for the remote domain and the peer
 * offers it, else dialback when the remote domain's policy allows it.
 * Once authenticated the queue is written out in order; if anything fails
 * first, every queued stanza bounces with remote-server-not-found (or
 * remote-server-timeout after a timeout): nothing is lost silently. A
 * stream unused for idle-timeout is closed; the next stanza opens a new
 * one.
 *
 * Incoming: a remote server connects, STARTTLS (or direct TLS) is
 * required, then it authenticates a domain with EXTERNAL (its certificate
 * must be valid for the stream's 'from') or with dialback (we ask the
 * authoritative server over our outgoing stream to it, db:verify). It may
 * only send stanzas from domains it authenticated (invalid-from) to
 * domains we serve (host-unknown). As the authoritative server we answer
 * db:verify with HMAC-SHA256 keys (XEP-0220 2.4) from a secret.
 *
 * Policy per remote domain (<remote authentication>, default from <s2s>):
 * "certificate" accepts only PKIX-valid certificates (RFC 6125 names),
 * "dialback" also accepts dialback when the certificate is not valid
 * (self-signed peers: dialback over TLS), "refuse" refuses the domain.
 * Every authentication result is logged.
 *
 * Fewer connections: a local domain with no stream of its own to a
 * remote domain rides on another local domain's ready dialback stream to
 * it (XEP-0220 multiplexing: one more db:result there). With XEP-0288
 * (<bidi/>, asked for before authenticating when offered) the peer's
 * stanzas come back on our outgoing stream, and on an incoming
 * bidirectional stream our stanzas to the authenticated domain go back
 * over it: neither side needs a second connection. */
#include "s2s.h"
#include "ack.h"
#include "counters.h"
#include "ctl/ctl.h"
#include "hooks.h"
#include "jid.h"
#include "log.h"
#include "net/conn.h"
#include "net/listener.h"
#include "net/resolve.h"
#include "net/tls.h"
#include "router.h"
#include "scram.h" /* pl_base64_decode */
#include "server.h"
#include "util.h"
#include "xml/stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#define NS_SERVER "jabber:server"
#define NS_DIALBACK "jabber:server:dialback"
#define NS_DIALBACK_FEATURE "urn:xmpp:features:dialback"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_SM "urn:xmpp:sm:3"
#define NS_BIDI_FEATURE "urn:xmpp:features:bidi"
#define NS_BIDI "urn:xmpp:bidi"

enum auth_policy { POLICY_DEFAULT, POLICY_CERTIFICATE, POLICY_DIALBACK, POLICY_REFUSE };
static const char *const policy_names[] = { "default", "certificate", "dialback", "refuse",
					    NULL };

struct s2s_conf {
	char *address;
	int64_t port;
	int64_t tls_port;
	char *ca_file;
	char *dialback_secret;
	int authentication;             /* enum auth_policy */
	int64_t idle_timeout_ms;
	int64_t connect_timeout_ms;
	int64_t negotiation_timeout_ms;
	uint64_t max_stanza_size;
	int64_t max_queue;
	char *dns_server;               /* tests: "127.0.0.1:port" */
	int64_t max_unauthenticated;
	int64_t max_streams_per_domain;
	bool bidi;
};

static const struct pl_option s2s_options[] = {
	{ "address", PL_OPT_STRING, "*", 0, 0, NULL, offsetof(struct s2s_conf, address),
	  "listen address" },
	{ "port", PL_OPT_INT, "5269", 0, 65535, NULL, offsetof(struct s2s_conf, port),
	  "STARTTLS port, 0 for none" },
	{ "tls-port", PL_OPT_INT, "5270", 0, 65535, NULL, offsetof(struct s2s_conf, tls_port),
	  "direct TLS port (XEP-0368), 0 for none" },
	{ "ca-file", PL_OPT_STRING, NULL, 0, 0, NULL, offsetof(struct s2s_conf, ca_file),
	  "trusted CA certificates (PEM), added to the system's" },
	{ "dialback-secret", PL_OPT_STRING, NULL, 0, 0, NULL,
	  offsetof(struct s2s_conf, dialback_secret), "default: random at each start" },
	{ "authentication", PL_OPT_ENUM, "certificate", 0, 0, policy_names,
	  offsetof(struct s2s_conf, authentication), NULL },
	{ "idle-timeout", PL_OPT_DURATION, "5m", 1000, 86400000, NULL,
	  offsetof(struct s2s_conf, idle_timeout_ms), "close an outgoing stream unused this long" },
	{ "connect-timeout", PL_OPT_DURATION, "10s", 1000, 600000, NULL,
	  offsetof(struct s2s_conf, connect_timeout_ms), NULL },
	{ "negotiation-timeout", PL_OPT_DURATION, "30s", 1000, 600000, NULL,
	  offsetof(struct s2s_conf, negotiation_timeout_ms), NULL },
	{ "max-stanza-size", PL_OPT_SIZE, "256KiB", 4096, 64 << 20, NULL,
	  offsetof(struct s2s_conf, max_stanza_size), NULL },
	{ "max-queue", PL_OPT_INT, "10000", 1, 10000000, NULL, offsetof(struct s2s_conf, max_queue),
	  "stanzas waiting for one remote domain's stream" },
	{ "dns-server", PL_OPT_STRING, NULL, 0, 0, NULL, offsetof(struct s2s_conf, dns_server),
	  "ask this DNS server (address:port) instead of the system's" },
	{ "max-unauthenticated", PL_OPT_INT, "100", 1, 100000, NULL,
	  offsetof(struct s2s_conf, max_unauthenticated),
	  "incoming streams not yet authenticated, in all" },
	{ "max-streams-per-domain", PL_OPT_INT, "10", 1, 10000, NULL,
	  offsetof(struct s2s_conf, max_streams_per_domain),
	  "incoming streams from one remote domain" },
	{ "bidi", PL_OPT_BOOL, "true", 0, 0, NULL, offsetof(struct s2s_conf, bidi),
	  "XEP-0288: both directions on one connection where the peer offers it" },
	{ NULL }
};

struct remote_conf {
	char *route;                    /* "host:port" or NULL */
	bool direct_tls;
	int authentication;             /* enum auth_policy */
};

static const struct pl_option remote_options[] = {
	{ "route", PL_OPT_STRING, NULL, 0, 0, NULL, offsetof(struct remote_conf, route),
	  "address:port, instead of DNS" },
	{ "direct-tls", PL_OPT_BOOL, "false", 0, 0, NULL, offsetof(struct remote_conf, direct_tls),
	  "the route is a direct TLS port (XEP-0368)" },
	{ "authentication", PL_OPT_ENUM, "default", 0, 0, policy_names,
	  offsetof(struct remote_conf, authentication), NULL },
	{ NULL }
};

struct remote {
	char *name;                     /* owned, normalised */
	struct remote_conf conf;        /* owned strings */
	struct remote *next;
};

/* ---- state -------------------------------------------------------------------- */

struct queued {
	struct pl_xnode *stanza;        /* owned copy */
	uint32_t seq;                   /* XEP-0198 number, once sent */
	struct queued *next;
};

/* A db:verify we must send or have sent for an incoming stream. */
struct verify {
	char *id, *key;                 /* owned */
	char *remote;                   /* the domain being verified; owned */
	uint64_t in_number;             /* which incoming stream asked */
	bool sent;
	struct verify *next;
};

enum out_state { OUT_CONNECTING, OUT_NEGOTIATING, OUT_READY, OUT_CLOSING };

struct out {
	char *local, *remote;           /* owned */
	enum out_state state;
	struct pl_conn *conn;           /* owned: freed by the conn layer after on_close */
	struct pl_xml_stream *parser;   /* owned */
	struct pl_resolve *resolving;   /* owned while DNS runs */
	struct pl_target *targets;      /* owned array */
	size_t target_count, target_next;
	int fd;                         /* while connecting, else -1 */
	struct event *connect_event;    /* owned, while connecting */
	struct event *deadline;         /* owned: negotiation timeout */
	char stream_id[128];            /* the receiving server's, for dialback */
	char log_id[24];
	bool direct_tls, restart_pending, features_seen_after_tls, dialback_sent, sasl_sent;
	const char *auth_method;        /* "SASL EXTERNAL" / "dialback" once authenticated */
	struct queued *queue, *queue_tail;
	size_t queue_count;
	/* XEP-0198 on the stream: stanzas written but not yet acknowledged
	 * by the peer, kept (owned copies) so that they bounce rather than
	 * vanish if the connection dies under them. */
	bool sm_offered, sm_enabled, sm_ack_requested;
	uint32_t sm_sent;
	struct queued *unacked, *unacked_tail;
	size_t unacked_count;
	struct verify *verifies;        /* owned list */
	int64_t last_used_ms;
	/* Piggybacking (XEP-0220 multiplexing): a "rider" has no connection
	 * of its own; another local domain's stream to the same remote
	 * domain, authenticated with dialback, carries its db:result and
	 * then its stanzas. Not owned; riders end with their carrier. */
	struct out *carrier;
	/* XEP-0288: on an outgoing stream, `bidi` says we asked for both
	 * directions (the peer's stanzas come back on it); an out with
	 * `bidi_in` (not owned) is the way back over a peer's incoming
	 * bidirectional stream, without a connection of its own. */
	bool bidi;
	struct in *bidi_in;
	struct out *next;
};

enum in_state { IN_WAIT_HEADER, IN_NEGOTIATING, IN_CLOSING };

struct in {
	struct pl_conn *conn;           /* owned: freed by the conn layer after on_close */
	struct pl_xml_stream *parser;   /* owned */
	enum in_state state;
	uint64_t number;
	char log_id[24];
	char stream_id[33];
	char *local;                    /* the stream's 'to' (a local domain), owned */
	char *peer;                     /* the stream's 'from', owned, may be NULL */
	bool restart, start_tls, sasl_done, bidi;
	const char *auth_method;        /* of the last domain authenticated */
	/* XEP-0198: stanzas handled, acknowledged once routed or committed. */
	bool sm_enabled, sm_ack_wanted;
	uint32_t sm_received;
	struct pl_ack_tracker *tracker; /* owned reference */
	char **domains;                 /* authenticated remote domains, owned */
	size_t domain_count, domain_cap;
	struct in *prev, *next;
};

static struct s2s_conf conf;
static bool enabled, conf_loaded;
static struct remote *remotes;
static struct out *outs;
static struct in *ins;
static struct pl_listener *plain_listener, *tls_listener;
static struct event_base *loop;
static struct pl_xml_limits limits;
static struct event *idle_sweep;
static unsigned char dialback_key[SHA256_DIGEST_LENGTH];

/* A stanza that could not reach the remote server goes back to its
 * sender, and `parleyctl status` counts it (s2s-stanzas-bounced). */
static void bounce(const struct pl_xnode *stanza, enum pl_stanza_error condition, const char *text)
{
	pl_counter_add(pl_counter("s2s-stanzas-bounced"), 1);
	pl_route_error(stanza, condition, text);
}

/* Every authentication, either way, by method: "s2s-auth-dialback",
 * "s2s-auth-external". */
static void count_authentication(const char *method)
{
	pl_counter_add(pl_counter(strcmp(method, "dialback") == 0 ? "s2s-auth-dialback"
								  : "s2s-auth-external"),
		       1);
}

static struct remote *find_remote(const char *domain)
{
	for (struct remote *r = remotes; r; r = r->next)
		if (strcmp(r->name, domain) == 0)
			return r;
	return NULL;
}

static enum auth_policy policy_of(const char *domain)
{
	struct remote *r = domain ? find_remote(domain) : NULL;
	if (r && r->conf.authentication != POLICY_DEFAULT)
		return (enum auth_policy)r->conf.authentication;
	return (enum auth_policy)conf.authentication;
}

/* XEP-0220 2.4: HMAC-SHA256(SHA256(secret), receiving + ' ' + originating
 * + ' ' + stream id), as lower-case hex. */
static void dialback_compute(const char *receiving, const char *originating, const char *id,
			     char out[2 * SHA256_DIGEST_LENGTH + 1])
{
	char *text = pl_asprintf("%s %s %s", receiving, originating, id);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	HMAC(EVP_sha256(), dialback_key, sizeof(dialback_key), (const unsigned char *)text,
	     strlen(text), mac, &len);
	free(text);
	for (unsigned int i = 0; i < len && i < SHA256_DIGEST_LENGTH; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

static void random_id(char *out, size_t bytes)
{
	uint8_t random[32];
	if (bytes > sizeof(random))
		bytes = sizeof(random);
	pl_random_bytes(random, bytes);
	for (size_t i = 0; i < bytes; i++)
		snprintf(out + i * 2, 3, "%02x", random[i]);
}

static const char *attribute_of(const char *const *attributes, const char *name)
{
	for (size_t i = 0; attributes[i]; i += 2)
		if (strcmp(attributes[i], name) == 0)
			return attributes[i + 1];
	return NULL;
}

static bool is_element(const struct pl_xnode *n, const char *name, const char *ns)
{
	return strcmp(n->name, name) == 0 && n->ns && strcmp(n->ns, ns) == 0;
}

static struct in *find_in(uint64_t number)
{
	for (struct in *i = ins; i; i = i->next)
		if (i->number == number)
			return i;
	return NULL;
}

static void in_dialback_answer(struct in *i, const char *local, const char *remote,
			       const char *type, const char *error_condition);

/* ---- outgoing streams ------------------------------------------------------- */

static struct out *find_out(const char *local, const char *remote)
{
	for (struct out *o = outs; o; o = o->next)
		if (o->state != OUT_CLOSING && strcmp(o->local, local) == 0 &&
		    strcmp(o->remote, remote) == 0)
			return o;
	return NULL;
}

static void out_write(struct out *o, const char *text)
{
	pl_conn_write(o->conn, text, strlen(text));
}

static void out_fail(struct out *o, enum pl_stanza_error condition, const char *why);
static void out_free(struct out *o);

/* The carrier `c` stops carrying: its riders end with it. One that was
 * ready has nothing of its own in flight (the carrier holds the
 * unacknowledged stanzas, which bounce with it); one still waiting for
 * its db:result bounces its queue. */
static void riders_end(struct out *c, const char *why)
{
	for (;;) {
		struct out *r = outs;
		while (r && r->carrier != c)
			r = r->next;
		if (!r)
			return;
		r->carrier = NULL;
		/* Without a connection out_fail frees it, after bouncing what
		 * waits and failing the db:verify requests it carried. */
		if (r->state == OUT_CLOSING)
			out_free(r);
		else
			out_fail(r, PL_ERR_REMOTE_SERVER_NOT_FOUND, why);
	}
}

static void out_free(struct out *o)
{
	riders_end(o, "the stream it was piggybacking on ended");
	for (struct out **link = &outs; *link; link = &(*link)->next) {
		if (*link == o) {
			*link = o->next;
			break;
		}
	}
	while (o->queue) {
		struct queued *q = o->queue;
		o->queue = q->next;
		pl_xnode_unref(&q->stanza);
		free(q);
	}
	while (o->unacked) {
		struct queued *q = o->unacked;
		o->unacked = q->next;
		pl_xnode_unref(&q->stanza);
		free(q);
	}
	while (o->verifies) {
		struct verify *v = o->verifies;
		o->verifies = v->next;
		free(v->id);
		free(v->key);
		free(v->remote);
		free(v);
	}
	pl_resolve_cancel(o->resolving);
	if (o->connect_event)
		event_free(o->connect_event);
	if (o->fd >= 0)
		close(o->fd);
	if (o->deadline)
		event_free(o->deadline);
	pl_xml_stream_free(o->parser);
	pl_resolve_free_targets(o->targets, o->target_count);
	free(o->local);
	free(o->remote);
	free(o);
}

/* The connection ended before the peer acknowledged these: they bounce
 * (the peer may have got some of them, but a false error is better than
 * a silent loss). */
static void out_bounce_unacked(struct out *o, const char *why)
{
	struct queued *unacked = o->unacked;
	size_t count = o->unacked_count;
	o->unacked = o->unacked_tail = NULL;
	o->unacked_count = 0;
	if (!unacked)
		return;
	pl_log_session(PL_LOG_INFO, "s2s", o->log_id,
		       "%s -> %s: %zu stanza%s not acknowledged by the peer bounce%s", o->local,
		       o->remote, count, count == 1 ? "" : "s", count == 1 ? "s" : "");
	char *text = pl_asprintf("%s: %s before the stanza was acknowledged", o->remote, why);
	while (unacked) {
		struct queued *q = unacked;
		unacked = q->next;
		bounce(q->stanza, PL_ERR_REMOTE_SERVER_TIMEOUT, text);
		pl_xnode_unref(&q->stanza);
		free(q);
	}
	free(text);
}

/* The stream failed before it could carry the queue: every queued
 * stanza bounces, and the incoming streams waiting for a dialback
 * verification through it learn that it could not be done. */
static void out_fail(struct out *o, enum pl_stanza_error condition, const char *why)
{
	if (o->state == OUT_CLOSING)
		return;
	pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "%s -> %s failed: %s; %zu queued stanza%s bounce%s",
		       o->local, o->remote, why, o->queue_count, o->queue_count == 1 ? "" : "s",
		       o->queue_count == 1 ? "s" : "");
	o->state = OUT_CLOSING;
	riders_end(o, why);
	out_bounce_unacked(o, why);
	struct queued *queue = o->queue;
	o->queue = o->queue_tail = NULL;
	o->queue_count = 0;
	struct verify *verifies = o->verifies;
	o->verifies = NULL;
	char *text = pl_asprintf("%s: %s", o->remote, why);
	while (queue) {
		struct queued *q = queue;
		queue = q->next;
		bounce(q->stanza, condition, text);
		pl_xnode_unref(&q->stanza);
		free(q);
	}
	free(text);
	while (verifies) {
		struct verify *v = verifies;
		verifies = v->next;
		struct in *i = find_in(v->in_number);
		if (i)
			in_dialback_answer(i, o->local, v->remote, "error",
					   "remote-server-not-found");
		free(v->id);
		free(v->key);
		free(v->remote);
		free(v);
	}
	if (o->conn) {
		pl_conn_close_after_flush(o->conn);
	} else {
		out_free(o);
	}
}

static void out_stream_error(struct out *o, const char *condition, const char *text)
{
	if (o->state == OUT_CLOSING || !o->conn)
		return;
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<stream:error><%s xmlns='" NS_STREAM_ERRORS "'/>", condition);
	if (text) {
		pl_buf_puts(&out, "<text xmlns='" NS_STREAM_ERRORS "' xml:lang='en'>");
		pl_xml_escape(&out, text, strlen(text));
		pl_buf_puts(&out, "</text>");
	}
	pl_buf_puts(&out, "</stream:error></stream:stream>");
	pl_conn_write(o->conn, out.data, out.len);
	pl_buf_free(&out);
	char *why = pl_asprintf("stream error %s%s%s", condition, text ? ": " : "", text ? text : "");
	out_fail(o, PL_ERR_REMOTE_SERVER_NOT_FOUND, why);
	free(why);
}

static void out_send_header(struct out *o)
{
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<?xml version='1.0'?><stream:stream xmlns='" NS_SERVER "' "
			    "xmlns:stream='" PL_NS_STREAMS "' xmlns:db='" NS_DIALBACK "' "
			    "from='%s' to='%s' version='1.0'>",
		      o->local, o->remote);
	pl_conn_write(o->conn, out.data, out.len);
	pl_buf_free(&out);
}

static void write_stanza(struct pl_conn *conn, const struct pl_xnode *stanza)
{
	/* jabber:client is the namespace in scope: unprefixed elements are
	 * then in jabber:server inside the stream, as RFC 6120 4.8.3 wants. */
	struct pl_buf out = { 0 };
	pl_xnode_serialize(stanza, PL_NS_CLIENT, &out);
	pl_conn_write(conn, out.data, out.len);
	pl_buf_free(&out);
}

/* A stanza on an authenticated stream; with XEP-0198 it is kept until
 * the peer acknowledges it, and an ack is asked for if none is pending. */
static void out_send(struct out *o, const struct pl_xnode *stanza)
{
	if (o->carrier) {
		o->last_used_ms = pl_now_ms();
		out_send(o->carrier, stanza);
		return;
	}
	if (o->bidi_in) {
		/* No XEP-0198 in this direction: the peer's incoming stream
		 * counts only what it receives. */
		o->last_used_ms = pl_now_ms();
		write_stanza(o->bidi_in->conn, stanza);
		return;
	}
	write_stanza(o->conn, stanza);
	o->last_used_ms = pl_now_ms();
	if (!o->sm_enabled)
		return;
	struct queued *q = pl_calloc(1, sizeof(*q));
	q->stanza = pl_xnode_copy(stanza);
	q->seq = ++o->sm_sent;
	if (o->unacked_tail)
		o->unacked_tail->next = q;
	else
		o->unacked = q;
	o->unacked_tail = q;
	o->unacked_count++;
	if (!o->sm_ack_requested) {
		out_write(o, "<r xmlns='" NS_SM "'/>");
		o->sm_ack_requested = true;
	}
}

static void out_send_verifies(struct out *o)
{
	/* A rider's go on its carrier's connection (which is ready). */
	struct pl_conn *conn = o->carrier ? o->carrier->conn : o->conn;
	if ((!o->carrier && !o->features_seen_after_tls) || o->state == OUT_CLOSING || !conn)
		return;
	for (struct verify *v = o->verifies; v; v = v->next) {
		if (v->sent)
			continue;
		struct pl_buf out = { 0 };
		pl_buf_printf(&out, "<db:verify from='%s' to='%s' id='", o->local, o->remote);
		pl_xml_escape(&out, v->id, strlen(v->id));
		pl_buf_puts(&out, "'>");
		pl_xml_escape(&out, v->key, strlen(v->key));
		pl_buf_puts(&out, "</db:verify>");
		pl_conn_write(conn, out.data, out.len);
		pl_buf_free(&out);
		v->sent = true;
	}
}

static void out_ready(struct out *o, const char *method)
{
	o->state = OUT_READY;
	o->auth_method = method;
	count_authentication(method);
	if (o->deadline) {
		event_free(o->deadline);
		o->deadline = NULL;
	}
	pl_log_session(PL_LOG_INFO, "s2s", o->log_id,
		       "%s -> %s authenticated with %s; sending %zu queued stanza%s%s", o->local,
		       o->remote, method, o->queue_count, o->queue_count == 1 ? "" : "s",
		       o->sm_offered ? " with stream management" : "");
	if (o->sm_offered) {
		/* XEP-0198: the peer counts from the <enable/> on, so stanzas may
		 * follow it at once. */
		out_write(o, "<enable xmlns='" NS_SM "'/>");
		o->sm_enabled = true;
	}
	while (o->queue) {
		struct queued *q = o->queue;
		o->queue = q->next;
		out_send(o, q->stanza);
		pl_xnode_unref(&q->stanza);
		free(q);
	}
	o->queue_tail = NULL;
	o->queue_count = 0;
	o->last_used_ms = pl_now_ms();
}

static bool features_offer(const struct pl_xnode *features, const char *name, const char *ns)
{
	for (struct pl_xnode *f = pl_xnode_first_element(features); f; f = pl_xnode_next_element(f))
		if (is_element(f, name, ns))
			return true;
	return false;
}

static bool offers_external(const struct pl_xnode *features)
{
	struct pl_xnode *mechanisms = pl_xnode_find(features, "mechanisms", NS_SASL);
	for (struct pl_xnode *m = mechanisms ? pl_xnode_first_element(mechanisms) : NULL; m;
	     m = pl_xnode_next_element(m)) {
		char *name = pl_xnode_text(m);
		bool external = strcmp(name, "EXTERNAL") == 0;
		free(name);
		if (external)
			return true;
	}
	return false;
}

static void out_features(struct out *o, struct pl_xnode *features)
{
	o->sm_offered = features_offer(features, "sm", NS_SM);
	if (!pl_conn_is_tls(o->conn)) {
		if (!features_offer(features, "starttls", NS_TLS)) {
			out_stream_error(o, "policy-violation", "TLS is required");
			return;
		}
		out_write(o, "<starttls xmlns='" NS_TLS "'/>");
		return;
	}
	if (o->auth_method) {
		/* The stream restarted after SASL: done (RFC 6120 6.4.6). */
		out_ready(o, o->auth_method);
		return;
	}
	o->features_seen_after_tls = true;
	if (conf.bidi && !o->bidi && features_offer(features, "bidi", NS_BIDI_FEATURE)) {
		/* XEP-0288 2: before authenticating. */
		out_write(o, "<bidi xmlns='" NS_BIDI "'/>");
		o->bidi = true;
	}
	out_send_verifies(o);
	if (o->dialback_sent || o->sasl_sent)
		return;
	const char *why = NULL;
	bool valid = pl_tls_peer_verified(pl_conn_ssl(o->conn), o->remote, &why);
	enum auth_policy policy = policy_of(o->remote);
	pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "%s -> %s: the peer's certificate: %s",
		       o->local, o->remote, why);
	if (valid && offers_external(features)) {
		/* XEP-0178 3: the authorization identity is our domain, the
		 * stream's 'from' (what Prosody and ejabberd send and expect). */
		char *authzid = pl_base64_encode(o->local, strlen(o->local));
		struct pl_buf out = { 0 };
		pl_buf_printf(&out, "<auth xmlns='" NS_SASL "' mechanism='EXTERNAL'>%s</auth>",
			      authzid);
		pl_conn_write(o->conn, out.data, out.len);
		pl_buf_free(&out);
		free(authzid);
		o->sasl_sent = true;
		return;
	}
	if (policy == POLICY_CERTIFICATE && !valid) {
		char *text = pl_asprintf("the certificate is not valid (%s) and dialback is not allowed",
					 why);
		out_stream_error(o, "policy-violation", text);
		free(text);
		return;
	}
	if (!features_offer(features, "dialback", NS_DIALBACK_FEATURE)) {
		out_stream_error(o, "policy-violation", "no authentication method in common");
		return;
	}
	char key[2 * SHA256_DIGEST_LENGTH + 1];
	dialback_compute(o->remote, o->local, o->stream_id, key);
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<db:result from='%s' to='%s'>%s</db:result>", o->local, o->remote, key);
	pl_conn_write(o->conn, out.data, out.len);
	pl_buf_free(&out);
	o->dialback_sent = true;
}

/* Answers to our db:verify requests: passed on to the incoming stream
 * that asked. */
static bool out_take_verify_answer(struct out *o, struct pl_xnode *element);

/* On a carrier, the answer may be for one of its riders' requests. */
static void out_verify_answer(struct out *c, struct pl_xnode *element)
{
	if (out_take_verify_answer(c, element))
		return;
	for (struct out *r = outs; r; r = r->next)
		if (r->carrier == c && out_take_verify_answer(r, element))
			return;
	pl_log_session(PL_LOG_INFO, "s2s", c->log_id, "%s: an unexpected db:verify answer; ignored",
		       c->remote);
}

static bool out_take_verify_answer(struct out *o, struct pl_xnode *element)
{
	const char *id = pl_xnode_attr(element, "id");
	const char *type = pl_xnode_attr(element, "type");
	const char *from = pl_xnode_attr(element, "from");
	const char *to = pl_xnode_attr(element, "to");
	for (struct verify **link = &o->verifies; *link; link = &(*link)->next) {
		struct verify *v = *link;
		if (!v->sent || !id || strcmp(v->id, id) != 0 || !from ||
		    strcmp(from, v->remote) != 0 || (to && strcmp(to, o->local) != 0))
			continue;
		*link = v->next;
		struct in *i = find_in(v->in_number);
		bool valid = type && strcmp(type, "valid") == 0;
		if (i)
			in_dialback_answer(i, o->local, v->remote, valid ? "valid" : "invalid",
					   NULL);
		free(v->id);
		free(v->key);
		free(v->remote);
		free(v);
		return true;
	}
	return false;
}

static void out_stream_management(struct out *o, struct pl_xnode *element)
{
	if (strcmp(element->name, "a") == 0 && o->sm_enabled) {
		const char *text = pl_xnode_attr(element, "h");
		char *end = NULL;
		unsigned long h = text ? strtoul(text, &end, 10) : 0;
		if (!text || *end || h > UINT32_MAX || pl_ack_after((uint32_t)h, o->sm_sent)) {
			out_stream_error(o, "undefined-condition", "bad or too high h in <a/>");
			return;
		}
		while (o->unacked && !pl_ack_after(o->unacked->seq, (uint32_t)h)) {
			struct queued *q = o->unacked;
			o->unacked = q->next;
			pl_xnode_unref(&q->stanza);
			free(q);
			o->unacked_count--;
		}
		if (!o->unacked)
			o->unacked_tail = NULL;
		o->sm_ack_requested = false;
		if (o->unacked) {
			out_write(o, "<r xmlns='" NS_SM "'/>");
			o->sm_ack_requested = true;
		}
	} else if (strcmp(element->name, "r") == 0) {
		/* Nothing comes to us on an outgoing stream. */
		out_write(o, "<a xmlns='" NS_SM "' h='0'/>");
	} else if (strcmp(element->name, "failed") == 0 && o->sm_enabled) {
		/* What was sent is then as handed over as without XEP-0198. */
		pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "%s refused stream management",
			       o->remote);
		o->sm_enabled = false;
		while (o->unacked) {
			struct queued *q = o->unacked;
			o->unacked = q->next;
			pl_xnode_unref(&q->stanza);
			free(q);
		}
		o->unacked_tail = NULL;
		o->unacked_count = 0;
	}
}

static void out_on_open(void *userdata, const char *name, const char *ns, const char *content_ns,
			const char *const *attributes)
{
	struct out *o = userdata;
	if (strcmp(name, "stream") != 0 || !ns || strcmp(ns, PL_NS_STREAMS) != 0 ||
	    !content_ns || strcmp(content_ns, NS_SERVER) != 0) {
		out_stream_error(o, "invalid-namespace", "expected a jabber:server stream");
		return;
	}
	const char *id = attribute_of(attributes, "id");
	snprintf(o->stream_id, sizeof(o->stream_id), "%s", id ? id : "");
	const char *version = attribute_of(attributes, "version");
	if (!version || strncmp(version, "1.", 2) != 0)
		out_stream_error(o, "unsupported-version", "version 1.0 is required");
}

/* XEP-0288: a stanza from the peer on our own outgoing stream, allowed
 * once it is authenticated and bidirectional, from the domain we
 * connected to only, to a domain we serve. */
static void out_bidi_stanza(struct out *o, struct pl_xnode *stanza)
{
	if (!o->bidi || o->state != OUT_READY) {
		out_stream_error(o, "unsupported-stanza-type",
				 "stanzas on an outgoing stream that is not bidirectional");
		return;
	}
	const char *from = pl_xnode_attr(stanza, "from");
	const char *to = pl_xnode_attr(stanza, "to");
	struct pl_jid from_jid, to_jid;
	if (!from || !to) {
		out_stream_error(o, "improper-addressing", "stanzas need 'from' and 'to'");
		return;
	}
	if (pl_jid_parse(from, &from_jid) != PL_JID_OK) {
		out_stream_error(o, "invalid-from", "'from' is not a JID");
		return;
	}
	if (strcmp(from_jid.domain, o->remote) != 0) {
		char *text = pl_asprintf("%s may not send from %s", o->remote, from_jid.domain);
		out_stream_error(o, "invalid-from", text);
		free(text);
		pl_jid_free(&from_jid);
		return;
	}
	if (pl_jid_parse(to, &to_jid) != PL_JID_OK) {
		pl_xnode_set_attr(stanza, "from", from_jid.full);
		pl_jid_free(&from_jid);
		pl_xnode_replace_ns(stanza, NS_SERVER, PL_NS_CLIENT);
		pl_route_error(stanza, PL_ERR_JID_MALFORMED, NULL);
		return;
	}
	if (!pl_router_is_local_domain(to_jid.domain)) {
		char *text = pl_asprintf("%s is not served here", to_jid.domain);
		out_stream_error(o, "host-unknown", text);
		free(text);
		pl_jid_free(&from_jid);
		pl_jid_free(&to_jid);
		return;
	}
	pl_xnode_set_attr(stanza, "from", from_jid.full);
	pl_xnode_set_attr(stanza, "to", to_jid.full);
	pl_jid_free(&from_jid);
	pl_jid_free(&to_jid);
	pl_xnode_replace_ns(stanza, NS_SERVER, PL_NS_CLIENT);
	o->last_used_ms = pl_now_ms();
	pl_route(stanza, NULL);
}

/* A db:result on a ready stream answers one of its riders (to='the
 * rider's local domain'). */
static void out_rider_answer(struct out *c, struct pl_xnode *element)
{
	const char *to = pl_xnode_attr(element, "to");
	const char *type = pl_xnode_attr(element, "type");
	struct out *r = outs;
	while (r && !(r->carrier == c && r->state == OUT_NEGOTIATING && to &&
		      strcmp(r->local, to) == 0))
		r = r->next;
	if (!r) {
		pl_log_session(PL_LOG_INFO, "s2s", c->log_id,
			       "%s: ignoring a db:result for %s that nothing waits for", c->remote,
			       to ? to : "(no to)");
		return;
	}
	if (type && strcmp(type, "valid") == 0) {
		out_ready(r, "dialback");
		return;
	}
	char *why = pl_asprintf("dialback %s (piggybacking)", type ? type : "answer without type");
	pl_log_session(PL_LOG_INFO, "s2s", r->log_id, "%s -> %s: %s", r->local, r->remote, why);
	out_fail(r, PL_ERR_REMOTE_SERVER_NOT_FOUND, why);
	free(why);
}

static void out_on_element(void *userdata, struct pl_xnode *element)
{
	struct out *o = userdata;
	if (o->state == OUT_CLOSING) {
		pl_xnode_unref(&element);
		return;
	}
	if (is_element(element, "features", PL_NS_STREAMS)) {
		out_features(o, element);
	} else if (is_element(element, "proceed", NS_TLS) && !pl_conn_is_tls(o->conn)) {
		SSL *ssl = pl_tls_new_client(o->local, o->remote, false);
		if (!ssl) {
			out_fail(o, PL_ERR_REMOTE_SERVER_NOT_FOUND, "no TLS context");
		} else {
			pl_xml_stream_reset(o->parser);
			pl_conn_start_tls_client(o->conn, ssl);
			out_send_header(o);
		}
	} else if (is_element(element, "failure", NS_TLS)) {
		out_fail(o, PL_ERR_REMOTE_SERVER_NOT_FOUND, "the peer refused STARTTLS");
	} else if (is_element(element, "success", NS_SASL) && o->sasl_sent) {
		o->auth_method = "SASL EXTERNAL";
		pl_xml_stream_reset(o->parser);
		out_send_header(o);
	} else if (is_element(element, "failure", NS_SASL) && o->sasl_sent) {
		out_stream_error(o, "not-authorized", "SASL EXTERNAL failed");
	} else if (is_element(element, "result", NS_DIALBACK) && o->state == OUT_READY) {
		out_rider_answer(o, element);
	} else if (is_element(element, "result", NS_DIALBACK) && o->dialback_sent) {
		const char *type = pl_xnode_attr(element, "type");
		if (type && strcmp(type, "valid") == 0) {
			out_ready(o, "dialback");
		} else {
			char *why = pl_asprintf("dialback %s", type ? type : "answer without type");
			out_stream_error(o, "not-authorized", why);
			free(why);
		}
	} else if (is_element(element, "verify", NS_DIALBACK)) {
		out_verify_answer(o, element);
	} else if (element->ns && strcmp(element->ns, NS_SERVER) == 0 &&
		   (strcmp(element->name, "message") == 0 || strcmp(element->name, "presence") == 0 ||
		    strcmp(element->name, "iq") == 0)) {
		out_bidi_stanza(o, element);
	} else if (element->ns && strcmp(element->ns, NS_SM) == 0) {
		out_stream_management(o, element);
	} else if (is_element(element, "error", PL_NS_STREAMS)) {
		struct pl_xnode *condition = pl_xnode_first_element(element);
		char *why = pl_asprintf("the peer sent stream error %s",
					condition ? condition->name : "(none)");
		out_fail(o, PL_ERR_REMOTE_SERVER_NOT_FOUND, why);
		free(why);
	} else {
		pl_log_session(PL_LOG_DEBUG, "s2s", o->log_id, "%s: ignoring <%s/> on an outgoing stream",
			       o->remote, element->name);
	}
	pl_xnode_unref(&element);
}

static void out_on_close(void *userdata)
{
	struct out *o = userdata;
	if (o->state == OUT_READY) {
		pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "%s closed the stream", o->remote);
		o->state = OUT_CLOSING;
		riders_end(o, "the peer closed the stream");
		out_bounce_unacked(o, "the peer closed the stream");
		out_write(o, "</stream:stream>");
		o->state = OUT_CLOSING;
		pl_conn_close_after_flush(o->conn);
		return;
	}
	out_fail(o, PL_ERR_REMOTE_SERVER_NOT_FOUND, "the peer closed the stream");
}

static void out_on_xml_error(void *userdata, enum pl_xml_error error, const char *detail)
{
	out_stream_error(userdata, pl_xml_error_condition(error), detail);
}

static const struct pl_xml_stream_callbacks out_xml_callbacks = {
	out_on_open, out_on_element, out_on_close, out_on_xml_error
};

static size_t out_on_data(struct pl_conn *conn, const char *data, size_t len, void *userdata)
{
	struct out *o = userdata;
	if (o->state == OUT_CLOSING)
		return len;
	ssize_t used = pl_xml_stream_feed(o->parser, data, len);
	if (used < 0)
		return len;
	/* After <proceed/> the rest is TLS (conn switched: nothing more to
	 * parse here); after <success/> it is the new stream's header. */
	return (size_t)used;
}

static void out_on_conn_close(struct pl_conn *conn, enum pl_conn_close_reason reason,
			      void *userdata)
{
	struct out *o = userdata;
	o->conn = NULL;
	if (o->state != OUT_CLOSING) {
		const char *why = reason == PL_CONN_TIMEOUT ? "timed out"
				  : reason == PL_CONN_ERROR ? "connection or TLS error"
							    : "connection closed";
		if (o->state == OUT_READY)
			pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "%s -> %s: %s", o->local,
				       o->remote, why);
		out_fail(o, reason == PL_CONN_TIMEOUT ? PL_ERR_REMOTE_SERVER_TIMEOUT
						      : PL_ERR_REMOTE_SERVER_NOT_FOUND,
			 why);
		return;
	}
	out_free(o);
}

static const struct pl_conn_callbacks out_conn_callbacks = { out_on_data, out_on_conn_close };

static void on_negotiation_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct out *o = arg;
	event_free(o->deadline);
	o->deadline = NULL;
	if (o->state == OUT_NEGOTIATING || o->state == OUT_CONNECTING) {
		if (o->conn) {
			out_write(o, "<stream:error><connection-timeout xmlns='" NS_STREAM_ERRORS
				     "'/></stream:error></stream:stream>");
		}
		out_fail(o, PL_ERR_REMOTE_SERVER_TIMEOUT, "negotiation timed out");
	}
}

static void out_connect_next(struct out *o);

static void on_connected(evutil_socket_t fd, short what, void *arg)
{
	struct out *o = arg;
	event_free(o->connect_event);
	o->connect_event = NULL;
	const struct pl_target *t = &o->targets[o->target_next - 1];
	int error = 0;
	socklen_t len = sizeof(error);
	if (what & EV_TIMEOUT)
		error = ETIMEDOUT;
	else if (getsockopt(o->fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0)
		error = errno;
	if (error) {
		pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "%s: cannot connect to %s port %d: %s",
			       o->remote, t->address, t->port, strerror(error));
		close(o->fd);
		o->fd = -1;
		out_connect_next(o);
		return;
	}
	SSL *ssl = NULL;
	if (t->direct_tls && !(ssl = pl_tls_new_client(o->local, o->remote, true))) {
		out_fail(o, PL_ERR_REMOTE_SERVER_NOT_FOUND, "no TLS context");
		return;
	}
	int connected_fd = o->fd;
	o->fd = -1;
	o->conn = pl_conn_new_client(loop, connected_fd, (const struct sockaddr *)&t->addr,
				     t->addr_len, ssl, &out_conn_callbacks, o);
	if (!o->conn) {
		out_fail(o, PL_ERR_REMOTE_SERVER_NOT_FOUND, "cannot set up the connection");
		return;
	}
	o->state = OUT_NEGOTIATING;
	o->parser = pl_xml_stream_new(&limits, &out_xml_callbacks, o);
	pl_log_session(PL_LOG_DEBUG, "s2s", o->log_id, "%s: connected to %s port %d%s", o->remote,
		       t->address, t->port, t->direct_tls ? " (direct TLS)" : "");
	out_send_header(o);
}

/* Tries the targets in order; when none is left the queue bounces. */
static void out_connect_next(struct out *o)
{
	while (o->target_next < o->target_count) {
		const struct pl_target *t = &o->targets[o->target_next++];
		int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		if (connect(fd, (const struct sockaddr *)&t->addr, t->addr_len) != 0 &&
		    errno != EINPROGRESS) {
			pl_log_session(PL_LOG_INFO, "s2s", o->log_id,
				       "%s: cannot connect to %s port %d: %s", o->remote, t->address,
				       t->port, strerror(errno));
			close(fd);
			continue;
		}
		o->fd = fd;
		o->connect_event = event_new(loop, fd, EV_WRITE, on_connected, o);
		struct timeval tv = { conf.connect_timeout_ms / 1000,
				      (conf.connect_timeout_ms % 1000) * 1000 };
		event_add(o->connect_event, &tv);
		return;
	}
	out_fail(o, PL_ERR_REMOTE_SERVER_NOT_FOUND,
		 o->target_count ? "no address could be reached" : "no address found");
}

static void on_resolved(void *userdata, struct pl_target *targets, size_t count,
			const char *error)
{
	struct out *o = userdata;
	o->resolving = NULL;
	o->targets = targets;
	o->target_count = count;
	if (error)
		pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "%s: DNS: %s", o->remote, error);
	out_connect_next(o);
}

static struct out *out_new(const char *local, const char *remote)
{
	struct out *o = pl_calloc(1, sizeof(*o));
	o->local = pl_strdup(local);
	o->remote = pl_strdup(remote);
	o->fd = -1;
	o->state = OUT_CONNECTING;
	static uint64_t counter;
	snprintf(o->log_id, sizeof(o->log_id), "s2sout%llu", (unsigned long long)++counter);
	o->next = outs;
	outs = o;
	o->deadline = evtimer_new(loop, on_negotiation_deadline, o);
	int64_t budget = conf.negotiation_timeout_ms + conf.connect_timeout_ms;
	struct timeval tv = { budget / 1000, (budget % 1000) * 1000 };
	evtimer_add(o->deadline, &tv);
	pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "new stream %s -> %s", local, remote);
	pl_counter_add(pl_counter("s2s-streams-out"), 1);
	struct remote *r = find_remote(remote);
	if (r && r->conf.route) {
		char *error = NULL, *host = NULL;
		int port = 0;
		if (pl_resolve_route(r->conf.route, r->conf.direct_tls, &o->targets, &o->target_count,
				     &host, &port, &error) != 0) {
			pl_log_session(PL_LOG_WARN, "s2s", o->log_id, "%s: route %s: %s", remote,
				       r->conf.route, error);
			free(error);
		}
		if (host) {
			/* A route by name: its addresses from c-ares (A/AAAA). */
			o->resolving = pl_resolve_host(host, port, r->conf.direct_tls, on_resolved, o);
			free(host);
		}
		/* Not from inside the router's call: the caller queues first. */
		return o;
	}
	o->resolving = pl_resolve_xmpp_server(remote, on_resolved, o);
	return o;
}

/* A stream of another local domain to `remote`, ready and authenticated
 * with dialback, that may carry `local` too. */
static struct out *find_carrier(const char *remote)
{
	for (struct out *o = outs; o; o = o->next)
		if (o->state == OUT_READY && !o->carrier && o->conn && o->auth_method &&
		    strcmp(o->auth_method, "dialback") == 0 && strcmp(o->remote, remote) == 0)
			return o;
	return NULL;
}

/* Piggybacks local -> remote on carrier c: an additional db:result on
 * c's connection (XEP-0220 multiplexing) instead of a new connection;
 * stanzas wait in the rider's queue until the answer. */
static struct out *out_rider_new(const char *local, const char *remote, struct out *c)
{
	struct out *o = pl_calloc(1, sizeof(*o));
	o->local = pl_strdup(local);
	o->remote = pl_strdup(remote);
	o->fd = -1;
	o->state = OUT_NEGOTIATING;
	o->carrier = c;
	static uint64_t counter;
	snprintf(o->log_id, sizeof(o->log_id), "s2sride%llu", (unsigned long long)++counter);
	o->next = outs;
	outs = o;
	o->deadline = evtimer_new(loop, on_negotiation_deadline, o);
	struct timeval tv = { conf.negotiation_timeout_ms / 1000,
			      (conf.negotiation_timeout_ms % 1000) * 1000 };
	evtimer_add(o->deadline, &tv);
	pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "%s -> %s piggybacks on %s's stream (%s)",
		       local, remote, c->local, c->log_id);
	char key[2 * SHA256_DIGEST_LENGTH + 1];
	dialback_compute(remote, local, c->stream_id, key);
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<db:result from='%s' to='%s'>%s</db:result>", local, remote, key);
	pl_conn_write(c->conn, out.data, out.len);
	pl_buf_free(&out);
	o->dialback_sent = true;
	return o;
}

/* The router's remote route: stanzas for domains that are not ours. */
static void route_remote(void *context, struct pl_xnode *stanza, struct pl_session *origin,
			 const struct pl_jid *to)
{
	const char *from = pl_xnode_attr(stanza, "from");
	struct pl_jid from_jid;
	if (!from || pl_jid_parse(from, &from_jid) != PL_JID_OK) {
		pl_log(PL_LOG_WARN, "s2s", "dropping a stanza for %s without a valid 'from'", to->domain);
		return;
	}
	if (!pl_router_is_local_domain(from_jid.domain)) {
		/* Never relay between two other servers. */
		pl_log(PL_LOG_WARN, "s2s", "not relaying a stanza from %s to %s", from_jid.domain,
		       to->domain);
		pl_jid_free(&from_jid);
		return;
	}
	if (policy_of(to->domain) == POLICY_REFUSE) {
		bounce(stanza, PL_ERR_REMOTE_SERVER_NOT_FOUND,
		       "federation with this domain is refused by policy");
		pl_jid_free(&from_jid);
		return;
	}
	struct out *o = find_out(from_jid.domain, to->domain);
	bool fresh = !o;
	struct out *carrier = o ? NULL : find_carrier(to->domain);
	if (carrier)
		o = out_rider_new(from_jid.domain, to->domain, carrier);
	else if (!o)
		o = out_new(from_jid.domain, to->domain);
	pl_jid_free(&from_jid);
	if (o->state == OUT_READY) {
		if (o->unacked_count >= (size_t)conf.max_queue) {
			bounce(stanza, PL_ERR_RESOURCE_CONSTRAINT,
			       "too many stanzas wait for this remote server's acknowledgement");
			return;
		}
		out_send(o, stanza);
		return;
	}
	if (o->queue_count >= (size_t)conf.max_queue) {
		bounce(stanza, PL_ERR_RESOURCE_CONSTRAINT,
		       "too many stanzas wait for this remote server");
		return;
	}
	struct queued *q = pl_calloc(1, sizeof(*q));
	q->stanza = pl_xnode_copy(stanza);
	if (o->queue_tail)
		o->queue_tail->next = q;
	else
		o->queue = q;
	o->queue_tail = q;
	o->queue_count++;
	/* With a static route the connection starts once the stanza is queued,
	 * so a failure at once still bounces it. */
	if (fresh && !o->resolving && !o->carrier)
		out_connect_next(o);
}

/* A dialback verification for incoming stream `i`, sent through our
 * outgoing stream to the authoritative server. */
static void request_verify(struct in *i, const char *local, const char *remote, const char *id,
			   const char *key)
{
	/* A rider sends it on its carrier's connection: no new one. Not
	 * over a peer's bidirectional stream: its answer would come back
	 * as a request there. */
	struct out *o = NULL;
	for (struct out *p = outs; p && !o; p = p->next)
		if (p->state != OUT_CLOSING && !p->bidi_in && strcmp(p->local, local) == 0 &&
		    strcmp(p->remote, remote) == 0)
			o = p;
	bool fresh = !o;
	struct out *carrier = o ? NULL : find_carrier(remote);
	if (carrier)
		o = out_rider_new(local, remote, carrier);
	else if (!o)
		o = out_new(local, remote);
	struct verify *v = pl_calloc(1, sizeof(*v));
	v->id = pl_strdup(id);
	v->key = pl_strdup(key);
	v->remote = pl_strdup(remote);
	v->in_number = i->number;
	v->next = o->verifies;
	o->verifies = v;
	if (o->conn || o->carrier)
		out_send_verifies(o);
	else if (fresh && !o->resolving)
		out_connect_next(o);
}

/* ---- incoming streams --------------------------------------------------------- */

/* An incoming bidirectional stream ends: so does the way back over it. */
static void in_end_bidi(struct in *i)
{
	for (;;) {
		struct out *o = outs;
		while (o && o->bidi_in != i)
			o = o->next;
		if (!o)
			return;
		o->bidi_in = NULL;
		if (o->state == OUT_CLOSING)
			out_free(o);
		else
			out_fail(o, PL_ERR_REMOTE_SERVER_NOT_FOUND, "the bidirectional stream ended");
	}
}

/* XEP-0288: domain `remote` authenticated on bidirectional incoming
 * stream i: our stanzas from `local` to it go back over i. */
static void in_bidi_ready(struct in *i, const char *local, const char *remote)
{
	if (!i->bidi)
		return;
	struct out *existing = find_out(local, remote);
	if (existing && (existing->bidi_in || (existing->state == OUT_READY && existing->conn)))
		return; /* a way there already works */
	struct out *o = pl_calloc(1, sizeof(*o));
	o->local = pl_strdup(local);
	o->remote = pl_strdup(remote);
	o->fd = -1;
	o->state = OUT_READY;
	o->bidi_in = i;
	o->auth_method = i->auth_method;
	o->last_used_ms = pl_now_ms();
	snprintf(o->log_id, sizeof(o->log_id), "%s", i->log_id);
	o->next = outs;
	outs = o;
	pl_log_session(PL_LOG_INFO, "s2s", o->log_id,
		       "%s -> %s goes back over the bidirectional incoming stream", local, remote);
}

static void in_free(struct in *i)
{
	in_end_bidi(i);
	if (i->prev)
		i->prev->next = i->next;
	else if (ins == i)
		ins = i->next;
	if (i->next)
		i->next->prev = i->prev;
	for (size_t d = 0; d < i->domain_count; d++)
		free(i->domains[d]);
	free(i->domains);
	pl_ack_tracker_detach(i->tracker);
	free(i->peer);
	free(i->local);
	pl_xml_stream_free(i->parser);
	free(i);
}

static void in_stream_error(struct in *i, const char *condition, const char *text)
{
	in_end_bidi(i);
	if (i->state == IN_CLOSING)
		return;
	pl_log_session(PL_LOG_INFO, "s2s", i->log_id, "%s%s%s: stream error %s%s%s",
		       pl_conn_peer_address(i->conn), i->peer ? " " : "", i->peer ? i->peer : "",
		       condition, text ? ": " : "", text ? text : "");
	struct pl_buf out = { 0 };
	if (i->state == IN_WAIT_HEADER)
		pl_buf_printf(&out, "<?xml version='1.0'?><stream:stream xmlns='" NS_SERVER "' "
				    "xmlns:stream='" PL_NS_STREAMS "' id='%s' version='1.0'>",
			      i->stream_id);
	pl_buf_printf(&out, "<stream:error><%s xmlns='" NS_STREAM_ERRORS "'/>", condition);
	if (text) {
		pl_buf_puts(&out, "<text xmlns='" NS_STREAM_ERRORS "' xml:lang='en'>");
		pl_xml_escape(&out, text, strlen(text));
		pl_buf_puts(&out, "</text>");
	}
	pl_buf_puts(&out, "</stream:error></stream:stream>");
	pl_conn_write(i->conn, out.data, out.len);
	pl_buf_free(&out);
	i->state = IN_CLOSING;
	pl_conn_close_after_flush(i->conn);
}

static bool in_has_domain(const struct in *i, const char *domain)
{
	for (size_t d = 0; d < i->domain_count; d++)
		if (strcmp(i->domains[d], domain) == 0)
			return true;
	return false;
}

static void in_add_domain(struct in *i, const char *domain)
{
	if (in_has_domain(i, domain))
		return;
	pl_grow((void **)&i->domains, &i->domain_cap, i->domain_count + 1, sizeof(*i->domains));
	i->domains[i->domain_count++] = pl_strdup(domain);
	/* Authenticated: the peer closes its outgoing stream when it is idle
	 * (its own idle timeout); we only drop incoming streams silent for
	 * much longer than ours, so that a stanza the peer writes at the
	 * moment we would give up is not lost in a close. */
	pl_conn_set_idle_timeout(i->conn, 3 * conf.idle_timeout_ms);
}

/* The outcome of a dialback verification we asked for on behalf of i. */
static void in_dialback_answer(struct in *i, const char *local, const char *remote,
			       const char *type, const char *error_condition)
{
	if (i->state == IN_CLOSING)
		return;
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<db:result from='%s' to='%s' type='%s'", local, remote, type);
	if (error_condition)
		pl_buf_printf(&out, "><error type='cancel'><%s xmlns='" PL_NS_STANZAS
				    "'/></error></db:result>",
			      error_condition);
	else
		pl_buf_puts(&out, "/>");
	pl_conn_write(i->conn, out.data, out.len);
	pl_buf_free(&out);
	if (strcmp(type, "valid") == 0) {
		in_add_domain(i, remote);
		i->auth_method = "dialback";
		count_authentication("dialback");
		in_bidi_ready(i, local, remote);
		pl_log_session(PL_LOG_INFO, "s2s", i->log_id,
			       "%s: incoming stream from %s authenticated with dialback",
			       pl_conn_peer_address(i->conn), remote);
	} else {
		pl_log_session(PL_LOG_WARN, "s2s", i->log_id,
			       "%s: dialback for %s failed (%s%s%s)", pl_conn_peer_address(i->conn),
			       remote, type, error_condition ? ": " : "",
			       error_condition ? error_condition : "");
	}
}

static void in_send_features(struct in *i)
{
	struct pl_buf out = { 0 };
	pl_buf_puts(&out, "<stream:features>");
	if (!pl_conn_is_tls(i->conn)) {
		pl_buf_puts(&out, "<starttls xmlns='" NS_TLS "'><required/></starttls>");
	} else if (!i->sasl_done) {
		pl_buf_puts(&out, "<sm xmlns='" NS_SM "'/>");
		const char *why = NULL;
		enum auth_policy policy = policy_of(i->peer);
		if (i->peer && policy != POLICY_REFUSE &&
		    pl_tls_peer_verified(pl_conn_ssl(i->conn), i->peer, &why))
			pl_buf_puts(&out, "<mechanisms xmlns='" NS_SASL "'>"
					  "<mechanism>EXTERNAL</mechanism></mechanisms>");
		if (policy == POLICY_DIALBACK || !i->peer)
			pl_buf_puts(&out, "<dialback xmlns='" NS_DIALBACK_FEATURE "'><errors/></dialback>");
		if (conf.bidi)
			pl_buf_puts(&out, "<bidi xmlns='" NS_BIDI_FEATURE "'/>");
	}
	if (pl_conn_is_tls(i->conn) && i->sasl_done)
		pl_buf_puts(&out, "<sm xmlns='" NS_SM "'/>");
	pl_buf_puts(&out, "</stream:features>");
	pl_conn_write(i->conn, out.data, out.len);
	pl_buf_free(&out);
}

static void in_on_open(void *userdata, const char *name, const char *ns, const char *content_ns,
		       const char *const *attributes)
{
	struct in *i = userdata;
	random_id(i->stream_id, 16);
	if (strcmp(name, "stream") != 0 || !ns || strcmp(ns, PL_NS_STREAMS) != 0) {
		in_stream_error(i, "invalid-namespace", "expected <stream:stream>");
		return;
	}
	if (!content_ns || strcmp(content_ns, NS_SERVER) != 0) {
		in_stream_error(i, "invalid-namespace", "the content namespace must be jabber:server");
		return;
	}
	const char *to = attribute_of(attributes, "to");
	char *domain = to ? pl_jid_prep_domain(to) : NULL;
	/* A host, or a component's domain: remote servers reach both here. */
	if (!domain || !pl_router_is_local_domain(domain)) {
		free(domain);
		in_stream_error(i, "host-unknown", to ? "this server does not serve that domain" : "no 'to'");
		return;
	}
	free(i->local);
	i->local = domain;
	const char *from = attribute_of(attributes, "from");
	char *peer = from ? pl_jid_prep_domain(from) : NULL;
	if (from && !peer) {
		in_stream_error(i, "invalid-from", "'from' is not a domain");
		return;
	}
	free(i->peer);
	i->peer = peer;
	const char *version = attribute_of(attributes, "version");
	if (!version || strncmp(version, "1.", 2) != 0) {
		in_stream_error(i, "unsupported-version", "version 1.0 is required");
		return;
	}
	if (peer && policy_of(peer) == POLICY_REFUSE) {
		in_stream_error(i, "policy-violation", "federation with this domain is refused");
		return;
	}
	if (peer) {
		int64_t same = 0;
		for (struct in *other = ins; other; other = other->next)
			if (other != i && other->state != IN_CLOSING && other->peer &&
			    strcmp(other->peer, peer) == 0)
				same++;
		if (same >= conf.max_streams_per_domain) {
			in_stream_error(i, "policy-violation", "too many streams from this domain");
			return;
		}
	}
	i->state = IN_NEGOTIATING;
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<?xml version='1.0'?><stream:stream xmlns='" NS_SERVER "' "
			    "xmlns:stream='" PL_NS_STREAMS "' xmlns:db='" NS_DIALBACK "' "
			    "id='%s' from='%s'%s%s%s version='1.0'>",
		      i->stream_id, i->local, peer ? " to='" : "", peer ? peer : "",
		      peer ? "'" : "");
	pl_conn_write(i->conn, out.data, out.len);
	pl_buf_free(&out);
	in_send_features(i);
}

static void in_sasl(struct in *i, struct pl_xnode *auth)
{
	const char *mechanism = pl_xnode_attr(auth, "mechanism");
	const char *why = "no 'from' on the stream";
	char *authzid = pl_xnode_text(auth);
	bool ok = false;
	if (!mechanism || strcmp(mechanism, "EXTERNAL") != 0) {
		why = "only EXTERNAL is offered";
	} else if (i->peer && policy_of(i->peer) != POLICY_REFUSE &&
		   pl_tls_peer_verified(pl_conn_ssl(i->conn), i->peer, &why)) {
		ok = true;
		/* XEP-0178: an authorization identity, if any, must be the
		 * stream's 'from'. */
		if (authzid[0] && strcmp(authzid, "=") != 0) {
			uint8_t *decoded = NULL;
			size_t len = 0;
			ok = pl_base64_decode(authzid, strlen(authzid), &decoded, &len) == 0 &&
			     len == strlen(i->peer) && memcmp(decoded, i->peer, len) == 0;
			free(decoded);
			if (!ok)
				why = "the authorization identity is not the stream's 'from'";
		}
	}
	free(authzid);
	if (!ok) {
		pl_log_session(PL_LOG_WARN, "s2s", i->log_id,
			       "%s: SASL EXTERNAL for %s refused: %s", pl_conn_peer_address(i->conn),
			       i->peer ? i->peer : "(no from)", why);
		pl_conn_write(i->conn, "<failure xmlns='" NS_SASL "'><not-authorized/></failure>",
			      strlen("<failure xmlns='" NS_SASL "'><not-authorized/></failure>"));
		return;
	}
	pl_conn_write(i->conn, "<success xmlns='" NS_SASL "'/>",
		      strlen("<success xmlns='" NS_SASL "'/>"));
	i->sasl_done = true;
	in_add_domain(i, i->peer);
	i->auth_method = "SASL EXTERNAL";
	count_authentication("SASL EXTERNAL");
	in_bidi_ready(i, i->local, i->peer);
	pl_log_session(PL_LOG_INFO, "s2s", i->log_id,
		       "%s: incoming stream from %s authenticated with SASL EXTERNAL",
		       pl_conn_peer_address(i->conn), i->peer);
	i->restart = true;
	pl_xml_stream_pause(i->parser);
}

#define MAX_PENDING_VERIFIES 8

static size_t pending_verifies(const struct in *i)
{
	size_t count = 0;
	for (struct out *o = outs; o; o = o->next)
		for (struct verify *v = o->verifies; v; v = v->next)
			if (v->in_number == i->number)
				count++;
	return count;
}

/* db:result: the originating server asks to be believed; we ask its
 * authoritative server (XEP-0220 2.1.2). */
static void in_dialback_result(struct in *i, struct pl_xnode *element)
{
	const char *from = pl_xnode_attr(element, "from");
	const char *to = pl_xnode_attr(element, "to");
	char *remote = from ? pl_jid_prep_domain(from) : NULL;
	char *local = to ? pl_jid_prep_domain(to) : NULL;
	char *key = pl_xnode_text(element);
	if (!remote || !local) {
		in_stream_error(i, "improper-addressing", "db:result needs 'from' and 'to'");
	} else if (!pl_router_is_local_domain(local)) {
		struct pl_buf out = { 0 };
		pl_buf_printf(&out, "<db:result from='%s' to='%s' type='error'><error type='cancel'>"
				    "<item-not-found xmlns='" PL_NS_STANZAS "'/></error></db:result>",
			      local, remote);
		pl_conn_write(i->conn, out.data, out.len);
		pl_buf_free(&out);
	} else if (policy_of(remote) != POLICY_DIALBACK) {
		pl_log_session(PL_LOG_WARN, "s2s", i->log_id,
			       "%s: dialback from %s refused: policy requires a valid certificate",
			       pl_conn_peer_address(i->conn), remote);
		struct pl_buf out = { 0 };
		pl_buf_printf(&out, "<db:result from='%s' to='%s' type='error'><error type='cancel'>"
				    "<policy-violation xmlns='" PL_NS_STANZAS "'/></error></db:result>",
			      local, remote);
		pl_conn_write(i->conn, out.data, out.len);
		pl_buf_free(&out);
	} else if (!key[0]) {
		in_stream_error(i, "bad-format", "db:result without a key");
	} else if (pending_verifies(i) >= MAX_PENDING_VERIFIES) {
		/* Each request makes us connect somewhere: bounded per stream. */
		pl_log_session(PL_LOG_WARN, "s2s", i->log_id,
			       "%s: too many dialback requests in flight; refusing %s",
			       pl_conn_peer_address(i->conn), remote);
		struct pl_buf out = { 0 };
		pl_buf_printf(&out, "<db:result from='%s' to='%s' type='error'><error type='wait'>"
				    "<resource-constraint xmlns='" PL_NS_STANZAS "'/></error></db:result>",
			      local, remote);
		pl_conn_write(i->conn, out.data, out.len);
		pl_buf_free(&out);
	} else {
		request_verify(i, local, remote, i->stream_id, key);
	}
	free(key);
	free(remote);
	free(local);
}

/* db:verify: another server asks us, the authoritative server, whether
 * a key is ours (XEP-0220 2.1.3). No authentication needed to ask. */
static void in_dialback_verify(struct in *i, struct pl_xnode *element)
{
	const char *from = pl_xnode_attr(element, "from");
	const char *to = pl_xnode_attr(element, "to");
	const char *id = pl_xnode_attr(element, "id");
	if (!from || !to || !id) {
		in_stream_error(i, "improper-addressing", "db:verify needs from, to and id");
		return;
	}
	char *key = pl_xnode_text(element);
	char expected[2 * SHA256_DIGEST_LENGTH + 1];
	dialback_compute(from, to, id, expected);
	bool valid = pl_router_is_local_domain(to) && strlen(key) == strlen(expected) &&
		     CRYPTO_memcmp(key, expected, strlen(expected)) == 0;
	free(key);
	struct pl_buf out = { 0 };
	pl_buf_puts(&out, "<db:verify from='");
	pl_xml_escape(&out, to, strlen(to));
	pl_buf_puts(&out, "' to='");
	pl_xml_escape(&out, from, strlen(from));
	pl_buf_puts(&out, "' id='");
	pl_xml_escape(&out, id, strlen(id));
	pl_buf_printf(&out, "' type='%s'/>", valid ? "valid" : "invalid");
	pl_conn_write(i->conn, out.data, out.len);
	pl_buf_free(&out);
	pl_log_session(PL_LOG_INFO, "s2s", i->log_id, "%s: db:verify for %s -> %s: %s",
		       pl_conn_peer_address(i->conn), to, from, valid ? "valid" : "invalid");
}

static void in_stanza(struct in *i, struct pl_xnode *stanza)
{
	if (i->domain_count == 0) {
		in_stream_error(i, "not-authorized", "authenticate first");
		return;
	}
	const char *from = pl_xnode_attr(stanza, "from");
	const char *to = pl_xnode_attr(stanza, "to");
	if (!from || !to) {
		in_stream_error(i, "improper-addressing", "stanzas need 'from' and 'to'");
		return;
	}
	struct pl_jid from_jid, to_jid;
	if (pl_jid_parse(from, &from_jid) != PL_JID_OK) {
		in_stream_error(i, "invalid-from", "'from' is not a JID");
		return;
	}
	if (!in_has_domain(i, from_jid.domain)) {
		char *text = pl_asprintf("%s is not authenticated on this stream", from_jid.domain);
		in_stream_error(i, "invalid-from", text);
		free(text);
		pl_jid_free(&from_jid);
		return;
	}
	if (pl_jid_parse(to, &to_jid) != PL_JID_OK) {
		pl_xnode_set_attr(stanza, "from", from_jid.full);
		pl_jid_free(&from_jid);
		pl_xnode_replace_ns(stanza, NS_SERVER, PL_NS_CLIENT);
		pl_route_error(stanza, PL_ERR_JID_MALFORMED, NULL);
		return;
	}
	if (!pl_router_is_local_domain(to_jid.domain)) {
		char *text = pl_asprintf("%s is not served here", to_jid.domain);
		in_stream_error(i, "host-unknown", text);
		free(text);
		pl_jid_free(&from_jid);
		pl_jid_free(&to_jid);
		return;
	}
	pl_xnode_set_attr(stanza, "from", from_jid.full);
	pl_xnode_set_attr(stanza, "to", to_jid.full);
	pl_jid_free(&from_jid);
	pl_jid_free(&to_jid);
	pl_xnode_replace_ns(stanza, NS_SERVER, PL_NS_CLIENT);
	pl_route(stanza, NULL);
}

static void in_send_ack(struct in *i)
{
	char a[80];
	snprintf(a, sizeof(a), "<a xmlns='" NS_SM "' h='%u'/>", pl_ack_durable(i->tracker));
	pl_conn_write(i->conn, a, strlen(a));
}

/* The durable count moved on after a commit: a peer that asked learns. */
static void on_in_durable(void *owner, uint32_t durable)
{
	struct in *i = owner;
	if (i->state != IN_CLOSING && i->sm_ack_wanted) {
		in_send_ack(i);
		if (durable == i->sm_received)
			i->sm_ack_wanted = false;
	}
}

static void in_stream_management(struct in *i, struct pl_xnode *element)
{
	if (strcmp(element->name, "enable") == 0) {
		if (i->domain_count == 0 || i->sm_enabled) {
			pl_conn_write(i->conn, "<failed xmlns='" NS_SM "'><unexpected-request xmlns='"
					       PL_NS_STANZAS "'/></failed>",
				      strlen("<failed xmlns='" NS_SM "'><unexpected-request xmlns='"
					     PL_NS_STANZAS "'/></failed>"));
			return;
		}
		i->sm_enabled = true;
		i->tracker = pl_ack_tracker_new(on_in_durable, i, 0);
		pl_conn_write(i->conn, "<enabled xmlns='" NS_SM "'/>",
			      strlen("<enabled xmlns='" NS_SM "'/>"));
	} else if (strcmp(element->name, "r") == 0 && i->sm_enabled) {
		/* Acknowledged: routed to a live stream or committed (ack.h). */
		in_send_ack(i);
		i->sm_ack_wanted = pl_ack_durable(i->tracker) != i->sm_received;
	}
}

static void in_on_element(void *userdata, struct pl_xnode *element)
{
	struct in *i = userdata;
	if (i->state == IN_CLOSING) {
		pl_xnode_unref(&element);
		return;
	}
	bool tls = pl_conn_is_tls(i->conn);
	if (!tls && is_element(element, "starttls", NS_TLS)) {
		pl_conn_write(i->conn, "<proceed xmlns='" NS_TLS "'/>",
			      strlen("<proceed xmlns='" NS_TLS "'/>"));
		i->start_tls = true;
		i->restart = true;
		pl_xml_stream_pause(i->parser);
	} else if (!tls) {
		in_stream_error(i, "policy-violation", "STARTTLS is required first");
	} else if (is_element(element, "auth", NS_SASL) && !i->sasl_done) {
		in_sasl(i, element);
	} else if (is_element(element, "bidi", NS_BIDI) && conf.bidi && i->domain_count == 0) {
		i->bidi = true;
		pl_log_session(PL_LOG_DEBUG, "s2s", i->log_id, "%s asks for a bidirectional stream",
			       i->peer ? i->peer : "(no from)");
	} else if (is_element(element, "result", NS_DIALBACK)) {
		in_dialback_result(i, element);
	} else if (is_element(element, "verify", NS_DIALBACK)) {
		in_dialback_verify(i, element);
	} else if (element->ns && strcmp(element->ns, NS_SM) == 0) {
		in_stream_management(i, element);
	} else if (element->ns && strcmp(element->ns, NS_SERVER) == 0 &&
		   (strcmp(element->name, "message") == 0 || strcmp(element->name, "presence") == 0 ||
		    strcmp(element->name, "iq") == 0)) {
		if (i->sm_enabled) {
			pl_ack_begin(i->tracker, ++i->sm_received);
			in_stanza(i, element);
			pl_ack_end();
		} else {
			in_stanza(i, element);
		}
	} else if (i->domain_count == 0) {
		in_stream_error(i, "not-authorized", "authenticate first");
	} else {
		in_stream_error(i, "unsupported-stanza-type", element->name);
	}
	pl_xnode_unref(&element);
}

static void in_on_close(void *userdata)
{
	struct in *i = userdata;
	if (i->state == IN_CLOSING)
		return;
	pl_conn_write(i->conn, "</stream:stream>", strlen("</stream:stream>"));
	i->state = IN_CLOSING;
	pl_conn_close_after_flush(i->conn);
}

static void in_on_xml_error(void *userdata, enum pl_xml_error error, const char *detail)
{
	in_stream_error(userdata, pl_xml_error_condition(error), detail);
}

static const struct pl_xml_stream_callbacks in_xml_callbacks = {
	in_on_open, in_on_element, in_on_close, in_on_xml_error
};

static size_t in_on_data(struct pl_conn *conn, const char *data, size_t len, void *userdata)
{
	struct in *i = userdata;
	if (i->state == IN_CLOSING)
		return len;
	ssize_t used = pl_xml_stream_feed(i->parser, data, len);
	if (used < 0)
		return len;
	if (i->restart) {
		i->restart = false;
		pl_xml_stream_reset(i->parser);
		i->state = IN_WAIT_HEADER;
		if (i->start_tls) {
			i->start_tls = false;
			pl_conn_start_tls(i->conn);
			return len;
		}
		return (size_t)used;
	}
	return len;
}

static void in_on_conn_close(struct pl_conn *conn, enum pl_conn_close_reason reason,
			     void *userdata)
{
	struct in *i = userdata;
	if (reason == PL_CONN_TIMEOUT)
		pl_log_session(PL_LOG_INFO, "s2s", i->log_id, "%s: %s", pl_conn_peer_address(conn),
			       i->domain_count ? "idle incoming stream closed"
					       : "negotiation timed out");
	in_free(i);
}

static const struct pl_conn_callbacks in_conn_callbacks = { in_on_data, in_on_conn_close };

static void accept_stream(int fd, const struct sockaddr *peer, socklen_t peer_len, bool direct)
{
	/* Unauthenticated streams cost memory and TLS handshakes for nothing
	 * in return: bounded in all (each one also times out). */
	int64_t unauthenticated = 0;
	for (struct in *i = ins; i; i = i->next)
		if (i->domain_count == 0 && i->state != IN_CLOSING)
			unauthenticated++;
	if (unauthenticated >= conf.max_unauthenticated) {
		static int64_t logged_ms;
		if (pl_now_ms() - logged_ms > 60000) {
			logged_ms = pl_now_ms();
			pl_log(PL_LOG_WARN, "s2s", "%lld unauthenticated incoming streams: refusing "
						  "new ones (logged once a minute)",
			       (long long)unauthenticated);
		}
		close(fd);
		return;
	}
	struct in *i = pl_calloc(1, sizeof(*i));
	i->conn = pl_conn_new(loop, fd, peer, peer_len,
			      direct ? PL_TLS_ALPN_XMPP_SERVER : PL_TLS_ALPN_NONE, &in_conn_callbacks,
			      i);
	if (!i->conn) {
		free(i);
		return;
	}
	pl_conn_request_peer_certificate(i->conn);
	i->parser = pl_xml_stream_new(&limits, &in_xml_callbacks, i);
	static uint64_t counter;
	i->number = ++counter;
	snprintf(i->log_id, sizeof(i->log_id), "s2sin%llu", (unsigned long long)i->number);
	pl_counter_add(pl_counter("s2s-streams-in"), 1);
	snprintf(i->stream_id, sizeof(i->stream_id), "new");
	pl_conn_set_idle_timeout(i->conn, conf.negotiation_timeout_ms);
	i->next = ins;
	if (ins)
		ins->prev = i;
	ins = i;
}

static void on_accept_plain(int fd, const struct sockaddr *peer, socklen_t len, void *arg)
{
	accept_stream(fd, peer, len, false);
}

static void on_accept_tls(int fd, const struct sockaddr *peer, socklen_t len, void *arg)
{
	accept_stream(fd, peer, len, true);
}

/* Outgoing streams unused for idle-timeout end politely. */
static void on_idle_sweep(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = pl_now_ms();
	/* One at a time from the start: closing a carrier frees its riders. */
	for (;;) {
		struct out *o = outs;
		/* Not while the peer still owes acknowledgements; not a carrier
		 * whose riders are in use (they end with it). */
		while (o) {
			bool riders_busy = false;
			for (struct out *r = outs; r; r = r->next)
				if (r->carrier == o && now - r->last_used_ms < conf.idle_timeout_ms)
					riders_busy = true;
			if (o->state == OUT_READY && !o->carrier && !o->bidi_in &&
			    now - o->last_used_ms >= conf.idle_timeout_ms && !o->unacked_count &&
			    !riders_busy)
				break;
			o = o->next;
		}
		if (!o)
			break;
		pl_log_session(PL_LOG_INFO, "s2s", o->log_id, "%s -> %s idle: closing", o->local,
			       o->remote);
		out_write(o, "</stream:stream>");
		o->state = OUT_CLOSING;
		riders_end(o, "idle");
		pl_conn_close_after_flush(o->conn);
	}
}

/* parleyctl s2s: one line per stream. */
static int on_ctl_s2s(struct pl_event *event, void *userdata)
{
	struct pl_ctl_command *command = event->data;
	struct pl_buf body = { 0 };
	if (!enabled)
		pl_buf_puts(&body, "federation is off (no <s2s> in the configuration)\n");
	static const char *const out_states[] = { "connecting", "negotiating", "ready", "closing" };
	for (struct out *o = outs; o; o = o->next)
		pl_buf_printf(&body, "out %s -> %s: %s, %s, %s, %zu queued\n", o->local, o->remote,
			      out_states[o->state], o->auth_method ? o->auth_method : "not authenticated",
			      o->carrier   ? "TLS, piggybacking"
			      : o->bidi_in ? "TLS, bidirectional over the incoming stream"
			      : o->conn && pl_conn_is_tls(o->conn) ? (o->bidi ? "TLS, bidirectional" : "TLS")
								   : "no TLS",
			      o->queue_count);
	for (struct in *i = ins; i; i = i->next) {
		pl_buf_printf(&body, "in %s from %s: ", pl_conn_peer_address(i->conn),
			      i->peer ? i->peer : "(no from)");
		for (size_t d = 0; d < i->domain_count; d++)
			pl_buf_printf(&body, "%s%s", d ? " " : "", i->domains[d]);
		pl_buf_printf(&body, "%s%s, %s\n", i->domain_count ? " by " : "not authenticated",
			      i->domain_count ? i->auth_method : "",
			      pl_conn_is_tls(i->conn) ? "TLS" : "no TLS");
	}
	if (body.len && body.data[body.len - 1] == '\n')
		body.data[--body.len] = '\0';
	pl_ctl_command_done(command->request, 0, body.len ? body.data : "no streams");
	pl_buf_free(&body);
	return PL_HANDLED;
}

/* ---- start and stop --------------------------------------------------------- */

static int add_remote(const struct pl_config *config, const struct pl_config_section *section,
		      char **error)
{
	char *name = section->name ? pl_jid_prep_domain(section->name) : NULL;
	if (!name)
		return pl_error(error, -EINVAL, "%s:%d: <remote name=\"%s\">: not a valid domain",
				config->path, section->line, section->name ? section->name : "");
	struct remote *r = pl_calloc(1, sizeof(*r));
	r->name = name;
	r->next = remotes;
	remotes = r;
	char *what = pl_asprintf("<remote name=\"%s\">", name);
	int rc = pl_options_apply(remote_options, &r->conf, section, config->path, what, error);
	free(what);
	if (rc)
		return rc;
	if (r->conf.route) {
		struct pl_target *targets = NULL;
		size_t count = 0;
		char *why = NULL;
		char *host = NULL;
		int port = 0;
		rc = pl_resolve_route(r->conf.route, r->conf.direct_tls, &targets, &count, &host,
				      &port, &why);
		pl_resolve_free_targets(targets, count);
		free(host);
		if (rc) {
			rc = pl_error(error, -EINVAL, "%s:%d: <remote name=\"%s\"> route: %s",
				      config->path, section->line, name, why);
			free(why);
			return rc;
		}
	}
	return 0;
}

int pl_s2s_start(struct event_base *base, const struct pl_config *config, char **error)
{
	loop = base;
	pl_hook(NULL, "ctl/s2s", on_ctl_s2s, NULL, 0);
	const struct pl_config_section *section = pl_config_find(config, "s2s", NULL);
	for (const struct pl_config_section *s = pl_config_next(config, "remote", NULL); s;
	     s = pl_config_next(config, "remote", s)) {
		int rc = add_remote(config, s, error);
		if (rc)
			return rc;
	}
	if (!section) {
		if (remotes)
			pl_log(PL_LOG_WARN, "s2s", "<remote> is configured but <s2s> is not: federation is off");
		return 0;
	}
	int rc = pl_options_apply(s2s_options, &conf, section, config->path, "<s2s>", error);
	conf_loaded = true;
	if (rc)
		return rc;
	if (conf.authentication == POLICY_DEFAULT)
		conf.authentication = POLICY_CERTIFICATE;
	enabled = true;
	if (conf.dialback_secret) {
		SHA256((const unsigned char *)conf.dialback_secret, strlen(conf.dialback_secret),
		       dialback_key);
	} else {
		/* A restart forgets it: only verifications in flight then fail. */
		pl_random_bytes(dialback_key, sizeof(dialback_key));
	}
	if ((rc = pl_tls_client_init(conf.ca_file, error)) != 0)
		return rc;
	if ((rc = pl_resolve_init(base, conf.dns_server, error)) != 0)
		return rc;
	limits = pl_xml_default_limits;
	limits.max_stanza_bytes = conf.max_stanza_size;
	pl_router_set_remote(route_remote, NULL);
	idle_sweep = event_new(base, -1, EV_PERSIST, on_idle_sweep, NULL);
	int64_t tick = conf.idle_timeout_ms / 4 > 1000 ? 1000 : conf.idle_timeout_ms / 4;
	struct timeval every = { tick / 1000, (tick % 1000) * 1000 };
	event_add(idle_sweep, &every);
	if (conf.port > 0 &&
	    (rc = pl_listener_open(base, conf.address, (int)conf.port, on_accept_plain, NULL,
				   &plain_listener, error)) != 0)
		return rc;
	if (conf.tls_port > 0 &&
	    (rc = pl_listener_open(base, conf.address, (int)conf.tls_port, on_accept_tls, NULL,
				   &tls_listener, error)) != 0)
		return rc;
	pl_log(PL_LOG_INFO, "s2s",
	       "federation on: listening on %s port %lld (STARTTLS) and %lld (direct TLS); "
	       "authentication %s by default",
	       conf.address, (long long)conf.port, (long long)conf.tls_port,
	       policy_names[conf.authentication]);
	return 0;
}

bool pl_s2s_begin_shutdown(void)
{
	pl_listener_close(plain_listener);
	pl_listener_close(tls_listener);
	plain_listener = tls_listener = NULL;
	for (struct in *i = ins; i; i = i->next)
		in_stream_error(i, "system-shutdown", "the server is shutting down");
	/* From the start each time: out_fail may free o and its riders. */
	for (;;) {
		struct out *o = outs;
		while (o && o->state == OUT_CLOSING)
			o = o->next;
		if (!o)
			break;
		if (o->conn)
			out_write(o, "</stream:stream>");
		out_fail(o, PL_ERR_REMOTE_SERVER_TIMEOUT, "the server is shutting down");
	}
	return ins != NULL || outs != NULL;
}

bool pl_s2s_idle(void)
{
	return ins == NULL && outs == NULL;
}

void pl_s2s_stop(void)
{
	pl_listener_close(plain_listener);
	pl_listener_close(tls_listener);
	plain_listener = tls_listener = NULL;
	if (enabled)
		pl_router_set_remote(NULL, NULL);
	while (ins) {
		struct in *i = ins;
		if (i->state != IN_CLOSING)
			in_stream_error(i, "system-shutdown", "the server is shutting down");
		pl_conn_free(i->conn);
		in_free(i);
	}
	while (outs) {
		struct out *o = outs;
		if (o->state != OUT_CLOSING) {
			if (o->conn)
				out_write(o, "</stream:stream>");
			out_fail(o, PL_ERR_REMOTE_SERVER_TIMEOUT, "the server is shutting down");
		}
		if (outs != o)
			continue; /* out_fail freed it */
		if (o->conn)
			pl_conn_free(o->conn);
		out_free(o);
	}
	if (idle_sweep) {
		event_free(idle_sweep);
		idle_sweep = NULL;
	}
	pl_resolve_shutdown();
	while (remotes) {
		struct remote *r = remotes;
		remotes = r->next;
		pl_options_free(remote_options, &r->conf);
		free(r->name);
		free(r);
	}
	if (conf_loaded)
		pl_options_free(s2s_options, &conf);
	conf_loaded = enabled = false;
	OPENSSL_cleanse(dialback_key, sizeof(dialback_key));
}
