/* Fuzz target for the JID parser. Any input must either fail cleanly,
 * leaving the struct empty, or yield a JID whose parts obey the limits,
 * whose full and bare strings are built from those parts, and whose normal
 * form is a fixed point: parsing the full string again gives the same
 * JID, and preparing each part again changes nothing. Routing hashes the
 * normal form, so a JID that normalised differently the second time would
 * split one user's sessions across two addresses. */
#include "jid.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int condition, const char *what, const char *input)
{
	if (condition)
		return;
	fprintf(stderr, "fuzz_jid: %s (input \"%s\")\n", what, input);
	abort();
}

static void check_same(const char *got, const char *expected, const char *what, const char *input)
{
	check((got == NULL && expected == NULL) || (got && expected && strcmp(got, expected) == 0),
	      what, input);
}

/* Re-preparing an already normal part must give it back unchanged. */
static void check_fixed_point(char *(*prep)(const char *), const char *part, const char *what,
			      const char *input)
{
	if (!part)
		return;
	check(strlen(part) >= 1 && strlen(part) <= 1023, "a part is out of 1..1023 bytes", input);
	char *again = prep(part);
	check_same(again, part, what, input);
	free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	struct pl_jid jid;
	enum pl_jid_error error = pl_jid_parse(text, &jid);
	check(pl_jid_strerror(error) != NULL, "no message for an error", text);
	if (error != PL_JID_OK) {
		check(!jid.full && !jid.bare && !jid.storage && !jid.local && !jid.domain &&
			      !jid.resource,
		      "a failed parse left something in the struct", text);
		check(pl_jid_normalize_bare(text) == NULL, "normalize_bare accepted an invalid JID",
		      text);
		free(text);
		return 0;
	}

	check(jid.domain && jid.full && jid.bare, "a valid JID lacks domain, full or bare", text);
	size_t bare_len = strlen(jid.bare);
	check(strncmp(jid.full, jid.bare, bare_len) == 0, "bare is not a prefix of full", text);
	check(jid.full[bare_len] == '\0' || jid.full[bare_len] == '/',
	      "full does not continue the bare JID with '/'", text);
	check(!jid.local || (!strchr(jid.local, '@') && !strchr(jid.local, '/')),
	      "the localpart holds '@' or '/'", text);
	check(!strchr(jid.domain, '@') && !strchr(jid.domain, '/'), "the domain holds '@' or '/'",
	      text);

	size_t built_size = strlen(jid.full) + 1;
	char *built = malloc(built_size);
	check(built != NULL, "out of memory", text);
	snprintf(built, built_size, "%s%s%s%s%s", jid.local ? jid.local : "", jid.local ? "@" : "",
		 jid.domain, jid.resource ? "/" : "", jid.resource ? jid.resource : "");
	check_same(built, jid.full, "full is not local@domain/resource", text);
	free(built);

	check_fixed_point(pl_jid_prep_local, jid.local, "the localpart is not a fixed point", text);
	check_fixed_point(pl_jid_prep_domain, jid.domain, "the domain is not a fixed point", text);
	check_fixed_point(pl_jid_prep_resource, jid.resource, "the resource is not a fixed point",
			  text);

	struct pl_jid again;
	check(pl_jid_parse(jid.full, &again) == PL_JID_OK, "the full form does not parse again",
	      text);
	check_same(again.full, jid.full, "the full form is not a fixed point", text);
	check_same(again.bare, jid.bare, "the bare form changed on a second parse", text);
	pl_jid_free(&again);

	char *bare = pl_jid_normalize_bare(jid.bare);
	check_same(bare, jid.bare, "the bare form does not normalise to itself", text);
	free(bare);

	pl_jid_free(&jid);
	check(!jid.full && !jid.storage, "pl_jid_free did not zero the struct", text);
	free(text);
	return 0;
}
