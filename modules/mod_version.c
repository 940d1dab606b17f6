/* mod_version: XEP-0092 Software Version. It declares the feature and the
 * reply it will give (name, version and, unless hidden, the OS); the IQ
 * handler attaches to "iq-get/jabber:iq:version:query" once client streams
 * deliver stanzas. Until then it proves the module path: options, load,
 * features, unload. */
#include "parley/module.h"

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
	pl_module_log(m, 3, "will answer as %s%s%s", conf->name, os_description[0] ? " on " : "",
		      os_description);
	return 0;
}

PL_MODULE(version, .version = "0.1", .options = version_options,
	  .conf_size = sizeof(struct version_conf), .check = version_check,
	  .load = version_load);
