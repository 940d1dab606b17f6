/* mam-bench: archive write throughput and archive query latency through
 * a real parleyd. It fills one conversation with N messages (each archived
 * twice, once per party; durability fsync unless -D none), then times Q
 * queries for a page of 50 at random places of the archive (after-id) and
 * for the last page (before), and prints one JSON line. A tool, not a
 * test: it never fails on a figure.
 * usage: mam-bench [-n MESSAGES] [-q QUERIES] [-D fsync|none]
 * (run from the build directory, or set PARLEY_BUILDDIR) */
#include "../integration/harness.h"
#include "../integration/raw_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void add_user(const struct ph_server *s, const char *user)
{
	char jid[64], password[64];
	snprintf(jid, sizeof(jid), "%s@localhost", user);
	snprintf(password, sizeof(password), "%s-secret\n", user);
	const char *args[] = { "adduser", jid, NULL };
	ph_ctl(s, args, password, NULL, NULL);
}

/* One query; returns the number of results, or -1. */
static int timed_query(struct raw_client *c, const char *rsm, double *seconds)
{
	static int n;
	char id[32], needle[64];
	snprintf(id, sizeof(id), "b%d", ++n);
	double start = now_s();
	raw_client_send(c, "<iq type='set' id='%s'><query xmlns='urn:xmpp:mam:2' queryid='%s'>"
			   "<set xmlns='http://jabber.org/protocol/rsm'>%s</set></query></iq>",
			id, id, rsm);
	/* Not just id='...': queryid='...' of each result contains that. */
	snprintf(needle, sizeof(needle), "<iq type='result' id='%s'", id);
	char *fin = raw_client_wait(c, needle, 60000);
	*seconds = now_s() - start;
	if (!fin)
		return -1;
	free(fin);
	snprintf(needle, sizeof(needle), "queryid='%s'", id);
	int count = 0;
	char *r;
	while ((r = raw_client_wait(c, needle, 0)) != NULL) {
		count++;
		free(r);
	}
	return count;
}

int main(int argc, char **argv)
{
	long messages = 100000, queries = 200;
	const char *durability = "fsync";
	int option;
	while ((option = getopt(argc, argv, "n:q:D:")) != -1) {
		if (option == 'n' && atol(optarg) > 0)
			messages = atol(optarg);
		else if (option == 'q' && atol(optarg) > 0)
			queries = atol(optarg);
		else if (option == 'D' && (!strcmp(optarg, "fsync") || !strcmp(optarg, "none")))
			durability = optarg;
		else {
			fprintf(stderr, "usage: mam-bench [-n MESSAGES] [-q QUERIES] [-D fsync|none]\n");
			return 2;
		}
	}
	struct ph_server s;
	if (ph_server_init(&s, NULL) != 0)
		return 1;
	char storage[64];
	snprintf(storage, sizeof(storage), "durability=\"%s\"", durability);
	char *config = ph_standard_config(&s, storage, NULL);
	char *patched = ph_config_with_attributes(
		config, "c2s", "max-stanzas-per-second=\"0\" max-bytes-per-second=\"0\"");
	ph_server_write_config(&s, patched);
	free(patched);
	free(config);
	if (ph_server_start(&s, NULL) != 0) {
		fprintf(stderr, "mam-bench: parleyd did not start\n");
		return 1;
	}
	add_user(&s, "writer");
	add_user(&s, "reader");
	struct raw_client *writer = raw_client_new_session(s.c2s_tls_port, "writer", "writer-secret", "w");
	struct raw_client *reader = raw_client_new_session(s.c2s_tls_port, "reader", "reader-secret", "r");
	if (!writer || !reader) {
		fprintf(stderr, "mam-bench: cannot log in\n");
		ph_server_kill(&s);
		return 1;
	}
	/* The reader is not available (no presence): messages go to its
	 * offline queue and archive only, so this measures the archive path. */
	double start = now_s();
	for (long i = 1; i <= messages; i++) {
		raw_client_send(writer, "<message to='reader@localhost' type='chat'>"
					"<body>bench message %ld with a little text in it</body></message>", i);
		if (i % 5000 == 0) {
			raw_client_sync(writer);
			raw_client_discard(writer);
			fprintf(stderr, "\r%ld", i);
		}
	}
	raw_client_sync(writer);
	double fill = now_s() - start;
	fprintf(stderr, "\rwrote %ld messages in %.1f s\n", messages, fill);

	double *latency = calloc((size_t)queries, sizeof(double));
	srand(42);
	long ok = 0;
	for (long q = 0; q < queries; q++) {
		char rsm[96];
		long after = 1 + rand() % (messages > 60 ? messages - 60 : 1);
		snprintf(rsm, sizeof(rsm), "<max>50</max><after>%ld</after>", after);
		ok += timed_query(reader, rsm, &latency[q]) == 50;
	}
	qsort(latency, (size_t)queries, sizeof(double), compare_doubles);
	double last_page;
	int last_count = timed_query(reader, "<max>50</max><before/>", &last_page);
	long rss = -1;
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)s.pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			rss = atol(line + 6);
	if (f)
		fclose(f);
	printf("{\"bench\":\"mam\",\"durability\":\"%s\",\"messages\":%ld,\"archived_records\":%ld,"
	       "\"fill_seconds\":%.2f,\"messages_per_s\":%.0f,\"queries\":%ld,\"full_pages\":%ld,"
	       "\"page50_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"max\":%.2f},"
	       "\"last_page_ms\":%.2f,\"last_page_results\":%d,\"server_rss_kb\":%ld}\n",
	       durability, messages, messages * 2, fill, messages / fill, queries, ok,
	       latency[queries / 2] * 1000, latency[queries * 9 / 10] * 1000,
	       latency[queries * 99 / 100] * 1000, latency[queries - 1] * 1000, last_page * 1000,
	       last_count, rss);
	free(latency);
	raw_client_free(writer);
	raw_client_free(reader);
	ph_server_stop(&s);
	ph_server_cleanup(&s);
	return 0;
}
