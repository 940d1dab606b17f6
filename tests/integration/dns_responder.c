/* The test DNS responder (dns_responder.h): just enough of RFC 1035 to
 * answer c-ares and libunbound on loopback. */
#include "dns_responder.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>


static size_t put_name(unsigned char *out, const char *name)
{
	size_t n = 0;
	while (*name) {
		size_t len = strcspn(name, ".");
		out[n++] = (unsigned char)len;
		memcpy(out + n, name, len);
		n += len;
		name += len;
		if (*name == '.')
			name++;
	}
	out[n++] = 0;
	return n;
}

static void put16(unsigned char *p, int v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

/* Answers one query from the table: NXDOMAIN when no record has the
 * name, an empty answer when none has the type. */
static void dns_answer(struct dns_responder *d, const unsigned char *q, ssize_t len,
		       struct sockaddr_in *peer, socklen_t peer_len)
{
	if (len < 17)
		return;
	char name[256];
	size_t n = 0, at = 12;
	while (at < (size_t)len && q[at] && n < sizeof(name) - 64) {
		size_t l = q[at++];
		if (at + l > (size_t)len)
			return;
		if (n)
			name[n++] = '.';
		memcpy(name + n, q + at, l);
		n += l;
		at += l;
	}
	name[n] = '\0';
	at++;
	if (at + 4 > (size_t)len)
		return;
	int qtype = (q[at] << 8) | q[at + 1];
	size_t question_end = at + 4;
	unsigned char out[1024];
	memcpy(out, q, question_end);
	out[2] = 0x84; /* response, authoritative */
	out[3] = 0x00;
	int answers = 0;
	bool known = false;
	size_t o = question_end;
	for (size_t i = 0; i < d->count; i++) {
		const struct dns_record *r = &d->records[i];
		if (strcasecmp(r->name, name) != 0)
			continue;
		known = true;
		if (r->type != qtype || o > sizeof(out) - 300)
			continue;
		out[o++] = 0xc0; /* pointer to the question's name */
		out[o++] = 12;
		put16(out + o, qtype);
		put16(out + o + 2, 1);
		memset(out + o + 4, 0, 4);
		out[o + 7] = 60; /* ttl */
		o += 8;
		if (qtype == 1) {
			put16(out + o, 4);
			out[o + 2] = 127;
			out[o + 3] = 0;
			out[o + 4] = 0;
			out[o + 5] = 1;
			o += 6;
		} else {
			unsigned char target[256];
			size_t tl = put_name(target, r->target);
			put16(out + o, (int)(6 + tl));
			put16(out + o + 2, r->priority);
			put16(out + o + 4, r->weight);
			put16(out + o + 6, r->port);
			memcpy(out + o + 8, target, tl);
			o += 8 + tl;
		}
		answers++;
	}
	if (!known)
		out[3] = 0x03; /* NXDOMAIN */
	put16(out + 6, answers);
	put16(out + 8, 0);
	put16(out + 10, 0);
	sendto(d->fd, out, o, 0, (struct sockaddr *)peer, peer_len);
	atomic_fetch_add(&d->queries, 1);
}

static void *dns_loop(void *arg)
{
	struct dns_responder *d = arg;
	while (!atomic_load(&d->stop)) {
		struct pollfd p = { .fd = d->fd, .events = POLLIN };
		if (poll(&p, 1, 100) <= 0)
			continue;
		unsigned char q[512];
		struct sockaddr_in peer;
		socklen_t peer_len = sizeof(peer);
		ssize_t len = recvfrom(d->fd, q, sizeof(q), 0, (struct sockaddr *)&peer, &peer_len);
		if (len > 0)
			dns_answer(d, q, len, &peer, peer_len);
	}
	return NULL;
}

bool dns_start(struct dns_responder *d, const struct dns_record *records, size_t count)
{
	memset(d, 0, sizeof(*d));
	d->records = records;
	d->count = count;
	d->fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	if (d->fd < 0 || bind(d->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
	    getsockname(d->fd, (struct sockaddr *)&addr, &len) != 0)
		return false;
	d->port = ntohs(addr.sin_port);
	return pthread_create(&d->thread, NULL, dns_loop, d) == 0;
}

void dns_stop(struct dns_responder *d)
{
	atomic_store(&d->stop, true);
	pthread_join(d->thread, NULL);
	close(d->fd);
}

