/* Levelled logging: one line per event, to stderr, syslog or a file,
 * tagged with the component (core part or module name) and, where there is
 * one, the session id. The level is checked before anything is formatted,
 * so debug lines cost nothing when off. Safe to call from any thread: each
 * line is written with a single write(2). */
#ifndef PL_LOG_H
#define PL_LOG_H

#include "util.h"

enum pl_log_level {
	PL_LOG_ERROR = 0,
	PL_LOG_WARN = 1,
	PL_LOG_INFO = 2,
	PL_LOG_DEBUG = 3,
};

extern enum pl_log_level pl_log_threshold;

/* target: "stderr", "syslog", or a file path (appended to, reopened on
 * SIGHUP by pl_log_reopen). Returns 0 or a negative errno with *error. */
int pl_log_open(const char *target, enum pl_log_level level, char **error);
void pl_log_set_level(enum pl_log_level level);
int pl_log_reopen(char **error);
void pl_log_close(void);
/* "error", "warn", "info", "debug" -> level; -1 when unknown. */
int pl_log_level_parse(const char *name);
const char *pl_log_level_name(enum pl_log_level level);

void pl_log_write(enum pl_log_level level, const char *component,
		  const char *session, const char *fmt, ...) PL_PRINTF(4, 5);

#define pl_log(level, component, ...)                                        \
	do {                                                                 \
		if ((level) <= pl_log_threshold)                             \
			pl_log_write((level), (component), NULL, __VA_ARGS__); \
	} while (0)

#define pl_log_session(level, component, session, ...)                           \
	do {                                                                     \
		if ((level) <= pl_log_threshold)                                 \
			pl_log_write((level), (component), (session), __VA_ARGS__); \
	} while (0)

#endif
