/* The wire format shared by parleyctl and the control socket: a request
 * is one line of fields separated by spaces; each field is percent-encoded
 * (bytes <= 0x20, 0x7f and '%' become %XX; an empty field is "%%"). Responses: first line "ok" or
 * "error <message>", then body lines (each also percent-decoded by the
 * client only when it asks for fields). */
#ifndef PL_CTL_PROTOCOL_H
#define PL_CTL_PROTOCOL_H

#include <stddef.h>

#include "util.h"

#define PL_CTL_MAX_REQUEST 8192

void pl_ctl_encode_field(struct pl_buf *out, const char *field);
/* Splits a request line (without its newline) into decoded fields.
 * Returns the count (fields[] are new strings, free with pl_ctl_free_fields)
 * or -EINVAL for a malformed %-escape or an embedded NUL. */
int pl_ctl_split(const char *line, size_t len, char ***fields);
void pl_ctl_free_fields(char **fields, int count);

#endif
