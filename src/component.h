/* External components (XEP-0114, jabber:component:accept): a listener
 * configured by <components>, one <component name secret> per domain a
 * component may own. Configured domains are domain services of the router
 * from start-up (so stanzas for a component that is not connected bounce
 * here instead of leaking to federation); a connected, authenticated
 * component receives every stanza for its domain and may send from any
 * JID at it. Network thread only. */
#ifndef PL_COMPONENT_H
#define PL_COMPONENT_H

#include "config.h"

struct event_base;

/* Reads <components> and <component>, registers the domains, opens the
 * listener. 0 or -errno with *error. Nothing configured: nothing done. */
int pl_component_start(struct event_base *base, const struct pl_config *config, char **error);
/* Stops accepting and ends every component stream with
 * <system-shutdown/>; true while streams are still closing. */
bool pl_component_begin_shutdown(void);
bool pl_component_idle(void);
/* Frees whatever is left, and the domains. */
void pl_component_stop(void);

#endif
