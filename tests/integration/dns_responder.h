/* A tiny DNS responder for federation tests: UDP on 127.0.0.1 (a free
 * port), answering SRV and A queries from a fixed table in a thread of
 * its own until dns_stop; NXDOMAIN for names it does not know, an empty
 * answer for known names without a record of the asked type. Bounded:
 * it polls every 100 ms and never leaves loopback. */
#ifndef PL_DNS_RESPONDER_H
#define PL_DNS_RESPONDER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct dns_record {
	const char *name;
	int type;               /* 33 SRV, 1 A */
	int priority, weight, port;
	const char *target;     /* SRV target */
};

struct dns_responder {
	int fd, port;
	pthread_t thread;
	atomic_bool stop;
	const struct dns_record *records;
	size_t count;
	atomic_int queries;
};

bool dns_start(struct dns_responder *d, const struct dns_record *records, size_t count);
void dns_stop(struct dns_responder *d);

#endif
