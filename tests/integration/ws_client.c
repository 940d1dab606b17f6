/* WebSocket test client over http_client's connection: frames are
 * parsed from its buffer by hand (RFC 6455 5.2), text messages are
 * reassembled from fragments and queued in arrival order. */
#include "ws_client.h"
#include "http_client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

struct ws_client {
	struct http_client *http;
	char **queue;            /* text messages not yet taken; owned */
	size_t count, cap;
	char *partial;           /* a fragmented message being assembled */
	size_t partial_len;
	int close_code;          /* -1 until a close frame came */
	int pongs;
};

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *base64(const unsigned char *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

static unsigned char *unbase64(const char *text, size_t len, size_t *out_len)
{
	unsigned char *out = malloc(3 * (len / 4) + 3);
	int n = EVP_DecodeBlock(out, (const unsigned char *)text, (int)len);
	if (n < 0) {
		free(out);
		return NULL;
	}
	while (len && text[len - 1] == '=') {
		len--;
		n--;
	}
	*out_len = (size_t)n;
	return out;
}

struct ws_client *ws_client_connect(const char *ip, int port, bool tls, const char *protocol,
				    const char *extra_headers, int *status)
{
	*status = -1;
	struct http_client *http = http_client_connect_to(ip, port, tls);
	if (!http)
		return NULL;
	unsigned char nonce[16];
	RAND_bytes(nonce, sizeof(nonce));
	char *key = base64(nonce, sizeof(nonce));
	char protocol_line[200] = "";
	if (protocol)
		snprintf(protocol_line, sizeof(protocol_line), "Sec-WebSocket-Protocol: %s\r\n", protocol);
	http_client_sendf(http, "GET /xmpp-websocket HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
				"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
				"Sec-WebSocket-Version: 13\r\n%s%s\r\n",
			  ip, port, key, protocol_line, extra_headers ? extra_headers : "");
	struct http_response r = http_client_read(http, 5000);
	*status = r.status;
	char *accept = http_response_header(&r, "Sec-WebSocket-Accept");
	char *chosen = http_response_header(&r, "Sec-WebSocket-Protocol");
	char input[100];
	snprintf(input, sizeof(input), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
	unsigned char digest[SHA_DIGEST_LENGTH];
	SHA1((unsigned char *)input, strlen(input), digest);
	char *expected = base64(digest, sizeof(digest));
	bool good = r.status == 101 && accept && strcmp(accept, expected) == 0 && chosen &&
		    strcmp(chosen, "xmpp") == 0;
	free(key);
	free(accept);
	free(chosen);
	free(expected);
	http_response_free(&r);
	if (!good) {
		if (r.status == 101)
			*status = -101; /* a 101 without the right Accept or protocol */
		http_client_free(http);
		return NULL;
	}
	struct ws_client *c = calloc(1, sizeof(*c));
	c->http = http;
	c->close_code = -1;
	return c;
}

void ws_client_free(struct ws_client *c)
{
	if (!c)
		return;
	http_client_free(c->http);
	for (size_t i = 0; i < c->count; i++)
		free(c->queue[i]);
	free(c->queue);
	free(c->partial);
	free(c);
}

static bool send_frame(struct ws_client *c, uint8_t opcode, bool fin, bool masked,
		       const void *data, size_t len)
{
	unsigned char *frame = malloc(len + 14);
	size_t n = 0;
	frame[n++] = (unsigned char)((fin ? 0x80 : 0) | opcode);
	unsigned char mask_bit = masked ? 0x80 : 0;
	if (len < 126) {
		frame[n++] = (unsigned char)(mask_bit | len);
	} else if (len < 65536) {
		frame[n++] = mask_bit | 126;
		frame[n++] = (unsigned char)(len >> 8);
		frame[n++] = (unsigned char)len;
	} else {
		frame[n++] = mask_bit | 127;
		for (int shift = 56; shift >= 0; shift -= 8)
			frame[n++] = (unsigned char)((uint64_t)len >> shift);
	}
	unsigned char mask[4] = { 0 };
	if (masked) {
		RAND_bytes(mask, 4);
		memcpy(frame + n, mask, 4);
		n += 4;
	}
	for (size_t i = 0; i < len; i++)
		frame[n + i] = ((const unsigned char *)data)[i] ^ mask[i % 4];
	bool sent = http_client_send(c->http, frame, n + len);
	free(frame);
	return sent;
}

bool ws_client_frame(struct ws_client *c, uint8_t opcode, bool fin, const void *data, size_t len)
{
	return send_frame(c, opcode, fin, true, data, len);
}

bool ws_client_frame_unmasked(struct ws_client *c, uint8_t opcode, const void *data, size_t len)
{
	return send_frame(c, opcode, true, false, data, len);
}

bool ws_client_send(struct ws_client *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text = NULL;
	int n = vasprintf(&text, fmt, ap);
	va_end(ap);
	bool sent = n >= 0 && ws_client_frame(c, 1, true, text, (size_t)n);
	free(text);
	return sent;
}

static void enqueue(struct ws_client *c, char *message)
{
	if (c->count == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->queue = realloc(c->queue, c->cap * sizeof(*c->queue));
	}
	c->queue[c->count++] = message;
}

/* Parses the complete frames in the buffer. */
static void parse_frames(struct ws_client *c)
{
	for (;;) {
		size_t have = http_client_buffered(c->http);
		const unsigned char *p = http_client_data(c->http);
		if (have < 2)
			return;
		bool fin = p[0] & 0x80;
		int opcode = p[0] & 0x0f;
		uint64_t len = p[1] & 0x7f;
		size_t head = 2;
		if (len == 126) {
			if (have < 4)
				return;
			len = ((uint64_t)p[2] << 8) | p[3];
			head = 4;
		} else if (len == 127) {
			if (have < 10)
				return;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = (len << 8) | p[2 + i];
			head = 10;
		}
		if (p[1] & 0x80)
			head += 4; /* a server must not mask; tolerated here, checked by tests */
		if (have < head + len)
			return;
		const char *payload = (const char *)p + head;
		if (opcode == 8) {
			c->close_code = len >= 2 ? (((unsigned char)payload[0] << 8) | (unsigned char)payload[1]) : 0;
		} else if (opcode == 10) {
			c->pongs++;
		} else if (opcode == 9) {
			/* answered below, after consuming */
		} else if (opcode == 1 || opcode == 0) {
			c->partial = realloc(c->partial, c->partial_len + len + 1);
			memcpy(c->partial + c->partial_len, payload, len);
			c->partial_len += len;
			c->partial[c->partial_len] = 0;
			if (fin) {
				enqueue(c, c->partial);
				c->partial = NULL;
				c->partial_len = 0;
			}
		}
		char ping_payload[126];
		size_t ping_len = opcode == 9 && len < sizeof(ping_payload) ? len : 0;
		if (ping_len)
			memcpy(ping_payload, payload, ping_len);
		http_client_consume(c->http, head + len);
		if (opcode == 9)
			send_frame(c, 10, true, true, ping_payload, ping_len);
	}
}

char *ws_client_wait(struct ws_client *c, const char *needle, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		parse_frames(c);
		for (size_t i = 0; i < c->count; i++) {
			if (!needle || strstr(c->queue[i], needle)) {
				char *m = c->queue[i];
				memmove(c->queue + i, c->queue + i + 1, (c->count - i - 1) * sizeof(*c->queue));
				c->count--;
				return m;
			}
		}
		long long left = deadline - now_ms();
		if (left <= 0 || !http_client_fill(c->http, (int)left))
			return NULL;
	}
}

int ws_client_count(struct ws_client *c, const char *needle)
{
	parse_frames(c);
	int n = 0;
	for (size_t i = 0; i < c->count; i++)
		if (strstr(c->queue[i], needle))
			n++;
	return n;
}

int ws_client_wait_close(struct ws_client *c, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		parse_frames(c);
		if (c->close_code >= 0)
			return c->close_code;
		long long left = deadline - now_ms();
		if (left <= 0 || !http_client_fill(c->http, (int)left))
			return -1;
	}
}

bool ws_client_wait_eof(struct ws_client *c, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	while (!http_client_eof(c->http)) {
		parse_frames(c);
		long long left = deadline - now_ms();
		if (left <= 0)
			return false;
		if (!http_client_fill(c->http, (int)left) && !http_client_eof(c->http))
			return false;
	}
	parse_frames(c);
	return true;
}

int ws_client_pongs(const struct ws_client *c)
{
	return c->pongs;
}

char *ws_client_open(struct ws_client *c, const char *domain)
{
	ws_client_send(c, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='%s' version='1.0'/>",
		       domain);
	char *open = ws_client_wait(c, "<open ", 5000);
	if (!open)
		return NULL;
	free(open);
	return ws_client_wait(c, "<stream:features", 5000);
}

char *ws_client_auth_plain(struct ws_client *c, const char *user, const char *password)
{
	char raw[300];
	int n = snprintf(raw, sizeof(raw), "%c%s%c%s", 0, user, 0, password);
	char *encoded = base64((unsigned char *)raw, (size_t)n);
	ws_client_send(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
		       encoded);
	free(encoded);
	for (;;) {
		char *m = ws_client_wait(c, NULL, 5000);
		if (!m || strstr(m, "<success") || strstr(m, "<failure") || strstr(m, "stream:error"))
			return m;
		free(m);
	}
}

/* The base64 text content of an element, decoded. */
static unsigned char *element_data(const char *element, size_t *len)
{
	const char *start = strchr(element, '>');
	const char *end = start ? strchr(start, '<') : NULL;
	if (!start || !end)
		return NULL;
	return unbase64(start + 1, (size_t)(end - start - 1), len);
}

char *ws_client_auth_scram(struct ws_client *c, const char *user, const char *password)
{
	unsigned char random[12];
	RAND_bytes(random, sizeof(random));
	char *cnonce = base64(random, sizeof(random));
	char bare[200], first[220];
	snprintf(bare, sizeof(bare), "n=%s,r=%s", user, cnonce);
	free(cnonce);
	snprintf(first, sizeof(first), "n,,%s", bare);
	char *encoded = base64((unsigned char *)first, strlen(first));
	ws_client_send(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>%s</auth>",
		       encoded);
	free(encoded);
	char *challenge = ws_client_wait(c, NULL, 5000);
	if (!challenge || !strstr(challenge, "<challenge"))
		return challenge;
	size_t server_first_len;
	unsigned char *server_first = element_data(challenge, &server_first_len);
	free(challenge);
	if (!server_first)
		return NULL;
	char sf[500];
	snprintf(sf, sizeof(sf), "%.*s", (int)server_first_len, server_first);
	free(server_first);
	char nonce[200] = "", salt64[200] = "";
	int iterations = 0;
	for (char *part = strtok(sf, ","); part; part = strtok(NULL, ",")) {
		if (part[0] == 'r')
			snprintf(nonce, sizeof(nonce), "%s", part + 2);
		else if (part[0] == 's')
			snprintf(salt64, sizeof(salt64), "%s", part + 2);
		else if (part[0] == 'i')
			iterations = atoi(part + 2);
	}
	/* strtok cut sf up: rebuild it for the AuthMessage. */
	char server_first_text[500];
	snprintf(server_first_text, sizeof(server_first_text), "r=%s,s=%s,i=%d", nonce, salt64, iterations);
	size_t salt_len;
	unsigned char *salt = unbase64(salt64, strlen(salt64), &salt_len);
	unsigned char salted[20], client_key[20], stored_key[20], signature[20], proof[20];
	PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations,
			  EVP_sha1(), 20, salted);
	free(salt);
	unsigned int len = 20;
	HMAC(EVP_sha1(), salted, 20, (const unsigned char *)"Client Key", 10, client_key, &len);
	SHA1(client_key, 20, stored_key);
	char without_proof[300], auth_message[1000];
	snprintf(without_proof, sizeof(without_proof), "c=biws,r=%s", nonce);
	snprintf(auth_message, sizeof(auth_message), "%s,%s,%s", bare, server_first_text, without_proof);
	HMAC(EVP_sha1(), stored_key, 20, (unsigned char *)auth_message, strlen(auth_message),
	     signature, &len);
	for (int i = 0; i < 20; i++)
		proof[i] = client_key[i] ^ signature[i];
	char *proof64 = base64(proof, 20);
	char final[500];
	snprintf(final, sizeof(final), "%s,p=%s", without_proof, proof64);
	free(proof64);
	encoded = base64((unsigned char *)final, strlen(final));
	ws_client_send(c, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>", encoded);
	free(encoded);
	return ws_client_wait(c, NULL, 5000);
}

char *ws_client_login(struct ws_client *c, const char *user, const char *password,
		      const char *resource)
{
	free(ws_client_open(c, "localhost"));
	char *result = ws_client_auth_scram(c, user, password);
	bool success = result && strstr(result, "<success");
	free(result);
	if (!success)
		return NULL;
	char *features = ws_client_open(c, "localhost");
	if (!features)
		return NULL;
	free(features);
	ws_client_send(c, "<iq xmlns='jabber:client' type='set' id='bind1'>"
			  "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource></bind></iq>",
		       resource);
	char *bound = ws_client_wait(c, "id='bind1'", 5000);
	if (!bound)
		return NULL;
	char *jid = strstr(bound, "<jid>");
	char *end = jid ? strstr(jid, "</jid>") : NULL;
	char *out = end ? strndup(jid + 5, (size_t)(end - jid - 5)) : NULL;
	free(bound);
	return out;
}

bool ws_client_wait_pongs(struct ws_client *c, int pongs, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		parse_frames(c);
		if (c->pongs >= pongs)
			return true;
		long long left = deadline - now_ms();
		if (left <= 0 || !http_client_fill(c->http, (int)left))
			return false;
	}
}
