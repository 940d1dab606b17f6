/* A smoke run of the load tool (tests/bench/parley-load) against a real
 * parleyd: a few seconds, a few users, every phase Parley serves. It
 * checks that the tool and the server agree (everyone registers and logs
 * in, every message is delivered, the offline queue drains), never how
 * fast: benchmarks print figures, tests do not judge them. */
#include "harness.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The number after "key": in the tool's JSON line, or -1. */
static double field(const char *json, const char *key)
{
	char needle[64];
	snprintf(needle, sizeof(needle), "\"%s\":", key);
	const char *at = json ? strstr(json, needle) : NULL;
	return at ? atof(at + strlen(needle)) : -1;
}

static char *run_phase(const struct ph_server *s, const char *const *phase_args)
{
	char tool[512], port[16];
	snprintf(tool, sizeof(tool), "%s/tests/bench/parley-load", ph_builddir());
	snprintf(port, sizeof(port), "%d", s->c2s_port);
	const char *argv[32] = { tool, "--host", "127.0.0.1", "--port", port, "--domain",
				 "localhost", "--password", "smoke-secret", "--tls", "starttls",
				 "--label", "parley", "--timeout", "30" };
	size_t n = 15;
	for (size_t i = 0; phase_args[i] && n < 31; i++)
		argv[n++] = phase_args[i];
	argv[n] = NULL;
	char *out = NULL, *err = NULL;
	int status = ph_run(argv, NULL, &out, &err, 60000);
	if (status != 0)
		diag("parley-load exited with %d: %s", status, err ? err : "");
	free(err);
	diag("%s", out ? out : "(no output)");
	return out;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, NULL, NULL);
	char *c2s = ph_config_with_attributes(config, "c2s",
					      "allow-plaintext-loopback=\"true\" max-stanzas-per-second=\"0\"");
	char *patched = ph_config_with_attributes(c2s, "module name=\"register\"",
						  "per-address-per-hour=\"1000\"");
	/* The standard config already sets per-address-per-hour; the first
	 * occurrence wins in the patched tag only if we drop the old one. */
	char *old = strstr(patched, "per-address-per-hour=\"3\"");
	if (old)
		memset(old, ' ', strlen("per-address-per-hour=\"3\""));
	ph_server_write_config(&s, patched);
	free(config);
	free(c2s);
	free(patched);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();

	const char *reg[] = { "--phase", "register", "--users", "20", "--user-prefix", "smoke", NULL };
	char *json = run_phase(&s, reg);
	is_int(field(json, "ok"), 20, "register: 20 accounts created in-band");
	free(json);
	const char *login[] = { "--phase", "login", "--users", "20", "--user-prefix", "smoke", NULL };
	json = run_phase(&s, login);
	is_int(field(json, "ok"), 20, "login: 20 sessions over STARTTLS with SCRAM");
	ok(field(json, "per_second") > 0, "a login rate is reported");
	free(json);
	const char *msg[] = { "--phase", "msg", "--users", "10", "--pairs", "5", "--rate", "200",
			      "--duration", "1", "--user-prefix", "smoke", NULL };
	json = run_phase(&s, msg);
	double sent = field(json, "sent"), delivered = field(json, "delivered");
	ok(sent > 0 && delivered == sent, "msg: every message sent is delivered (%g of %g)", delivered,
	   sent);
	ok(field(json, "p99") >= 0, "latency percentiles are reported");
	free(json);
	const char *offline[] = { "--phase", "offline", "--messages", "50", "--first-user", "10",
				  "--user-prefix", "smoke", NULL };
	json = run_phase(&s, offline);
	is_int(field(json, "received"), 50, "offline: the 50 queued messages drain at login");
	free(json);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
