/* BOSH (XEP-0124) carrying client sessions (XEP-0206) on POST /http-bind,
 * as a third c2s transport. A BOSH session has no connection of its own:
 * it lives between HTTP requests, each a <body/> with a request id (rid)
 * that the client counts up. Requests are processed strictly in rid
 * order (early ones wait in `queued`), their payload goes to the c2s
 * session as stream events, and the requests are then held: what the
 * session writes is sent as the answer to the oldest held request, an
 * empty answer goes out after `wait` seconds or when more than `hold`
 * are held. Each answer is kept until its rid leaves the window, so a
 * request the client repeats (its answer was lost with a connection) gets
 * the same answer again and nothing is lost or processed twice. A session
 * with no request for `inactivity` seconds is over, as a broken TCP
 * connection would be (a stream-managed session hibernates).
 * A client that asks for acknowledgements (XEP-0124 9) learns from the
 * `ack` of an answer which requests arrived, tells with its own `ack`
 * which answers it has (those are forgotten, the others kept however old)
 * and is told with `report` when an answer it lacks went out long ago.
 * A client that sends more requests at once than `requests` allows, or
 * polls empty-handed more often than `polling` (XEP-0124 11, 12), loses
 * its session with policy-violation. A client over the c2s stanza rate
 * has its next requests wait (processed, in order, once the pause is
 * over) as a TCP client has its socket paused: it slows down and loses
 * nothing. */
#include "bosh.h"
#include "c2s_transport.h"
#include "counters.h"
#include "http.h"
#include "log.h"
#include "router.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#define NS_HTTPBIND "http://jabber.org/protocol/httpbind"
#define NS_XBOSH "urn:xmpp:xbosh"
#define MAX_WAIT 60
#define MAX_HOLD 2
#define POLLING 2
#define MAX_PAUSE 120
#define MAX_UNACKED 16 /* answers kept for a client that acknowledges */
/* A lost answer is reported once it is this old: younger, it is most
 * likely still on its way, and the report would only cost the client a
 * held request. */
#define REPORT_AFTER_MS 1000

struct bosh;

/* One POST: its body as it arrives, then its place among held requests. */
struct breq {
	struct pl_http_request *r;      /* answered (and gone) when this is freed */
	struct bosh *b;                 /* NULL until it joins a session */
	struct pl_buf body;             /* owned */
	uint64_t rid;
	struct pl_xnode *payload;       /* parsed <body/>, owned; queued requests only */
	int64_t since_ms;
	struct breq *next;
};

/* An answer, kept for the client to ask again (XEP-0124 14.3). */
struct sent {
	uint64_t rid;
	char *body;     /* owned */
	int64_t at_ms;  /* when it went out */
	bool payload;   /* it carried elements */
};

struct bosh {
	char sid[33];
	struct pl_c2s *c;
	uint64_t rid;                   /* the last rid processed */
	int64_t wait_s, hold, requests;
	int64_t pause_s;                /* XEP-0124 10: inactivity for this gap, 0: none */
	struct breq *held;              /* oldest first, answered later; owned */
	struct breq *queued;            /* rids ahead of the next one; owned */
	struct pl_buf pending;          /* elements to send; owned */
	struct sent *sent;              /* answers kept for repeats; owned */
	size_t nsent;
	bool acks;                      /* XEP-0124 9: the client acknowledges */
	uint64_t acked;                 /* the client has every answer up to this rid */
	uint64_t answered;              /* the highest rid answered */
	uint64_t report;                /* an answer to report lost in the next one, 0: none */
	int64_t report_age_ms;          /* ... sent this long ago */
	uint64_t reported;              /* the last rid reported (each once) */
	int64_t last_request_ms;        /* when the last new request came */
	bool last_empty;                /* ... and it carried nothing */
	struct event *timer;            /* wait of the oldest held, or inactivity */
	struct event *flush;            /* deferred answer / end */
	struct event *resume;           /* the end of a stanza rate pause */
	int64_t resume_ms;              /* no request is processed before this */
	char stream_id[33], from[256];
	char address[46];
	bool secure, loopback;
	bool closing;                   /* the session ended the stream */
	bool error;                     /* ... with a stream error */
	struct bosh *prev, *next;
};

static struct event_base *loop;
static struct bosh *sessions;

/* <http bosh-inactivity>, in whole seconds as XEP-0124 counts. */
static int64_t inactivity_s(void)
{
	int64_t s = pl_http_config()->bosh_inactivity_ms / 1000;
	return s > 0 ? s : 1;
}

/* ---- answering ---------------------------------------------------------------- */

static struct sent *find_sent(struct bosh *b, uint64_t rid)
{
	for (size_t i = 0; i < b->nsent; i++)
		if (b->sent[i].rid == rid)
			return &b->sent[i];
	return NULL;
}

static void drop_sent(struct bosh *b, size_t i)
{
	free(b->sent[i].body);
	b->sent[i] = b->sent[--b->nsent];
}

/* Forgets the answers the client can no longer ask for again: with
 * acknowledgements those it acknowledged (keeping the others, up to
 * MAX_UNACKED), without them those older than the window (XEP-0124 14.3). */
static void forget(struct bosh *b)
{
	for (size_t i = 0; i < b->nsent;) {
		uint64_t rid = b->sent[i].rid;
		bool gone = b->acks ? rid <= b->acked
				    : rid < b->rid && b->rid - rid >= (uint64_t)b->requests;
		if (gone)
			drop_sent(b, i);
		else
			i++;
	}
	while (b->nsent > MAX_UNACKED) {
		size_t oldest = 0;
		for (size_t i = 1; i < b->nsent; i++)
			if (b->sent[i].rid < b->sent[oldest].rid)
				oldest = i;
		drop_sent(b, oldest);
	}
}

static void remember(struct bosh *b, uint64_t rid, const char *body, bool payload)
{
	struct sent *slot = find_sent(b, rid);
	if (!slot) {
		b->sent = pl_realloc(b->sent, (b->nsent + 1) * sizeof(*b->sent));
		slot = &b->sent[b->nsent++];
	} else {
		free(slot->body);
	}
	slot->rid = rid;
	slot->body = pl_strdup(body);
	slot->at_ms = pl_now_ms();
	slot->payload = payload;
	if (rid > b->answered)
		b->answered = rid;
	forget(b);
}

static void respond_text(struct pl_http_request *r, const char *body)
{
	pl_http_respond(r, 200, "text/xml; charset=utf-8", body, strlen(body));
}

static void free_breq(struct breq *q)
{
	pl_buf_free(&q->body);
	pl_xnode_unref(&q->payload);
	free(q);
}

/* Answers one request with what is pending (and forgets it). */
static void answer(struct bosh *b, struct breq *q, const char *type, const char *condition)
{
	struct pl_buf out = { 0 };
	pl_buf_puts(&out, "<body xmlns='" NS_HTTPBIND "'");
	if (type)
		pl_buf_printf(&out, " type='%s'", type);
	if (condition)
		pl_buf_printf(&out, " condition='%s'", condition);
	/* XEP-0124 9.1: the highest rid received with all before it, unless
	 * it is the one this answers. */
	if (b->acks && b->rid != q->rid)
		pl_buf_printf(&out, " ack='%" PRIu64 "'", b->rid);
	if (b->report) {
		/* XEP-0124 9.2: the answer the client's ack says it lacks. */
		pl_buf_printf(&out, " report='%" PRIu64 "' time='%" PRId64 "'", b->report,
			      b->report_age_ms);
		b->report = 0;
	}
	bool payload = b->pending.len > 0;
	if (b->pending.len) {
		pl_buf_puts(&out, ">");
		pl_buf_append(&out, b->pending.data, b->pending.len);
		pl_buf_puts(&out, "</body>");
		pl_buf_reset(&b->pending);
	} else {
		pl_buf_puts(&out, "/>");
	}
	pl_buf_append(&out, "", 1);
	remember(b, q->rid, out.data, payload);
	pl_http_set_data(q->r, NULL);
	respond_text(q->r, out.data);
	pl_buf_free(&out);
	free_breq(q);
}

static struct breq *take_oldest(struct bosh *b)
{
	struct breq *q = b->held;
	if (q)
		b->held = q->next;
	return q;
}

static size_t count(const struct breq *q)
{
	size_t n = 0;
	for (; q; q = q->next)
		n++;
	return n;
}

static void arm_timer(struct bosh *b)
{
	int64_t delay_ms;
	if (b->held)
		delay_ms = b->held->since_ms + b->wait_s * 1000 - pl_now_ms();
	else
		delay_ms = b->pause_s ? b->pause_s * 1000 : inactivity_s() * 1000;
	/* Requests waiting out a stanza rate pause are activity: inactivity
	 * counts from the end of the pause. */
	if (!b->held && b->resume_ms > pl_now_ms())
		delay_ms += b->resume_ms - pl_now_ms();
	if (delay_ms < 0)
		delay_ms = 0;
	struct timeval tv = { delay_ms / 1000, (delay_ms % 1000) * 1000 };
	evtimer_add(b->timer, &tv);
}

static void unlink_session(struct bosh *b)
{
	if (b->prev)
		b->prev->next = b->next;
	else if (sessions == b)
		sessions = b->next;
	if (b->next)
		b->next->prev = b->prev;
}

/* Frees the session; every request still held or queued is answered. */
static void free_session(struct bosh *b, const char *condition)
{
	while (b->held)
		answer(b, take_oldest(b), "terminate", condition);
	while (b->queued) {
		struct breq *q = b->queued;
		b->queued = q->next;
		answer(b, q, "terminate", condition);
	}
	unlink_session(b);
	event_free(b->timer);
	event_free(b->flush);
	event_free(b->resume);
	pl_buf_free(&b->pending);
	while (b->nsent)
		drop_sent(b, 0);
	free(b->sent);
	free(b);
}

/* The session is over for the c2s side too. */
static void end(struct bosh *b, const char *condition)
{
	/* The session first: it may still ask this transport for the
	 * address it logs, and it never calls it again afterwards. */
	struct pl_c2s *c = b->c;
	b->c = NULL;
	if (c)
		pl_c2s_transport_gone(c, false);
	free_session(b, condition);
}

/* Sends what is pending to the oldest held request; ends a closed
 * session once its last words are out. */
static void flush_now(struct bosh *b)
{
	if (b->closing) {
		if (!b->held)
			return; /* the next request (or inactivity) ends it */
		answer(b, take_oldest(b), "terminate", b->error ? "remote-stream-error" : NULL);
		end(b, NULL);
		return;
	}
	/* A report goes out at once (XEP-0124 9.2), so does what is pending. */
	if ((b->pending.len || b->report) && b->held)
		answer(b, take_oldest(b), NULL, NULL);
	/* XEP-0124 10: never hold more than `hold` requests. */
	while ((int64_t)count(b->held) > b->hold)
		answer(b, take_oldest(b), NULL, NULL);
	arm_timer(b);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	flush_now(arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct bosh *b = arg;
	if (!b->held) {
		pl_log(PL_LOG_INFO, "bosh", "%s: session %s inactive for %lld s", b->address, b->sid,
		       (long long)(b->pause_s ? b->pause_s : inactivity_s()));
		end(b, NULL);
		return;
	}
	/* `wait` is over for the oldest held request: an empty answer. */
	answer(b, take_oldest(b), NULL, NULL);
	arm_timer(b);
}

/* ---- the c2s transport ------------------------------------------------------------ */

static void bosh_open(void *t, const char *stream_id, const char *from)
{
	struct bosh *b = t;
	snprintf(b->stream_id, sizeof(b->stream_id), "%s", stream_id);
	snprintf(b->from, sizeof(b->from), "%s", from ? from : "");
}

static void bosh_element(void *t, const char *data, size_t len)
{
	struct bosh *b = t;
	pl_c2s_standalone_element(&b->pending, data, len);
	/* Several elements written in a row go out in one answer. */
	event_active(b->flush, EV_TIMEOUT, 0);
}

static void bosh_close(void *t)
{
	struct bosh *b = t;
	b->closing = true;
	b->error = b->pending.len && strstr(b->pending.data, "<stream:error");
	event_active(b->flush, EV_TIMEOUT, 0);
}

static void bosh_drop(void *t)
{
	struct bosh *b = t;
	b->c = NULL;
	free_session(b, "other-request");
}

static void bosh_restart(void *t)
{
}

static const char *bosh_peer_address(void *t)
{
	return ((struct bosh *)t)->address;
}

static bool bosh_is_secure(void *t)
{
	return ((struct bosh *)t)->secure;
}

static bool bosh_plaintext_ok(void *t)
{
	return ((struct bosh *)t)->loopback;
}

/* Requests may come over several connections: no channel binding. */
static SSL *bosh_ssl(void *t)
{
	return NULL;
}

/* The stanza rate limit: requests that come meanwhile wait in `queued`
 * and their answers with them, so the client slows down. */
static void bosh_pause_reading(void *t, int64_t ms)
{
	struct bosh *b = t;
	b->resume_ms = pl_now_ms() + ms;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	evtimer_add(b->resume, &tv);
	pl_log(PL_LOG_DEBUG, "bosh", "session %s: requests wait %lld ms (stanza rate)", b->sid,
	       (long long)ms);
}

static void bosh_set_idle_timeout(void *t, int64_t ms)
{
	/* Inactivity is BOSH's own idle timeout. */
}

static const struct pl_c2s_transport bosh_transport = {
	"bosh", bosh_open, bosh_element, bosh_close, bosh_drop, bosh_restart, NULL,
	bosh_peer_address, bosh_is_secure, bosh_plaintext_ok, bosh_ssl, bosh_pause_reading,
	bosh_set_idle_timeout, NULL,
};

/* ---- requests ------------------------------------------------------------------ */

static struct bosh *find_session(const char *sid)
{
	for (struct bosh *b = sessions; b; b = b->next)
		if (strcmp(b->sid, sid) == 0)
			return b;
	return NULL;
}

static void terminate_request(struct pl_http_request *r, struct breq *q, const char *condition,
			      const char *why)
{
	pl_log(PL_LOG_INFO, "bosh", "%s: %s: %s", pl_http_peer_address(r), condition, why);
	char body[200];
	snprintf(body, sizeof(body), "<body xmlns='" NS_HTTPBIND "' type='terminate' condition='%s'/>",
		 condition);
	pl_http_set_data(r, NULL);
	respond_text(r, body);
	free_breq(q);
}

static bool parse_rid(const char *text, uint64_t *rid)
{
	char *end = NULL;
	if (!text || !*text || *text == '-')
		return false;
	unsigned long long value = strtoull(text, &end, 10);
	if (*end || value == 0 || value > (1ULL << 53))
		return false;
	*rid = value;
	return true;
}

static int64_t attr_int(const struct pl_xnode *body, const char *name, int64_t fallback)
{
	const char *text = pl_xnode_attr(body, name);
	return text ? atoll(text) : fallback;
}

/* Hands a request's payload to the session, in rid order. */
static void process(struct bosh *b, struct breq *q, struct pl_xnode *body)
{
	b->rid = q->rid;
	q->since_ms = pl_now_ms();
	q->b = b;
	struct breq **tail = &b->held;
	while (*tail)
		tail = &(*tail)->next;
	*tail = q;
	pl_log(PL_LOG_DEBUG, "bosh", "session %s: rid %" PRIu64 " processed", b->sid, q->rid);
	if (!b->c || !pl_c2s_input_begin(b->c))
		return;
	const char *restart = pl_xnode_attr(body, NS_XBOSH "\x1frestart");
	if (restart && strcmp(restart, "true") == 0) {
		/* XEP-0206 8.6: the stream restart after SASL. */
		const char *attributes[] = { "to", pl_xnode_attr(body, "to"), "version", "1.0", NULL };
		if (!attributes[1])
			attributes[0] = NULL;
		pl_c2s_stream_open(b->c, "stream", PL_NS_STREAMS, PL_NS_CLIENT,
				   attributes[0] ? attributes : attributes + 2);
	}
	for (struct pl_xnode *child = pl_xnode_first_element(body); child && b->c;
	     child = pl_xnode_next_element(child))
		pl_c2s_stream_element(b->c, pl_xnode_copy(child));
	const char *type = pl_xnode_attr(body, "type");
	if (b->c && type && strcmp(type, "terminate") == 0) {
		pl_log(PL_LOG_INFO, "bosh", "%s: session %s terminated by the client", b->address,
		       b->sid);
		pl_c2s_stream_close(b->c);
	}
	if (b->c)
		pl_c2s_input_end(b->c);
}

/* XEP-0124 9.2: the answers up to the client's ack arrived and are
 * forgotten (no ack: all before this request). On a new request, an ack
 * that lacks an answer sent a while ago gets a report in the next answer. */
static void take_ack(struct bosh *b, const struct pl_xnode *body, uint64_t rid, bool fresh)
{
	if (!b->acks)
		return;
	const char *text = pl_xnode_attr(body, "ack");
	uint64_t ack = rid - 1;
	if (text && (!parse_rid(text, &ack) || ack >= rid))
		return; /* nonsense: it acknowledges nothing */
	if (ack > b->answered)
		ack = b->answered; /* answers still held are not acknowledged */
	if (fresh && text && ack < b->answered && ack + 1 > b->reported) {
		struct sent *lost = find_sent(b, ack + 1);
		int64_t age = lost ? pl_now_ms() - lost->at_ms : 0;
		if (lost && age >= REPORT_AFTER_MS) {
			b->report = b->reported = ack + 1;
			b->report_age_ms = age;
			pl_log(PL_LOG_DEBUG, "bosh", "session %s: answer to rid %" PRIu64
			       " reported lost (%" PRId64 " ms old)", b->sid, b->report, age);
		}
	}
	if (ack > b->acked) {
		b->acked = ack;
		forget(b);
	}
}

/* XEP-0124 11 and 12: a new request beyond what the session allows ends
 * it with policy-violation (true: answered and gone). */
static bool overactive(struct bosh *b, struct breq *q, const struct pl_xnode *body, bool pause)
{
	const char *type = pl_xnode_attr(body, "type");
	const char *restart = pl_xnode_attr(body, NS_XBOSH "\x1frestart");
	bool terminate = type && strcmp(type, "terminate") == 0;
	bool empty = !pl_xnode_first_element(body) && !restart && !terminate && !pause;
	int64_t now = pl_now_ms();
	bool quick = now - b->last_request_ms < POLLING * 1000;
	int64_t unanswered = (int64_t)(count(b->held) + count(b->queued));
	const char *why = NULL;
	if (pause || terminate) {
		/* One more than `requests` is allowed for these (11). */
	} else if (unanswered + 1 > b->requests) {
		why = "more simultaneous requests than 'requests' allows";
	} else if (b->hold == 0) {
		/* 12: two empty polls within `polling`, the first answered empty. */
		struct sent *previous = find_sent(b, b->rid);
		if (empty && quick && b->last_empty && previous && !previous->payload)
			why = "empty polls more often than 'polling' allows";
	} else if (empty && quick && unanswered + 1 == b->requests) {
		/* 11: an empty request that fills the last place, right after
		 * the one before it. */
		why = "empty requests more often than 'polling' allows";
	}
	b->last_request_ms = now;
	b->last_empty = empty;
	if (!why)
		return false;
	char text[160];
	snprintf(text, sizeof(text), "session %s: %s", b->sid, why);
	terminate_request(q->r, q, "policy-violation", text);
	end(b, "policy-violation");
	return true;
}

/* Processes the requests that waited for the one just processed, unless
 * the stanza rate has paused the session. */
static void process_queued(struct bosh *b)
{
	while (!b->closing && b->queued && b->queued->rid == b->rid + 1 &&
	       pl_now_ms() >= b->resume_ms) {
		struct breq *next = b->queued;
		b->queued = next->next;
		next->next = NULL;
		struct pl_xnode *payload = next->payload;
		next->payload = NULL;
		process(b, next, payload);
		pl_xnode_unref(&payload);
	}
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct bosh *b = arg;
	b->resume_ms = 0;
	process_queued(b);
	flush_now(b);
}

static void create_session(struct breq *q, struct pl_xnode *body)
{
	struct pl_http_request *r = q->r;
	const char *version = pl_xnode_attr(body, NS_XBOSH "\x1fversion");
	if (!pl_xnode_attr(body, "to") || !version || strncmp(version, "1.", 2) != 0) {
		terminate_request(r, q, "bad-request", "a session needs to and xmpp:version 1.0");
		return;
	}
	struct bosh *b = pl_calloc(1, sizeof(*b));
	uint8_t random[16];
	pl_random_bytes(random, sizeof(random));
	for (size_t i = 0; i < sizeof(random); i++)
		snprintf(b->sid + i * 2, 3, "%02x", random[i]);
	b->wait_s = attr_int(body, "wait", MAX_WAIT);
	if (b->wait_s <= 0 || b->wait_s > MAX_WAIT)
		b->wait_s = MAX_WAIT;
	b->hold = attr_int(body, "hold", 1);
	if (b->hold < 0 || b->hold > MAX_HOLD)
		b->hold = 1;
	b->requests = b->hold + 1;
	const char *ack = pl_xnode_attr(body, "ack");
	b->acks = ack && strcmp(ack, "1") == 0;
	b->secure = pl_http_is_secure(r);
	b->loopback = pl_http_peer_is_loopback(r);
	snprintf(b->address, sizeof(b->address), "%s", pl_http_peer_address(r));
	b->timer = evtimer_new(loop, on_timer, b);
	b->flush = event_new(loop, -1, 0, on_flush, b);
	b->resume = evtimer_new(loop, on_resume, b);
	b->next = sessions;
	if (sessions)
		sessions->prev = b;
	sessions = b;
	b->c = pl_c2s_new(&bosh_transport, b);
	pl_counter_add(pl_counter("bosh-sessions"), 1);
	pl_log(PL_LOG_INFO, "bosh", "%s: session %s (wait %lld, hold %lld)", b->address, b->sid,
	       (long long)b->wait_s, (long long)b->hold);
	b->rid = q->rid;
	b->last_request_ms = pl_now_ms();
	q->b = b;
	const char *attributes[] = { "to", pl_xnode_attr(body, "to"), "version", "1.0", NULL };
	pl_c2s_stream_open(b->c, "stream", PL_NS_STREAMS, PL_NS_CLIENT, attributes);
	if (b->closing) {
		/* host-unknown and the like: the stream error is the answer. */
		b->held = q;
		flush_now(b);
		return;
	}
	/* XEP-0124 7.1 / XEP-0206 6: the creation answer with the features. */
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<body xmlns='" NS_HTTPBIND "' xmlns:xmpp='" NS_XBOSH "' "
			    "xmlns:stream='" PL_NS_STREAMS "' sid='%s' wait='%lld' requests='%lld' "
			    "hold='%lld' inactivity='%d' polling='%d' maxpause='%d' ver='1.11' from='%s' "
			    "authid='%s' secure='%s' xmpp:version='1.0' xmpp:restartlogic='true'",
		      b->sid, (long long)b->wait_s, (long long)b->requests, (long long)b->hold,
		      (int)inactivity_s(), POLLING, MAX_PAUSE, b->from, b->stream_id, b->secure ? "true" : "false");
	if (b->acks) /* XEP-0124 7.2: this session acknowledges */
		pl_buf_printf(&out, " ack='%" PRIu64 "'", q->rid);
	pl_buf_puts(&out, ">");
	bool payload = b->pending.len > 0;
	pl_buf_append(&out, b->pending.data ? b->pending.data : "", b->pending.len);
	pl_buf_reset(&b->pending);
	pl_buf_puts(&out, "</body>");
	pl_buf_append(&out, "", 1);
	remember(b, q->rid, out.data, payload);
	pl_http_set_data(r, NULL);
	respond_text(r, out.data);
	pl_buf_free(&out);
	free_breq(q);
	arm_timer(b);
}

static void on_complete(struct pl_http_request *r, void *userdata)
{
	struct breq *q = pl_http_get_data(r);
	struct pl_xnode *body = pl_xml_parse_element(q->body.data ? q->body.data : "", q->body.len,
						     NS_HTTPBIND);
	if (!body || strcmp(body->name, "body") != 0 || !body->ns ||
	    strcmp(body->ns, NS_HTTPBIND) != 0 || !parse_rid(pl_xnode_attr(body, "rid"), &q->rid)) {
		pl_xnode_unref(&body);
		terminate_request(r, q, "bad-request", "not a <body/> with a rid");
		return;
	}
	const char *sid = pl_xnode_attr(body, "sid");
	if (!sid) {
		create_session(q, body);
		pl_xnode_unref(&body);
		return;
	}
	struct bosh *b = find_session(sid);
	if (!b) {
		pl_xnode_unref(&body);
		terminate_request(r, q, "item-not-found", "no such session");
		return;
	}
	evtimer_del(b->timer);
	b->pause_s = 0;
	if (b->closing) {
		/* Its last answer goes to this request. */
		pl_xnode_unref(&body);
		q->b = b;
		b->held = q;
		flush_now(b);
		return;
	}
	if (q->rid <= b->rid) {
		/* XEP-0124 14.3: a repeated request gets its answer again. */
		take_ack(b, body, q->rid, false); /* may forget answers: first */
		struct sent *slot = find_sent(b, q->rid);
		pl_xnode_unref(&body);
		if (slot) {
			pl_log(PL_LOG_DEBUG, "bosh", "%s: rid %" PRIu64 " again: answer resent",
			       b->address, q->rid);
			pl_http_set_data(r, NULL);
			respond_text(r, slot->body);
			free_breq(q);
		} else if (b->rid - q->rid < (uint64_t)b->requests && (!b->acks || q->rid > b->acked)) {
			/* Processed but not answered yet (held, or its connection
			 * dropped first): this request waits in its place. */
			pl_log(PL_LOG_DEBUG, "bosh", "session %s: rid %" PRIu64 " again: held again",
			       b->sid, q->rid);
			q->b = b;
			q->since_ms = pl_now_ms();
			struct breq **at = &b->held;
			while (*at && (*at)->rid < q->rid)
				at = &(*at)->next;
			if (*at && (*at)->rid == q->rid) {
				struct breq *old = *at;
				q->next = old->next;
				pl_http_set_data(old->r, NULL);
				respond_text(old->r, "<body xmlns='" NS_HTTPBIND "'/>");
				free_breq(old);
			} else {
				q->next = *at;
			}
			*at = q;
			flush_now(b);
			return;
		} else {
			terminate_request(r, q, "item-not-found", "rid repeated out of the window");
			end(b, "item-not-found");
			return;
		}
		arm_timer(b);
		return;
	}
	if (q->rid > b->rid + (uint64_t)b->requests) {
		pl_xnode_unref(&body);
		terminate_request(r, q, "item-not-found", "rid beyond the window");
		end(b, "item-not-found");
		return;
	}
	const char *pause_text = pl_xnode_attr(body, "pause");
	int64_t pause = pause_text ? atoll(pause_text) : 0; /* body is freed before use */
	if (pause_text && (pause <= 0 || pause > MAX_PAUSE)) {
		pl_xnode_unref(&body);
		terminate_request(r, q, "policy-violation", "pause beyond maxpause");
		end(b, "policy-violation");
		return;
	}
	if (overactive(b, q, body, pause_text != NULL)) {
		pl_xnode_unref(&body);
		return;
	}
	take_ack(b, body, q->rid, true);
	if (q->rid != b->rid + 1 || pl_now_ms() < b->resume_ms) {
		/* Early (or the stanza rate pause): it waits for the ones
		 * before it. */
		q->payload = body;
		q->b = b;
		struct breq **at = &b->queued;
		while (*at && (*at)->rid < q->rid)
			at = &(*at)->next;
		q->next = *at;
		*at = q;
		pl_log(PL_LOG_DEBUG, "bosh", "session %s: rid %" PRIu64 " early: waits", b->sid, q->rid);
		arm_timer(b);
		return;
	}
	process(b, q, body);
	pl_xnode_unref(&body);
	process_queued(b);
	if (pause && !b->closing) {
		/* XEP-0124 10: every held request is answered now, and the
		 * session waits `pause` seconds for the next one. */
		flush_now(b);
		if (b->closing)
			return;
		while (b->held)
			answer(b, take_oldest(b), NULL, NULL);
		b->pause_s = pause;
		pl_log(PL_LOG_DEBUG, "bosh", "session %s paused for %lld s", b->sid,
		       (long long)b->pause_s);
		arm_timer(b);
		return;
	}
	flush_now(b);
}

static int on_body(struct pl_http_request *r, const char *data, size_t len, void *userdata)
{
	struct breq *q = pl_http_get_data(r);
	if (!q) {
		q = pl_calloc(1, sizeof(*q));
		q->r = r;
		pl_http_set_data(r, q);
	}
	pl_buf_append(&q->body, data, len);
	return 0;
}

static int on_headers(struct pl_http_request *r, void *userdata)
{
	struct breq *q = pl_calloc(1, sizeof(*q));
	q->r = r;
	pl_http_set_data(r, q);
	return 0;
}

/* The client's connection went away while its request was held: the
 * answer it would have had stays pending for the next one. */
static void on_abort(struct pl_http_request *r, void *userdata)
{
	struct breq *q = pl_http_get_data(r);
	if (!q)
		return;
	struct bosh *b = q->b;
	if (b) {
		for (struct breq **at = &b->held; *at; at = &(*at)->next)
			if (*at == q) {
				*at = q->next;
				break;
			}
		for (struct breq **at = &b->queued; *at; at = &(*at)->next)
			if (*at == q) {
				*at = q->next;
				break;
			}
		arm_timer(b);
	}
	free_breq(q);
}

static const struct pl_http_handler bosh_handler = {
	.on_headers = on_headers,
	.on_body = on_body,
	.on_complete = on_complete,
	.on_abort = on_abort,
	.cors = true,
};

int pl_bosh_start(struct event_base *base, const struct pl_config *config, char **error)
{
	loop = base;
	int rc = pl_http_route(NULL, "POST", PL_BOSH_PATH, &bosh_handler, NULL);
	if (rc)
		return pl_error(error, rc, "cannot register %s", PL_BOSH_PATH);
	return 0;
}

void pl_bosh_stop(void)
{
	while (sessions)
		end(sessions, "system-shutdown");
}
