/* parley-load: a load generator for XMPP servers (Parley, Prosody, ejabberd
 * alike) that runs one phase per invocation: in-band registration, login
 * rate, idle sessions, one-to-one message throughput and latency, MUC fan-out
 * or offline-message drain. Every session is a small state machine on one
 * libevent loop: a bufferevent (with an OpenSSL filter once TLS starts), an
 * expat parser that keeps only the few attributes and texts the tool reads,
 * and SCRAM-SHA-1 or PLAIN done here with OpenSSL. The tool is single-threaded
 * and allocates per session only what that session needs, so that the server
 * under test, not the tool, is the bottleneck. It always ends by itself
 * (--timeout) and prints exactly one JSON line on stdout; progress and errors
 * go to stderr. */
/* SHA1_Transform and SHA_CTX are deprecated in OpenSSL 3, but PBKDF2 built on
 * them is 2.5 times cheaper than PKCS5_PBKDF2_HMAC, whose per-iteration
 * EVP_MAC overhead made the tool, not the server, the bottleneck of SCRAM
 * logins. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <expat.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_STREAM "http://etherx.jabber.org/streams"
#define NS_CLIENT "jabber:client"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_REGISTER "jabber:iq:register"
#define NS_PING "urn:xmpp:ping"
#define NS_ROSTER "jabber:iq:roster"
#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER NS_MUC "#user"
#define NS_MUC_OWNER NS_MUC "#owner"
#define NS_SEPARATOR ' '

/* Bodies the tool sends start with this tag, its run id, a sequence number
 * and the CLOCK_MONOTONIC send time; anything else (history, leftovers of an
 * earlier run) is not counted. */
#define BODY_TAG "plt"
#define MAX_TEXT (64 * 1024)
#define READ_CHUNK 16384
#define MAX_REASONS 32
#define STRAGGLER_WAIT_NS (5 * 1000000000LL)
#define QUIET_WAIT_NS (5 * 1000000000LL)
#define JOIN_WAIT_NS (60 * 1000000000LL)

enum tls_mode { TLS_NONE, TLS_STARTTLS, TLS_DIRECT };
enum phase { PH_REGISTER, PH_LOGIN, PH_IDLE, PH_MSG, PH_MUC, PH_OFFLINE };
enum sasl_choice { SASL_AUTO, SASL_SCRAM, SASL_PLAIN };

static const char *const tls_names[] = { "none", "starttls", "direct" };
static const char *const phase_names[] = { "register", "login", "idle", "msg", "muc", "offline" };

static struct {
	const char *host, *port, *domain, *prefix, *password, *room, *label, *scram_cache;
	enum tls_mode tls;
	enum phase phase;
	enum sasl_choice sasl;
	int users, concurrency, first_user, pairs, occupants, senders, messages;
	double duration, rate, timeout;
	long server_pid;
} opt = {
	.host = "127.0.0.1", .port = "5222", .domain = "localhost", .prefix = "load",
	.password = "secret", .label = "", .tls = TLS_NONE, .phase = PH_LOGIN,
	.users = 100, .concurrency = 50, .first_user = 0, .pairs = 50, .occupants = 50,
	.senders = 5, .messages = 1000, .duration = 10, .rate = 1000, .timeout = 120,
	.server_pid = 0,
};

enum sstate {
	ST_NEW, ST_CONNECTING, ST_FEATURES, ST_STARTTLS, ST_TLS_HANDSHAKE, ST_REG_GET,
	ST_REG_SET, ST_SASL, ST_BIND, ST_SESSION, ST_READY, ST_CLOSING, ST_GONE
};

/* What the top-level element being parsed is; decides which children and
 * texts are worth keeping. */
enum kind {
	K_OTHER, K_FEATURES, K_STREAM_ERROR, K_STREAM_END, K_PROCEED, K_TLS_FAILURE,
	K_CHALLENGE, K_SUCCESS, K_SASL_FAILURE, K_IQ, K_MESSAGE, K_PRESENCE
};

/* The child of the top-level element we are inside, for the grandchildren
 * that matter (mechanisms, the bind jid, error conditions, MUC status). */
enum child { C_NONE, C_MECHANISMS, C_SESSION, C_BIND, C_ERROR, C_MUC_X, C_OTHER };

struct stanza {
	enum kind kind;
	enum child child;
	char type[16], id[32], from[256], cond[48];
	bool starttls, scram_sha1, plain, bind, session, session_optional;
	bool ping, bind_result, register_query, roster, muc_110, muc_201, body;
	int capture_level;       /* level of the element whose text we collect, or -1 */
	char *text;              /* collected text, NUL-terminated, owned */
	size_t len, cap;
	bool text_overflow;
};

struct scram {
	char cnonce[40];
	char *client_first_bare;
	unsigned char server_signature[SHA_DIGEST_LENGTH];
	bool final_sent;
};

struct session {
	int index, user;
	enum sstate state;
	bool tls_on, authenticated, registered, counted, ready_once, restarted;
	bool session_needed, muc_joined, muc_join_sent, using_scram;
	struct bufferevent *bev;
	XML_Parser parser;
	int depth;
	struct scram *scram;
	char *full_jid;
	struct stanza st;
	int64_t started_ns;
};

struct reason { char text[96]; long count; };

/* A log-linear histogram of latencies in microseconds: 2^HIST_SUB buckets per
 * power of two keep every percentile within 1% without storing samples. */
#define HIST_SUB 7
#define HIST_BUCKETS ((64 - HIST_SUB + 1) << HIST_SUB)
static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_count, hist_max_us;

static struct {
	struct event_base *base;
	SSL_CTX *ssl_ctx;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	struct session *sessions;
	int nsessions;
	char *esc_password, *esc_domain;
	uint32_t run_id;

	/* launcher: starts sessions [next, end) with at most `limit` in flight */
	int next, end, in_flight, limit, pending;
	bool launching;
	void (*all_logged_in)(void);
	long ok, failed, dropped, registered_new, registered_existing, pings_answered;
	int64_t first_connect_ns, last_ready_ns, phase_start_ns;
	struct reason reasons[MAX_REASONS];
	int nreasons;
	long reasons_other;

	/* traffic */
	struct event *tick, *step_timer, *deadline;
	int *senders;
	char **targets;          /* escaped `to` per sender */
	int nsenders;
	int64_t send_start_ns, send_end_ns, wait_start_ns, last_activity_ns;
	uint64_t sent, total_to_send, delivered, msg_errors, send_skipped;
	size_t max_backlog;
	long joined, join_failed;
	int first_joiner;
	bool room_ready;

	/* offline */
	int off_stage;
	int64_t off_receiver_start_ns, off_last_msg_ns;
	long bounced;

	long server_rss_before, server_rss_after;
	/* muc: the server's RSS with every session logged in, then once every
	 * occupant joined and the join traffic settled: the cost of an occupant. */
	long server_rss_logged_in, server_rss_joined;
	bool talk_scheduled;
	long pbkdf2_computed;
	char error[256];
	bool timed_out, finished;
	int exit_status;
} g;

static void finish(void);
static void session_fail(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void launch_more(void);

/* ---------- small helpers ---------- */

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p) {
		fprintf(stderr, "parley-load: out of memory\n");
		exit(1);
	}
	return p;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(xmalloc(n), s, n);
}

/* XML-escapes text for both attribute values (either quote) and content. */
static char *xml_escape(const char *in)
{
	size_t n = 1;
	for (const char *p = in; *p; p++)
		n += strchr("&<>'\"", *p) ? 6 : 1;
	char *out = xmalloc(n), *o = out;
	for (const char *p = in; *p; p++) {
		switch (*p) {
		case '&': o = stpcpy(o, "&amp;"); break;
		case '<': o = stpcpy(o, "&lt;"); break;
		case '>': o = stpcpy(o, "&gt;"); break;
		case '\'': o = stpcpy(o, "&apos;"); break;
		case '"': o = stpcpy(o, "&quot;"); break;
		default: *o++ = *p;
		}
	}
	*o = '\0';
	return out;
}

static char *b64_encode(const unsigned char *in, size_t len)
{
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

/* Returns the decoded length or -1; EVP_DecodeBlock counts padding as zero
 * bytes, which are taken off again here. */
static int b64_decode(const char *in, unsigned char **out)
{
	size_t len = 0;
	char *clean = xmalloc(strlen(in) + 1);
	for (const char *p = in; *p; p++)
		if (!strchr(" \t\r\n", *p))
			clean[len++] = *p;
	clean[len] = '\0';
	if (len % 4) {
		free(clean);
		return -1;
	}
	*out = xmalloc(len / 4 * 3 + 1);
	int n = len ? EVP_DecodeBlock(*out, (unsigned char *)clean, (int)len) : 0;
	if (n >= 0 && len >= 1 && clean[len - 1] == '=')
		n--;
	if (n >= 0 && len >= 2 && clean[len - 2] == '=')
		n--;
	free(clean);
	if (n < 0) {
		free(*out);
		*out = NULL;
		return -1;
	}
	(*out)[n] = '\0';
	return n;
}

static void username_of(int user, char *buf, size_t size)
{
	snprintf(buf, size, "%s%d", opt.prefix, user);
}

static long rss_kb_of(const char *status_path)
{
	FILE *f = fopen(status_path, "r");
	if (!f)
		return -1;
	char line[256];
	long kb = -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, "VmRSS:", 6) == 0) {
			kb = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return kb;
}

static long server_rss_kb(void)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%ld/status", opt.server_pid);
	return rss_kb_of(path);
}

static void add_reason(const char *text)
{
	for (int i = 0; i < g.nreasons; i++)
		if (strcmp(g.reasons[i].text, text) == 0) {
			g.reasons[i].count++;
			return;
		}
	if (g.nreasons == MAX_REASONS) {
		g.reasons_other++;
		return;
	}
	snprintf(g.reasons[g.nreasons].text, sizeof g.reasons[0].text, "%s", text);
	g.reasons[g.nreasons++].count = 1;
}

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...)
{
	if (g.error[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(g.error, sizeof g.error, fmt, ap);
	va_end(ap);
}

/* ---------- latency histogram ---------- */

static int hist_index(uint64_t v)
{
	if (v < (1u << HIST_SUB))
		return (int)v;
	int e = 63 - __builtin_clzll(v);
	uint64_t sub = (v >> (e - HIST_SUB)) & ((1u << HIST_SUB) - 1);
	return ((e - HIST_SUB + 1) << HIST_SUB) + (int)sub;
}

static double hist_value(int idx)
{
	int block = idx >> HIST_SUB, sub = idx & ((1 << HIST_SUB) - 1);
	if (block == 0)
		return sub;
	int e = block + HIST_SUB - 1;
	double low = ldexp((double)((1 << HIST_SUB) + sub), e - HIST_SUB);
	return low + ldexp(1.0, e - HIST_SUB) / 2;
}

static void hist_record(int64_t ns)
{
	uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
	hist[hist_index(us)]++;
	hist_count++;
	if (us > hist_max_us)
		hist_max_us = us;
}

static double hist_percentile_ms(double p)
{
	if (!hist_count)
		return 0;
	uint64_t target = (uint64_t)ceil(p * (double)hist_count), seen = 0;
	if (target == 0)
		target = 1;
	for (int i = 0; i < HIST_BUCKETS; i++) {
		seen += hist[i];
		if (seen >= target) {
			double v = hist_value(i);
			return (v > (double)hist_max_us ? (double)hist_max_us : v) / 1000.0;
		}
	}
	return (double)hist_max_us / 1000.0;
}

/* ---------- output ---------- */

static void send_raw(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_raw(struct session *s, const char *fmt, ...)
{
	if (!s->bev)
		return;
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
	va_end(ap);
}

/* ---------- expat callbacks: they only record, never act ---------- */

static bool name_is(const char *name, const char *ns, const char *local)
{
	size_t n = strlen(ns);
	return strncmp(name, ns, n) == 0 && name[n] == NS_SEPARATOR && strcmp(name + n + 1, local) == 0;
}

static bool ns_is(const char *name, const char *ns)
{
	size_t n = strlen(ns);
	return strncmp(name, ns, n) == 0 && name[n] == NS_SEPARATOR;
}

static const char *local_of(const char *name)
{
	const char *sep = strrchr(name, NS_SEPARATOR);
	return sep ? sep + 1 : name;
}

static const char *attr(const XML_Char **atts, const char *key)
{
	for (int i = 0; atts[i]; i += 2)
		if (strcmp(atts[i], key) == 0)
			return atts[i + 1];
	return NULL;
}

static void copy_attr(char *dst, size_t size, const XML_Char **atts, const char *key)
{
	const char *v = attr(atts, key);
	snprintf(dst, size, "%s", v ? v : "");
}

static void capture(struct stanza *st, int level)
{
	st->capture_level = level;
	st->len = 0;
	st->text_overflow = false;
	if (st->text)
		st->text[0] = '\0';
}

static void on_start(void *data, const XML_Char *name, const XML_Char **atts)
{
	struct session *s = data;
	struct stanza *st = &s->st;
	int level = s->depth++;
	if (level == 1) {
		free(st->text);
		memset(st, 0, sizeof *st);
		st->capture_level = -1;
		if (name_is(name, NS_STREAM, "features"))
			st->kind = K_FEATURES;
		else if (name_is(name, NS_STREAM, "error"))
			st->kind = K_STREAM_ERROR;
		else if (name_is(name, NS_TLS, "proceed"))
			st->kind = K_PROCEED;
		else if (name_is(name, NS_TLS, "failure"))
			st->kind = K_TLS_FAILURE;
		else if (name_is(name, NS_SASL, "challenge"))
			st->kind = K_CHALLENGE, capture(st, 1);
		else if (name_is(name, NS_SASL, "success"))
			st->kind = K_SUCCESS, capture(st, 1);
		else if (name_is(name, NS_SASL, "failure"))
			st->kind = K_SASL_FAILURE;
		else if (name_is(name, NS_CLIENT, "iq"))
			st->kind = K_IQ;
		else if (name_is(name, NS_CLIENT, "message"))
			st->kind = K_MESSAGE;
		else if (name_is(name, NS_CLIENT, "presence"))
			st->kind = K_PRESENCE;
		if (st->kind == K_IQ || st->kind == K_MESSAGE || st->kind == K_PRESENCE) {
			copy_attr(st->type, sizeof st->type, atts, "type");
			copy_attr(st->id, sizeof st->id, atts, "id");
			copy_attr(st->from, sizeof st->from, atts, "from");
		}
	} else if (level == 2) {
		st->child = C_OTHER;
		switch (st->kind) {
		case K_FEATURES:
			if (name_is(name, NS_TLS, "starttls"))
				st->starttls = true;
			else if (name_is(name, NS_SASL, "mechanisms"))
				st->child = C_MECHANISMS;
			else if (name_is(name, NS_BIND, "bind"))
				st->bind = true;
			else if (name_is(name, NS_SESSION, "session"))
				st->session = true, st->child = C_SESSION;
			break;
		case K_STREAM_ERROR:
			if (ns_is(name, NS_STREAM_ERRORS) && strcmp(local_of(name), "text") != 0 && !st->cond[0])
				snprintf(st->cond, sizeof st->cond, "%s", local_of(name));
			break;
		case K_SASL_FAILURE:
		case K_TLS_FAILURE:
			if (strcmp(local_of(name), "text") != 0 && !st->cond[0])
				snprintf(st->cond, sizeof st->cond, "%s", local_of(name));
			break;
		case K_IQ:
			if (name_is(name, NS_PING, "ping"))
				st->ping = true;
			else if (name_is(name, NS_BIND, "bind"))
				st->child = C_BIND;
			else if (name_is(name, NS_REGISTER, "query"))
				st->register_query = true;
			else if (name_is(name, NS_ROSTER, "query"))
				st->roster = true;
			else if (name_is(name, NS_CLIENT, "error"))
				st->child = C_ERROR;
			break;
		case K_MESSAGE:
			if (name_is(name, NS_CLIENT, "body") && !st->body)
				st->body = true, capture(st, 2);
			else if (name_is(name, NS_CLIENT, "error"))
				st->child = C_ERROR;
			break;
		case K_PRESENCE:
			if (name_is(name, NS_MUC_USER, "x"))
				st->child = C_MUC_X;
			else if (name_is(name, NS_CLIENT, "error"))
				st->child = C_ERROR;
			break;
		default:
			break;
		}
	} else if (level == 3) {
		switch (st->child) {
		case C_MECHANISMS:
			if (name_is(name, NS_SASL, "mechanism"))
				capture(st, 3);
			break;
		case C_SESSION:
			if (name_is(name, NS_SESSION, "optional"))
				st->session_optional = true;
			break;
		case C_BIND:
			if (name_is(name, NS_BIND, "jid"))
				st->bind_result = true, capture(st, 3);
			break;
		case C_ERROR:
			if (ns_is(name, NS_STANZAS) && strcmp(local_of(name), "text") != 0 && !st->cond[0])
				snprintf(st->cond, sizeof st->cond, "%s", local_of(name));
			break;
		case C_MUC_X:
			if (name_is(name, NS_MUC_USER, "status")) {
				const char *code = attr(atts, "code");
				if (code && strcmp(code, "110") == 0)
					st->muc_110 = true;
				if (code && strcmp(code, "201") == 0)
					st->muc_201 = true;
			}
			break;
		default:
			break;
		}
	}
}

static void on_text(void *data, const XML_Char *text, int len)
{
	struct session *s = data;
	struct stanza *st = &s->st;
	if (st->capture_level < 0 || s->depth != st->capture_level + 1)
		return;
	if (st->len + (size_t)len + 1 > MAX_TEXT) {
		st->text_overflow = true;
		return;
	}
	if (st->len + (size_t)len + 1 > st->cap) {
		size_t cap = st->cap ? st->cap : 256;
		while (cap < st->len + (size_t)len + 1)
			cap *= 2;
		char *grown = realloc(st->text, cap);
		if (!grown) {
			st->text_overflow = true;
			return;
		}
		st->text = grown;
		st->cap = cap;
	}
	memcpy(st->text + st->len, text, (size_t)len);
	st->len += (size_t)len;
	st->text[st->len] = '\0';
}

static void on_end(void *data, const XML_Char *name)
{
	struct session *s = data;
	struct stanza *st = &s->st;
	int level = --s->depth;
	if (level == st->capture_level) {
		st->capture_level = -1;
		if (level == 3 && st->child == C_MECHANISMS && st->text) {
			if (strcmp(st->text, "SCRAM-SHA-1") == 0)
				st->scram_sha1 = true;
			else if (strcmp(st->text, "PLAIN") == 0)
				st->plain = true;
		}
	}
	if (level == 2)
		st->child = C_NONE;
	if (level == 1 || level == 0) {
		/* Stop after each top-level element (or the end of the stream) so
		 * that it is handled outside expat, where the handler may reset or
		 * free this parser. */
		if (level == 0)
			st->kind = K_STREAM_END;
		XML_StopParser(s->parser, XML_TRUE);
	}
	(void)name;
}

static void parser_reset(struct session *s)
{
	if (s->parser)
		XML_ParserReset(s->parser, NULL);
	else
		s->parser = XML_ParserCreateNS(NULL, NS_SEPARATOR);
	if (!s->parser) {
		fprintf(stderr, "parley-load: out of memory\n");
		exit(1);
	}
	XML_SetUserData(s->parser, s);
	XML_SetElementHandler(s->parser, on_start, on_end);
	XML_SetCharacterDataHandler(s->parser, on_text);
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
	/* Deferred reparsing (expat 2.6) could hold back the last stanza of a
	 * read until more bytes come, which would stall the protocol. */
	XML_SetReparseDeferralEnabled(s->parser, XML_FALSE);
#endif
	s->depth = 0;
	s->st.capture_level = -1;
	s->st.kind = K_OTHER;
}

/* ---------- session life ---------- */

static void send_stream_header(struct session *s)
{
	parser_reset(s);
	s->restarted = true;
	s->state = ST_FEATURES;
	send_raw(s, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		    "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
		 g.esc_domain);
}

static void release(struct session *s)
{
	if (s->bev) {
		bufferevent_free(s->bev);
		s->bev = NULL;
	}
	if (s->parser) {
		XML_ParserFree(s->parser);
		s->parser = NULL;
	}
	if (s->scram) {
		free(s->scram->client_first_bare);
		free(s->scram);
		s->scram = NULL;
	}
	free(s->st.text);
	s->st.text = NULL;
	s->st.cap = s->st.len = 0;
	s->state = ST_GONE;
}

static void login_finished(struct session *s, bool ok)
{
	if (s->counted)
		return;
	s->counted = true;
	g.in_flight--;
	g.pending--;
	if (ok) {
		g.ok++;
		g.last_ready_ns = now_ns();
	} else {
		g.failed++;
	}
	launch_more();
}

static void phase_on_session_gone(struct session *s);

static void session_fail(struct session *s, const char *fmt, ...)
{
	if (s->state == ST_GONE)
		return;
	char reason[96];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	bool was_ready = s->ready_once;
	release(s);
	if (!s->counted) {
		add_reason(reason);
		login_finished(s, false);
	} else if (was_ready) {
		char later[128];
		snprintf(later, sizeof later, "after login: %s", reason);
		add_reason(later);
		g.dropped++;
	}
	phase_on_session_gone(s);
}

/* Ends our stream politely and forgets the session once the server closes
 * its side (or the tool exits). */
static void session_close(struct session *s)
{
	send_raw(s, "</stream:stream>");
	s->state = ST_CLOSING;
}

static void session_ready(struct session *s)
{
	s->state = ST_READY;
	s->ready_once = true;
	login_finished(s, true);
}

static void on_read(struct bufferevent *bev, void *data);
static void on_event(struct bufferevent *bev, short what, void *data);

static void start_tls(struct session *s)
{
	SSL *ssl = SSL_new(g.ssl_ctx);
	if (!ssl) {
		session_fail(s, "tls: SSL_new failed");
		return;
	}
	SSL_set_tlsext_host_name(ssl, opt.domain);
	if (opt.tls == TLS_DIRECT)
		SSL_set_alpn_protos(ssl, (const unsigned char *)"\x0bxmpp-client", 12);
	struct bufferevent *tls = bufferevent_openssl_filter_new(g.base, s->bev, ssl,
		BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (!tls) {
		SSL_free(ssl);
		session_fail(s, "tls: cannot create filter");
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	s->bev = tls;
	s->tls_on = true;
	s->state = ST_TLS_HANDSHAKE;
	bufferevent_setcb(tls, on_read, NULL, on_event, s);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
}

static void start_session(struct session *s)
{
	s->state = ST_CONNECTING;
	s->started_ns = now_ns();
	if (!g.first_connect_ns)
		g.first_connect_ns = s->started_ns;
	s->bev = bufferevent_socket_new(g.base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!s->bev) {
		session_fail(s, "connect: cannot create bufferevent");
		return;
	}
	bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&g.addr, (int)g.addr_len) < 0) {
		session_fail(s, "connect: %s", strerror(errno));
		return;
	}
	int one = 1;
	evutil_socket_t fd = bufferevent_getfd(s->bev);
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Starts sessions until `limit` are negotiating at once; a guard keeps
 * synchronous failures (which call back in here) from recursing deeply. */
static void launch_more(void)
{
	if (g.launching)
		return;
	g.launching = true;
	while (g.next < g.end && g.in_flight < g.limit && !g.finished) {
		struct session *s = &g.sessions[g.next++];
		g.in_flight++;
		start_session(s);
	}
	g.launching = false;
	if (g.pending == 0 && g.next >= g.end && g.all_logged_in && !g.finished) {
		void (*done)(void) = g.all_logged_in;
		g.all_logged_in = NULL;
		done();
	}
}

static void launch(int first, int count, int limit, void (*all_logged_in)(void))
{
	g.next = first;
	g.end = first + count;
	g.limit = limit;
	g.pending = count;
	g.all_logged_in = all_logged_in;
	launch_more();
}

/* ---------- SASL ---------- */

static void sasl_start(struct session *s, bool scram)
{
	char user[256];
	username_of(s->user, user, sizeof user);
	s->state = ST_SASL;
	s->using_scram = scram;
	if (!scram) {
		size_t ul = strlen(user), pl = strlen(opt.password);
		unsigned char *msg = xmalloc(ul + pl + 2);
		msg[0] = '\0';
		memcpy(msg + 1, user, ul);
		msg[ul + 1] = '\0';
		memcpy(msg + ul + 2, opt.password, pl);
		char *b64 = b64_encode(msg, ul + pl + 2);
		send_raw(s, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>%s</auth>", b64);
		free(b64);
		free(msg);
		return;
	}
	struct scram *sc = calloc(1, sizeof *sc);
	if (!sc) {
		session_fail(s, "out of memory");
		return;
	}
	unsigned char raw[18];
	if (RAND_bytes(raw, sizeof raw) != 1) {
		free(sc);
		session_fail(s, "sasl: no randomness");
		return;
	}
	EVP_EncodeBlock((unsigned char *)sc->cnonce, raw, sizeof raw);
	/* RFC 5802 saslname: ',' and '=' are escaped in the user name. */
	char saslname[768], *o = saslname;
	for (const char *p = user; *p && o < saslname + sizeof saslname - 4; p++) {
		if (*p == ',')
			o = stpcpy(o, "=2C");
		else if (*p == '=')
			o = stpcpy(o, "=3D");
		else
			*o++ = *p;
	}
	*o = '\0';
	size_t n = strlen(saslname) + strlen(sc->cnonce) + 8;
	sc->client_first_bare = xmalloc(n);
	snprintf(sc->client_first_bare, n, "n=%s,r=%s", saslname, sc->cnonce);
	s->scram = sc;
	size_t fl = strlen(sc->client_first_bare) + 4;
	char *first = xmalloc(fl);
	snprintf(first, fl, "n,,%s", sc->client_first_bare);
	char *b64 = b64_encode((unsigned char *)first, strlen(first));
	send_raw(s, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-1'>%s</auth>", b64);
	free(b64);
	free(first);
}

static void hmac_sha1(const unsigned char *key, size_t key_len, const void *msg, size_t len,
		      unsigned char out[SHA_DIGEST_LENGTH])
{
	unsigned int out_len = SHA_DIGEST_LENGTH;
	HMAC(EVP_sha1(), key, (int)key_len, msg, len, out, &out_len);
}

static void sha1_state_bytes(const SHA_CTX *c, unsigned char out[SHA_DIGEST_LENGTH])
{
	const unsigned int h[5] = { c->h0, c->h1, c->h2, c->h3, c->h4 };
	for (int i = 0; i < 5; i++) {
		out[4 * i] = (unsigned char)(h[i] >> 24);
		out[4 * i + 1] = (unsigned char)(h[i] >> 16);
		out[4 * i + 2] = (unsigned char)(h[i] >> 8);
		out[4 * i + 3] = (unsigned char)h[i];
	}
}

/* PBKDF2-HMAC-SHA1 for one output block (RFC 8018), the way SCRAM needs it.
 * The HMAC pads are hashed once, and each iteration is then exactly two
 * compressions of a pre-padded block: the same result as
 * PKCS5_PBKDF2_HMAC, at a fraction of its cost. */
static void pbkdf2_sha1(const char *password, const unsigned char *salt, size_t salt_len,
			long iterations, unsigned char out[SHA_DIGEST_LENGTH])
{
	unsigned char key[64] = { 0 }, pad[64], u[SHA_DIGEST_LENGTH];
	size_t pl = strlen(password);
	if (pl > sizeof key)
		SHA1((const unsigned char *)password, pl, key);
	else
		memcpy(key, password, pl);
	SHA_CTX inner, outer, c;
	SHA1_Init(&inner);
	for (int i = 0; i < 64; i++)
		pad[i] = key[i] ^ 0x36;
	SHA1_Update(&inner, pad, 64);
	SHA1_Init(&outer);
	for (int i = 0; i < 64; i++)
		pad[i] = key[i] ^ 0x5c;
	SHA1_Update(&outer, pad, 64);

	c = inner;
	SHA1_Update(&c, salt, salt_len);
	SHA1_Update(&c, "\0\0\0\1", 4);
	SHA1_Final(u, &c);
	c = outer;
	SHA1_Update(&c, u, sizeof u);
	SHA1_Final(u, &c);
	memcpy(out, u, sizeof u);

	/* One block holding a 20-byte message after 64 bytes of pad: the
	 * message, 0x80, zeros and the bit length 84 * 8. */
	unsigned char block[64] = { 0 };
	memcpy(block, u, sizeof u);
	block[20] = 0x80;
	block[62] = (84 * 8) >> 8;
	block[63] = (84 * 8) & 0xff;
	for (long i = 1; i < iterations; i++) {
		c = inner;
		SHA1_Transform(&c, block);
		sha1_state_bytes(&c, block);
		c = outer;
		SHA1_Transform(&c, block);
		sha1_state_bytes(&c, block);
		for (int j = 0; j < SHA_DIGEST_LENGTH; j++)
			out[j] ^= block[j];
	}
	OPENSSL_cleanse(key, sizeof key);
	OPENSSL_cleanse(pad, sizeof pad);
}

/* The SCRAM cache (--scram-cache FILE): salted passwords by salt and
 * iteration count, as real clients keep them, so that a login run after the
 * first spends no CPU on PBKDF2 and measures the server alone. Lines are
 * "<password fingerprint> <iterations> <salt base64> <salted hex>"; lines of
 * another password are skipped. */
struct cache_entry { char *key; unsigned char salted[SHA_DIGEST_LENGTH]; };
static struct { struct cache_entry *slots; size_t cap, used; FILE *file; char fingerprint[17]; } cache;

static uint64_t hash_string(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static char *cache_key(const char *salt_b64, long iterations)
{
	size_t n = strlen(salt_b64) + 24;
	char *key = xmalloc(n);
	snprintf(key, n, "%ld %s", iterations, salt_b64);
	return key;
}

static struct cache_entry *cache_slot(const char *key)
{
	size_t i = hash_string(key) & (cache.cap - 1);
	while (cache.slots[i].key && strcmp(cache.slots[i].key, key) != 0)
		i = (i + 1) & (cache.cap - 1);
	return &cache.slots[i];
}

static bool scram_cache_get(const char *salt_b64, long iterations, unsigned char *salted)
{
	if (!cache.used)
		return false;
	char *key = cache_key(salt_b64, iterations);
	struct cache_entry *e = cache_slot(key);
	free(key);
	if (!e->key)
		return false;
	memcpy(salted, e->salted, SHA_DIGEST_LENGTH);
	return true;
}

static void scram_cache_put(const char *salt_b64, long iterations, const unsigned char *salted, bool save)
{
	if (!cache.cap)
		return;
	if (2 * (cache.used + 1) > cache.cap) {
		struct cache_entry *old = cache.slots;
		size_t old_cap = cache.cap;
		cache.cap *= 2;
		cache.slots = calloc(cache.cap, sizeof *cache.slots);
		if (!cache.slots) {
			fprintf(stderr, "parley-load: out of memory\n");
			exit(1);
		}
		for (size_t i = 0; i < old_cap; i++)
			if (old[i].key)
				*cache_slot(old[i].key) = old[i];
		free(old);
	}
	char *key = cache_key(salt_b64, iterations);
	struct cache_entry *e = cache_slot(key);
	if (e->key) {
		free(key);
		return;
	}
	e->key = key;
	memcpy(e->salted, salted, SHA_DIGEST_LENGTH);
	cache.used++;
	if (save && cache.file) {
		fprintf(cache.file, "%s %ld %s ", cache.fingerprint, iterations, salt_b64);
		for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
			fprintf(cache.file, "%02x", salted[i]);
		fputc('\n', cache.file);
	}
}

static void scram_cache_open(const char *path)
{
	unsigned char digest[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)opt.password, strlen(opt.password), digest);
	for (int i = 0; i < 8; i++)
		snprintf(cache.fingerprint + 2 * i, 3, "%02x", digest[i]);
	cache.cap = 1024;
	cache.slots = calloc(cache.cap, sizeof *cache.slots);
	if (!cache.slots) {
		fprintf(stderr, "parley-load: out of memory\n");
		exit(1);
	}
	FILE *in = fopen(path, "r");
	if (in) {
		char line[1024], fp[32], salt[900], hex[64];
		long iterations;
		while (fgets(line, sizeof line, in)) {
			unsigned char salted[SHA_DIGEST_LENGTH];
			if (sscanf(line, "%31s %ld %899s %63s", fp, &iterations, salt, hex) != 4 ||
			    strcmp(fp, cache.fingerprint) != 0 || strlen(hex) != 2 * SHA_DIGEST_LENGTH)
				continue;
			for (int i = 0; i < SHA_DIGEST_LENGTH; i++) {
				unsigned int byte;
				sscanf(hex + 2 * i, "%2x", &byte);
				salted[i] = (unsigned char)byte;
			}
			scram_cache_put(salt, iterations, salted, false);
		}
		fclose(in);
	}
	/* The file holds password equivalents of the bench accounts: 0600. */
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
	cache.file = fd >= 0 ? fdopen(fd, "a") : NULL;
	if (!cache.file)
		fprintf(stderr, "parley-load: cannot write %s: %s\n", path, strerror(errno));
}

/* Answers the server-first-message; returns an error text or NULL. */
static const char *scram_client_final(struct session *s, const char *server_first)
{
	struct scram *sc = s->scram;
	const char *nonce = NULL, *salt_b64 = NULL;
	size_t nonce_len = 0, salt_len = 0;
	long iterations = 0;
	for (const char *p = server_first; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len >= 2 && p[1] == '=') {
			if (p[0] == 'r')
				nonce = p + 2, nonce_len = len - 2;
			else if (p[0] == 's')
				salt_b64 = p + 2, salt_len = len - 2;
			else if (p[0] == 'i')
				iterations = strtol(p + 2, NULL, 10);
			else if (p[0] == 'm')
				return "scram: mandatory extension";
		}
		p += len;
		if (*p == ',')
			p++;
	}
	size_t cl = strlen(sc->cnonce);
	if (!nonce || !salt_b64 || iterations <= 0 || nonce_len <= cl || strncmp(nonce, sc->cnonce, cl) != 0)
		return "scram: bad server-first-message";
	if (iterations > 10000000)
		return "scram: absurd iteration count";
	char *salt_text = xmalloc(salt_len + 1);
	memcpy(salt_text, salt_b64, salt_len);
	salt_text[salt_len] = '\0';

	unsigned char salted[SHA_DIGEST_LENGTH], client_key[SHA_DIGEST_LENGTH],
		stored_key[SHA_DIGEST_LENGTH], server_key[SHA_DIGEST_LENGTH],
		signature[SHA_DIGEST_LENGTH], proof[SHA_DIGEST_LENGTH];
	if (!scram_cache_get(salt_text, iterations, salted)) {
		unsigned char *salt;
		int salt_n = b64_decode(salt_text, &salt);
		if (salt_n < 0) {
			free(salt_text);
			return "scram: bad salt";
		}
		pbkdf2_sha1(opt.password, salt, (size_t)salt_n, iterations, salted);
		free(salt);
		g.pbkdf2_computed++;
		scram_cache_put(salt_text, iterations, salted, true);
	}
	free(salt_text);
	hmac_sha1(salted, sizeof salted, "Client Key", 10, client_key);
	SHA1(client_key, sizeof client_key, stored_key);
	hmac_sha1(salted, sizeof salted, "Server Key", 10, server_key);

	size_t wl = nonce_len + 16;
	char *without_proof = xmalloc(wl);
	snprintf(without_proof, wl, "c=biws,r=%.*s", (int)nonce_len, nonce);
	size_t al = strlen(sc->client_first_bare) + strlen(server_first) + strlen(without_proof) + 3;
	char *auth_message = xmalloc(al);
	snprintf(auth_message, al, "%s,%s,%s", sc->client_first_bare, server_first, without_proof);
	hmac_sha1(stored_key, sizeof stored_key, auth_message, strlen(auth_message), signature);
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		proof[i] = client_key[i] ^ signature[i];
	hmac_sha1(server_key, sizeof server_key, auth_message, strlen(auth_message),
		  sc->server_signature);
	free(auth_message);

	char *proof_b64 = b64_encode(proof, sizeof proof);
	size_t fl = strlen(without_proof) + strlen(proof_b64) + 4;
	char *final = xmalloc(fl);
	snprintf(final, fl, "%s,p=%s", without_proof, proof_b64);
	char *b64 = b64_encode((unsigned char *)final, strlen(final));
	send_raw(s, "<response xmlns='" NS_SASL "'>%s</response>", b64);
	free(b64);
	free(final);
	free(proof_b64);
	free(without_proof);
	sc->final_sent = true;
	return NULL;
}

/* Checks the server's v= against what we computed; the server must prove it
 * knows the key too, or the "login" would prove nothing. */
static bool scram_verify(struct session *s, const char *server_final)
{
	if (strncmp(server_final, "v=", 2) != 0)
		return false;
	char *expected = b64_encode(s->scram->server_signature, SHA_DIGEST_LENGTH);
	size_t n = strlen(expected);
	bool ok = strncmp(server_final + 2, expected, n) == 0 &&
		  (server_final[2 + n] == '\0' || server_final[2 + n] == ',');
	free(expected);
	return ok;
}

static void on_sasl(struct session *s)
{
	struct stanza *st = &s->st;
	if (s->state != ST_SASL) {
		session_fail(s, "sasl: unexpected element");
		return;
	}
	if (st->kind == K_SASL_FAILURE) {
		session_fail(s, "sasl: %s", st->cond[0] ? st->cond : "failure");
		return;
	}
	unsigned char *decoded = NULL;
	const char *text = st->text ? st->text : "";
	if (st->text_overflow || b64_decode(text, &decoded) < 0) {
		session_fail(s, "sasl: bad base64");
		return;
	}
	if (st->kind == K_CHALLENGE) {
		if (!s->using_scram) {
			session_fail(s, "sasl: unexpected challenge");
		} else if (!s->scram->final_sent) {
			const char *err = scram_client_final(s, (char *)decoded);
			if (err)
				session_fail(s, "%s", err);
		} else if (!scram_verify(s, (char *)decoded)) {
			session_fail(s, "scram: bad server signature");
		} else {
			send_raw(s, "<response xmlns='" NS_SASL "'/>");
		}
		free(decoded);
		return;
	}
	/* success: its text, when present, is the server-final-message */
	if (s->using_scram && decoded[0] && !scram_verify(s, (char *)decoded)) {
		free(decoded);
		session_fail(s, "scram: bad server signature");
		return;
	}
	free(decoded);
	if (s->scram) {
		free(s->scram->client_first_bare);
		free(s->scram);
		s->scram = NULL;
	}
	s->authenticated = true;
	send_stream_header(s);
}

/* ---------- negotiation ---------- */

static void on_features(struct session *s)
{
	struct stanza *st = &s->st;
	if (s->state != ST_FEATURES) {
		session_fail(s, "unexpected stream features");
		return;
	}
	if (opt.tls == TLS_STARTTLS && !s->tls_on) {
		if (!st->starttls) {
			session_fail(s, "starttls not offered");
			return;
		}
		send_raw(s, "<starttls xmlns='" NS_TLS "'/>");
		s->state = ST_STARTTLS;
		return;
	}
	if (!s->authenticated && opt.phase == PH_REGISTER && !s->registered) {
		send_raw(s, "<iq type='get' id='reg1'><query xmlns='" NS_REGISTER "'/></iq>");
		s->state = ST_REG_GET;
		return;
	}
	if (!s->authenticated) {
		bool scram = st->scram_sha1 && opt.sasl != SASL_PLAIN;
		bool plain = st->plain && opt.sasl != SASL_SCRAM;
		if (!scram && !plain) {
			session_fail(s, "no usable SASL mechanism offered");
			return;
		}
		sasl_start(s, scram);
		return;
	}
	if (!st->bind) {
		session_fail(s, "bind not offered");
		return;
	}
	s->session_needed = st->session && !st->session_optional;
	send_raw(s, "<iq type='set' id='bind'><bind xmlns='" NS_BIND "'>"
		    "<resource>parley-load</resource></bind></iq>");
	s->state = ST_BIND;
}

static void send_initial_presence(struct session *s)
{
	send_raw(s, "<presence/>");
	session_ready(s);
}

static void on_register_reply(struct session *s)
{
	struct stanza *st = &s->st;
	bool result = strcmp(st->type, "result") == 0;
	if (s->state == ST_REG_GET) {
		if (!result) {
			session_fail(s, "register: %s", st->cond[0] ? st->cond : "get refused");
			return;
		}
		char user[256];
		username_of(s->user, user, sizeof user);
		char *esc_user = xml_escape(user);
		send_raw(s, "<iq type='set' id='reg2'><query xmlns='" NS_REGISTER "'>"
			    "<username>%s</username><password>%s</password></query></iq>",
			 esc_user, g.esc_password);
		free(esc_user);
		s->state = ST_REG_SET;
		return;
	}
	if (result)
		g.registered_new++;
	else if (strcmp(st->cond, "conflict") == 0)
		g.registered_existing++;
	else {
		session_fail(s, "register: %s", st->cond[0] ? st->cond : "set refused");
		return;
	}
	s->registered = true;
	login_finished(s, true);
	session_close(s);
}

/* ---------- stanzas once logged in ---------- */

static void phase_on_message(struct session *s);
static void phase_on_presence(struct session *s);
static void phase_on_iq_reply(struct session *s);

static void on_iq(struct session *s)
{
	struct stanza *st = &s->st;
	bool get = strcmp(st->type, "get") == 0, set = strcmp(st->type, "set") == 0;
	if (get || set) {
		/* Requests from the server: pings must be answered or it closes
		 * idle sessions; roster pushes are acknowledged; anything else is
		 * refused as RFC 6120 8.2.3 asks. */
		char *id = xml_escape(st->id), *from = xml_escape(st->from);
		char to[300] = "";
		if (from[0])
			snprintf(to, sizeof to, " to='%s'", from);
		if ((get && st->ping) || (set && st->roster)) {
			send_raw(s, "<iq type='result' id='%s'%s/>", id, to);
			if (st->ping)
				g.pings_answered++;
		} else {
			send_raw(s, "<iq type='error' id='%s'%s><error type='cancel'>"
				    "<service-unavailable xmlns='" NS_STANZAS "'/></error></iq>", id, to);
		}
		free(id);
		free(from);
		return;
	}
	switch (s->state) {
	case ST_REG_GET:
	case ST_REG_SET:
		on_register_reply(s);
		return;
	case ST_BIND:
		if (strcmp(st->id, "bind") != 0)
			return;
		if (strcmp(st->type, "result") != 0 || !st->bind_result || !st->text || !st->text[0]) {
			session_fail(s, "bind: %s", st->cond[0] ? st->cond : "no jid");
			return;
		}
		free(s->full_jid);
		s->full_jid = xstrdup(st->text);
		if (s->session_needed) {
			send_raw(s, "<iq type='set' id='sess'><session xmlns='" NS_SESSION "'/></iq>");
			s->state = ST_SESSION;
		} else {
			send_initial_presence(s);
		}
		return;
	case ST_SESSION:
		if (strcmp(st->id, "sess") != 0)
			return;
		if (strcmp(st->type, "result") != 0) {
			session_fail(s, "session: %s", st->cond[0] ? st->cond : "refused");
			return;
		}
		send_initial_presence(s);
		return;
	case ST_READY:
		phase_on_iq_reply(s);
		return;
	default:
		return;
	}
}

static void handle_element(struct session *s)
{
	struct stanza *st = &s->st;
	switch (st->kind) {
	case K_STREAM_ERROR:
		session_fail(s, "stream error: %s", st->cond[0] ? st->cond : "unknown");
		return;
	case K_STREAM_END:
		if (s->state == ST_CLOSING) {
			release(s);
			phase_on_session_gone(s);
		} else {
			session_fail(s, "stream closed by server");
		}
		return;
	case K_FEATURES:
		on_features(s);
		return;
	case K_PROCEED:
		if (s->state != ST_STARTTLS)
			session_fail(s, "unexpected starttls proceed");
		else
			start_tls(s);
		return;
	case K_TLS_FAILURE:
		session_fail(s, "starttls failure");
		return;
	case K_CHALLENGE:
	case K_SUCCESS:
	case K_SASL_FAILURE:
		on_sasl(s);
		return;
	case K_IQ:
		on_iq(s);
		return;
	case K_MESSAGE:
		if (s->authenticated)
			phase_on_message(s);
		return;
	case K_PRESENCE:
		if (s->authenticated)
			phase_on_presence(s);
		return;
	default:
		return;
	}
}

static void on_read(struct bufferevent *bev, void *data)
{
	struct session *s = data;
	struct evbuffer *in = bufferevent_get_input(bev);
	/* bev stops being s->bev when TLS starts (the rest of that buffer
	 * belongs to the TLS filter) or when the session is released. */
	while (bev == s->bev && s->parser && evbuffer_get_length(in) > 0) {
		size_t want = evbuffer_get_length(in);
		if (want > READ_CHUNK)
			want = READ_CHUNK;
		void *buf = XML_GetBuffer(s->parser, (int)want);
		if (!buf) {
			session_fail(s, "xml: %s", XML_ErrorString(XML_GetErrorCode(s->parser)));
			return;
		}
		int got = evbuffer_remove(in, buf, want);
		enum XML_Status status = XML_ParseBuffer(s->parser, got, XML_FALSE);
		while (status == XML_STATUS_SUSPENDED) {
			s->restarted = false;
			handle_element(s);
			if (s->state == ST_GONE || bev != s->bev)
				return;
			if (s->restarted)
				break;  /* a new stream: nothing of the old one is left */
			status = XML_ResumeParser(s->parser);
		}
		if (status == XML_STATUS_ERROR) {
			session_fail(s, "xml: %s", XML_ErrorString(XML_GetErrorCode(s->parser)));
			return;
		}
	}
}

static void on_event(struct bufferevent *bev, short what, void *data)
{
	struct session *s = data;
	if (bev != s->bev)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		if (s->tls_on || opt.tls != TLS_DIRECT)
			send_stream_header(s);
		else
			start_tls(s);
		return;
	}
	if (s->state == ST_CLOSING && (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) {
		release(s);
		phase_on_session_gone(s);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		session_fail(s, "connection closed by server");
	} else if (what & BEV_EVENT_ERROR) {
		unsigned long ssl_err = bufferevent_get_openssl_error(bev);
		int sock_err = EVUTIL_SOCKET_ERROR();
		if (ssl_err)
			session_fail(s, "tls: %s", ERR_reason_error_string(ssl_err));
		else if (sock_err)
			session_fail(s, "%s: %s", s->state == ST_CONNECTING ? "connect" : "socket",
				     strerror(sock_err));
		else
			session_fail(s, "%s", s->tls_on ? "tls: handshake or read failed" : "socket error");
	}
}

/* ---------- traffic: msg and muc ---------- */

static void record_body(struct session *s)
{
	const char *text = s->st.text;
	if (!s->st.body || !text || strncmp(text, BODY_TAG " ", sizeof BODY_TAG) != 0)
		return;
	char *end;
	unsigned long run = strtoul(text + sizeof BODY_TAG, &end, 16);
	if (run != g.run_id)
		return;
	strtoull(end, &end, 10);
	long long sent_ns = strtoll(end, &end, 10);
	int64_t now = now_ns();
	hist_record(now - sent_ns);
	g.delivered++;
	g.last_activity_ns = now;
}

static void count_message_error(struct session *s)
{
	char reason[96];
	snprintf(reason, sizeof reason, "message error: %s", s->st.cond[0] ? s->st.cond : "unknown");
	add_reason(reason);
	g.msg_errors++;
}

static void send_due(void)
{
	int64_t now = now_ns();
	int64_t elapsed = now - g.send_start_ns;
	uint64_t due = elapsed >= g.send_end_ns - g.send_start_ns
		? g.total_to_send
		: (uint64_t)((double)elapsed * opt.rate / 1e9);
	if (due > g.total_to_send)
		due = g.total_to_send;
	const char *type = opt.phase == PH_MUC ? "groupchat" : "chat";
	while (g.sent < due) {
		int k = (int)(g.sent % (uint64_t)g.nsenders);
		struct session *s = &g.sessions[g.senders[k]];
		uint64_t seq = g.sent++;
		if (s->state != ST_READY) {
			g.send_skipped++;
			continue;
		}
		struct evbuffer *out = bufferevent_get_output(s->bev);
		evbuffer_add_printf(out, "<message to='%s' type='%s' id='m%llu'><body>" BODY_TAG
				    " %08x %llu %lld</body></message>",
				    g.targets[k], type, (unsigned long long)seq, g.run_id,
				    (unsigned long long)seq, (long long)now);
		size_t backlog = evbuffer_get_length(out);
		if (backlog > g.max_backlog)
			g.max_backlog = backlog;
	}
}

static void on_tick(evutil_socket_t fd, short what, void *data)
{
	(void)fd, (void)what, (void)data;
	int64_t now = now_ns();
	if (g.sent < g.total_to_send) {
		send_due();
		if (g.sent >= g.total_to_send)
			g.wait_start_ns = now_ns();
		return;
	}
	uint64_t expected = g.sent - g.send_skipped;
	if (opt.phase == PH_MUC)
		expected *= (uint64_t)g.joined;
	if (g.delivered + g.msg_errors >= expected || now - g.wait_start_ns >= STRAGGLER_WAIT_NS)
		finish();
}

static void start_traffic(void)
{
	g.total_to_send = (uint64_t)llround(opt.rate * opt.duration);
	if (opt.phase == PH_MSG)
		fprintf(stderr, "parley-load: %d pairs up, sending %llu messages for %.1f s\n",
			g.nsenders, (unsigned long long)g.total_to_send, opt.duration);
	else
		fprintf(stderr, "parley-load: %ld occupants joined, %d senders, sending %llu messages for %.1f s\n",
			g.joined, g.nsenders, (unsigned long long)g.total_to_send, opt.duration);
	g.send_start_ns = now_ns();
	g.send_end_ns = g.send_start_ns + (int64_t)(opt.duration * 1e9);
	g.wait_start_ns = g.send_end_ns;
	if (g.total_to_send == 0)
		g.wait_start_ns = g.send_start_ns;
	g.tick = event_new(g.base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval ms = { 0, 1000 };
	event_add(g.tick, &ms);
}

static void msg_logged_in(void)
{
	g.senders = xmalloc(sizeof *g.senders * (size_t)opt.pairs);
	g.targets = xmalloc(sizeof *g.targets * (size_t)opt.pairs);
	for (int i = 0; i < opt.pairs; i++) {
		struct session *tx = &g.sessions[2 * i], *rx = &g.sessions[2 * i + 1];
		if (tx->state != ST_READY || rx->state != ST_READY || !rx->full_jid)
			continue;
		g.senders[g.nsenders] = tx->index;
		g.targets[g.nsenders++] = xml_escape(rx->full_jid);
	}
	fprintf(stderr, "parley-load: %ld/%d sessions logged in\n", g.ok, g.nsessions);
	if (!g.nsenders) {
		set_error("no sender/receiver pair logged in");
		finish();
		return;
	}
	start_traffic();
}

static void muc_join(struct session *s)
{
	char nick[256];
	username_of(s->user, nick, sizeof nick);
	char *esc_nick = xml_escape(nick), *esc_room = xml_escape(opt.room);
	send_raw(s, "<presence to='%s/%s'><x xmlns='" NS_MUC "'><history maxstanzas='0'/></x></presence>",
		 esc_room, esc_nick);
	free(esc_nick);
	free(esc_room);
	s->muc_join_sent = true;
}

static void muc_start_talking(evutil_socket_t fd, short what, void *data);

/* The joins sent every occupant everyone's presence (n^2 stanzas): let the
 * server flush and free those buffers before its RSS is read. */
#define JOIN_SETTLE_S 2

static void muc_all_joined(void)
{
	if (g.step_timer)
		event_del(g.step_timer);
	/* Late joins after the join timeout end up here again. */
	if (g.talk_scheduled)
		return;
	g.talk_scheduled = true;
	struct timeval settle = { JOIN_SETTLE_S, 0 };
	event_base_once(g.base, -1, EV_TIMEOUT, muc_start_talking, NULL, &settle);
}

static void muc_start_talking(evutil_socket_t fd, short what, void *data)
{
	(void)fd, (void)what, (void)data;
	g.server_rss_joined = server_rss_kb();
	g.senders = xmalloc(sizeof *g.senders * (size_t)opt.senders);
	g.targets = xmalloc(sizeof *g.targets * (size_t)opt.senders);
	for (int i = 0; i < g.nsessions && g.nsenders < opt.senders; i++) {
		if (!g.sessions[i].muc_joined || g.sessions[i].state != ST_READY)
			continue;
		g.senders[g.nsenders] = i;
		g.targets[g.nsenders++] = xml_escape(opt.room);
	}
	if (!g.nsenders) {
		set_error("no occupant could join %s", opt.room);
		finish();
		return;
	}
	start_traffic();
}

static void muc_check_joins(void)
{
	if (g.room_ready && !g.tick && g.joined + g.join_failed >= g.ok)
		muc_all_joined();
}

static void muc_room_ready(void)
{
	g.room_ready = true;
	for (int i = 0; i < g.nsessions; i++)
		if (i != g.first_joiner && g.sessions[i].state == ST_READY)
			muc_join(&g.sessions[i]);
	muc_check_joins();
}

static void on_join_timeout(evutil_socket_t fd, short what, void *data)
{
	(void)fd, (void)what, (void)data;
	if (!g.room_ready) {
		set_error("no answer to the join of %s within %lld s (no MUC service?)", opt.room,
			  JOIN_WAIT_NS / 1000000000LL);
		finish();
		return;
	}
	fprintf(stderr, "parley-load: only %ld occupants joined in time\n", g.joined);
	muc_all_joined();
}

static void muc_logged_in(void)
{
	fprintf(stderr, "parley-load: %ld/%d sessions logged in\n", g.ok, g.nsessions);
	struct session *first = NULL;
	for (int i = 0; i < g.nsessions && !first; i++)
		if (g.sessions[i].state == ST_READY)
			first = &g.sessions[i];
	if (!first) {
		set_error("no occupant logged in");
		finish();
		return;
	}
	g.server_rss_logged_in = server_rss_kb();
	/* The first joiner alone, so that it creates (and if need be configures)
	 * the room before the others arrive. */
	g.first_joiner = first->index;
	g.step_timer = evtimer_new(g.base, on_join_timeout, NULL);
	struct timeval tv = { JOIN_WAIT_NS / 1000000000LL, 0 };
	evtimer_add(g.step_timer, &tv);
	muc_join(first);
}

static bool is_self_presence(struct session *s)
{
	if (s->st.muc_110)
		return true;
	char nick[256];
	username_of(s->user, nick, sizeof nick);
	size_t rl = strlen(opt.room);
	return strncasecmp(s->st.from, opt.room, rl) == 0 && s->st.from[rl] == '/' &&
	       strcmp(s->st.from + rl + 1, nick) == 0;
}

static void muc_on_presence(struct session *s)
{
	struct stanza *st = &s->st;
	if (!s->muc_join_sent || s->muc_joined)
		return;
	size_t rl = strlen(opt.room);
	bool from_room = strncasecmp(st->from, opt.room, rl) == 0 &&
			 (st->from[rl] == '/' || st->from[rl] == '\0');
	if (!from_room)
		return;
	if (strcmp(st->type, "error") == 0) {
		char reason[96];
		snprintf(reason, sizeof reason, "muc join: %s", st->cond[0] ? st->cond : "error");
		add_reason(reason);
		g.join_failed++;
		s->muc_join_sent = false;
		if (!g.room_ready) {
			set_error("joining %s failed: %s", opt.room, st->cond[0] ? st->cond : "error");
			finish();
			return;
		}
		muc_check_joins();
		return;
	}
	if (!is_self_presence(s))
		return;
	s->muc_joined = true;
	g.joined++;
	if (!g.room_ready) {
		if (st->muc_201) {
			/* A new room stays locked until its owner accepts the default
			 * configuration (XEP-0045 10.1.2, instant room). */
			char *room = xml_escape(opt.room);
			send_raw(s, "<iq type='set' id='cfg' to='%s'><query xmlns='" NS_MUC_OWNER "'>"
				    "<x xmlns='jabber:x:data' type='submit'/></query></iq>", room);
			free(room);
			return;
		}
		muc_room_ready();
		return;
	}
	muc_check_joins();
}

/* ---------- offline ---------- */

static void offline_receiver_logged_in(void);

static void on_quiet_check(evutil_socket_t fd, short what, void *data)
{
	(void)fd, (void)what, (void)data;
	if (g.delivered >= (uint64_t)opt.messages)
		finish();
	else if (now_ns() - g.last_activity_ns >= QUIET_WAIT_NS) {
		set_error("only %llu of %d offline messages arrived (%ld bounced to the sender%s)",
			  (unsigned long long)g.delivered, opt.messages, g.bounced,
			  g.bounced ? ": no offline storage?" : "");
		finish();
	}
}

static void offline_start_receiver(void)
{
	if (g.off_stage >= 3)
		return;
	g.off_stage = 3;
	fprintf(stderr, "parley-load: sender done (%llu sent, %ld bounced), logging in the receiver\n",
		(unsigned long long)g.sent, g.bounced);
	g.off_receiver_start_ns = now_ns();
	g.last_activity_ns = g.off_receiver_start_ns;
	launch(1, 1, 1, offline_receiver_logged_in);
}

static void offline_receiver_logged_in(void)
{
	if (g.sessions[1].state != ST_READY) {
		set_error("receiver %s%d could not log in", opt.prefix, opt.first_user + 1);
		finish();
		return;
	}
	g.off_stage = 4;
	if (g.step_timer)
		event_free(g.step_timer);
	g.step_timer = event_new(g.base, -1, EV_PERSIST, on_quiet_check, NULL);
	struct timeval tv = { 0, 20000 };
	event_add(g.step_timer, &tv);
	on_quiet_check(-1, 0, NULL);
}

static void on_sender_closed_timeout(evutil_socket_t fd, short what, void *data)
{
	(void)fd, (void)what, (void)data;
	offline_start_receiver();
}

static void offline_sender_logged_in(void)
{
	struct session *s = &g.sessions[0];
	if (s->state != ST_READY) {
		set_error("sender %s%d could not log in", opt.prefix, opt.first_user);
		finish();
		return;
	}
	g.off_stage = 1;
	char user[256];
	username_of(opt.first_user + 1, user, sizeof user);
	size_t tl = strlen(user) + strlen(opt.domain) + 2;
	char *to = xmalloc(tl);
	snprintf(to, tl, "%s@%s", user, opt.domain);
	char *esc_to = xml_escape(to);
	struct evbuffer *out = bufferevent_get_output(s->bev);
	for (int i = 0; i < opt.messages; i++) {
		evbuffer_add_printf(out, "<message to='%s' type='chat' id='o%d'><body>" BODY_TAG
				    " %08x %d %lld</body></message>", esc_to, i, g.run_id, i,
				    (long long)now_ns());
		g.sent++;
	}
	/* The ping's answer comes after every message before it was routed. */
	send_raw(s, "<iq type='get' id='drain' to='%s'><ping xmlns='" NS_PING "'/></iq>", g.esc_domain);
	free(esc_to);
	free(to);
}

/* ---------- phase hooks ---------- */

static void phase_on_message(struct session *s)
{
	if (strcmp(s->st.type, "error") == 0) {
		if (opt.phase == PH_OFFLINE && s->index == 0) {
			char reason[96];
			snprintf(reason, sizeof reason, "bounced: %s", s->st.cond[0] ? s->st.cond : "error");
			add_reason(reason);
			g.bounced++;
		} else {
			count_message_error(s);
		}
		return;
	}
	if (opt.phase == PH_MSG || opt.phase == PH_MUC) {
		record_body(s);
	} else if (opt.phase == PH_OFFLINE && s->index == 1) {
		uint64_t before = g.delivered;
		record_body(s);
		if (g.delivered > before)
			g.off_last_msg_ns = now_ns();
		if (g.delivered >= (uint64_t)opt.messages && g.off_stage == 4)
			finish();
	}
}

static void phase_on_presence(struct session *s)
{
	if (opt.phase == PH_MUC)
		muc_on_presence(s);
}

static void phase_on_iq_reply(struct session *s)
{
	struct stanza *st = &s->st;
	if (opt.phase == PH_MUC && strcmp(st->id, "cfg") == 0 && !g.room_ready) {
		if (strcmp(st->type, "result") != 0) {
			set_error("configuring the new room %s failed: %s", opt.room,
				  st->cond[0] ? st->cond : "error");
			finish();
			return;
		}
		muc_room_ready();
	} else if (opt.phase == PH_OFFLINE && s->index == 0 && strcmp(st->id, "drain") == 0) {
		g.off_stage = 2;
		session_close(s);
		/* Some servers never answer our stream end; do not wait for it. */
		g.step_timer = evtimer_new(g.base, on_sender_closed_timeout, NULL);
		struct timeval tv = { 3, 0 };
		evtimer_add(g.step_timer, &tv);
	}
}

static void phase_on_session_gone(struct session *s)
{
	if (g.finished)
		return;
	if (opt.phase == PH_OFFLINE && s->index == 0 && g.off_stage >= 1 && g.off_stage < 3)
		offline_start_receiver();
	if (opt.phase == PH_MUC && s->muc_join_sent && !s->muc_joined && g.room_ready) {
		g.join_failed++;
		muc_check_joins();
	}
}

static void on_idle_end(evutil_socket_t fd, short what, void *data)
{
	(void)fd, (void)what, (void)data;
	finish();
}

static void idle_logged_in(void)
{
	fprintf(stderr, "parley-load: %ld/%d sessions logged in, holding for %.1f s\n", g.ok,
		g.nsessions, opt.duration);
	g.step_timer = evtimer_new(g.base, on_idle_end, NULL);
	struct timeval tv = { (time_t)opt.duration, (suseconds_t)((opt.duration - floor(opt.duration)) * 1e6) };
	evtimer_add(g.step_timer, &tv);
}

static void simple_phase_done(void)
{
	finish();
}

static void on_deadline(evutil_socket_t fd, short what, void *data)
{
	(void)fd, (void)what, (void)data;
	g.timed_out = true;
	set_error("timed out after %.0f s", opt.timeout);
	finish();
}

/* ---------- result ---------- */

static void json_quoted(const char *value)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void json_string(const char *key, const char *value)
{
	printf(",\"%s\":", key);
	json_quoted(value);
}

static void json_latency(void)
{
	printf(",\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}",
	       hist_percentile_ms(0.50), hist_percentile_ms(0.90), hist_percentile_ms(0.99),
	       (double)hist_max_us / 1000.0);
}

static void finish(void)
{
	if (g.finished)
		return;
	g.finished = true;
	int64_t end = now_ns();
	long up = 0;
	for (int i = 0; i < g.nsessions; i++)
		if (g.sessions[i].state == ST_READY)
			up++;
	/* Sessions still negotiating when time ran out count as failures. */
	for (int i = 0; i < g.nsessions; i++) {
		struct session *s = &g.sessions[i];
		if (s->state != ST_NEW && s->state != ST_GONE && !s->counted) {
			add_reason("timeout");
			s->counted = true;
			g.failed++;
		}
	}
	double login_seconds = g.first_connect_ns && g.last_ready_ns > g.first_connect_ns
		? (double)(g.last_ready_ns - g.first_connect_ns) / 1e9 : 0;

	printf("{\"tool\":\"parley-load\"");
	json_string("server", opt.label);
	json_string("phase", phase_names[opt.phase]);
	printf(",\"users\":%d,\"concurrency\":%d", g.nsessions, opt.concurrency);
	json_string("tls", tls_names[opt.tls]);
	printf(",\"ok\":%ld,\"failed\":%ld", g.ok, g.failed);

	bool worked = g.ok > 0;
	switch (opt.phase) {
	case PH_REGISTER:
	case PH_LOGIN:
		printf(",\"seconds\":%.3f,\"per_second\":%.1f", login_seconds,
		       login_seconds > 0 ? (double)g.ok / login_seconds : 0);
		if (opt.phase == PH_REGISTER)
			printf(",\"registered\":%ld,\"already_existed\":%ld", g.registered_new,
			       g.registered_existing);
		break;
	case PH_IDLE:
		printf(",\"seconds\":%.3f,\"per_second\":%.1f", login_seconds,
		       login_seconds > 0 ? (double)g.ok / login_seconds : 0);
		printf(",\"duration\":%.1f,\"sessions_up\":%ld,\"dropped\":%ld,\"pings_answered\":%ld",
		       opt.duration, up, g.dropped, g.pings_answered);
		if (opt.server_pid) {
			g.server_rss_after = server_rss_kb();
			printf(",\"server_rss_kb_before\":%ld,\"server_rss_kb_after\":%ld",
			       g.server_rss_before, g.server_rss_after);
			if (up > 0 && g.server_rss_before >= 0 && g.server_rss_after >= 0)
				printf(",\"server_kb_per_session\":%.2f",
				       (double)(g.server_rss_after - g.server_rss_before) / (double)up);
		}
		worked = up > 0;
		break;
	case PH_MSG:
	case PH_MUC: {
		printf(",\"login_seconds\":%.3f", login_seconds);
		if (opt.phase == PH_MSG)
			printf(",\"pairs\":%d,\"pairs_up\":%d", opt.pairs, g.nsenders);
		else {
			json_string("room", opt.room);
			printf(",\"occupants\":%d,\"joined\":%ld,\"senders\":%d", opt.occupants, g.joined,
			       g.nsenders);
			if (g.joined > 0 && g.server_rss_logged_in > 0 && g.server_rss_joined > 0)
				printf(",\"server_rss_kb_logged_in\":%ld,\"server_rss_kb_joined\":%ld,"
				       "\"server_kb_per_occupant\":%.2f",
				       g.server_rss_logged_in, g.server_rss_joined,
				       (double)(g.server_rss_joined - g.server_rss_logged_in) /
					       (double)g.joined);
		}
		uint64_t expected = g.sent - g.send_skipped;
		if (opt.phase == PH_MUC)
			expected *= (uint64_t)g.joined;
		double per_s = opt.duration > 0 ? (double)g.delivered / opt.duration : 0;
		printf(",\"rate\":%.1f,\"duration\":%.1f,\"sent\":%llu,\"expected\":%llu,\"delivered\":%llu,"
		       "\"errors\":%llu,\"seconds\":%.3f,\"per_second\":%.1f,\"%s\":%.1f,\"max_send_backlog_bytes\":%zu",
		       opt.rate, opt.duration, (unsigned long long)g.sent, (unsigned long long)expected,
		       (unsigned long long)g.delivered, (unsigned long long)g.msg_errors, opt.duration,
		       per_s, opt.phase == PH_MSG ? "msgs_per_s" : "deliveries_per_s", per_s, g.max_backlog);
		json_latency();
		worked = g.delivered > 0;
		break;
	}
	case PH_OFFLINE: {
		double drain = g.off_last_msg_ns > g.off_receiver_start_ns && g.off_receiver_start_ns
			? (double)(g.off_last_msg_ns - g.off_receiver_start_ns) / 1e9 : 0;
		printf(",\"messages\":%d,\"sent\":%llu,\"bounced\":%ld,\"received\":%llu,\"drain_seconds\":%.3f,"
		       "\"seconds\":%.3f,\"per_second\":%.1f",
		       opt.messages, (unsigned long long)g.sent, g.bounced, (unsigned long long)g.delivered,
		       drain, drain, drain > 0 ? (double)g.delivered / drain : 0);
		worked = g.delivered > 0;
		break;
	}
	}
	if (g.nreasons || g.reasons_other) {
		printf(",\"failures\":{");
		for (int i = 0; i < g.nreasons; i++) {
			printf(i ? "," : "");
			json_quoted(g.reasons[i].text);
			printf(":%ld", g.reasons[i].count);
		}
		if (g.reasons_other)
			printf("%s\"other\":%ld", g.nreasons ? "," : "", g.reasons_other);
		printf("}");
	}
	if (!worked && !g.error[0])
		set_error("nothing worked%s%s", g.nreasons ? ": " : "", g.nreasons ? g.reasons[0].text : "");
	if (g.error[0])
		json_string("error", g.error);
	if (g.timed_out)
		printf(",\"timed_out\":true");
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	printf(",\"scram_pbkdf2_computed\":%ld", g.pbkdf2_computed);
	printf(",\"wall_seconds\":%.3f,\"tool_cpu_seconds\":%.3f,\"tool_rss_kb\":%ld}\n",
	       (double)(end - g.phase_start_ns) / 1e9, cpu, rss_kb_of("/proc/self/status"));
	fflush(stdout);
	g.exit_status = worked ? 0 : 1;
	event_base_loopbreak(g.base);
}

/* ---------- start-up ---------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: parley-load --phase register|login|idle|msg|muc|offline [options]\n"
		"  --host H (127.0.0.1) --port P (5222) --domain D (localhost)\n"
		"  --user-prefix S (load) --password S (secret) --first-user K (0)\n"
		"  --tls none|starttls|direct (none) --sasl auto|scram-sha-1|plain (auto)\n"
		"  --users N (100) --concurrency C (50) --duration S (10) --rate R (1000)\n"
		"  --pairs P (50) --room JID (bench@conference.<domain>) --occupants K (50)\n"
		"  --senders S (5) --messages M (1000) --label NAME --timeout S (120)\n"
		"  --server-pid PID (idle: report the server's RSS per session)\n"
		"  --scram-cache FILE (keep SCRAM salted passwords between runs)\n");
}

static int pick(const char *value, const char *const *names, int count, const char *what)
{
	for (int i = 0; i < count; i++)
		if (strcmp(value, names[i]) == 0)
			return i;
	fprintf(stderr, "parley-load: unknown %s '%s'\n", what, value);
	usage(stderr);
	exit(2);
}

static long parse_long(const char *value, const char *what, long min)
{
	char *end;
	errno = 0;
	long v = strtol(value, &end, 10);
	if (errno || *end || end == value || v < min || v > 100000000) {
		fprintf(stderr, "parley-load: bad %s '%s'\n", what, value);
		exit(2);
	}
	return v;
}

static double parse_double(const char *value, const char *what, double min)
{
	char *end;
	errno = 0;
	double v = strtod(value, &end);
	if (errno || *end || end == value || !(v >= min) || v > 1e9) {
		fprintf(stderr, "parley-load: bad %s '%s'\n", what, value);
		exit(2);
	}
	return v;
}

static void parse_options(int argc, char **argv)
{
	enum {
		O_HOST = 256, O_PORT, O_DOMAIN, O_PREFIX, O_PASSWORD, O_TLS, O_PHASE, O_USERS,
		O_CONCURRENCY, O_FIRST, O_DURATION, O_RATE, O_PAIRS, O_ROOM, O_OCCUPANTS,
		O_SENDERS, O_MESSAGES, O_LABEL, O_TIMEOUT, O_SERVER_PID, O_SASL, O_SCRAM_CACHE, O_HELP
	};
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, O_HOST },
		{ "port", required_argument, NULL, O_PORT },
		{ "domain", required_argument, NULL, O_DOMAIN },
		{ "user-prefix", required_argument, NULL, O_PREFIX },
		{ "password", required_argument, NULL, O_PASSWORD },
		{ "tls", required_argument, NULL, O_TLS },
		{ "phase", required_argument, NULL, O_PHASE },
		{ "users", required_argument, NULL, O_USERS },
		{ "concurrency", required_argument, NULL, O_CONCURRENCY },
		{ "first-user", required_argument, NULL, O_FIRST },
		{ "duration", required_argument, NULL, O_DURATION },
		{ "rate", required_argument, NULL, O_RATE },
		{ "pairs", required_argument, NULL, O_PAIRS },
		{ "room", required_argument, NULL, O_ROOM },
		{ "occupants", required_argument, NULL, O_OCCUPANTS },
		{ "senders", required_argument, NULL, O_SENDERS },
		{ "messages", required_argument, NULL, O_MESSAGES },
		{ "label", required_argument, NULL, O_LABEL },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "server-pid", required_argument, NULL, O_SERVER_PID },
		{ "sasl", required_argument, NULL, O_SASL },
		{ "scram-cache", required_argument, NULL, O_SCRAM_CACHE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 }
	};
	static const char *const sasl_names[] = { "auto", "scram-sha-1", "plain" };
	bool phase_given = false;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case O_HOST: opt.host = optarg; break;
		case O_PORT: opt.port = optarg; parse_long(optarg, "port", 1); break;
		case O_DOMAIN: opt.domain = optarg; break;
		case O_PREFIX: opt.prefix = optarg; break;
		case O_PASSWORD: opt.password = optarg; break;
		case O_TLS: opt.tls = (enum tls_mode)pick(optarg, tls_names, 3, "tls mode"); break;
		case O_PHASE:
			opt.phase = (enum phase)pick(optarg, phase_names, 6, "phase");
			phase_given = true;
			break;
		case O_USERS: opt.users = (int)parse_long(optarg, "user count", 1); break;
		case O_CONCURRENCY: opt.concurrency = (int)parse_long(optarg, "concurrency", 1); break;
		case O_FIRST: opt.first_user = (int)parse_long(optarg, "first user", 0); break;
		case O_DURATION: opt.duration = parse_double(optarg, "duration", 0); break;
		case O_RATE: opt.rate = parse_double(optarg, "rate", 0); break;
		case O_PAIRS: opt.pairs = (int)parse_long(optarg, "pair count", 1); break;
		case O_ROOM: opt.room = optarg; break;
		case O_OCCUPANTS: opt.occupants = (int)parse_long(optarg, "occupant count", 1); break;
		case O_SENDERS: opt.senders = (int)parse_long(optarg, "sender count", 1); break;
		case O_MESSAGES: opt.messages = (int)parse_long(optarg, "message count", 1); break;
		case O_LABEL: opt.label = optarg; break;
		case O_TIMEOUT: opt.timeout = parse_double(optarg, "timeout", 1); break;
		case O_SERVER_PID: opt.server_pid = parse_long(optarg, "server pid", 1); break;
		case O_SCRAM_CACHE: opt.scram_cache = optarg; break;
		case O_SASL: opt.sasl = (enum sasl_choice)pick(optarg, sasl_names, 3, "sasl choice"); break;
		case O_HELP: usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "parley-load: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	if (!phase_given) {
		fprintf(stderr, "parley-load: --phase is required\n");
		usage(stderr);
		exit(2);
	}
	if (opt.phase == PH_MUC && opt.senders > opt.occupants) {
		fprintf(stderr, "parley-load: --senders must not exceed --occupants\n");
		exit(2);
	}
	if (!opt.room) {
		size_t n = strlen(opt.domain) + 32;
		char *room = xmalloc(n);
		snprintf(room, n, "bench@conference.%s", opt.domain);
		opt.room = room;
	}
}

static void raise_file_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	parse_options(argc, argv);
	raise_file_limit();
	signal(SIGPIPE, SIG_IGN);

	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	int rc = getaddrinfo(opt.host, opt.port, &hints, &ai);
	if (rc != 0) {
		fprintf(stderr, "parley-load: %s:%s: %s\n", opt.host, opt.port, gai_strerror(rc));
		return 2;
	}
	memcpy(&g.addr, ai->ai_addr, ai->ai_addrlen);
	g.addr_len = ai->ai_addrlen;
	freeaddrinfo(ai);

	g.base = event_base_new();
	g.ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (!g.base || !g.ssl_ctx) {
		fprintf(stderr, "parley-load: cannot set up libevent or OpenSSL\n");
		return 1;
	}
	/* Benchmark servers use self-signed certificates: never verify. */
	SSL_CTX_set_verify(g.ssl_ctx, SSL_VERIFY_NONE, NULL);
	/* Idle sessions then hold no TLS record buffers: thousands of them
	 * would otherwise cost tens of KiB each. */
	SSL_CTX_set_mode(g.ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	RAND_bytes((unsigned char *)&g.run_id, sizeof g.run_id);
	if (opt.scram_cache)
		scram_cache_open(opt.scram_cache);
	g.esc_password = xml_escape(opt.password);
	g.esc_domain = xml_escape(opt.domain);

	switch (opt.phase) {
	case PH_REGISTER: case PH_LOGIN: case PH_IDLE: g.nsessions = opt.users; break;
	case PH_MSG: g.nsessions = 2 * opt.pairs; break;
	case PH_MUC: g.nsessions = opt.occupants; break;
	case PH_OFFLINE: g.nsessions = 2; break;
	}
	g.sessions = calloc((size_t)g.nsessions, sizeof *g.sessions);
	if (!g.sessions) {
		fprintf(stderr, "parley-load: out of memory\n");
		return 1;
	}
	for (int i = 0; i < g.nsessions; i++) {
		g.sessions[i].index = i;
		g.sessions[i].user = opt.first_user + i;
		g.sessions[i].st.capture_level = -1;
	}
	if (opt.phase == PH_IDLE && opt.server_pid) {
		g.server_rss_before = server_rss_kb();
		if (g.server_rss_before < 0)
			fprintf(stderr, "parley-load: cannot read /proc/%ld/status\n", opt.server_pid);
	}

	g.deadline = evtimer_new(g.base, on_deadline, NULL);
	struct timeval cap = { (time_t)opt.timeout, (suseconds_t)((opt.timeout - floor(opt.timeout)) * 1e6) };
	evtimer_add(g.deadline, &cap);

	g.phase_start_ns = now_ns();
	switch (opt.phase) {
	case PH_REGISTER:
	case PH_LOGIN: launch(0, g.nsessions, opt.concurrency, simple_phase_done); break;
	case PH_IDLE: launch(0, g.nsessions, opt.concurrency, idle_logged_in); break;
	case PH_MSG: launch(0, g.nsessions, opt.concurrency, msg_logged_in); break;
	case PH_MUC: launch(0, g.nsessions, opt.concurrency, muc_logged_in); break;
	case PH_OFFLINE: launch(0, 1, 1, offline_sender_logged_in); break;
	}
	if (!g.finished)
		event_base_dispatch(g.base);
	return g.exit_status;
}
