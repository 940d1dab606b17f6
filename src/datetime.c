/* XEP-0082 date-times: formatting in UTC with milliseconds, parsing with
 * an optional fraction and time-zone offset, and the wall clock. */
#include "datetime.h"

#include <stdio.h>
#include <time.h>

int64_t pl_unix_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pl_format_datetime(int64_t unix_ms, char *out, size_t size)
{
	time_t seconds = (time_t)(unix_ms / 1000);
	struct tm utc;
	gmtime_r(&seconds, &utc);
	char base[24];
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &utc);
	snprintf(out, size, "%.20s.%03dZ", base, (int)(unix_ms % 1000));
}

int64_t pl_parse_datetime(const char *text)
{
	struct tm tm = { 0 };
	int fraction_ms = 0;
	const char *rest = text ? strptime(text, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	if (!rest)
		return -1;
	if (*rest == '.') {
		rest++;
		int digits = 0;
		while (*rest >= '0' && *rest <= '9') {
			if (digits < 3)
				fraction_ms = fraction_ms * 10 + (*rest - '0');
			digits++;
			rest++;
		}
		for (; digits < 3; digits++)
			fraction_ms *= 10;
	}
	int64_t seconds = (int64_t)timegm(&tm);
	if (*rest == '+' || *rest == '-') {
		int hours = 0, minutes = 0;
		if (sscanf(rest + 1, "%d:%d", &hours, &minutes) != 2)
			return -1;
		int64_t offset = (int64_t)hours * 3600 + minutes * 60;
		seconds += *rest == '+' ? -offset : offset;
	} else if (*rest != 'Z') {
		return -1;
	}
	return seconds * 1000 + fraction_ms;
}
