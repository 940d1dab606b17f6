/* The WebSocket transport of client sessions (RFC 7395 over RFC 6455).
 * The opening handshake is an HTTP route: GET /xmpp-websocket with
 * "Upgrade: websocket", version 13, a key, and the "xmpp" subprotocol
 * (anything else is refused with an HTTP error, so that a client never
 * talks XMPP to an endpoint that did not agree to it). Then the
 * connection belongs to a `struct ws`: wslay parses and unmasks frames
 * (and answers pings and close frames itself); this file assembles text
 * messages up to the c2s stanza size limit, parses each as one XML
 * document and hands it to the c2s session as a stream event. Frames
 * going out are written directly (server frames are unmasked and simple),
 * one message per element, each element declaring its namespaces as
 * RFC 7395 3.3.3 requires. */
#include "websocket.h"
#include "c2s_transport.h"
#include "counters.h"
#include "http.h"
#include "log.h"
#include "net/conn.h"
#include "router.h"
#include "scram.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/sha.h>
#include <wslay/wslay.h>

#define NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing"
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* RFC 6455 7.4.1 status codes. */
#define WS_NORMAL 1000
#define WS_UNSUPPORTED_DATA 1003
#define WS_POLICY_VIOLATION 1008
#define WS_TOO_BIG 1009

struct ws {
	struct pl_conn *conn;           /* owned by the conn layer; gone after on_close */
	wslay_event_context_ptr wslay;  /* owned */
	struct pl_c2s *c;
	const char *input;              /* bytes on_data is handing to wslay */
	size_t input_len;
	struct pl_buf message;          /* the text message being assembled; owned */
	bool in_message;                /* a data message started (continuations follow) */
	bool frame_is_data;             /* the current frame belongs to it */
	bool frame_fin;
	bool expect_open;               /* the next message must be <open/> */
	bool closing;                   /* close frame sent: input is ignored */
	bool secure;                    /* TLS, or a TLS-terminating proxy */
	uint16_t close_code;            /* for our close frame */
};

/* ---- output ------------------------------------------------------------------ */

static void write_frame(struct ws *ws, uint8_t opcode, const void *data, size_t len)
{
	uint8_t head[10];
	size_t n = 0;
	head[n++] = (uint8_t)(0x80 | opcode); /* FIN: never fragmented */
	if (len < 126) {
		head[n++] = (uint8_t)len;
	} else if (len < 65536) {
		head[n++] = 126;
		head[n++] = (uint8_t)(len >> 8);
		head[n++] = (uint8_t)len;
	} else {
		head[n++] = 127;
		for (int shift = 56; shift >= 0; shift -= 8)
			head[n++] = (uint8_t)((uint64_t)len >> shift);
	}
	pl_conn_write(ws->conn, head, n);
	if (len)
		pl_conn_write(ws->conn, data, len);
}

static void ws_open(void *t, const char *stream_id, const char *from)
{
	struct ws *ws = t;
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<open xmlns='" NS_FRAMING "' id='%s' ", stream_id);
	if (from)
		pl_buf_printf(&out, "from='%s' ", from);
	pl_buf_puts(&out, "version='1.0' xml:lang='en'/>");
	write_frame(ws, WSLAY_TEXT_FRAME, out.data, out.len);
	pl_buf_free(&out);
	ws->expect_open = false;
}

/* RFC 7395 3.3.3: each message is a document of its own. */
static void ws_element(void *t, const char *data, size_t len)
{
	struct ws *ws = t;
	struct pl_buf out = { 0 };
	pl_c2s_standalone_element(&out, data, len);
	write_frame(ws, WSLAY_TEXT_FRAME, out.data, out.len);
	pl_buf_free(&out);
}

/* RFC 7395 3.6: <close/>, then the WebSocket closing handshake. */
static void ws_close(void *t)
{
	struct ws *ws = t;
	if (ws->closing)
		return;
	static const char close_element[] = "<close xmlns='" NS_FRAMING "'/>";
	write_frame(ws, WSLAY_TEXT_FRAME, close_element, sizeof(close_element) - 1);
	uint8_t code[2] = { (uint8_t)(ws->close_code >> 8), (uint8_t)ws->close_code };
	write_frame(ws, WSLAY_CONNECTION_CLOSE, code, sizeof(code));
	ws->closing = true;
	pl_conn_close_after_flush(ws->conn);
}

static void free_ws(struct ws *ws)
{
	wslay_event_context_free(ws->wslay);
	pl_buf_free(&ws->message);
	free(ws);
}

static void ws_drop(void *t)
{
	struct ws *ws = t;
	pl_conn_free(ws->conn);
	free_ws(ws);
}

static void ws_restart(void *t)
{
	((struct ws *)t)->expect_open = true;
}

static const char *ws_peer_address(void *t)
{
	return pl_conn_peer_address(((struct ws *)t)->conn);
}

static bool ws_is_secure(void *t)
{
	return ((struct ws *)t)->secure;
}

/* Plain ws:// is for a client on this machine (a development set-up, or
 * a proxy on loopback that is not declared as terminating TLS). */
static bool ws_plaintext_ok(void *t)
{
	return pl_conn_peer_is_loopback(((struct ws *)t)->conn);
}

static SSL *ws_ssl(void *t)
{
	return pl_conn_ssl(((struct ws *)t)->conn);
}

static void ws_pause_reading(void *t, int64_t ms)
{
	pl_conn_pause_reading(((struct ws *)t)->conn, ms);
}

static void ws_set_idle_timeout(void *t, int64_t ms)
{
	pl_conn_set_idle_timeout(((struct ws *)t)->conn, ms);
}

static size_t ws_idle(void *t)
{
	struct ws *ws = t;
	if (ws->in_message || !ws->message.cap)
		return 0;
	size_t freed = ws->message.cap;
	pl_buf_free(&ws->message);
	return freed;
}

static const struct pl_c2s_transport ws_transport = {
	"websocket", ws_open, ws_element, ws_close, ws_drop, ws_restart, NULL,
	ws_peer_address, ws_is_secure, ws_plaintext_ok, ws_ssl, ws_pause_reading,
	ws_set_idle_timeout, ws_idle,
};

/* ---- input ------------------------------------------------------------------- */

static void fail(struct ws *ws, uint16_t code, const char *condition, const char *text)
{
	ws->close_code = code;
	pl_c2s_stream_error(ws->c, condition, text);
}

static bool only_whitespace(const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!strchr(" \t\r\n", data[i]))
			return false;
	return true;
}

static void handle_message(struct ws *ws)
{
	const char *data = ws->message.data ? ws->message.data : "";
	size_t len = ws->message.len;
	if (only_whitespace(data, len))
		return; /* a keepalive */
	struct pl_xnode *element = pl_xml_parse_element(data, len, PL_NS_CLIENT);
	if (!element) {
		fail(ws, WS_NORMAL, "not-well-formed",
		     "a WebSocket message must be one XML element (RFC 7395 3.3.3)");
		return;
	}
	const char *ns = element->ns ? element->ns : "";
	bool framing = strcmp(ns, NS_FRAMING) == 0;
	if (framing && strcmp(element->name, "open") == 0) {
		if (!ws->expect_open) {
			pl_xnode_unref(&element);
			fail(ws, WS_NORMAL, "invalid-xml", "<open/> in the middle of a stream");
			return;
		}
		const char *attributes[] = { "to", pl_xnode_attr(element, "to"),
					     "version", pl_xnode_attr(element, "version"),
					     NULL, NULL, NULL };
		/* NULL values end the list early, which is what a missing
		 * attribute should look like to the session. */
		const char *packed[7] = { 0 };
		size_t n = 0;
		for (size_t i = 0; attributes[i]; i += 2)
			if (attributes[i + 1]) {
				packed[n++] = attributes[i];
				packed[n++] = attributes[i + 1];
			}
		ws->expect_open = false;
		pl_c2s_stream_open(ws->c, "stream", PL_NS_STREAMS, PL_NS_CLIENT, packed);
		pl_xnode_unref(&element);
	} else if (ws->expect_open) {
		/* The session answers what a TCP stream gets for a wrong header. */
		const char *none[] = { NULL };
		pl_c2s_stream_open(ws->c, element->name, ns, NULL, none);
		pl_xnode_unref(&element);
	} else if (framing && strcmp(element->name, "close") == 0) {
		pl_xnode_unref(&element);
		pl_c2s_stream_close(ws->c);
	} else {
		pl_c2s_stream_element(ws->c, element);
	}
}

static ssize_t on_wslay_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
			     void *userdata)
{
	struct ws *ws = userdata;
	if (ws->input_len == 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	size_t n = len < ws->input_len ? len : ws->input_len;
	memcpy(buf, ws->input, n);
	ws->input += n;
	ws->input_len -= n;
	return (ssize_t)n;
}

/* Only wslay's own frames go through here: pongs and the reply to a
 * close frame. */
static ssize_t on_wslay_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
			     int flags, void *userdata)
{
	struct ws *ws = userdata;
	pl_conn_write(ws->conn, data, len);
	return (ssize_t)len;
}

static void on_frame_start(wslay_event_context_ptr ctx,
			   const struct wslay_event_on_frame_recv_start_arg *arg, void *userdata)
{
	struct ws *ws = userdata;
	ws->frame_is_data = false;
	if (ws->closing || (arg->opcode & 0x8))
		return; /* control frames are wslay's */
	if (arg->opcode == WSLAY_BINARY_FRAME) {
		fail(ws, WS_UNSUPPORTED_DATA, "unsupported-stanza-type",
		     "XMPP messages are text frames (RFC 7395 3.2)");
		return;
	}
	if (arg->opcode == WSLAY_TEXT_FRAME) {
		ws->in_message = true;
		pl_buf_reset(&ws->message);
	} else if (!ws->in_message) {
		return; /* a stray continuation: wslay fails the connection */
	}
	uint64_t limit = pl_c2s_limits()->max_stanza_bytes;
	if (arg->payload_length > limit || ws->message.len + arg->payload_length > limit) {
		pl_log(PL_LOG_INFO, "websocket", "%s: message over %llu bytes",
		       pl_conn_peer_address(ws->conn), (unsigned long long)limit);
		fail(ws, WS_TOO_BIG, "policy-violation", "the message is over the stanza size limit");
		return;
	}
	ws->frame_is_data = true;
	ws->frame_fin = arg->fin;
}

static void on_frame_chunk(wslay_event_context_ptr ctx,
			   const struct wslay_event_on_frame_recv_chunk_arg *arg, void *userdata)
{
	struct ws *ws = userdata;
	if (ws->frame_is_data && !ws->closing)
		pl_buf_append(&ws->message, arg->data, arg->data_length);
}

static void on_frame_end(wslay_event_context_ptr ctx, void *userdata)
{
	struct ws *ws = userdata;
	if (!ws->frame_is_data || ws->closing || !ws->frame_fin)
		return;
	ws->frame_is_data = ws->in_message = false;
	handle_message(ws);
}

static const struct wslay_event_callbacks wslay_callbacks = {
	on_wslay_recv, on_wslay_send, NULL, on_frame_start, on_frame_chunk, on_frame_end, NULL,
};

static size_t on_data(struct pl_conn *conn, const char *data, size_t len, void *userdata)
{
	struct ws *ws = userdata;
	if (ws->closing || !pl_c2s_input_begin(ws->c))
		return len;
	ws->input = data;
	ws->input_len = len;
	wslay_event_recv(ws->wslay);
	ws->input_len = 0;
	if (ws->closing)
		return len;
	/* Pongs, or the answer to a close frame. */
	if (wslay_event_want_write(ws->wslay))
		wslay_event_send(ws->wslay);
	if (!wslay_event_want_read(ws->wslay)) {
		/* The client closed (or broke the protocol: wslay sent 1002). */
		ws->closing = true;
		pl_conn_close_after_flush(ws->conn);
		return len;
	}
	pl_c2s_input_end(ws->c);
	return len;
}

static void on_close(struct pl_conn *conn, enum pl_conn_close_reason reason, void *userdata)
{
	struct ws *ws = userdata;
	pl_c2s_transport_gone(ws->c, reason == PL_CONN_TIMEOUT);
	free_ws(ws);
}

static const struct pl_conn_callbacks conn_callbacks = { on_data, on_close };

/* ---- the opening handshake (RFC 6455 4.2) ----------------------------------- */

/* Whether a comma-separated header value lists token (case-insensitive). */
static bool has_token(const char *value, const char *token)
{
	size_t token_len = strlen(token);
	for (const char *p = value; p && *p;) {
		p += strspn(p, " \t,");
		size_t n = strcspn(p, ",");
		size_t trimmed = n;
		while (trimmed && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
			trimmed--;
		if (trimmed == token_len && strncasecmp(p, token, token_len) == 0)
			return true;
		p += n;
	}
	return false;
}

static void refuse(struct pl_http_request *r, int status, const char *why)
{
	pl_log(PL_LOG_INFO, "websocket", "%s: upgrade refused (%d): %s",
	       pl_http_peer_address(r), status, why);
	char body[200];
	int n = snprintf(body, sizeof(body), "%s\n", why);
	pl_http_respond(r, status, "text/plain; charset=utf-8", body, (size_t)n);
}

static void on_upgrade(struct pl_http_request *r, void *userdata)
{
	const char *upgrade = pl_http_header(r, "Upgrade");
	const char *connection = pl_http_header(r, "Connection");
	const char *version = pl_http_header(r, "Sec-WebSocket-Version");
	const char *key = pl_http_header(r, "Sec-WebSocket-Key");
	const char *protocols = pl_http_header(r, "Sec-WebSocket-Protocol");
	const char *origin = pl_http_header(r, "Origin");
	if (!upgrade || !has_token(upgrade, "websocket") || !has_token(connection, "upgrade")) {
		pl_http_add_header(r, "Upgrade", "websocket");
		refuse(r, 426, "this is a WebSocket endpoint (Upgrade: websocket)");
		return;
	}
	if (!version || strcmp(version, "13") != 0) {
		pl_http_add_header(r, "Sec-WebSocket-Version", "13");
		refuse(r, 426, "WebSocket version 13 is required");
		return;
	}
	uint8_t *decoded = NULL;
	size_t decoded_len = 0;
	if (!key || pl_base64_decode(key, strlen(key), &decoded, &decoded_len) != 0 ||
	    decoded_len != 16) {
		free(decoded);
		refuse(r, 400, "Sec-WebSocket-Key must be 16 bytes in base64");
		return;
	}
	free(decoded);
	if (!has_token(protocols, "xmpp")) {
		refuse(r, 400, "the subprotocol must be xmpp (RFC 7395 3.2)");
		return;
	}
	/* Browsers send Origin; a page from an origin not allowed must not
	 * drive a login (RFC 6455 10.2). */
	if (origin && !pl_http_origin_allowed(origin)) {
		refuse(r, 403, "origin not allowed");
		return;
	}
	uint8_t digest[SHA_DIGEST_LENGTH];
	char *input = pl_asprintf("%s" WS_GUID, key);
	SHA1((const unsigned char *)input, strlen(input), digest);
	free(input);
	char *accept = pl_base64_encode(digest, sizeof(digest));
	pl_http_add_header(r, "Upgrade", "websocket");
	pl_http_add_header(r, "Connection", "Upgrade");
	pl_http_add_header(r, "Sec-WebSocket-Accept", accept);
	pl_http_add_header(r, "Sec-WebSocket-Protocol", "xmpp");
	free(accept);
	bool secure = pl_http_is_secure(r);
	struct pl_conn *conn = pl_http_upgrade(r);
	struct ws *ws = pl_calloc(1, sizeof(*ws));
	ws->conn = conn;
	ws->secure = secure;
	ws->expect_open = true;
	ws->close_code = WS_NORMAL;
	if (wslay_event_context_server_init(&ws->wslay, &wslay_callbacks, ws) != 0)
		pl_fatal("out of memory");
	/* Messages are assembled here, against the stanza limit; wslay only
	 * checks frames. */
	wslay_event_config_set_no_buffering(ws->wslay, 1);
	pl_conn_set_callbacks(conn, &conn_callbacks, ws);
	pl_c2s_limit_reading(conn);
	pl_counter_add(pl_counter("websocket-connections"), 1);
	ws->c = pl_c2s_new(&ws_transport, ws);
}

static const struct pl_http_handler websocket_handler = {
	.on_complete = on_upgrade,
	.max_body = 1024, /* an upgrade request has no body */
};

int pl_websocket_start(const struct pl_config *config, char **error)
{
	int rc = pl_http_route(NULL, "GET", PL_WS_PATH, &websocket_handler, NULL);
	if (rc)
		return pl_error(error, rc, "cannot register %s", PL_WS_PATH);
	return 0;
}
