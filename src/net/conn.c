/* Connections over libevent bufferevents. The plain bufferevent is
 * replaced by an OpenSSL socket bufferevent on the same descriptor when
 * STARTTLS begins (rather than stacking a filter), which keeps one buffer
 * pair per connection; direct TLS starts with the OpenSSL one. A
 * connection owns its bufferevent, its SSL (through the bufferevent) and
 * its rate-limit configuration. */
#include "net/conn.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <openssl/err.h>

struct pl_conn {
	struct event_base *base;
	struct bufferevent *bev;            /* owned; frees the SSL when TLS */
	struct ev_token_bucket_cfg *bucket; /* owned, NULL without a read limit */
	struct event *resume_timer;         /* owned, made on the first pause */
	const struct pl_conn_callbacks *callbacks;
	void *userdata;
	evutil_socket_t fd;
	int64_t idle_timeout_ms;
	bool tls;
	bool tls_pending;  /* STARTTLS asked: switch once output drained */
	bool closing;      /* close_after_flush: waiting for the output to drain */
	bool lingering;    /* output sent and write side shut: discarding input */
	bool in_callback;  /* on_data running: defer a free asked from inside */
	bool free_deferred;
	bool read_paused;  /* pl_conn_pause_reading: input stays in the kernel */
	bool want_peer_certificate; /* a server stream that asks for the peer's (s2s) */
	SSL *client_ssl;   /* owned until STARTTLS as a client begins with it */
	char address[INET6_ADDRSTRLEN];
	bool loopback;
};

static void close_now(struct pl_conn *conn, enum pl_conn_close_reason reason);
static void install_callbacks(struct pl_conn *conn);

static void set_timeouts(struct pl_conn *conn)
{
	if (conn->idle_timeout_ms > 0) {
		struct timeval tv = { conn->idle_timeout_ms / 1000,
				      (conn->idle_timeout_ms % 1000) * 1000 };
		bufferevent_set_timeouts(conn->bev, &tv, NULL);
	} else {
		bufferevent_set_timeouts(conn->bev, NULL, NULL);
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct pl_conn *conn = arg;
	struct evbuffer *input = bufferevent_get_input(bev);
	if (conn->lingering) {
		evbuffer_drain(input, evbuffer_get_length(input));
		return;
	}
	while (!conn->closing && !conn->free_deferred && !conn->tls_pending &&
	       !conn->read_paused) {
		size_t len = evbuffer_get_length(input);
		if (len == 0)
			break;
		/* Hand over the contiguous first chunk: no copy. */
		struct evbuffer_iovec chunk;
		if (evbuffer_peek(input, -1, NULL, &chunk, 1) < 1)
			break;
		conn->in_callback = true;
		size_t used = conn->callbacks->on_data(conn, chunk.iov_base, chunk.iov_len,
						       conn->userdata);
		conn->in_callback = false;
		/* A client STARTTLS replaced the bufferevent: what is left of the
		 * plain input must not be read as TLS. */
		if (conn->free_deferred || conn->bev != bev)
			break;
		evbuffer_drain(input, used);
		if (used == 0)
			break;
	}
	if (conn->free_deferred)
		pl_conn_free(conn);
}

static void upgrade_to_tls(struct pl_conn *conn)
{
	/* The initiating side of a server-to-server stream brings its own
	 * client SSL (pl_conn_start_tls_client); otherwise we are the server. */
	bool client = conn->client_ssl != NULL;
	SSL *ssl = client ? conn->client_ssl : pl_tls_new_server(PL_TLS_ALPN_NONE);
	conn->client_ssl = NULL;
	if (ssl && !client && conn->want_peer_certificate)
		pl_tls_request_peer_certificate(ssl);
	if (!ssl) {
		close_now(conn, PL_CONN_ERROR);
		return;
	}
	/* Whatever the client sent after <starttls/> before the handshake is
	 * a protocol violation; drop the plain bufferevent without closing
	 * the socket and start TLS on the same descriptor. */
	struct bufferevent *plain = conn->bev;
	bufferevent_setcb(plain, NULL, NULL, NULL, NULL);
	bufferevent_disable(plain, EV_READ | EV_WRITE);
	bufferevent_setfd(plain, -1);
	bufferevent_free(plain);
	conn->bev = bufferevent_openssl_socket_new(conn->base, conn->fd, ssl,
						   client ? BUFFEREVENT_SSL_CONNECTING
							  : BUFFEREVENT_SSL_ACCEPTING,
						   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	conn->tls = true;
	conn->tls_pending = false;
	install_callbacks(conn);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct pl_conn *conn = arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	if (conn->tls_pending) {
		upgrade_to_tls(conn);
	} else if (conn->closing && !conn->lingering) {
		/* Closing with unread input makes the kernel send a reset, which
		 * can destroy our last words (the stream error) before the peer
		 * reads them. Shut the write side and discard input briefly
		 * instead, as web servers do with a lingering close. */
		conn->lingering = true;
		shutdown(conn->fd, SHUT_WR);
		struct timeval linger = { 2, 0 };
		bufferevent_set_timeouts(conn->bev, &linger, NULL);
		bufferevent_enable(conn->bev, EV_READ);
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct pl_conn *conn = arg;
	if (what & BEV_EVENT_CONNECTED)
		return;
	if (what & BEV_EVENT_TIMEOUT) {
		close_now(conn, conn->closing ? PL_CONN_CLOSED_LOCALLY : PL_CONN_TIMEOUT);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		close_now(conn, conn->closing ? PL_CONN_CLOSED_LOCALLY : PL_CONN_CLOSED_BY_PEER);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		unsigned long tls_error = conn->tls ? bufferevent_get_openssl_error(bev) : 0;
		if (tls_error) {
			char text[200];
			ERR_error_string_n(tls_error, text, sizeof(text));
			pl_log(PL_LOG_INFO, "net", "%s: TLS error: %s", conn->address, text);
		}
		close_now(conn, PL_CONN_ERROR);
	}
}

/* Input an owner has not consumed yet (an HTTP connection waiting for
 * the answer to its last request while the client sends more) stays in
 * the kernel beyond this, not in our memory. */
#define MAX_BUFFERED_INPUT (1024 * 1024)

static void install_callbacks(struct pl_conn *conn)
{
	bufferevent_setcb(conn->bev, on_read, on_write, on_event, conn);
	bufferevent_setwatermark(conn->bev, EV_READ, 0, MAX_BUFFERED_INPUT);
	set_timeouts(conn);
	if (conn->bucket)
		bufferevent_set_rate_limit(conn->bev, conn->bucket);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
}

static struct pl_conn *conn_create(struct event_base *base, int fd, const struct sockaddr *peer,
				   socklen_t peer_len, SSL *ssl, bool client,
				   const struct pl_conn_callbacks *callbacks, void *userdata);

struct pl_conn *pl_conn_new(struct event_base *base, int fd, const struct sockaddr *peer,
			    socklen_t peer_len, enum pl_tls_alpn direct_tls,
			    const struct pl_conn_callbacks *callbacks, void *userdata)
{
	SSL *ssl = NULL;
	if (direct_tls != PL_TLS_ALPN_NONE) {
		ssl = pl_tls_new_server(direct_tls);
		if (!ssl) {
			close(fd);
			return NULL;
		}
	}
	return conn_create(base, fd, peer, peer_len, ssl, false, callbacks, userdata);
}

struct pl_conn *pl_conn_new_client(struct event_base *base, int fd, const struct sockaddr *peer,
				   socklen_t peer_len, SSL *direct_tls,
				   const struct pl_conn_callbacks *callbacks, void *userdata)
{
	return conn_create(base, fd, peer, peer_len, direct_tls, true, callbacks, userdata);
}

static struct pl_conn *conn_create(struct event_base *base, int fd, const struct sockaddr *peer,
				   socklen_t peer_len, SSL *ssl, bool client,
				   const struct pl_conn_callbacks *callbacks, void *userdata)
{
	struct pl_conn *conn = pl_calloc(1, sizeof(*conn));
	conn->base = base;
	conn->fd = fd;
	conn->callbacks = callbacks;
	conn->userdata = userdata;
	evutil_make_socket_nonblocking(fd);
	if (peer && peer->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
		inet_ntop(AF_INET, &in->sin_addr, conn->address, sizeof(conn->address));
		conn->loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	} else if (peer && peer->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			/* An IPv4 client on a dual-stack socket: show and judge it
			 * as the IPv4 address it is. */
			struct in_addr v4;
			memcpy(&v4, &in6->sin6_addr.s6_addr[12], 4);
			inet_ntop(AF_INET, &v4, conn->address, sizeof(conn->address));
			conn->loopback = in6->sin6_addr.s6_addr[12] == 127;
		} else {
			inet_ntop(AF_INET6, &in6->sin6_addr, conn->address, sizeof(conn->address));
			conn->loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
		}
	} else {
		snprintf(conn->address, sizeof(conn->address), "local");
		conn->loopback = true;
	}
	(void)peer_len;
	if (ssl) {
		conn->bev = bufferevent_openssl_socket_new(base, fd, ssl,
							   client ? BUFFEREVENT_SSL_CONNECTING
								  : BUFFEREVENT_SSL_ACCEPTING,
							   BEV_OPT_CLOSE_ON_FREE |
								   BEV_OPT_DEFER_CALLBACKS);
		conn->tls = true;
	} else {
		conn->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE |
								     BEV_OPT_DEFER_CALLBACKS);
	}
	if (!conn->bev) {
		close(fd);
		free(conn);
		return NULL;
	}
	install_callbacks(conn);
	return conn;
}

void pl_conn_write(struct pl_conn *conn, const void *data, size_t len)
{
	if (conn->closing && !conn->tls_pending)
		return;
	bufferevent_write(conn->bev, data, len);
}

void pl_conn_write_file(struct pl_conn *conn, int fd, uint64_t offset, uint64_t len)
{
	if (conn->closing && !conn->tls_pending) {
		close(fd);
		return;
	}
	struct evbuffer_file_segment *seg =
		evbuffer_file_segment_new(fd, (ev_off_t)offset, (ev_off_t)len, EVBUF_FS_CLOSE_ON_FREE);
	if (!seg) {
		close(fd);
		pl_log(PL_LOG_ERROR, "conn", "%s: cannot send a file", conn->address);
		return;
	}
	/* The buffer takes its own reference; the fd closes with the last. */
	if (evbuffer_add_file_segment(bufferevent_get_output(conn->bev), seg, 0, (ev_off_t)len) != 0)
		pl_log(PL_LOG_ERROR, "conn", "%s: cannot queue a file", conn->address);
	evbuffer_file_segment_free(seg);
}

size_t pl_conn_pending_output(const struct pl_conn *conn)
{
	return evbuffer_get_length(bufferevent_get_output(conn->bev));
}

int pl_conn_start_tls_client(struct pl_conn *conn, SSL *ssl)
{
	if (conn->tls || conn->client_ssl) {
		SSL_free(ssl);
		return -EALREADY;
	}
	conn->client_ssl = ssl;
	return pl_conn_start_tls(conn);
}

void pl_conn_request_peer_certificate(struct pl_conn *conn)
{
	conn->want_peer_certificate = true;
}

int pl_conn_start_tls(struct pl_conn *conn)
{
	if (conn->tls)
		return -EALREADY;
	conn->tls_pending = true;
	if (conn->client_ssl && pl_conn_pending_output(conn) == 0) {
		/* The initiating side switches at once, even from inside on_data
		 * (on_read notices the new bufferevent), so that what its owner
		 * writes next (the new stream header) goes out encrypted. */
		upgrade_to_tls(conn);
		return 0;
	}
	if (conn->in_callback) {
		/* on_read is still walking the plain bufferevent's input: switch
		 * from the (deferred) write callback once it has returned. */
		bufferevent_trigger(conn->bev, EV_WRITE,
				    BEV_TRIG_DEFER_CALLBACKS | BEV_TRIG_IGNORE_WATERMARKS);
		return 0;
	}
	if (pl_conn_pending_output(conn) == 0)
		upgrade_to_tls(conn);
	return 0;
}

bool pl_conn_is_tls(const struct pl_conn *conn)
{
	return conn->tls;
}

SSL *pl_conn_ssl(struct pl_conn *conn)
{
	return conn->tls ? bufferevent_openssl_get_ssl(conn->bev) : NULL;
}

void pl_conn_close_after_flush(struct pl_conn *conn)
{
	if (conn->closing)
		return;
	conn->closing = true;
	bufferevent_disable(conn->bev, EV_READ);
	/* A peer that never reads must not keep us waiting forever. */
	struct timeval flush_limit = { 5, 0 };
	bufferevent_set_timeouts(conn->bev, NULL, &flush_limit);
	if (pl_conn_pending_output(conn) == 0)
		bufferevent_trigger(conn->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS | BEV_TRIG_IGNORE_WATERMARKS);
}

static void close_now(struct pl_conn *conn, enum pl_conn_close_reason reason)
{
	if (conn->in_callback) {
		conn->free_deferred = true;
		conn->callbacks->on_close(conn, reason, conn->userdata);
		return;
	}
	conn->callbacks->on_close(conn, reason, conn->userdata);
	pl_conn_free(conn);
}

void pl_conn_free(struct pl_conn *conn)
{
	if (conn->in_callback) {
		conn->free_deferred = true;
		return;
	}
	if (conn->tls) {
		SSL *ssl = bufferevent_openssl_get_ssl(conn->bev);
		/* A quiet shutdown: no close_notify round trip on a dying socket. */
		if (ssl)
			SSL_set_shutdown(ssl, SSL_RECEIVED_SHUTDOWN);
	}
	bufferevent_free(conn->bev);
	if (conn->client_ssl)
		SSL_free(conn->client_ssl);
	if (conn->resume_timer)
		event_free(conn->resume_timer);
	if (conn->bucket)
		ev_token_bucket_cfg_free(conn->bucket);
	free(conn);
}

void pl_conn_set_idle_timeout(struct pl_conn *conn, int64_t milliseconds)
{
	conn->idle_timeout_ms = milliseconds;
	if (!conn->closing)
		set_timeouts(conn);
}

int pl_conn_set_read_limit(struct pl_conn *conn, size_t bytes_per_second, size_t burst)
{
	if (conn->bucket) {
		bufferevent_set_rate_limit(conn->bev, NULL);
		ev_token_bucket_cfg_free(conn->bucket);
		conn->bucket = NULL;
	}
	if (bytes_per_second == 0)
		return 0;
	conn->bucket = ev_token_bucket_cfg_new(bytes_per_second, burst ? burst : bytes_per_second,
					       EV_RATE_LIMIT_MAX, EV_RATE_LIMIT_MAX, NULL);
	if (!conn->bucket)
		return -ENOMEM;
	return bufferevent_set_rate_limit(conn->bev, conn->bucket) == 0 ? 0 : -EINVAL;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct pl_conn *conn = arg;
	conn->read_paused = false;
	if (conn->closing)
		return;
	bufferevent_enable(conn->bev, EV_READ);
	/* Input read before the pause is still buffered: hand it over now
	 * rather than waiting for the peer to send more. */
	if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0)
		bufferevent_trigger(conn->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
}

void pl_conn_pause_reading(struct pl_conn *conn, int64_t milliseconds)
{
	if (conn->closing || milliseconds <= 0)
		return;
	if (!conn->resume_timer)
		conn->resume_timer = evtimer_new(conn->base, on_resume, conn);
	conn->read_paused = true;
	bufferevent_disable(conn->bev, EV_READ);
	struct timeval tv = { milliseconds / 1000, (milliseconds % 1000) * 1000 };
	evtimer_add(conn->resume_timer, &tv);
}

const char *pl_conn_peer_address(const struct pl_conn *conn)
{
	return conn->address;
}

bool pl_conn_peer_is_loopback(const struct pl_conn *conn)
{
	return conn->loopback;
}

void pl_conn_set_callbacks(struct pl_conn *conn, const struct pl_conn_callbacks *callbacks,
			   void *userdata)
{
	conn->callbacks = callbacks;
	conn->userdata = userdata;
}

void pl_conn_kick_input(struct pl_conn *conn)
{
	if (conn->closing || conn->read_paused)
		return;
	if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0)
		bufferevent_trigger(conn->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
}
