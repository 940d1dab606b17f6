/* XMPP over BOSH (XEP-0124, XEP-0206) on the HTTP listener's
 * /http-bind: long-polled client sessions carried as a c2s transport
 * (c2s_transport.h). Network thread only. */
#ifndef PL_BOSH_H
#define PL_BOSH_H

#include "config.h"

#define PL_BOSH_PATH "/http-bind"

struct event_base;

/* Registers the route. 0 or -errno with *error. */
int pl_bosh_start(struct event_base *base, const struct pl_config *config, char **error);
/* Ends every session (their held requests are answered). */
void pl_bosh_stop(void);

#endif
