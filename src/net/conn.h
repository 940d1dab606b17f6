/* A stream connection (client, server or component): a libevent
 * bufferevent on a socket, upgraded in place to TLS for STARTTLS or TLS
 * from the first byte for direct TLS (XEP-0368). The owner (c2s, s2s...)
 * gets decrypted bytes through on_data and one on_close when the
 * connection ends for any reason; it writes with pl_conn_write. Per
 * connection read rate limits and an idle timeout are built in so that a
 * flooding or silent peer never costs other users anything. Network
 * thread only. */
#ifndef PL_NET_CONN_H
#define PL_NET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/tls.h"

struct event_base;
struct pl_conn;

enum pl_conn_close_reason {
	PL_CONN_CLOSED_BY_PEER,   /* EOF */
	PL_CONN_ERROR,            /* socket or TLS error */
	PL_CONN_TIMEOUT,          /* idle timeout */
	PL_CONN_CLOSED_LOCALLY,   /* pl_conn_close_after_flush finished */
};

struct pl_conn_callbacks {
	/* New bytes are in data[0..len); return how many were consumed: the
	 * rest stays buffered (used when a STARTTLS switch must not consume
	 * the bytes that follow <starttls/>). */
	size_t (*on_data)(struct pl_conn *conn, const char *data, size_t len, void *userdata);
	/* Called once; the connection is freed right after it returns. */
	void (*on_close)(struct pl_conn *conn, enum pl_conn_close_reason reason,
			 void *userdata);
};

/* Takes ownership of fd. alpn != PL_TLS_ALPN_NONE means direct TLS. */
struct pl_conn *pl_conn_new(struct event_base *base, int fd, const struct sockaddr *peer,
			    socklen_t peer_len, enum pl_tls_alpn direct_tls,
			    const struct pl_conn_callbacks *callbacks, void *userdata);
/* An outgoing connection on a connected socket fd (server-to-server):
 * plain when direct_tls is NULL, else TLS from the first byte as the
 * client, with that SSL (the connection owns it from now on). */
struct pl_conn *pl_conn_new_client(struct event_base *base, int fd, const struct sockaddr *peer,
				   socklen_t peer_len, SSL *direct_tls,
				   const struct pl_conn_callbacks *callbacks, void *userdata);
void pl_conn_write(struct pl_conn *conn, const void *data, size_t len);
/* Queues len bytes of the file fd from offset (taken: closed once sent):
 * sendfile on plain sockets, mapped pages under TLS, never read whole
 * into memory. */
void pl_conn_write_file(struct pl_conn *conn, int fd, uint64_t offset, uint64_t len);
/* Bytes queued but not yet written to the socket. */
size_t pl_conn_pending_output(const struct pl_conn *conn);
/* Switches to TLS once everything written so far is flushed (the
 * <proceed/> must go out in plaintext). 0 or -errno. */
int pl_conn_start_tls(struct pl_conn *conn);
/* STARTTLS as the initiating side, with `ssl` (owned from now on). */
int pl_conn_start_tls_client(struct pl_conn *conn, SSL *ssl);
/* A server stream whose TLS (STARTTLS) asks the peer for a certificate:
 * server-to-server streams, for SASL EXTERNAL. */
void pl_conn_request_peer_certificate(struct pl_conn *conn);
bool pl_conn_is_tls(const struct pl_conn *conn);
SSL *pl_conn_ssl(struct pl_conn *conn);
/* Stops reading, flushes what is queued, then closes (on_close runs with
 * PL_CONN_CLOSED_LOCALLY). Bounded by a short timeout. */
void pl_conn_close_after_flush(struct pl_conn *conn);
/* Closes at once, without on_close (the owner is going away). */
void pl_conn_free(struct pl_conn *conn);
void pl_conn_set_idle_timeout(struct pl_conn *conn, int64_t milliseconds);
/* Token bucket on reads: bytes per second with a burst; 0 removes it. */
int pl_conn_set_read_limit(struct pl_conn *conn, size_t bytes_per_second, size_t burst);
/* Stops reading for a while (input waits in the kernel, and what was
 * already read stays buffered until then); a later call restarts the
 * wait. For limits counted above the byte level, e.g. stanzas/s. */
void pl_conn_pause_reading(struct pl_conn *conn, int64_t milliseconds);
/* Hands the connection to another owner (an HTTP connection upgraded to
 * WebSocket). From inside on_data the new on_data gets the bytes after
 * those the old one consumed. */
void pl_conn_set_callbacks(struct pl_conn *conn, const struct pl_conn_callbacks *callbacks,
			   void *userdata);
/* Delivers input that is still buffered (an owner that consumed nothing
 * earlier, waiting for something, is ready now). */
void pl_conn_kick_input(struct pl_conn *conn);
/* "203.0.113.5" / "::1", for logs and per-address limits. */
const char *pl_conn_peer_address(const struct pl_conn *conn);
bool pl_conn_peer_is_loopback(const struct pl_conn *conn);

#endif
