/* store-bench: committed writes per second through the store's writer
 * with durability fsync, for three shapes of load:
 *   single   one write set at a time, each waited for (one fsync each)
 *   grouped  all write sets submitted at once (group commit shares fsyncs)
 *   batched  sets of 100 puts each
 * A tool, not a test: it prints figures and a final JSON line.
 * usage: store-bench [-n COUNT] [-d DIR] */
#include "store/store.h"
#include "util.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct event_base *base;
static int completed;

static void on_done(void *arg, int status)
{
	if (status != 0) {
		fprintf(stderr, "store-bench: a write failed: %d\n", status);
		exit(1);
	}
	completed++;
}

static void wait_for(int target)
{
	while (completed < target)
		event_base_loop(base, EVLOOP_ONCE);
}

static void put(struct pl_store_write *w, struct pl_store_space *space, int i)
{
	struct pl_store_key key;
	pl_store_key_init(&key);
	pl_store_key_str(&key, "bench@localhost");
	pl_store_key_u64(&key, (uint64_t)i);
	static const char value[] = "<message to='bench@localhost' type='chat'><body>hello, "
				    "a typical short chat message</body></message>";
	pl_store_put(w, space, key.data, key.len, value, sizeof(value) - 1);
}

int main(int argc, char **argv)
{
	int count = 2000;
	const char *dir = NULL;
	int option;
	while ((option = getopt(argc, argv, "n:d:")) != -1) {
		if (option == 'n')
			count = atoi(optarg);
		else if (option == 'd')
			dir = optarg;
		else {
			fprintf(stderr, "usage: store-bench [-n COUNT] [-d DIR]\n");
			return 2;
		}
	}
	char template[] = "/tmp/parley-store-bench-XXXXXX";
	bool remove_dir = !dir;
	if (!dir && !(dir = mkdtemp(template))) {
		perror("mkdtemp");
		return 1;
	}
	evthread_use_pthreads();
	base = event_base_new();
	struct pl_store_config config = { .path = dir, .map_size = 256ull << 20,
					  .max_map_size = 4ull << 30,
					  .durability = PL_DURABILITY_FSYNC, .max_spaces = 8 };
	struct pl_store *store;
	char *error = NULL;
	if (pl_store_create(base, &config, &store, &error) != 0) {
		fprintf(stderr, "store-bench: %s\n", error);
		return 1;
	}
	struct pl_store_space *space = pl_store_space(store, "bench.items");

	int single_count = count / 4 > 0 ? count / 4 : 1;
	int64_t t0 = pl_now_ms();
	for (int i = 0; i < single_count; i++) {
		struct pl_store_write *w = pl_store_write_begin(store);
		put(w, space, i);
		pl_store_write_submit(w, on_done, NULL);
		wait_for(completed + 1);
	}
	int64_t t1 = pl_now_ms();
	double single = single_count * 1000.0 / (double)(t1 - t0 ? t1 - t0 : 1);
	printf("single:  %d write sets, one at a time: %.0f committed writes/s\n", single_count,
	       single);

	struct pl_store_stats before, after;
	pl_store_stats(store, &before);
	completed = 0;
	t0 = pl_now_ms();
	for (int i = 0; i < count; i++) {
		struct pl_store_write *w = pl_store_write_begin(store);
		put(w, space, 1000000 + i);
		pl_store_write_submit(w, on_done, NULL);
	}
	wait_for(count);
	t1 = pl_now_ms();
	pl_store_stats(store, &after);
	double grouped = count * 1000.0 / (double)(t1 - t0 ? t1 - t0 : 1);
	printf("grouped: %d write sets submitted at once: %.0f committed writes/s "
	       "(%llu transactions)\n",
	       count, grouped, (unsigned long long)(after.commits - before.commits));

	completed = 0;
	int sets = count / 100 > 0 ? count / 100 : 1;
	t0 = pl_now_ms();
	for (int s = 0; s < sets; s++) {
		struct pl_store_write *w = pl_store_write_begin(store);
		for (int i = 0; i < 100; i++)
			put(w, space, 2000000 + s * 100 + i);
		pl_store_write_submit(w, on_done, NULL);
	}
	wait_for(sets);
	t1 = pl_now_ms();
	double batched = sets * 100 * 1000.0 / (double)(t1 - t0 ? t1 - t0 : 1);
	printf("batched: %d sets of 100 puts: %.0f committed writes/s\n", sets, batched);
	printf("{\"bench\":\"store\",\"durability\":\"fsync\",\"single_per_s\":%.0f,"
	       "\"grouped_per_s\":%.0f,\"batched_per_s\":%.0f,\"grouped_speedup\":%.1f}\n",
	       single, grouped, batched, grouped / single);

	pl_store_destroy(store);
	event_base_free(base);
	if (remove_dir) {
		char command[300];
		snprintf(command, sizeof(command), "rm -rf '%s'", dir);
		if (system(command) != 0)
			fprintf(stderr, "store-bench: could not remove %s\n", dir);
	}
	return 0;
}
