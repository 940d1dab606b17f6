/* The seam between a client session and the connection that carries it.
 * c2s.c holds everything XMPP about a client (negotiation, SASL, bind,
 * stream management, CSI, hibernation and resumption, the router's view)
 * once, whatever carries the stream; a transport carries it: the TCP/TLS
 * stream of RFC 6120 (in c2s.c) and the WebSocket of RFC 7395
 * (websocket.c). A transport parses its input into stream events and
 * hands them to the pl_c2s_stream_* functions; the session writes
 * through the operations below, one whole element at a time, so that a
 * transport with its own framing (one element per WebSocket message,
 * <open/> for the header) can frame it. A stream-managed session may
 * move from one transport to another when it is resumed. Network thread
 * only. */
#ifndef PL_C2S_TRANSPORT_H
#define PL_C2S_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "util.h"
#include "xml/stream.h"
#include "xml/xnode.h"

struct pl_c2s;

struct pl_c2s_transport {
	const char *name; /* "tcp", "websocket": for logs */
	/* The stream header (again after SASL); from is NULL when no host
	 * is known yet (a header written only to carry a stream error). */
	void (*open)(void *t, const char *stream_id, const char *from);
	/* One complete top-level element as a jabber:client stream would
	 * carry it: stanzas without their default namespace, stream-level
	 * elements with the "stream:" prefix undeclared. */
	void (*element)(void *t, const char *data, size_t len);
	/* Ends the stream and closes the connection once it is written; the
	 * transport calls pl_c2s_transport_gone when it is closed. */
	void (*close)(void *t);
	/* Closes at once, with no callback: the session is being freed or
	 * resumed on another connection. t is gone afterwards. */
	void (*drop)(void *t);
	/* After SASL success: the next input is a new stream header. */
	void (*restart)(void *t);
	/* STARTTLS once <proceed/> is written; NULL if the transport has none. */
	void (*start_tls)(void *t);
	const char *(*peer_address)(void *t);
	/* Encrypted (TLS here or, as configured, at a proxy in front). */
	bool (*is_secure)(void *t);
	/* May a client authenticate over this connection although it is not
	 * secure (transport policy: loopback, configuration)? */
	bool (*plaintext_ok)(void *t);
	/* The TLS session for channel binding, or NULL. */
	SSL *(*ssl)(void *t);
	void (*pause_reading)(void *t, int64_t milliseconds);
	void (*set_idle_timeout)(void *t, int64_t milliseconds);
	/* The stream has been quiet for a while: free what can be made
	 * again (the XML parser); returns the bytes freed. May be NULL. */
	size_t (*idle)(void *t);
};

/* A new session on transport t (not yet negotiated); owned by c2s.c
 * until it ends. */
struct pl_c2s *pl_c2s_new(const struct pl_c2s_transport *ops, void *t);
/* Stream events. The callbacks of a pl_xml_stream (userdata: the
 * pl_c2s) for a transport that carries an RFC 6120 byte stream. */
extern const struct pl_xml_stream_callbacks pl_c2s_xml_callbacks;
void pl_c2s_stream_open(struct pl_c2s *c, const char *name, const char *ns,
			const char *content_ns, const char *const *attributes);
/* Takes ownership of element. */
void pl_c2s_stream_element(struct pl_c2s *c, struct pl_xnode *element);
void pl_c2s_stream_close(struct pl_c2s *c);
/* Ends the stream with an RFC 6120 stream error (bad input, a limit). */
void pl_c2s_stream_error(struct pl_c2s *c, const char *condition, const char *text);
/* Around each batch of input: begin returns false when the stream is
 * closing (discard the input); end applies the stanza rate limit
 * (pause_reading). */
bool pl_c2s_input_begin(struct pl_c2s *c);
void pl_c2s_input_end(struct pl_c2s *c);
/* The connection is gone (closed by either side, timed out, broken): a
 * resumable session waits for its client, any other ends. c may be
 * freed; t must not be used by c2s any more. */
void pl_c2s_transport_gone(struct pl_c2s *c, bool timed_out);
/* Appends to out an element as the session wrote it (see element()
 * above), made a document of its own, for transports that carry
 * elements outside a stream (RFC 7395 3.3.3, XEP-0206 section 7): the
 * stream prefix declared on stream-level elements, jabber:client on
 * elements that declare no default namespace. */
void pl_c2s_standalone_element(struct pl_buf *out, const char *data, size_t len);
struct pl_conn;
/* Applies <c2s max-bytes-per-second> to a connection carrying a client
 * stream (TCP, WebSocket). */
void pl_c2s_limit_reading(struct pl_conn *conn);
/* The parser limits of client streams (<c2s max-stanza-size> etc.). */
const struct pl_xml_limits *pl_c2s_limits(void);

#endif
