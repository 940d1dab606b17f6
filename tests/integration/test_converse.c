/* Converse.js in headless Chromium against a real parleyd (issue 10's
 * browser test): Alice over WebSocket and Bob over BOSH log in, see each
 * other in their rosters and exchange messages, through the web client's
 * own user interface (tests/browser/converse.mjs drives it with
 * playwright-core). The two are made contacts first over TCP. Needs
 * node, Chromium and the npm packages converse.js and playwright-core
 * (./dev test installs them, the latter two under build/browser); skips
 * with a reason when one is missing or Chromium cannot start. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool contacts(const struct ph_server *s)
{
	struct raw_client *alice = raw_client_new_session(s->c2s_tls_port, "alice", "alice-secret", "setup");
	struct raw_client *bob = raw_client_new_session(s->c2s_tls_port, "bob", "bob-secret", "setup");
	if (!alice || !bob)
		return false;
	/* Roster pushes go to resources that asked for the roster. */
	raw_client_send(alice, "<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>");
	raw_client_send(bob, "<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>");
	free(raw_client_wait(alice, "id='r0'", 5000));
	free(raw_client_wait(bob, "id='r0'", 5000));
	raw_client_send(alice, "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
			       "<item jid='bob@localhost' name='Bob'/></query></iq>");
	raw_client_send(bob, "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
			     "<item jid='alice@localhost' name='Alice'/></query></iq>");
	free(raw_client_wait(alice, "id='r1'", 5000));
	free(raw_client_wait(bob, "id='r1'", 5000));
	raw_client_send(alice, "<presence to='bob@localhost' type='subscribe'/>");
	free(raw_client_wait(bob, "type='subscribe'", 5000));
	raw_client_send(bob, "<presence to='alice@localhost' type='subscribed'/>");
	raw_client_send(bob, "<presence to='alice@localhost' type='subscribe'/>");
	free(raw_client_wait(alice, "type='subscribe'", 5000));
	raw_client_send(alice, "<presence to='bob@localhost' type='subscribed'/>");
	bool both = raw_client_seen(alice, "subscription='both'", 5000) &&
		    raw_client_seen(bob, "subscription='both'", 5000);
	raw_client_free(alice);
	raw_client_free(bob);
	return both;
}

/* ph_run takes a path: find node on PATH. */
static bool find_node(char *out, size_t len)
{
	const char *path = getenv("PATH");
	char dirs[4096];
	snprintf(dirs, sizeof(dirs), "%s", path ? path : "/usr/bin:/bin");
	for (char *dir = strtok(dirs, ":"); dir; dir = strtok(NULL, ":")) {
		snprintf(out, len, "%s/node", dir);
		if (access(out, X_OK) == 0)
			return true;
	}
	return false;
}

int main(void)
{
	const char *modules = getenv("PARLEY_NODE_MODULES");
	char default_modules[600];
	snprintf(default_modules, sizeof(default_modules), "%s/browser/node_modules", ph_builddir());
	if (!modules)
		modules = default_modules;
	char probe[700];
	snprintf(probe, sizeof(probe), "%s/converse.js/dist/converse.min.js", modules);
	struct stat st;
	char node[600];
	if (stat(probe, &st) != 0 || !find_node(node, sizeof(node))) {
		printf("ok 1 # SKIP node or the npm packages converse.js and playwright-core are missing "
		       "(./dev test installs them under build/browser)\n1..1\n");
		return 0;
	}
	struct ph_server s;
	int http_port = ph_free_port();
	char extra[200];
	snprintf(extra, sizeof(extra), "<http address=\"127.0.0.1\" port=\"%d\"/>", http_port);
	ph_server_init(&s, extra);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	ok(contacts(&s), "alice and bob are contacts (subscription both, named Alice and Bob)");

	char script[600], port[16], shot[600];
	snprintf(script, sizeof(script), "%s/tests/browser/converse.mjs", ph_srcdir());
	snprintf(port, sizeof(port), "%d", http_port);
	snprintf(shot, sizeof(shot), "%s/converse-screenshot.png", ph_builddir());
	const char *args[] = { node, script, port, modules, shot, NULL };
	char *out = NULL, *err = NULL;
	int status = ph_run(args, NULL, &out, &err, 240000);
	int checks = 0;
	for (char *line = out ? strtok(out, "\n") : NULL; line; line = strtok(NULL, "\n")) {
		if (strncmp(line, "skip ", 5) == 0) {
			printf("ok %d # SKIP %s\n", ++tap_count, line + 5);
			checks++;
		} else if (strncmp(line, "check ok ", 9) == 0) {
			ok(1, "%s", line + 9);
			checks++;
		} else if (strncmp(line, "check fail ", 11) == 0) {
			ok(0, "%s", line + 11);
			checks++;
		} else {
			diag("%s", line);
		}
	}
	if (!ok(status == 0 && checks > 0, "the browser script ran to its end (exit %d)", status) && err)
		diag("%s", err);
	free(out);
	free(err);
	if (tap_failed) {
		char *log = ph_server_log(&s);
		for (char *line = log ? strtok(log, "\n") : NULL; line; line = strtok(NULL, "\n"))
			if (strstr(line, " http") || strstr(line, " websocket") || strstr(line, " bosh") ||
			    strstr(line, " c2s"))
				diag("%s", line);
		free(log);
	}
	is_int(ph_server_stop(&s), 0, "parleyd stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
