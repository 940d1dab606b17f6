/* Metrics with a real parleyd: GET /metrics answers OpenMetrics text
 * (sessions per transport, the named counters as *_total, the store, the
 * process) ending with "# EOF", the values follow what happens (a login,
 * an archived message), and other methods are refused. */
#include "harness.h"
#include "http_client.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct http_response scrape(int port)
{
	struct http_client *c = http_client_connect(port, false);
	http_client_sendf(c, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
	struct http_response r = http_client_read(c, 5000);
	http_client_free(c);
	return r;
}

static long long value_of(const char *body, const char *line_start)
{
	const char *p = body ? strstr(body, line_start) : NULL;
	return p ? atoll(p + strlen(line_start)) : -1;
}

int main(void)
{
	struct ph_server s;
	int port = ph_free_port();
	char extra[200];
	snprintf(extra, sizeof(extra), "<http address=\"127.0.0.1\" port=\"%d\" tls-port=\"0\"/>", port);
	ph_server_init(&s, extra);
	char *config = ph_standard_config(&s, NULL, extra);
	const char *anchor = "    <module name=\"version\"/>\n";
	char *at = strstr(config, anchor);
	char *patched = malloc(strlen(config) + 64);
	memcpy(patched, config, (size_t)(at - config));
	strcpy(patched + (at - config), "    <module name=\"metrics\"/>\n");
	strcat(patched, at);
	ph_server_write_config(&s, patched);
	free(patched);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with metrics"))
		return done_testing();
	struct http_response r = scrape(port);
	is_int(r.status, 200, "GET /metrics answers 200");
	has_str(r.head, "application/openmetrics-text; version=1.0.0", "in OpenMetrics text");
	has_str(r.body, "# TYPE parley_sessions gauge", "with typed metrics");
	ok(r.body && strlen(r.body) > 6 && strcmp(r.body + strlen(r.body) - 6, "# EOF\n") == 0,
	   "ending with # EOF");
	has_str(r.body, "parley_store_commits_total ", "the store's commits");
	has_str(r.body, "parley_process_resident_memory_bytes ", "and the process's memory");
	long long before = value_of(r.body, "parley_archived_messages_total ");
	free(r.head);
	free(r.body);

	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	struct raw_client *alice = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "a");
	struct raw_client *bob = raw_client_new_session(s.c2s_tls_port, "bob", "bob-secret", "b");
	raw_client_send(bob, "<presence/>");
	raw_client_send(alice, "<message to='bob@localhost' type='chat'><body>counted</body></message>");
	ok(raw_client_seen(bob, "counted", 5000), "alice writes to bob");
	r = scrape(port);
	is_int((int)value_of(r.body, "parley_sessions{transport=\"tcp\",state=\"live\"} "), 2,
	       "two live TCP sessions are counted");
	long long after = value_of(r.body, "parley_archived_messages_total ");
	ok(after >= (before < 0 ? 0 : before) + 2, "the message was archived twice (sender and recipient): %lld -> %lld",
	   before, after);
	free(r.head);
	free(r.body);
	struct http_client *c = http_client_connect(port, false);
	http_client_sendf(c, "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
	r = http_client_read(c, 5000);
	is_int(r.status, 405, "POST is not allowed");
	free(r.head);
	free(r.body);
	http_client_free(c);
	raw_client_free(alice);
	raw_client_free(bob);
	ok(ph_server_stop(&s) == 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
