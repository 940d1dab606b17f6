/* Blocking HTTP/1.1 test client: poll() with timeouts on a socket,
 * OpenSSL for TLS, and a growing input buffer parsed by hand. */
#include "http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

struct http_client {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	unsigned char *buf;
	size_t len, cap;
	bool eof;
};

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct http_client *http_client_connect(int port, bool tls)
{
	return http_client_connect_to("127.0.0.1", port, tls);
}

struct http_client *http_client_connect_to(const char *ipv4, int port, bool tls)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, ipv4, &a.sin_addr);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct http_client *c = calloc(1, sizeof(*c));
	c->fd = fd;
	if (tls) {
		c->ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
		c->ssl = SSL_new(c->ctx);
		SSL_set_fd(c->ssl, fd);
		SSL_set_tlsext_host_name(c->ssl, "localhost");
		static const unsigned char alpn[] = "\x08http/1.1";
		SSL_set_alpn_protos(c->ssl, alpn, sizeof(alpn) - 1);
		if (SSL_connect(c->ssl) != 1) {
			http_client_free(c);
			return NULL;
		}
	}
	return c;
}

void http_client_free(struct http_client *c)
{
	if (!c)
		return;
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->ctx)
		SSL_CTX_free(c->ctx);
	close(c->fd);
	free(c->buf);
	free(c);
}

bool http_client_send(struct http_client *c, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t n = c->ssl ? SSL_write(c->ssl, p, (int)len) : send(c->fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

bool http_client_sendf(struct http_client *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text = NULL;
	int n = vasprintf(&text, fmt, ap);
	va_end(ap);
	bool sent = n >= 0 && http_client_send(c, text, (size_t)n);
	free(text);
	return sent;
}

bool http_client_fill(struct http_client *c, int timeout_ms)
{
	if (c->eof)
		return false;
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		if (!(c->ssl && SSL_pending(c->ssl) > 0)) {
			long long left = deadline - now_ms();
			if (left <= 0)
				return false;
			struct pollfd p = { c->fd, POLLIN, 0 };
			int rc = poll(&p, 1, (int)left);
			if (rc < 0 && errno == EINTR)
				continue;
			if (rc <= 0)
				return false;
		}
		if (c->cap - c->len < 16384) {
			c->cap = c->cap ? c->cap * 2 : 65536;
			c->buf = realloc(c->buf, c->cap + 1);
		}
		ssize_t n;
		if (c->ssl) {
			n = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len));
			if (n <= 0) {
				int e = SSL_get_error(c->ssl, (int)n);
				if (e == SSL_ERROR_WANT_READ)
					continue;
				c->eof = true;
				return false;
			}
		} else {
			n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				c->eof = true;
				return false;
			}
		}
		c->len += (size_t)n;
		c->buf[c->len] = 0;
		return true;
	}
}

size_t http_client_buffered(const struct http_client *c)
{
	return c->len;
}

const unsigned char *http_client_data(const struct http_client *c)
{
	return c->buf;
}

void http_client_consume(struct http_client *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
	if (c->buf)
		c->buf[c->len] = 0;
}

bool http_client_eof(const struct http_client *c)
{
	return c->eof;
}

char *http_response_header(const struct http_response *r, const char *name)
{
	if (!r->head)
		return NULL;
	size_t name_len = strlen(name);
	for (const char *line = strstr(r->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
		const char *p = line + 2;
		if (strncasecmp(p, name, name_len) == 0 && p[name_len] == ':') {
			p += name_len + 1;
			p += strspn(p, " \t");
			size_t n = strcspn(p, "\r");
			return strndup(p, n);
		}
	}
	return NULL;
}

struct http_response http_client_read(struct http_client *c, int timeout_ms)
{
	struct http_response r = { -1, NULL, NULL, 0 };
	long long deadline = now_ms() + timeout_ms;
	char *end;
	while (!c->buf || !(end = strstr((char *)c->buf, "\r\n\r\n"))) {
		long long left = deadline - now_ms();
		if (left <= 0 || !http_client_fill(c, (int)left))
			return r;
	}
	size_t head_len = (size_t)(end - (char *)c->buf) + 4;
	r.head = strndup((char *)c->buf, head_len);
	char *length = http_response_header(&r, "Content-Length");
	size_t body_len = length ? strtoul(length, NULL, 10) : 0;
	free(length);
	while (c->len < head_len + body_len) {
		long long left = deadline - now_ms();
		if (left <= 0 || !http_client_fill(c, (int)left)) {
			free(r.head);
			r.head = NULL;
			return r;
		}
	}
	r.body = malloc(body_len + 1);
	memcpy(r.body, c->buf + head_len, body_len);
	r.body[body_len] = 0;
	r.body_len = body_len;
	http_client_consume(c, head_len + body_len);
	sscanf(r.head, "HTTP/1.1 %d", &r.status);
	return r;
}

void http_response_free(struct http_response *r)
{
	free(r->head);
	free(r->body);
	r->head = r->body = NULL;
}

bool http_client_wait_closed(struct http_client *c, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	while (!c->eof) {
		long long left = deadline - now_ms();
		if (left <= 0)
			return false;
		if (!http_client_fill(c, (int)left) && !c->eof)
			return false;
		c->len = 0;
	}
	return true;
}
