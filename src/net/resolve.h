/* Where to connect for a remote XMPP server: static routes ("host:port"
 * from the configuration) and asynchronous DNS with c-ares (libevent's
 * evdns has no SRV): the SRV records _xmpps-server._tcp (XEP-0368, direct
 * TLS) and _xmpp-server._tcp (RFC 6120 3.2), ordered by priority and
 * weight (RFC 2782), each target's A/AAAA addresses; without SRV records
 * the domain's own addresses on port 5269. /etc/hosts is honoured (c-ares
 * looks there first). Network thread only. */
#ifndef PL_NET_RESOLVE_H
#define PL_NET_RESOLVE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event_base;

struct pl_target {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char address[INET6_ADDRSTRLEN];  /* for logs */
	int port;
	bool direct_tls;
};

/* `dns_server` ("address:port", may be NULL for the system's resolvers)
 * is for tests and special set-ups. 0 or -errno with *error. */
int pl_resolve_init(struct event_base *base, const char *dns_server, char **error);
/* Cancels what is in flight (no callbacks) and frees everything. */
void pl_resolve_shutdown(void);

/* The answer: an array of targets in the order to try (the callee owns
 * it: pl_resolve_free_targets), possibly empty with `error` saying why. */
typedef void pl_resolve_fn(void *userdata, struct pl_target *targets, size_t count,
			   const char *error);
struct pl_resolve;
/* Starts the lookups for `domain`; the callback always comes later, from
 * the event loop, never from inside this call. */
struct pl_resolve *pl_resolve_xmpp_server(const char *domain, pl_resolve_fn *fn, void *userdata);
/* No callback will come for it; NULL is fine. */
void pl_resolve_cancel(struct pl_resolve *request);

/* A route "address:port", "[v6address]:port" or "host.name:port". A
 * numeric address gives its target at once; a host name gives
 * *host_name (caller frees) and *host_port, for pl_resolve_host. 0 or
 * -EINVAL + *error. */
int pl_resolve_route(const char *route, bool direct_tls, struct pl_target **targets,
		     size_t *count, char **host_name, int *host_port, char **error);
/* A route's host name: its A/AAAA addresses (c-ares, /etc/hosts first)
 * on `port`, no SRV. The callback comes later, as above. */
struct pl_resolve *pl_resolve_host(const char *host, int port, bool direct_tls, pl_resolve_fn *fn,
				   void *userdata);
void pl_resolve_free_targets(struct pl_target *targets, size_t count);

#endif
