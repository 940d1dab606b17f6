/* mod_ping: XEP-0199 XMPP Ping. Answers pings sent to the server, which
 * clients use to check that their connection still works. (Pinging idle
 * clients from the server side arrives with the session keep-alive work.) */
#include "parley/module.h"
#include "router.h"

#define NS_PING "urn:xmpp:ping"

static int on_ping(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int ping_load(struct pl_module *m, const void *conf, char **error)
{
	pl_feature(m, NS_PING);
	pl_hook(m, "iq/get/" NS_PING, on_ping, NULL, 0);
	return 0;
}

PL_MODULE(ping, .version = "0.1", .load = ping_load);
