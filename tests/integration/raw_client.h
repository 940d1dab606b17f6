/* A synchronous XMPP client for integration tests, written against the
 * RFCs independently of the server's code (its SCRAM uses OpenSSL
 * directly, not src/scram.c), so that a bug shared by both sides cannot
 * hide. It speaks over direct TLS or plain TCP, splits what the server
 * sends into top-level elements (the stream header, each stanza or
 * negotiation element, the stream end) and lets a test wait for the one
 * that contains a given text, keeping the others queued in order.
 *
 * Negative checks ("nothing arrived") use raw_client_sync: an IQ ping to
 * the server and its answer. The server handles one connection's input
 * in order and writes to each socket in order, so once the pong is in,
 * everything routed to this client before it is in the queue too. */
#ifndef PL_RAW_CLIENT_H
#define PL_RAW_CLIENT_H

#include <stdbool.h>

struct raw_client;

/* Connects to 127.0.0.1:port, with TLS (SNI "localhost", no certificate
 * check) when `tls` is true. NULL when the connection fails. */
struct raw_client *raw_client_connect(int port, bool tls);
/* The same with TLS and SNI `sni` (plain TCP when NULL). */
struct raw_client *raw_client_connect_sni(int port, const char *sni);
void raw_client_free(struct raw_client *c);

/* Sends text as is (printf-style). */
__attribute__((format(printf, 2, 3)))
void raw_client_send(struct raw_client *c, const char *fmt, ...);
/* Opens a stream to `domain` (a new parse: for the first header and after
 * SASL success) and waits for the features; returns them or NULL. */
char *raw_client_open(struct raw_client *c, const char *domain);

/* Waits up to timeout_ms for a top-level element containing `needle`
 * (NULL: the next one), removes it from the queue and returns it (caller
 * frees). NULL on timeout. "</stream:stream>" is queued as its own
 * element when the server ends the stream. */
char *raw_client_wait(struct raw_client *c, const char *needle, int timeout_ms);
/* Like raw_client_wait but leaves the element queued; true if it came. */
bool raw_client_seen(struct raw_client *c, const char *needle, int timeout_ms);
/* Round trip to the server (see above); false if the answer never came. */
bool raw_client_sync(struct raw_client *c);
/* Drops every queued element; returns how many there were. */
int raw_client_discard(struct raw_client *c);
/* How many queued elements contain `needle` (no waiting). */
int raw_client_count(struct raw_client *c, const char *needle);
/* True when the server closed the connection. */
bool raw_client_closed(struct raw_client *c);

/* SASL PLAIN with an optional authzid; returns the <success/> or
 * <failure/> element (caller frees) or NULL on timeout. */
char *raw_client_auth_plain(struct raw_client *c, const char *authzid, const char *user,
			    const char *password);

/* How a SCRAM test client treats channel binding. */
enum raw_scram_binding {
	RAW_SCRAM_NO_BINDING,     /* gs2 "n": the client cannot bind */
	RAW_SCRAM_BIND,           /* "p=<type>" with the right data (-PLUS) */
	RAW_SCRAM_BIND_WRONG,     /* "p=<type>" with corrupted data */
	RAW_SCRAM_CLAIM_SUPPORT,  /* "y": could bind, thinks the server cannot */
};
/* SCRAM-SHA-1 or SCRAM-SHA-256 (mechanism names with -PLUS for binding),
 * `binding_type` "tls-exporter" or "tls-server-end-point" when binding.
 * Returns the final <success/> or <failure/> element (caller frees), or
 * NULL on timeout. On success the server signature was verified: a wrong
 * one returns "bad server signature". */
char *raw_client_auth_scram(struct raw_client *c, const char *mechanism, const char *user,
			    const char *password, enum raw_scram_binding binding,
			    const char *binding_type);

/* The same SCRAM over XEP-0388 SASL2: `inline_xml` (may be NULL) goes
 * inside <authenticate/> (user-agent, Bind2, resume); the server's
 * signature is checked in <additional-data/>; no stream restart follows. */
char *raw_client_auth_scram2(struct raw_client *c, const char *mechanism, const char *user,
			     const char *password, const char *inline_xml);

/* The channel binding data of the TLS connection ("tls-exporter",
 * "tls-server-end-point") into out (at least 64 bytes); its length or -1. */
int raw_client_binding(struct raw_client *c, const char *type, unsigned char *out);

/* The whole login: stream, PLAIN, restart, bind (resource may be NULL
 * for a server-chosen one). Returns the bound full JID (owned by the
 * client, valid until free) or NULL. */
const char *raw_client_login(struct raw_client *c, const char *domain, const char *user,
			     const char *password, const char *resource);
/* Connect over TLS and log in; NULL when any step fails. */
struct raw_client *raw_client_new_session(int tls_port, const char *user, const char *password,
					  const char *resource);
/* The full JID bound by raw_client_login (NULL before). */
const char *raw_client_jid(const struct raw_client *c);

#endif
