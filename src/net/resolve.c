/* c-ares on the libevent loop: c-ares tells us (sock_state_cb) which
 * sockets it wants watched and we run ares_process_fd when they are
 * ready or its timeout passes. A request is a small state machine: two
 * SRV queries, then one address lookup per SRV target (or for the domain
 * itself), then the ordered targets are handed over from an event of its
 * own, so callers never see a callback from inside their own call (c-ares
 * answers /etc/hosts names synchronously). A cancelled request lives on,
 * silent, until c-ares has finished with it. */
#include "net/resolve.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XMPP_SERVER_PORT 5269
#define MAX_SRV 16

struct watched {
	ares_socket_t fd;
	struct event *event;    /* owned */
};

static struct event_base *loop;
static ares_channel channel;
static bool channel_ready;
static struct watched *watched;
static size_t watched_count, watched_cap;
static struct event *timer;

struct srv {
	char *host;                    /* owned */
	int port, priority, weight;
	bool direct_tls;
	struct pl_target *targets;     /* owned until assembled */
	size_t target_count;
	struct pl_resolve *request;    /* c-ares callbacks carry one pointer */
};

struct pl_resolve {
	char *domain;                  /* owned */
	pl_resolve_fn *fn;             /* NULL once cancelled */
	void *userdata;
	int pending;                   /* c-ares queries not answered yet */
	int srv_answers;
	struct srv *srvs[MAX_SRV];     /* owned */
	size_t srv_count;
	bool fallback;                 /* no SRV: the domain's own addresses */
	struct pl_target *targets;     /* the result, owned until handed over */
	size_t target_count;
	char error[160];
	struct event *deliver;         /* owned */
};

/* ---- c-ares on libevent ------------------------------------------------------ */

static void schedule_timer(void)
{
	if (!channel_ready)
		return;
	struct timeval max = { 1, 0 }, tv;
	struct timeval *next = ares_timeout(channel, &max, &tv);
	evtimer_add(timer, next);
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	ares_process_fd(channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
			(what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	schedule_timer();
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	schedule_timer();
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	size_t i;
	for (i = 0; i < watched_count; i++)
		if (watched[i].fd == fd)
			break;
	if (i < watched_count) {
		event_free(watched[i].event);
		watched[i] = watched[--watched_count];
	}
	if (!readable && !writable)
		return;
	pl_grow((void **)&watched, &watched_cap, watched_count + 1, sizeof(*watched));
	short what = EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
	watched[watched_count].fd = fd;
	watched[watched_count].event = event_new(loop, fd, what, on_socket, NULL);
	event_add(watched[watched_count].event, NULL);
	watched_count++;
}

int pl_resolve_init(struct event_base *base, const char *dns_server, char **error)
{
	loop = base;
	int rc = ares_library_init(ARES_LIB_INIT_ALL);
	if (rc != ARES_SUCCESS)
		return pl_error(error, -EIO, "c-ares: %s", ares_strerror(rc));
	struct ares_options options = { 0 };
	options.sock_state_cb = on_sock_state;
	options.timeout = 3000;
	options.tries = 2;
	rc = ares_init_options(&channel, &options,
			       ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) {
		ares_library_cleanup();
		return pl_error(error, -EIO, "c-ares: %s", ares_strerror(rc));
	}
	channel_ready = true;
	timer = evtimer_new(base, on_timer, NULL);
	if (dns_server && (rc = ares_set_servers_ports_csv(channel, dns_server)) != ARES_SUCCESS)
		return pl_error(error, -EINVAL, "DNS server %s: %s", dns_server, ares_strerror(rc));
	return 0;
}

void pl_resolve_shutdown(void)
{
	if (!channel_ready)
		return;
	/* Outstanding queries end with ARES_EDESTRUCTION: requests free
	 * themselves. */
	ares_destroy(channel);
	channel_ready = false;
	for (size_t i = 0; i < watched_count; i++)
		event_free(watched[i].event);
	free(watched);
	watched = NULL;
	watched_count = watched_cap = 0;
	if (timer)
		event_free(timer);
	timer = NULL;
	ares_library_cleanup();
}

/* ---- requests -------------------------------------------------------------------- */

void pl_resolve_free_targets(struct pl_target *targets, size_t count)
{
	(void)count;
	free(targets);
}

static void request_free(struct pl_resolve *r)
{
	for (size_t i = 0; i < r->srv_count; i++) {
		free(r->srvs[i]->host);
		free(r->srvs[i]->targets);
		free(r->srvs[i]);
	}
	free(r->targets);
	if (r->deliver)
		event_free(r->deliver);
	free(r->domain);
	free(r);
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
	struct pl_resolve *r = arg;
	pl_resolve_fn *fn = r->fn;
	void *userdata = r->userdata;
	struct pl_target *targets = r->targets;
	size_t count = r->target_count;
	char error[sizeof(r->error)];
	snprintf(error, sizeof(error), "%s", r->error);
	r->targets = NULL;
	request_free(r);
	if (fn)
		fn(userdata, targets, count, error[0] ? error : NULL);
	else
		free(targets);
}

static void add_target(struct pl_target **targets, size_t *count, const struct sockaddr *sa,
		       socklen_t len, int port, bool direct_tls)
{
	*targets = pl_realloc(*targets, (*count + 1) * sizeof(**targets));
	struct pl_target *t = &(*targets)[(*count)++];
	memset(t, 0, sizeof(*t));
	memcpy(&t->addr, sa, len);
	t->addr_len = len;
	t->port = port;
	t->direct_tls = direct_tls;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&t->addr;
		in->sin_port = htons((uint16_t)port);
		inet_ntop(AF_INET, &in->sin_addr, t->address, sizeof(t->address));
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&t->addr;
		in6->sin6_port = htons((uint16_t)port);
		inet_ntop(AF_INET6, &in6->sin6_addr, t->address, sizeof(t->address));
	}
}

/* Everything answered: assemble in SRV order and hand over. */
static void finish(struct pl_resolve *r)
{
	for (size_t i = 0; i < r->srv_count; i++)
		for (size_t j = 0; j < r->srvs[i]->target_count; j++) {
			const struct pl_target *t = &r->srvs[i]->targets[j];
			add_target(&r->targets, &r->target_count, (const struct sockaddr *)&t->addr,
				   t->addr_len, t->port, t->direct_tls);
		}
	if (r->target_count == 0 && !r->error[0])
		snprintf(r->error, sizeof(r->error), "%s has no address", r->domain);
	if (r->target_count)
		r->error[0] = '\0';
	r->deliver = event_new(loop, -1, 0, on_deliver, r);
	event_active(r->deliver, EV_TIMEOUT, 0);
}

static void query_done(struct pl_resolve *r)
{
	if (--r->pending == 0 && (r->srv_answers == 2 || r->fallback))
		finish(r);
}

static void on_addresses(void *arg, int status, int timeouts, struct ares_addrinfo *result)
{
	struct srv *s = arg;
	struct pl_resolve *r = s->request;
	(void)timeouts;
	if (status == ARES_SUCCESS && result) {
		for (struct ares_addrinfo_node *n = result->nodes; n; n = n->ai_next)
			if (n->ai_family == AF_INET || n->ai_family == AF_INET6)
				add_target(&s->targets, &s->target_count, n->ai_addr, n->ai_addrlen,
					   s->port, s->direct_tls);
	} else if (status != ARES_EDESTRUCTION && status != ARES_ECANCELLED) {
		snprintf(r->error, sizeof(r->error), "%s: %s", s->host, ares_strerror(status));
	}
	if (result)
		ares_freeaddrinfo(result);
	if (status == ARES_EDESTRUCTION) {
		if (--r->pending == 0)
			request_free(r);
		return;
	}
	query_done(r);
}

static void lookup_addresses(struct pl_resolve *r, struct srv *s)
{
	r->pending++;
	struct ares_addrinfo_hints hints = { 0 };
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	ares_getaddrinfo(channel, s->host, NULL, &hints, on_addresses, s);
}

static int compare_priority(const void *a, const void *b)
{
	const struct srv *x = *(struct srv *const *)a, *y = *(struct srv *const *)b;
	if (x->priority != y->priority)
		return x->priority - y->priority;
	/* XEP-0368: at equal priority, direct TLS first. */
	return (int)y->direct_tls - (int)x->direct_tls;
}

/* RFC 2782 weighted order inside each priority. */
static void order_by_weight(struct srv **srvs, size_t count)
{
	qsort(srvs, count, sizeof(*srvs), compare_priority);
	for (size_t start = 0; start < count;) {
		size_t end = start;
		while (end < count && srvs[end]->priority == srvs[start]->priority)
			end++;
		for (size_t i = start; i < end; i++) {
			unsigned total = 0;
			for (size_t j = i; j < end; j++)
				total += (unsigned)srvs[j]->weight;
			uint32_t pick;
			pl_random_bytes(&pick, sizeof(pick));
			unsigned target = total ? pick % (total + 1) : 0, running = 0;
			size_t chosen = i;
			for (size_t j = i; j < end; j++) {
				running += (unsigned)srvs[j]->weight;
				if (running >= target) {
					chosen = j;
					break;
				}
			}
			struct srv *tmp = srvs[i];
			srvs[i] = srvs[chosen];
			srvs[chosen] = tmp;
		}
		start = end;
	}
}

static void start_addresses(struct pl_resolve *r);

struct srv_query {
	struct pl_resolve *request;
	bool direct_tls;
};

static void on_srv(void *arg, int status, int timeouts, unsigned char *answer, int length)
{
	struct srv_query *q = arg;
	struct pl_resolve *r = q->request;
	bool direct = q->direct_tls;
	free(q);
	(void)timeouts;
	if (status == ARES_EDESTRUCTION) {
		if (--r->pending == 0)
			request_free(r);
		return;
	}
	struct ares_srv_reply *reply = NULL;
	if (status == ARES_SUCCESS && ares_parse_srv_reply(answer, length, &reply) == ARES_SUCCESS) {
		for (struct ares_srv_reply *s = reply; s && r->srv_count < MAX_SRV; s = s->next) {
			/* "." means: no such service here (RFC 2782). */
			if (!s->host[0] || strcmp(s->host, ".") == 0)
				continue;
			struct srv *slot = pl_calloc(1, sizeof(*slot));
			r->srvs[r->srv_count++] = slot;
			slot->request = r;
			slot->host = pl_strdup(s->host);
			slot->port = s->port;
			slot->priority = s->priority;
			slot->weight = s->weight;
			slot->direct_tls = direct;
		}
		ares_free_data(reply);
	}
	r->srv_answers++;
	r->pending--;
	if (r->srv_answers == 2)
		start_addresses(r);
}

static void start_addresses(struct pl_resolve *r)
{
	if (r->srv_count == 0) {
		/* RFC 6120 3.2.2: no SRV records, the domain's own addresses. */
		r->fallback = true;
		struct srv *s = pl_calloc(1, sizeof(*s));
		r->srvs[r->srv_count++] = s;
		s->request = r;
		s->host = pl_strdup(r->domain);
		s->port = XMPP_SERVER_PORT;
	} else {
		order_by_weight(r->srvs, r->srv_count);
	}
	size_t count = r->srv_count;
	r->pending += 1; /* hold: the lookups may answer synchronously */
	for (size_t i = 0; i < count; i++)
		lookup_addresses(r, r->srvs[i]);
	query_done(r);
}

struct pl_resolve *pl_resolve_xmpp_server(const char *domain, pl_resolve_fn *fn, void *userdata)
{
	struct pl_resolve *r = pl_calloc(1, sizeof(*r));
	r->domain = pl_strdup(domain);
	r->fn = fn;
	r->userdata = userdata;
	if (!channel_ready) {
		snprintf(r->error, sizeof(r->error), "DNS is not available");
		r->srv_answers = 2;
		finish(r);
		return r;
	}
	static const char *const services[] = { "_xmpps-server._tcp.", "_xmpp-server._tcp." };
	r->pending = 2;
	for (int i = 0; i < 2; i++) {
		struct srv_query *q = pl_calloc(1, sizeof(*q));
		q->request = r;
		q->direct_tls = i == 0;
		char *name = pl_asprintf("%s%s", services[i], domain);
		ares_query(channel, name, 1 /* C_IN */, 33 /* T_SRV */, on_srv, q);
		free(name);
	}
	schedule_timer();
	return r;
}

void pl_resolve_cancel(struct pl_resolve *r)
{
	if (!r)
		return;
	r->fn = NULL;
	if (r->deliver && r->pending == 0) {
		/* Answered, waiting to be handed over: nothing of c-ares left. */
		request_free(r);
	}
}

/* A host name as DNS allows it (RFC 1123 labels), for a route. */
static bool is_host_name(const char *h)
{
	size_t len = strlen(h), label = 0;
	if (len == 0 || len > 253)
		return false;
	for (const char *p = h; *p; p++) {
		if (*p == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			   (*p >= '0' && *p <= '9') || (*p == '-' && label > 0)) {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

int pl_resolve_route(const char *route, bool direct_tls, struct pl_target **targets,
		     size_t *count, char **host_name, int *host_port, char **error)
{
	*targets = NULL;
	*count = 0;
	*host_name = NULL;
	*host_port = 0;
	const char *colon = strrchr(route, ':');
	if (!colon || colon == route || !colon[1])
		return pl_error(error, -EINVAL, "expected host:port, got \"%s\"", route);
	char *end = NULL;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port <= 0 || port > 65535)
		return pl_error(error, -EINVAL, "bad port in \"%s\"", route);
	char host[256];
	size_t len = (size_t)(colon - route);
	if (len >= sizeof(host))
		return pl_error(error, -EINVAL, "bad address in \"%s\"", route);
	memcpy(host, route, len);
	host[len] = '\0';
	char *h = host;
	bool bracketed = false;
	if (h[0] == '[' && len > 2 && h[len - 1] == ']') {
		h[len - 1] = '\0';
		h++;
		bracketed = true;
	}
	struct sockaddr_in in = { .sin_family = AF_INET };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
	if (inet_pton(AF_INET, h, &in.sin_addr) == 1)
		add_target(targets, count, (struct sockaddr *)&in, sizeof(in), (int)port, direct_tls);
	else if (inet_pton(AF_INET6, h, &in6.sin6_addr) == 1)
		add_target(targets, count, (struct sockaddr *)&in6, sizeof(in6), (int)port,
			   direct_tls);
	else if (!bracketed && is_host_name(h)) {
		*host_name = pl_strdup(h);
		*host_port = (int)port;
	} else
		return pl_error(error, -EINVAL, "\"%s\" is neither an IP address nor a host name", h);
	return 0;
}

struct pl_resolve *pl_resolve_host(const char *host, int port, bool direct_tls, pl_resolve_fn *fn,
				   void *userdata)
{
	struct pl_resolve *r = pl_calloc(1, sizeof(*r));
	r->domain = pl_strdup(host);
	r->fn = fn;
	r->userdata = userdata;
	if (!channel_ready) {
		snprintf(r->error, sizeof(r->error), "DNS is not available");
		finish(r);
		return r;
	}
	/* One target "record" without SRV: finish() after its A/AAAA. */
	r->fallback = true;
	struct srv *s = pl_calloc(1, sizeof(*s));
	r->srvs[r->srv_count++] = s;
	s->request = r;
	s->host = pl_strdup(host);
	s->port = port;
	s->direct_tls = direct_tls;
	r->pending = 1; /* hold: the lookup may answer synchronously */
	lookup_addresses(r, s);
	query_done(r);
	schedule_timer();
	return r;
}
