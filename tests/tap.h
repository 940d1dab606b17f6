/* A tiny TAP producer for the unit and integration tests: ok(), is_int(),
 * is_str(), done_testing(). tests/run-tests.sh counts the "ok"/"not ok"
 * lines of every test program and prints the final "N passed, N failed". */
#ifndef PL_TAP_H
#define PL_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_count;
static int tap_failed;

__attribute__((format(printf, 2, 3), unused))
static int ok(int condition, const char *fmt, ...)
{
	va_list ap;
	tap_count++;
	if (!condition)
		tap_failed++;
	printf("%sok %d - ", condition ? "" : "not ", tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return condition;
}

#define is_int(got, expected, ...)                                                  \
	do {                                                                        \
		long long tap_got_ = (long long)(got), tap_exp_ = (long long)(expected); \
		if (!ok(tap_got_ == tap_exp_, __VA_ARGS__))                         \
			printf("#   got %lld, expected %lld\n", tap_got_, tap_exp_);   \
	} while (0)

#define is_str(got, expected, ...)                                                   \
	do {                                                                         \
		const char *tap_got_ = (got), *tap_exp_ = (expected);                \
		int tap_same_ = (tap_got_ == NULL && tap_exp_ == NULL) ||            \
				(tap_got_ && tap_exp_ && strcmp(tap_got_, tap_exp_) == 0); \
		if (!ok(tap_same_, __VA_ARGS__))                                     \
			printf("#   got \"%s\", expected \"%s\"\n",                     \
			       tap_got_ ? tap_got_ : "(null)", tap_exp_ ? tap_exp_ : "(null)"); \
	} while (0)

/* Like ok() but also requires `needle` inside `haystack`. */
#define has_str(haystack, needle, ...)                                              \
	do {                                                                        \
		const char *tap_h_ = (haystack), *tap_n_ = (needle);                \
		if (!ok(tap_h_ && strstr(tap_h_, tap_n_) != NULL, __VA_ARGS__))     \
			printf("#   \"%s\" does not contain \"%s\"\n",                 \
			       tap_h_ ? tap_h_ : "(null)", tap_n_);                     \
	} while (0)

__attribute__((format(printf, 1, 2), unused))
static void diag(const char *fmt, ...)
{
	va_list ap;
	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

__attribute__((unused))
static int done_testing(void)
{
	printf("1..%d\n", tap_count);
	return tap_failed ? 1 : 0;
}

#endif
