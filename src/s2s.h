/* Server-to-server streams (RFC 6120 federation), configured by <s2s>
 * and one <remote name> per remote domain that needs a static route or
 * its own authentication policy. Without <s2s> federation is off and
 * stanzas to other domains bounce with remote-server-not-found. With it,
 * the router's remote route hands every stanza for a remote domain to
 * the outgoing stream of its (local domain, remote domain) pair, made on
 * first use; incoming streams (STARTTLS port and direct TLS port) bring
 * remote stanzas into pl_route. Network thread only. */
#ifndef PL_S2S_H
#define PL_S2S_H

#include <stdbool.h>

#include "config.h"

struct event_base;

int pl_s2s_start(struct event_base *base, const struct pl_config *config, char **error);
/* Stops accepting, ends every stream (system-shutdown for incoming ones;
 * what waits on outgoing ones bounces); true while streams are still
 * closing, so the loop should run a little longer. */
bool pl_s2s_begin_shutdown(void);
bool pl_s2s_idle(void);
/* Frees whatever is left (after pl_s2s_begin_shutdown and the loop). */
void pl_s2s_stop(void);

#endif
