/* Client-to-server streams (RFC 6120): the listeners (STARTTLS on the c2s
 * port, direct TLS per XEP-0368 on the tls port), stream negotiation
 * (STARTTLS, SASL, resource binding, the optional legacy session) and the
 * hand-over of stanzas to the router. Configured by <c2s>. */
#ifndef PL_C2S_H
#define PL_C2S_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "xml/xnode.h"

struct event_base;

int pl_c2s_start(struct event_base *base, const struct pl_config *config, char **error);
/* Stops accepting and sends <system-shutdown/> on every stream; returns
 * true while streams are still closing (the loop should run a little
 * longer so the errors reach the clients). */
bool pl_c2s_begin_shutdown(void);
bool pl_c2s_idle(void);
/* Bound client sessions per transport ("tcp", "websocket", "bosh"): those
 * with a connection and those hibernating (XEP-0198), for metrics. */
void pl_c2s_each_transport(void (*fn)(void *arg, const char *transport, size_t sessions,
					size_t hibernating),
			   void *arg);
/* An IQ received before authentication that a module may answer (XEP-0077
 * in-band registration): fired as "iq-unauthenticated/<namespace>". */
struct pl_unauthenticated_iq {
	struct pl_xnode *stanza;     /* borrowed */
	const char *host;            /* the stream's host */
	const char *address;         /* the client's address, for rate limits */
	uint64_t connection;         /* for pl_c2s_reply, which may come later */
	bool secure;                 /* TLS is on */
};
/* Sends a reply to an unauthenticated connection if it is still there
 * (borrowed stanza); false when it has gone. */
bool pl_c2s_reply(uint64_t connection, const struct pl_xnode *stanza);

/* Frees whatever is left, the listeners and the TLS contexts. */
void pl_c2s_stop(void);

#endif
