/* XMPP over WebSocket (RFC 7395): the "xmpp" subprotocol on the HTTP
 * listener's /xmpp-websocket, RFC 6455 frames by wslay, one XML element
 * per text message, carried as a c2s transport (c2s_transport.h) so the
 * session behind it is the same as over TCP. Network thread only. */
#ifndef PL_WEBSOCKET_H
#define PL_WEBSOCKET_H

#include "config.h"

#define PL_WS_PATH "/xmpp-websocket"

/* Registers the route. 0 or -errno with *error. */
int pl_websocket_start(const struct pl_config *config, char **error);

#endif
