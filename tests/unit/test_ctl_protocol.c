/* The control socket's field encoding: any byte but NUL survives a round
 * trip, fields stay separated, malformed escapes are refused. */
#include "ctl/protocol.h"
#include "../tap.h"

#include <string.h>

static void round_trip(const char *const *fields, int count, const char *label)
{
	struct pl_buf line = { 0 };
	for (int i = 0; i < count; i++) {
		if (i)
			pl_buf_puts(&line, " ");
		pl_ctl_encode_field(&line, fields[i]);
	}
	ok(strchr(line.data, '\n') == NULL, "%s: the encoded line has no newline", label);
	char **decoded;
	int n = pl_ctl_split(line.data, line.len, &decoded);
	is_int(n, count, "%s: field count", label);
	for (int i = 0; i < n && i < count; i++)
		is_str(decoded[i], fields[i], "%s: field %d", label, i);
	if (n > 0)
		pl_ctl_free_fields(decoded, n);
	pl_buf_free(&line);
}

static void refused(const char *line, const char *label)
{
	char **fields;
	is_int(pl_ctl_split(line, strlen(line), &fields), -22, "%s is refused", label);
}

int main(void)
{
	const char *simple[] = { "adduser", "alice@localhost", "secret" };
	round_trip(simple, 3, "plain fields");
	const char *tricky[] = { "passwd", "bob@localhost", "pass word\nwith %41 and\ttab\r" };
	round_trip(tricky, 3, "spaces, newlines and percent signs");
	const char *unicode[] = { "adduser", "\xcf\x80@localhost", "p\xc3\xa4ss\xe2\x99\x9a" };
	round_trip(unicode, 3, "UTF-8");
	const char *empty[] = { "adduser", "", "x" };
	round_trip(empty, 3, "an empty field");

	char **fields;
	is_int(pl_ctl_split("status", 6, &fields), 1, "a single field");
	pl_ctl_free_fields(fields, 1);
	is_int(pl_ctl_split("  status   x ", 13, &fields), 2, "extra spaces are separators");
	pl_ctl_free_fields(fields, 2);
	is_int(pl_ctl_split("", 0, &fields), 0, "an empty line has no field");
	refused("a%zz", "a bad hex escape");
	refused("a%4", "a truncated escape");
	refused("a%00b", "an encoded NUL");
	refused("a\rb", "a raw carriage return");
	return done_testing();
}
