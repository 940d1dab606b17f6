/* mod_version: XEP-0092 Software Version. Answers a version query sent
 * to the server with the configured name, Parley's version and, only when
 * show-os is on, the operating system (off by default: it helps
 * attackers pick exploits). */
#include "autoconfig.h"
#include "parley/module.h"
#include "router.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#define NS_VERSION "jabber:iq:version"

struct version_conf {
	char *name;
	bool show_os;
};

static const struct pl_option version_options[] = {
	{ "name", PL_OPT_STRING, "Parley", 0, 0, NULL, offsetof(struct version_conf, name),
	  "software name in the reply" },
	{ "show-os", PL_OPT_BOOL, "false", 0, 0, NULL, offsetof(struct version_conf, show_os),
	  "include the operating system (off: it helps attackers)" },
	{ NULL }
};

/* The OS string, computed once at load: uname does not change. */
static char os_description[300];

static int version_check(const void *conf_ptr, char **error)
{
	const struct version_conf *conf = conf_ptr;
	if (!conf->name || !*conf->name || strlen(conf->name) > 256) {
		*error = strdup("name must be 1 to 256 characters");
		return -1;
	}
	return 0;
}

static char *reported_name;

static int on_version_query(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_VERSION);
	struct pl_xnode *name = pl_xnode_add_element(query, "name", NULL);
	pl_xnode_add_text(name, reported_name, strlen(reported_name));
	struct pl_xnode *version = pl_xnode_add_element(query, "version", NULL);
	pl_xnode_add_text(version, PACKAGE_VERSION, strlen(PACKAGE_VERSION));
	if (os_description[0]) {
		struct pl_xnode *os = pl_xnode_add_element(query, "os", NULL);
		pl_xnode_add_text(os, os_description, strlen(os_description));
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static void version_unload(struct pl_module *m)
{
	free(reported_name);
	reported_name = NULL;
}

static int version_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	const struct version_conf *conf = conf_ptr;
	os_description[0] = '\0';
	if (conf->show_os) {
		struct utsname uts;
		if (uname(&uts) == 0)
			snprintf(os_description, sizeof(os_description), "%s %s", uts.sysname,
				 uts.release);
	}
	pl_feature(m, NS_VERSION);
	reported_name = strdup(conf->name);
	pl_hook(m, "iq/get/" NS_VERSION, on_version_query, NULL, 0);
	pl_module_log(m, 3, "will answer as %s%s%s", conf->name, os_description[0] ? " on " : "",
		      os_description);
	return 0;
}

PL_MODULE(version, .version = "0.1", .options = version_options,
	  .conf_size = sizeof(struct version_conf), .check = version_check,
	  .load = version_load, .unload = version_unload);
