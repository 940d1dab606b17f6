/* mod_time: XEP-0202 Entity Time. The server answers with UTC and a zero
 * offset: the machine's local zone is nobody's business and clients only
 * need the clock. */
#include "parley/module.h"
#include "router.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define NS_TIME "urn:xmpp:time"

static int on_time(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	struct timeval now;
	gettimeofday(&now, NULL);
	struct tm utc;
	gmtime_r(&now.tv_sec, &utc);
	char stamp[40];
	size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
	snprintf(stamp + n, sizeof(stamp) - n, ".%03dZ", (int)(now.tv_usec / 1000));
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *time_node = pl_xnode_add_element(reply, "time", NS_TIME);
	pl_xnode_add_text(pl_xnode_add_element(time_node, "tzo", NULL), "+00:00", 6);
	pl_xnode_add_text(pl_xnode_add_element(time_node, "utc", NULL), stamp, strlen(stamp));
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int time_load(struct pl_module *m, const void *conf, char **error)
{
	pl_feature(m, NS_TIME);
	pl_hook(m, "iq/get/" NS_TIME, on_time, NULL, 0);
	return 0;
}

PL_MODULE(time, .version = "0.1", .load = time_load);
