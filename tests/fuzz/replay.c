/* main() for the fuzz targets in the normal build: replays the seed
 * corpus (tests/fuzz/corpus/<target>/, or the files and directories given
 * as arguments) and a fixed number of deterministic mutations of it, so
 * every `make check` exercises the targets without libFuzzer. A crash or
 * an abort() in the target fails the test. With clang's libFuzzer
 * (-DPL_FUZZ_LIBFUZZER), libFuzzer provides main instead. */
#ifndef PL_FUZZ_LIBFUZZER
#include "../tap.h"

#include <dirent.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seed {
	uint8_t *data;
	size_t size;
};
static struct seed *seeds;
static size_t seed_count;

static void add_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return;
	uint8_t *data = malloc(1 << 20);
	size_t size = fread(data, 1, 1 << 20, f);
	fclose(f);
	LLVMFuzzerTestOneInput(data, size);
	ok(1, "seed %s", path);
	seeds = realloc(seeds, (seed_count + 1) * sizeof(*seeds));
	seeds[seed_count++] = (struct seed){ data, size };
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
	DIR *dir = opendir(path);
	struct dirent *entry;
	while (dir && (entry = readdir(dir))) {
		if (entry->d_name[0] == '.')
			continue;
		char child[4096];
		snprintf(child, sizeof(child), "%s/%s", path, entry->d_name);
		add_file(child);
	}
	if (dir)
		closedir(dir);
}

/* xorshift: the same mutations on every run. */
static uint64_t random_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void)
{
	random_state ^= random_state << 13;
	random_state ^= random_state >> 7;
	random_state ^= random_state << 17;
	return random_state;
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			add_path(argv[i]);
	} else {
		const char *srcdir = getenv("PARLEY_SRCDIR");
		char *self = strdup(argv[0]);
		const char *name = basename(self);
		if (strncmp(name, "fuzz_", 5) == 0)
			name += 5;
		char corpus[4096];
		snprintf(corpus, sizeof(corpus), "%s/tests/fuzz/corpus/%s", srcdir ? srcdir : ".", name);
		add_path(corpus);
		free(self);
	}
	ok(seed_count > 0, "the corpus has seeds");
	unsigned runs = 0;
	for (unsigned i = 0; i < 3000 && seed_count > 0; i++) {
		const struct seed *s = &seeds[next_random() % seed_count];
		size_t size = s->size + (next_random() % 16);
		uint8_t *data = malloc(size + 1);
		memcpy(data, s->data, s->size);
		for (size_t k = s->size; k < size; k++)
			data[k] = (uint8_t)next_random();
		unsigned flips = 1 + (unsigned)(next_random() % 4);
		for (unsigned k = 0; k < flips && size > 0; k++)
			data[next_random() % size] = (uint8_t)next_random();
		if (size > 0 && next_random() % 4 == 0)
			size = next_random() % size;
		LLVMFuzzerTestOneInput(data, size);
		free(data);
		runs++;
	}
	ok(runs > 0, "%u deterministic mutations ran without a crash", runs);
	for (size_t i = 0; i < seed_count; i++)
		free(seeds[i].data);
	free(seeds);
	return done_testing();
}
#endif
