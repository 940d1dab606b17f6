/* Allocation, buffers, time and error helpers shared by the core. Out of
 * memory is fatal by design: a server that cannot allocate a few bytes
 * cannot make progress, and call sites stay readable. */
#include "util.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/rand.h>

static _Noreturn void out_of_memory(size_t size)
{
	pl_fatal("out of memory allocating %zu bytes", size);
}

void *pl_malloc(size_t size)
{
	void *p = malloc(size ? size : 1);
	if (!p)
		out_of_memory(size);
	return p;
}

void *pl_calloc(size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size ? size : 1);
	if (!p)
		out_of_memory(count * size);
	return p;
}

void *pl_realloc(void *ptr, size_t size)
{
	void *p = realloc(ptr, size ? size : 1);
	if (!p)
		out_of_memory(size);
	return p;
}

void pl_grow(void **array, size_t *capacity, size_t need, size_t size)
{
	if (need <= *capacity)
		return;
	size_t cap = *capacity ? *capacity : 4;
	while (cap < need)
		cap *= 2;
	*array = pl_realloc(*array, cap * size);
	*capacity = cap;
}

char *pl_strdup(const char *s)
{
	return pl_strndup(s, strlen(s));
}

char *pl_strndup(const char *s, size_t n)
{
	char *p = pl_malloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *pl_vasprintf(const char *fmt, va_list ap)
{
	va_list copy;
	va_copy(copy, ap);
	int n = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (n < 0)
		pl_fatal("bad format string \"%s\"", fmt);
	char *p = pl_malloc((size_t)n + 1);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	return p;
}

char *pl_asprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *p = pl_vasprintf(fmt, ap);
	va_end(ap);
	return p;
}

void pl_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = pl_vasprintf(fmt, ap);
	va_end(ap);
	pl_log(PL_LOG_ERROR, "fatal", "%s", msg);
	free(msg);
	abort();
}

void pl_buf_append(struct pl_buf *b, const void *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + len + 1)
			cap *= 2;
		b->data = pl_realloc(b->data, cap);
		b->cap = cap;
	}
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void pl_buf_puts(struct pl_buf *b, const char *s)
{
	pl_buf_append(b, s, strlen(s));
}

void pl_buf_printf(struct pl_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = pl_vasprintf(fmt, ap);
	va_end(ap);
	pl_buf_puts(b, s);
	free(s);
}

void pl_buf_reset(struct pl_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void pl_buf_free(struct pl_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

char *pl_buf_take(struct pl_buf *b)
{
	char *p = b->data ? b->data : pl_strdup("");
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

uint32_t pl_hash_string(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

int64_t pl_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pl_random_bytes(void *buf, size_t len)
{
	if (RAND_bytes(buf, (int)len) != 1)
		pl_fatal("the random number generator failed");
}

int pl_error(char **error, int code, const char *fmt, ...)
{
	if (error) {
		va_list ap;
		va_start(ap, fmt);
		free(*error);
		*error = pl_vasprintf(fmt, ap);
		va_end(ap);
	}
	return code;
}

int pl_mkdir_p(const char *path)
{
	char *copy = pl_strdup(path);
	int rc = 0;
	for (char *p = copy + 1; ; p++) {
		if (*p == '/' || *p == '\0') {
			char saved = *p;
			*p = '\0';
			if (mkdir(copy, 0700) != 0 && errno != EEXIST) {
				rc = -errno;
				break;
			}
			*p = saved;
			if (saved == '\0')
				break;
		}
	}
	free(copy);
	return rc;
}
