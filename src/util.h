/* Small helpers every part of the core uses: allocation that aborts on
 * out-of-memory (so call sites carry no NULL checks, as OpenSMTPD does),
 * a growable byte buffer, monotonic time, and fatal errors for broken
 * invariants. Nothing here touches the network or the store. */
#ifndef PL_UTIL_H
#define PL_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define PL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#if defined(__GNUC__)
#define PL_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define PL_EXPORT __attribute__((visibility("default")))
#else
#define PL_PRINTF(fmt, args)
#define PL_EXPORT
#endif

void *pl_malloc(size_t size);
void *pl_calloc(size_t count, size_t size);
void *pl_realloc(void *ptr, size_t size);
/* Grows *array to hold at least `need` elements of `size` bytes; *capacity
 * is updated. Doubling keeps appends amortised O(1). */
void pl_grow(void **array, size_t *capacity, size_t need, size_t size);
char *pl_strdup(const char *s);
char *pl_strndup(const char *s, size_t n);
char *pl_asprintf(const char *fmt, ...) PL_PRINTF(1, 2);
char *pl_vasprintf(const char *fmt, va_list ap);

/* Logs at error level and aborts: only for broken invariants. */
_Noreturn void pl_fatal(const char *fmt, ...) PL_PRINTF(1, 2);

/* A growable byte buffer; data is always NUL-terminated for convenience.
 * The buffer owns data; pl_buf_free releases it. */
struct pl_buf {
	char *data;
	size_t len;
	size_t cap;
};
void pl_buf_append(struct pl_buf *b, const void *data, size_t len);
void pl_buf_puts(struct pl_buf *b, const char *s);
void pl_buf_printf(struct pl_buf *b, const char *fmt, ...) PL_PRINTF(2, 3);
void pl_buf_reset(struct pl_buf *b);
void pl_buf_free(struct pl_buf *b);
/* Hands the data to the caller (who frees it) and empties the buffer. */
char *pl_buf_take(struct pl_buf *b);

/* FNV-1a of a NUL-terminated string, for the small hash tables of the
 * core (events, users, addresses). */
uint32_t pl_hash_string(const char *s);

/* Milliseconds from a monotonic clock, for timeouts and durations. */
int64_t pl_now_ms(void);

/* Fills buf with cryptographically random bytes (OpenSSL); aborts on failure. */
void pl_random_bytes(void *buf, size_t len);

/* Sets *error (if error is not NULL) to a newly allocated message; returns
 * `code` so callers can write `return pl_error(error, -EINVAL, "...")`. */
int pl_error(char **error, int code, const char *fmt, ...) PL_PRINTF(3, 4);

/* Creates a directory and its parents (mode 0700 for the ones it makes). */
int pl_mkdir_p(const char *path);

#endif
