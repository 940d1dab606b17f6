/* Client-to-server streams (RFC 6120): the listeners (STARTTLS on the c2s
 * port, direct TLS per XEP-0368 on the tls port), stream negotiation
 * (STARTTLS, SASL, resource binding, the optional legacy session) and the
 * hand-over of stanzas to the router. Configured by <c2s>. */
#ifndef PL_C2S_H
#define PL_C2S_H

#include <stdbool.h>

#include "config.h"

struct event_base;

int pl_c2s_start(struct event_base *base, const struct pl_config *config, char **error);
/* Stops accepting and sends <system-shutdown/> on every stream; returns
 * true while streams are still closing (the loop should run a little
 * longer so the errors reach the clients). */
bool pl_c2s_begin_shutdown(void);
bool pl_c2s_idle(void);
/* Frees whatever is left, the listeners and the TLS contexts. */
void pl_c2s_stop(void);

#endif
