/* A WebSocket client (RFC 6455) speaking XMPP (RFC 7395) for the
 * integration tests, written from the RFCs and not from the server: the
 * opening handshake (checking Sec-WebSocket-Accept), masked frames of
 * any opcode, fragmentation and raw bytes on demand (for hostile
 * input), and server messages split into text messages that a test waits
 * for by content, as raw_client does for TCP streams. SCRAM-SHA-1 and
 * PLAIN use OpenSSL directly. */
#ifndef PL_WS_CLIENT_H
#define PL_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ws_client;

/* Connects to ip:port (TLS if asked) and asks for /xmpp-websocket with
 * Sec-WebSocket-Protocol `protocol` (NULL: no header) plus extra header
 * lines (each ending in \r\n, may be NULL). Returns the client after a
 * 101 whose Accept is right, else NULL with *status the HTTP status (or
 * -1). */
struct ws_client *ws_client_connect(const char *ip, int port, bool tls, const char *protocol,
				    const char *extra_headers, int *status);
void ws_client_free(struct ws_client *c);

/* One masked frame, as is. */
bool ws_client_frame(struct ws_client *c, uint8_t opcode, bool fin, const void *data, size_t len);
/* An unmasked one (a protocol error from a client). */
bool ws_client_frame_unmasked(struct ws_client *c, uint8_t opcode, const void *data, size_t len);
/* One text message (printf-style). */
__attribute__((format(printf, 2, 3)))
bool ws_client_send(struct ws_client *c, const char *fmt, ...);

/* Waits up to timeout_ms for a text message containing needle (NULL:
 * the next one), removes it from the queue and returns it (caller
 * frees); NULL on timeout or close. */
char *ws_client_wait(struct ws_client *c, const char *needle, int timeout_ms);
int ws_client_count(struct ws_client *c, const char *needle);
/* Waits for the server's close frame and returns its status code (0 if
 * it had none, -1 if none came in time). */
int ws_client_wait_close(struct ws_client *c, int timeout_ms);
/* True once the TCP connection is closed by the server (waits). */
bool ws_client_wait_eof(struct ws_client *c, int timeout_ms);
int ws_client_pongs(const struct ws_client *c);
/* Waits until at least `pongs` pongs came. */
bool ws_client_wait_pongs(struct ws_client *c, int pongs, int timeout_ms);

/* XMPP: sends <open/> to domain and waits for the features (returned). */
char *ws_client_open(struct ws_client *c, const char *domain);
/* Returns the <success/> or <failure/> element. */
char *ws_client_auth_plain(struct ws_client *c, const char *user, const char *password);
char *ws_client_auth_scram(struct ws_client *c, const char *user, const char *password);
/* Open, SCRAM-SHA-1, open again, bind: the full JID (caller frees) or NULL. */
char *ws_client_login(struct ws_client *c, const char *user, const char *password,
		      const char *resource);

#endif
