/* Event counters (counters.h): a small array of named uint64 values,
 * looked up by name only when a handle is made, so bumping one costs an
 * increment. Handles point into separately allocated entries, so they stay
 * valid when the array grows. */
#include "counters.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct pl_counter {
	char *name;       /* owned */
	uint64_t value;
};

static struct pl_counter **counters;  /* owned, with the entries */
static size_t count, capacity;

struct pl_counter *pl_counter(const char *name)
{
	for (size_t i = 0; i < count; i++)
		if (strcmp(counters[i]->name, name) == 0)
			return counters[i];
	pl_grow((void **)&counters, &capacity, count + 1, sizeof(*counters));
	struct pl_counter *c = pl_calloc(1, sizeof(*c));
	c->name = pl_strdup(name);
	counters[count++] = c;
	return c;
}

void pl_counter_add(struct pl_counter *counter, uint64_t n)
{
	if (counter)
		counter->value += n;
}

size_t pl_counters_count(void)
{
	return count;
}

const char *pl_counter_name_at(size_t index)
{
	return index < count ? counters[index]->name : NULL;
}

uint64_t pl_counter_value_at(size_t index)
{
	return index < count ? counters[index]->value : 0;
}

void pl_counters_shutdown(void)
{
	for (size_t i = 0; i < count; i++) {
		free(counters[i]->name);
		free(counters[i]);
	}
	free(counters);
	counters = NULL;
	count = capacity = 0;
}
