/* The log sink. Lines look like
 *   2026-11-25T03:20:00.123Z info  store: committed 12 writes in 1 transaction
 *   2026-11-25T03:20:00.124Z warn  c2s[7f3a]: authentication failed for ...
 * Lines are assembled in a stack buffer and written with one write(2) so
 * that the store thread and the network thread never interleave. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum pl_log_level pl_log_threshold = PL_LOG_INFO;

static enum { SINK_STDERR, SINK_SYSLOG, SINK_FILE } sink = SINK_STDERR;
static int log_fd = 2;
static char *log_path;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int pl_log_level_parse(const char *name)
{
	for (size_t i = 0; i < PL_ARRAY_LEN(level_names); i++)
		if (strcmp(name, level_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *pl_log_level_name(enum pl_log_level level)
{
	return level_names[level];
}

void pl_log_set_level(enum pl_log_level level)
{
	pl_log_threshold = level;
}

static int open_file(const char *path, char **error)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return pl_error(error, -errno, "cannot open log file %s: %s",
				path, strerror(errno));
	return fd;
}

int pl_log_open(const char *target, enum pl_log_level level, char **error)
{
	int new_fd = -1;
	if (strcmp(target, "stderr") != 0 && strcmp(target, "syslog") != 0) {
		new_fd = open_file(target, error);
		if (new_fd < 0)
			return new_fd;
	}
	pl_log_close();
	if (strcmp(target, "stderr") == 0) {
		sink = SINK_STDERR;
		log_fd = 2;
	} else if (strcmp(target, "syslog") == 0) {
		sink = SINK_SYSLOG;
		openlog("parleyd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	} else {
		sink = SINK_FILE;
		log_fd = new_fd;
		log_path = pl_strdup(target);
	}
	pl_log_threshold = level;
	return 0;
}

int pl_log_reopen(char **error)
{
	if (sink != SINK_FILE)
		return 0;
	int fd = open_file(log_path, error);
	if (fd < 0)
		return fd;
	dup2(fd, log_fd);
	close(fd);
	return 0;
}

void pl_log_close(void)
{
	if (sink == SINK_FILE) {
		close(log_fd);
		free(log_path);
		log_path = NULL;
	} else if (sink == SINK_SYSLOG) {
		closelog();
	}
	sink = SINK_STDERR;
	log_fd = 2;
}

void pl_log_write(enum pl_log_level level, const char *component,
		  const char *session, const char *fmt, ...)
{
	char line[2048];
	size_t n = 0;

	if (sink != SINK_SYSLOG) {
		struct timeval tv;
		struct tm tm;
		gettimeofday(&tv, NULL);
		gmtime_r(&tv.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03dZ %-5s ",
				      (int)(tv.tv_usec / 1000), level_names[level]);
	}
	int w;
	if (session)
		w = snprintf(line + n, sizeof(line) - n, "%s[%s]: ", component, session);
	else
		w = snprintf(line + n, sizeof(line) - n, "%s: ", component);
	if (w > 0)
		n = n + (size_t)w < sizeof(line) ? n + (size_t)w : sizeof(line) - 1;

	va_list ap;
	va_start(ap, fmt);
	w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (w > 0)
		n = n + (size_t)w < sizeof(line) - 1 ? n + (size_t)w : sizeof(line) - 2;
	/* One event, one line: a newline inside a message would let a client
	 * forge log lines. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';

	if (sink == SINK_SYSLOG) {
		static const int priorities[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
		line[n] = '\0';
		syslog(priorities[level], "%s", line);
		return;
	}
	line[n++] = '\n';
	ssize_t ignored = write(log_fd, line, n);
	(void)ignored;
}
