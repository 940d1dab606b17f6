/* XEP-0082 date-times and the wall clock in unix milliseconds, shared by
 * the modules that stamp and filter messages (archives, rooms, inbox). */
#ifndef PL_DATETIME_H
#define PL_DATETIME_H

#include <stddef.h>
#include <stdint.h>

/* The wall clock (CLOCK_REALTIME) in unix milliseconds; pl_now_ms is the
 * monotonic one, for durations. */
int64_t pl_unix_ms(void);
/* "2026-11-25T10:00:00.123Z". */
void pl_format_datetime(int64_t unix_ms, char *out, size_t size);
/* A XEP-0082 date-time (UTC, optional fraction and offset) to unix
 * milliseconds; -1 if it is not one. */
int64_t pl_parse_datetime(const char *text);

#endif
