/* The control socket's field encoding: any byte but NUL survives a round
 * trip, fields stay separated, the encoded line never holds a raw space
 * inside a field or a line end, and malformed escapes are refused rather
 * than guessed at. */
#include "ctl/protocol.h"
#include "../tap.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

static void round_trip(const char *const *fields, int count, const char *label)
{
	struct pl_buf line = { 0 };
	for (int i = 0; i < count; i++) {
		if (i)
			pl_buf_puts(&line, " ");
		pl_ctl_encode_field(&line, fields[i]);
	}
	ok(strpbrk(line.data, "\n\r") == NULL, "%s: the encoded line has no line end", label);
	char **decoded = NULL;
	int n = pl_ctl_split(line.data, line.len, &decoded);
	is_int(n, count, "%s: field count", label);
	for (int i = 0; i < n && i < count; i++)
		is_str(decoded[i], fields[i], "%s: field %d survives", label, i);
	if (n > 0)
		pl_ctl_free_fields(decoded, n);
	pl_buf_free(&line);
}

static void encodes_to(const char *field, const char *expected, const char *label)
{
	struct pl_buf out = { 0 };
	pl_ctl_encode_field(&out, field);
	is_str(out.data, expected, "%s encodes as %s", label, expected);
	pl_buf_free(&out);
}

static void splits_to(const char *line, const char *first, const char *label)
{
	char **fields = NULL;
	int n = pl_ctl_split(line, strlen(line), &fields);
	ok(n == 1 && strcmp(fields[0], first) == 0, "%s decodes to \"%s\"", label, first);
	if (n > 0)
		pl_ctl_free_fields(fields, n);
}

static void refused(const char *line, size_t len, const char *label)
{
	static char *sentinel[1];
	char **fields = sentinel; /* must come back NULL */
	is_int(pl_ctl_split(line, len, &fields), -EINVAL, "%s is refused", label);
	ok(fields == NULL, "%s: no fields are handed out", label);
}

int main(void)
{
	/* Round trips. */
	const char *simple[] = { "adduser", "alice@localhost", "secret" };
	round_trip(simple, 3, "plain fields");
	const char *tricky[] = { "passwd", "bob@localhost", "pass word\nwith %41 and\ttab\r" };
	round_trip(tricky, 3, "spaces, newlines, tabs and percent signs");
	const char *percent[] = { "%", "%%", "100%", "%25", "%zz" };
	round_trip(percent, 5, "fields that look like escapes");
	const char *unicode[] = { "adduser", "\xcf\x80@localhost", "p\xc3\xa4ss\xe2\x99\x9a \xf0\x9f\x94\x91" };
	round_trip(unicode, 3, "UTF-8");
	const char *empty[] = { "adduser", "", "x" };
	round_trip(empty, 3, "an empty field in the middle");
	const char *empty_last[] = { "passwd", "alice@localhost", "" };
	round_trip(empty_last, 3, "an empty last field");
	const char *only_empty[] = { "" };
	round_trip(only_empty, 1, "a single empty field");
	const char *spaces[] = { " ", "  leading", "trailing  " };
	round_trip(spaces, 3, "fields of and around spaces");

	/* Every byte from 1 to 255, in one field. */
	char all_bytes[256];
	for (int i = 1; i < 256; i++)
		all_bytes[i - 1] = (char)i;
	all_bytes[255] = '\0';
	const char *all[] = { "backup", all_bytes };
	round_trip(all, 2, "every byte but NUL");

	/* The exact encoding: what is escaped and what is not. */
	encodes_to("", "%%", "the empty field");
	encodes_to("a b", "a%20b", "a space");
	encodes_to("50%", "50%25", "a percent sign");
	encodes_to("a\nb", "a%0Ab", "a newline");
	encodes_to("\x7f", "%7F", "DEL");
	encodes_to("\xc3\xa4", "\xc3\xa4", "UTF-8 (left alone)");
	encodes_to("/var/lib/parley.mdb", "/var/lib/parley.mdb", "a path");

	/* Splitting what a hand-written client might send. */
	char **fields;
	is_int(pl_ctl_split("status", 6, &fields), 1, "a single field");
	pl_ctl_free_fields(fields, 1);
	is_int(pl_ctl_split("  status   x ", 13, &fields), 2, "runs of spaces are one separator");
	if (!ok(fields && strcmp(fields[0], "status") == 0 && strcmp(fields[1], "x") == 0,
		"leading, repeated and trailing spaces are ignored"))
		diag("got \"%s\" \"%s\"", fields ? fields[0] : "", fields ? fields[1] : "");
	pl_ctl_free_fields(fields, 2);
	is_int(pl_ctl_split("", 0, &fields), 0, "an empty line has no field");
	is_int(pl_ctl_split("   ", 3, &fields), 0, "a line of spaces has no field");
	is_int(pl_ctl_split("users extra", 5, &fields), 1, "only len bytes are read");
	pl_ctl_free_fields(fields, 1);
	splits_to("%2a%2A", "**", "lower- and upper-case hex");
	splits_to("a\tb", "a\tb", "a raw tab (lenient: only spaces separate)");
	splits_to("%%", "", "the empty-field marker");

	/* Malformed input. */
	refused("a%zz", 4, "a bad hex escape");
	refused("a%4", 3, "a truncated escape");
	refused("a%", 2, "a lone % at the end");
	refused("a%4 1", 5, "an escape cut by a space");
	refused("a%00b", 5, "an encoded NUL");
	refused("a\rb", 3, "a raw carriage return");
	refused("a\nb", 3, "a raw newline");
	refused("a\0b", 3, "a raw NUL inside the length");
	refused("x%%y", 4, "%% inside a field");
	refused("%%%%", 4, "a doubled empty-field marker");
	refused("ok a%g1", 7, "a bad escape in a later field");
	return done_testing();
}
