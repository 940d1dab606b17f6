/* Named event counters (offline messages stored, streams resumed,
 * duplicates dropped...) that the core and modules bump and operators
 * read: `parleyctl status` lists them, the metrics endpoint will export
 * them. A counter is made on first use and lives until shutdown, so a
 * handle may be kept (modules keep theirs across reloads). Network
 * thread only. */
#ifndef PL_COUNTERS_H
#define PL_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

struct pl_counter;

/* Finds or makes the counter `name` (copied; lower-case-with-dashes). */
struct pl_counter *pl_counter(const char *name);
void pl_counter_add(struct pl_counter *counter, uint64_t n);

/* In the order they were made. */
size_t pl_counters_count(void);
const char *pl_counter_name_at(size_t index);
uint64_t pl_counter_value_at(size_t index);
void pl_counters_shutdown(void);

#endif
