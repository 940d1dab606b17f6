/* Encoding of control-socket requests: fields separated by one space,
 * each percent-encoded so that passwords and paths may contain spaces,
 * newlines or '%' without breaking the one-line framing. */
#include "ctl/protocol.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void pl_ctl_encode_field(struct pl_buf *out, const char *field)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)field; *p; p++) {
		if (*p <= 0x20 || *p == 0x7f || *p == '%') {
			char escaped[3] = { '%', hex[*p >> 4], hex[*p & 15] };
			pl_buf_append(out, escaped, 3);
		} else {
			pl_buf_append(out, p, 1);
		}
	}
	/* An empty field still needs a token between the spaces: "%%". */
	if (!*field)
		pl_buf_append(out, "%%", 2);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

void pl_ctl_free_fields(char **fields, int count)
{
	for (int i = 0; i < count; i++)
		free(fields[i]);
	free(fields);
}

int pl_ctl_split(const char *line, size_t len, char ***out)
{
	char **fields = NULL;
	size_t count = 0, cap = 0;
	size_t i = 0;
	*out = NULL;
	while (i < len) {
		if (line[i] == ' ') {
			i++;
			continue;
		}
		size_t end = i;
		while (end < len && line[end] != ' ')
			end++;
		struct pl_buf field = { 0 };
		pl_buf_append(&field, "", 0);
		/* "%%" is the whole token of an empty field, never part of one:
		 * the encoder writes '%' itself as "%25". */
		bool empty_marker = end - i == 2 && line[i] == '%' && line[i + 1] == '%';
		for (size_t j = i; j < end && !empty_marker;) {
			char c = line[j];
			if (c == '%') {
				bool complete = j + 2 < end;
				int high = complete ? hex_value(line[j + 1]) : -1;
				int low = complete ? hex_value(line[j + 2]) : -1;
				/* An encoded NUL would cut the field short in C. */
				if (high < 0 || low < 0 || (high == 0 && low == 0))
					goto malformed;
				char decoded = (char)(high * 16 + low);
				pl_buf_append(&field, &decoded, 1);
				j += 3;
			} else if (c == '\0' || c == '\n' || c == '\r') {
				goto malformed;
			} else {
				pl_buf_append(&field, &c, 1);
				j++;
			}
		}
		pl_grow((void **)&fields, &cap, count + 1, sizeof(*fields));
		fields[count++] = pl_buf_take(&field);
		i = end;
		continue;
malformed:
		pl_buf_free(&field);
		pl_ctl_free_fields(fields, (int)count);
		return -EINVAL;
	}
	*out = fields;
	return (int)count;
}
