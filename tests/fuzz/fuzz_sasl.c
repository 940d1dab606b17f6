/* Fuzz target for the SASL state machine. An input is a header line
 * naming the mechanism ("SCRAM-SHA-256", optionally followed by " +" when
 * the server advertised -PLUS; anything else picks a mechanism from the
 * line's first byte), then one client message per line, fed in order to
 * one session (an empty first line is "no initial response"). The server
 * nonce is fixed to "SERVER" so that seeds can carry real client-final
 * messages. Whatever the input, nothing may crash, a failure must carry a
 * reason, the session must refuse every step after it ended, and success
 * is only possible as the one account, "user" with password "pencil". */
#include "sasl.h"
#include "scram.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_STEPS 6

static struct pl_scram_credentials fuzz_user;
static bool fuzz_user_ready;

/* The account "user"/"pencil" with the RFC 7677 salt, derived once: the
 * derivation costs more than everything else a run does. */
static void prepare_user(void)
{
	static const uint8_t salt[] = { 0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
					0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81 };
	if (fuzz_user_ready)
		return;
	memcpy(fuzz_user.salt, salt, sizeof(salt));
	fuzz_user.salt_len = sizeof(salt);
	fuzz_user.iterations = 4096;
	if (pl_scram_derive(PL_SCRAM_SHA1, "pencil", salt, sizeof(salt), 4096,
			    fuzz_user.stored_key_sha1, fuzz_user.server_key_sha1) != 0 ||
	    pl_scram_derive(PL_SCRAM_SHA256, "pencil", salt, sizeof(salt), 4096,
			    fuzz_user.stored_key_sha256, fuzz_user.server_key_sha256) != 0)
		abort();
	fuzz_user_ready = true;
}

static int get_credentials(void *userdata, const char *username, struct pl_scram_credentials *out)
{
	if (strcmp(username, "user") != 0)
		return strcmp(username, "broken") == 0 ? -EIO : -ENOENT;
	*out = fuzz_user;
	return 0;
}

static int channel_binding(void *userdata, const char *type, uint8_t *out, size_t *out_len)
{
	uint8_t fill;
	if (strcmp(type, "tls-exporter") == 0)
		fill = 0x42;
	else if (strcmp(type, "tls-server-end-point") == 0)
		fill = 0x43;
	else
		return -ENOTSUP;
	if (*out_len < 32)
		abort(); /* the state machine promised room for 64 bytes */
	memset(out, fill, 32);
	*out_len = 32;
	return 0;
}

static const struct pl_sasl_callbacks callbacks = { get_credentials, channel_binding };

static const char *const mechanisms[] = { "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS",
					  "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS" };

/* The mechanism a header line names, and whether it says " +". */
static const char *pick_mechanism(const uint8_t *line, size_t len, bool *plus_offered)
{
	*plus_offered = len >= 2 && line[len - 2] == ' ' && line[len - 1] == '+';
	size_t name_len = *plus_offered ? len - 2 : len;
	for (size_t i = 0; i < sizeof(mechanisms) / sizeof(mechanisms[0]); i++)
		if (strlen(mechanisms[i]) == name_len && memcmp(mechanisms[i], line, name_len) == 0)
			return mechanisms[i];
	unsigned pick = len ? line[0] : 0;
	*plus_offered = pick & 0x80;
	return mechanisms[pick % (sizeof(mechanisms) / sizeof(mechanisms[0]))];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	prepare_user();
	const uint8_t *end = data + size;
	const uint8_t *newline = memchr(data, '\n', size);
	const uint8_t *header_end = newline ? newline : end;
	struct pl_sasl_options options = { .domain = "localhost", .binding_type = "tls-exporter" };
	const char *mechanism = pick_mechanism(data, (size_t)(header_end - data), &options.plus_offered);
	struct pl_sasl *sasl = pl_sasl_new(mechanism, &callbacks, NULL, &options);
	if (!sasl)
		abort();
	pl_sasl_set_server_nonce(sasl, "SERVER");

	const uint8_t *p = newline ? newline + 1 : end;
	bool finished = false;
	struct pl_buf out = { 0 };
	for (int steps = 0; steps < MAX_STEPS && (p < end || steps == 0); steps++) {
		const uint8_t *line_end = memchr(p, '\n', (size_t)(end - p));
		if (!line_end)
			line_end = end;
		size_t len = (size_t)(line_end - p);
		enum pl_sasl_condition condition = PL_SASL_ABORTED;
		const char *reason = NULL;
		pl_buf_reset(&out);
		enum pl_sasl_result result = pl_sasl_step(sasl, len ? p : NULL, len, &out, &condition,
							  &reason);
		p = line_end < end ? line_end + 1 : end;
		switch (result) {
		case PL_SASL_CONTINUE:
			if (finished || (out.len && !out.data))
				abort();
			break;
		case PL_SASL_SUCCESS: {
			const char *user = pl_sasl_username(sasl);
			if (finished || !user || strcmp(user, "user") != 0)
				abort();
			if (strcmp(mechanism, "PLAIN") != 0 && (!out.data || strncmp(out.data, "v=", 2) != 0))
				abort();
			finished = true;
			break;
		}
		case PL_SASL_FAILURE:
			if (!reason || !*reason || !pl_sasl_condition_name(condition) ||
			    pl_sasl_username(sasl) != NULL)
				abort();
			finished = true;
			break;
		default:
			abort();
		}
	}
	if (finished) {
		/* The session is over: even a perfect message must be refused. */
		enum pl_sasl_condition condition;
		const char *reason = NULL;
		if (pl_sasl_step(sasl, (const uint8_t *)"n,,n=user,r=x", 13, &out, &condition,
				 &reason) != PL_SASL_FAILURE)
			abort();
	}
	pl_buf_free(&out);
	pl_sasl_free(sasl);
	return 0;
}
