/* main() for every fuzz target in the normal build, so `make check` runs
 * the targets without libFuzzer. It replays the seed corpus (the files and
 * directories given as arguments, or else
 * $PARLEY_SRCDIR/tests/fuzz/corpus/<name> where the program fuzz_<name>
 * takes its name from argv[0]) and then a fixed number of mutations of
 * those seeds from a fixed random seed, so a failure reproduces on every
 * run and every machine. Each input is passed in a buffer of exactly its
 * size, so ASan catches a target reading one byte too far. A crash or an
 * abort() in the target stops the program before its TAP plan, which
 * tests/run-tests.sh counts as a failure. With libFuzzer
 * (-DPL_FUZZ_LIBFUZZER, see README) libFuzzer brings its own main and this
 * file compiles to nothing. */
#ifdef PL_FUZZ_LIBFUZZER
/* ISO C wants at least one declaration in a translation unit. */
typedef int pl_fuzz_replay_unused;
#else
#include "../tap.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_MUTATIONS 2000
/* Seeds are small by design; a bigger file is surely a mistake. */
#define SEED_MAX (16u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seed {
	uint8_t *data;
	size_t size;
};
static struct seed *seeds;
static size_t seed_count;

static void *xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);
	if (!p) {
		fprintf(stderr, "replay: out of memory\n");
		abort();
	}
	return p;
}

/* Copies the input into a buffer of exactly `size` bytes before the call. */
static void run_one(const uint8_t *data, size_t size)
{
	uint8_t *exact = xmalloc(size);
	if (size)
		memcpy(exact, data, size);
	LLVMFuzzerTestOneInput(exact, size);
	free(exact);
}

static void add_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	if (!f || fstat(fileno(f), &st) != 0 || st.st_size < 0 || (size_t)st.st_size > SEED_MAX) {
		ok(0, "cannot read seed %s", path);
		if (f)
			fclose(f);
		return;
	}
	size_t size = (size_t)st.st_size;
	uint8_t *data = xmalloc(size);
	size_t got = fread(data, 1, size, f);
	fclose(f);
	if (got != size) {
		free(data);
		ok(0, "short read of seed %s", path);
		return;
	}
	run_one(data, size);
	ok(1, "seed %s", path);
	struct seed *grown = realloc(seeds, (seed_count + 1) * sizeof(*seeds));
	if (!grown)
		abort();
	seeds = grown;
	seeds[seed_count++] = (struct seed){ data, size };
}

static int visible(const struct dirent *entry)
{
	return entry->d_name[0] != '.';
}

static void add_path(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		ok(0, "cannot read %s", path);
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		add_file(path);
		return;
	}
	/* Sorted, because readdir's order differs between file systems and
	 * the mutations pick seeds by index. */
	struct dirent **entries;
	int count = scandir(path, &entries, visible, alphasort);
	if (count < 0) {
		ok(0, "cannot list %s", path);
		return;
	}
	for (int i = 0; i < count; i++) {
		size_t length = strlen(path) + strlen(entries[i]->d_name) + 2;
		char *child = xmalloc(length);
		snprintf(child, length, "%s/%s", path, entries[i]->d_name);
		add_file(child);
		free(child);
		free(entries[i]);
	}
	free(entries);
}

/* xorshift64: the same mutations on every run. */
static uint64_t random_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void)
{
	random_state ^= random_state << 13;
	random_state ^= random_state >> 7;
	random_state ^= random_state << 17;
	return random_state;
}

static size_t random_below(size_t bound)
{
	return bound ? (size_t)(next_random() % bound) : 0;
}

/* Bytes that delimit things in the formats we parse (JID separators, XML
 * markup, SASL fields) or sit at UTF-8 boundaries. */
static const uint8_t interesting[] = { 0x00, 0x01, 0x7f, 0x80, 0xbf, 0xc0, 0xc3, 0xe2, 0xed,
				       0xf0, 0xf4, 0xff, '@', '/', '.', '[', ']', '<', '>',
				       '&', ';', '=', ',', '"', '\'', ' ', '\n', '-' };

/* One mutant of a random seed: a few byte-level edits, sometimes spliced
 * with a second seed. The result is malloc'd with room to grow. */
static uint8_t *mutate(size_t *size_out)
{
	const struct seed *base = &seeds[random_below(seed_count)];
	size_t capacity = base->size * 2 + 64, size = base->size;
	uint8_t *data = xmalloc(capacity);
	if (size)
		memcpy(data, base->data, size);
	unsigned edits = 1 + (unsigned)random_below(4);
	for (unsigned e = 0; e < edits; e++) {
		switch (random_below(6)) {
		case 0: /* overwrite a byte with anything */
			if (size)
				data[random_below(size)] = (uint8_t)next_random();
			break;
		case 1: /* overwrite a byte with a delimiter */
			if (size)
				data[random_below(size)] = interesting[random_below(sizeof(interesting))];
			break;
		case 2: /* insert a delimiter */
			if (size < capacity) {
				size_t at = random_below(size + 1);
				memmove(data + at + 1, data + at, size - at);
				data[at] = interesting[random_below(sizeof(interesting))];
				size++;
			}
			break;
		case 3: /* delete a run */
			if (size) {
				size_t at = random_below(size), length = 1 + random_below(size - at);
				memmove(data + at, data + at + length, size - at - length);
				size -= length;
			}
			break;
		case 4: /* append random bytes */
			for (size_t n = random_below(16); n > 0 && size < capacity; n--)
				data[size++] = (uint8_t)next_random();
			break;
		default: { /* splice: our head, another seed's tail */
			const struct seed *other = &seeds[random_below(seed_count)];
			size_t head = random_below(size + 1), from = random_below(other->size + 1);
			size_t tail = other->size - from;
			if (head + tail > capacity)
				tail = capacity - head;
			if (tail)
				memcpy(data + head, other->data + from, tail);
			size = head + tail;
			break;
		}
		}
	}
	*size_out = size;
	return data;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			add_path(argv[i]);
	} else {
		/* "fuzz_jid", or libtool's "lt-fuzz_jid", replays corpus/jid. */
		const char *name = base_name(argv[0]);
		if (strncmp(name, "lt-", 3) == 0)
			name += 3;
		if (strncmp(name, "fuzz_", 5) == 0)
			name += 5;
		const char *srcdir = getenv("PARLEY_SRCDIR");
		if (!srcdir || !*srcdir)
			srcdir = ".";
		size_t length = strlen(srcdir) + strlen(name) + sizeof("/tests/fuzz/corpus/");
		char *corpus = xmalloc(length);
		snprintf(corpus, length, "%s/tests/fuzz/corpus/%s", srcdir, name);
		add_path(corpus);
		free(corpus);
	}
	ok(seed_count > 0, "the corpus has seeds");

	/* PARLEY_FUZZ_MUTATIONS lets a developer run longer without libFuzzer. */
	unsigned long mutations = DEFAULT_MUTATIONS;
	const char *wanted = getenv("PARLEY_FUZZ_MUTATIONS");
	if (wanted && *wanted)
		mutations = strtoul(wanted, NULL, 10);
	unsigned long runs = 0;
	for (; runs < mutations && seed_count > 0; runs++) {
		size_t size;
		uint8_t *data = mutate(&size);
		run_one(data, size);
		free(data);
	}
	ok(seed_count == 0 || runs == mutations, "%lu deterministic mutations ran without a crash",
	   runs);

	for (size_t i = 0; i < seed_count; i++)
		free(seeds[i].data);
	free(seeds);
	return done_testing();
}
#endif
