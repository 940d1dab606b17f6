/* store-bench: committed writes per second through the store's writer
 * thread (durability fsync unless -D none), for three shapes of load:
 *   single   N one-put write sets, each submitted and waited for (one
 *            commit and its fsyncs per write: the cost of a lone client)
 *   grouped  the same N sets submitted all at once (group commit: writes
 *            that pile up during a commit share the next one)
 *   batched  N sets of 100 puts each, each submitted and waited for (what
 *            one fsync buys when a set carries many operations)
 * A tool, not a test: it prints one line per case and a final JSON line,
 * and never fails on a time.
 * usage: store-bench [-n COUNT] [-d DIR] [-D fsync|none]   (DIR defaults
 * to a temporary directory under /tmp, removed afterwards; -D none shows
 * what durability costs) */
#include "store/store.h"
#include "util.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH_OPS 100

static struct event_base *base;
static long completed;

static void on_done(void *arg, int status)
{
	if (status != 0) {
		fprintf(stderr, "store-bench: a write failed: %d\n", status);
		exit(1);
	}
	completed++;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

/* The store's completion event is activated, never added: a pending timer
 * keeps event_base_loop blocking (rather than spinning, which would steal
 * a core from the writer) until the writer wakes it. */
static void wait_for(long target)
{
	while (completed < target)
		event_base_loop(base, EVLOOP_ONCE);
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put(struct pl_store_write *w, struct pl_store_space *space, uint64_t seq)
{
	struct pl_store_key key;
	pl_store_key_init(&key);
	pl_store_key_str(&key, "bench@localhost");
	pl_store_key_u64(&key, seq);
	static const char value[] = "<message to='bench@localhost' type='chat'><body>hello, "
				    "a typical short chat message</body></message>";
	pl_store_put(w, space, key.data, key.len, value, sizeof(value) - 1);
}

static uint64_t commits(struct pl_store *store)
{
	struct pl_store_stats stats;
	pl_store_stats(store, &stats);
	return stats.commits;
}

int main(int argc, char **argv)
{
	long count = 10000;
	const char *dir = NULL;
	bool sync = true;
	int option;
	while ((option = getopt(argc, argv, "n:d:D:")) != -1) {
		if (option == 'n' && atol(optarg) > 0) {
			count = atol(optarg);
		} else if (option == 'd') {
			dir = optarg;
		} else if (option == 'D' && (strcmp(optarg, "fsync") == 0 || strcmp(optarg, "none") == 0)) {
			sync = strcmp(optarg, "fsync") == 0;
		} else {
			fprintf(stderr, "usage: store-bench [-n COUNT] [-d DIR] [-D fsync|none]\n");
			return 2;
		}
	}
	char template[] = "/tmp/parley-store-bench-XXXXXX";
	bool remove_dir = !dir;
	if (!dir && !(dir = mkdtemp(template))) {
		perror("store-bench: mkdtemp");
		return 1;
	}
	evthread_use_pthreads();
	base = event_base_new();
	struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval one_second = { 1, 0 };
	event_add(tick, &one_second);
	struct pl_store_config config = { .path = dir, .map_size = 64ull << 20,
					  .max_map_size = 8ull << 30,
					  .durability = sync ? PL_DURABILITY_FSYNC : PL_DURABILITY_NONE, .max_spaces = 8 };
	struct pl_store *store;
	char *error = NULL;
	if (pl_store_create(base, &config, &store, &error) != 0) {
		fprintf(stderr, "store-bench: %s\n", error);
		return 1;
	}
	struct pl_store_space *space = pl_store_space(store, "bench.items");
	uint64_t seq = 0;

	/* (a) one at a time */
	uint64_t c0 = commits(store);
	completed = 0;
	double t0 = now_seconds();
	for (long i = 0; i < count; i++) {
		struct pl_store_write *w = pl_store_write_begin(store);
		put(w, space, seq++);
		pl_store_write_submit(w, on_done, NULL);
		wait_for(i + 1);
	}
	double single_s = now_seconds() - t0;
	uint64_t single_commits = commits(store) - c0;
	double single = (double)count / single_s;
	printf("single:  %ld one-put sets, each waited for: %.0f committed writes/s "
	       "(%llu transactions, %.3f ms per write)\n",
	       count, single, (unsigned long long)single_commits, single_s * 1000 / (double)count);

	/* (b) all at once */
	c0 = commits(store);
	completed = 0;
	t0 = now_seconds();
	for (long i = 0; i < count; i++) {
		struct pl_store_write *w = pl_store_write_begin(store);
		put(w, space, seq++);
		pl_store_write_submit(w, on_done, NULL);
	}
	wait_for(count);
	double grouped_s = now_seconds() - t0;
	uint64_t grouped_commits = commits(store) - c0;
	double grouped = (double)count / grouped_s;
	printf("grouped: %ld one-put sets submitted at once: %.0f committed writes/s "
	       "(%llu transactions, %.1f sets each)\n",
	       count, grouped, (unsigned long long)grouped_commits,
	       (double)count / (double)(grouped_commits ? grouped_commits : 1));

	/* (c) 100 operations per set */
	c0 = commits(store);
	completed = 0;
	t0 = now_seconds();
	for (long s = 0; s < count; s++) {
		struct pl_store_write *w = pl_store_write_begin(store);
		for (int i = 0; i < BATCH_OPS; i++)
			put(w, space, seq++);
		pl_store_write_submit(w, on_done, NULL);
		wait_for(s + 1);
	}
	double batched_s = now_seconds() - t0;
	uint64_t batched_commits = commits(store) - c0;
	double batched = (double)count * BATCH_OPS / batched_s;
	printf("batched: %ld sets of %d puts, each waited for: %.0f committed writes/s "
	       "(%.0f sets/s, %llu transactions)\n",
	       count, BATCH_OPS, batched, (double)count / batched_s,
	       (unsigned long long)batched_commits);

	struct pl_store_stats stats;
	pl_store_stats(store, &stats);
	printf("{\"bench\":\"store\",\"durability\":\"%s\",\"n\":%ld,"
	       "\"single_writes_per_s\":%.0f,\"single_commits\":%llu,"
	       "\"grouped_writes_per_s\":%.0f,\"grouped_commits\":%llu,"
	       "\"batched_writes_per_s\":%.0f,\"batched_sets_per_s\":%.0f,\"batch_ops\":%d,"
	       "\"grouped_speedup\":%.1f,\"map_size\":%llu,\"used_bytes\":%llu}\n",
	       sync ? "fsync" : "none", count, single, (unsigned long long)single_commits, grouped,
	       (unsigned long long)grouped_commits, batched, (double)count / batched_s, BATCH_OPS,
	       grouped / single, (unsigned long long)stats.map_size,
	       (unsigned long long)stats.used_bytes);

	pl_store_destroy(store);
	event_free(tick);
	event_base_free(base);
	libevent_global_shutdown();
	free(error);
	if (remove_dir) {
		char *command = pl_asprintf("rm -rf '%s'", dir);
		if (system(command) != 0)
			fprintf(stderr, "store-bench: could not remove %s\n", dir);
		free(command);
	}
	return 0;
}
