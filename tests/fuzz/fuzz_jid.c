/* Fuzz target for the JID parser: any input either fails cleanly or
 * yields a JID whose normal form parses again to itself (normalisation is
 * idempotent) and whose bare form is a prefix of the full form. */
#include "jid.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	struct pl_jid jid;
	if (pl_jid_parse(text, &jid) == PL_JID_OK) {
		if (strncmp(jid.full, jid.bare, strlen(jid.bare)) != 0)
			abort();
		struct pl_jid again;
		if (pl_jid_parse(jid.full, &again) != PL_JID_OK || strcmp(again.full, jid.full) != 0)
			abort();
		pl_jid_free(&again);
		pl_jid_free(&jid);
	}
	free(text);
	return 0;
}
