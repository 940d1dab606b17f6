/* SASL on the server side (RFC 4422, RFC 6120 section 6) as a state
 * machine independent of sockets and XML: the stream feeds it the decoded
 * payload of <auth/> and <response/> and sends back what it returns
 * (base64-encoded by the caller) as <challenge/>, <success/> or <failure/>.
 * Base64 stays with the caller because the XML layer already knows "="
 * (empty) from no text at all and must answer bad base64 with
 * incorrect-encoding before any mechanism runs.
 * Mechanisms: SCRAM-SHA-256(-PLUS), SCRAM-SHA-1(-PLUS) (RFC 5802, 7677,
 * channel binding per RFC 5929/9266) and PLAIN (RFC 4616, to be offered
 * inside TLS only). An authorization identity other than the user's own
 * bare JID is refused (invalid-authzid). Unknown users run the whole
 * exchange with a stable fake salt and fail at the end, so that accounts
 * cannot be enumerated. */
#ifndef PL_SASL_H
#define PL_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accounts.h"
#include "util.h"

enum pl_sasl_result { PL_SASL_CONTINUE, PL_SASL_SUCCESS, PL_SASL_FAILURE };

/* RFC 6120 section 6.5 conditions. */
enum pl_sasl_condition {
	PL_SASL_ABORTED,
	PL_SASL_ACCOUNT_DISABLED,
	PL_SASL_CREDENTIALS_EXPIRED,
	PL_SASL_ENCRYPTION_REQUIRED,
	PL_SASL_INCORRECT_ENCODING,
	PL_SASL_INVALID_AUTHZID,
	PL_SASL_INVALID_MECHANISM,
	PL_SASL_MALFORMED_REQUEST,
	PL_SASL_MECHANISM_TOO_WEAK,
	PL_SASL_NOT_AUTHORIZED,
	PL_SASL_TEMPORARY_AUTH_FAILURE,
};
/* The element name of the condition ("not-authorized", ...). */
const char *pl_sasl_condition_name(enum pl_sasl_condition condition);

/* Largest client message accepted; longer ones are malformed-request. */
#define PL_SASL_MAX_MESSAGE 4096

struct pl_sasl_callbacks {
	/* username: the SASLprepped authentication identity (meant as a
	 * localpart; it may still be invalid as one).
	 * 0 with *out filled, -ENOENT for no such account, -EACCES when the
	 * account is disabled (with *out filled too), other negative values
	 * for store errors (temporary-auth-failure). */
	int (*get_credentials)(void *userdata, const char *username,
			       struct pl_scram_credentials *out);
	/* Channel-binding data of the connection for `type`
	 * ("tls-exporter" or "tls-server-end-point"). *out_len holds the
	 * size of `out` on entry (64 bytes) and the data's length on return.
	 * 0 or -ENOTSUP. May be NULL when the connection has no TLS. */
	int (*channel_binding)(void *userdata, const char *type, uint8_t *out, size_t *out_len);
};

struct pl_sasl_options {
	/* The host: an authzid must be user@domain. NULL refuses every
	 * non-empty authzid. */
	const char *domain;
	/* -PLUS mechanisms were advertised: a client answering "y" (it could
	 * bind but saw no -PLUS) has been downgraded (RFC 5802 section 6). */
	bool plus_offered;
	/* NULL when the connection cannot bind (no TLS). Otherwise the type
	 * the server prefers ("tls-exporter" under TLS 1.3,
	 * "tls-server-end-point" below); a client may pick either known type,
	 * provided channel_binding can produce its data. */
	const char *binding_type;
	/* Iteration count shown to unknown users. 0: the count of the last
	 * real account looked up, else PL_SCRAM_MIN_ITERATIONS. Set it to the
	 * count new accounts get so that i= does not tell them apart. */
	uint32_t iterations;
};

struct pl_sasl;

/* NULL when the mechanism is unknown (answer invalid-mechanism). The
 * callbacks are borrowed and must outlive the session; options are copied
 * (but not the strings they point to). options may be NULL. */
struct pl_sasl *pl_sasl_new(const char *mechanism, const struct pl_sasl_callbacks *callbacks,
			    void *userdata, const struct pl_sasl_options *options);
void pl_sasl_free(struct pl_sasl *sasl);

/* One step with the client's decoded data. has_data is false for an
 * <auth/> without initial response (no text) and true for everything
 * else, including the empty response "=" (len 0).
 * On CONTINUE the challenge is appended to *out (empty for "send your
 * initial response"); on SUCCESS the additional data (the SCRAM
 * server-final "v=...", nothing for PLAIN) is appended to *out; on
 * FAILURE *condition and *reason (a static string for the log, never
 * secret) are set. After SUCCESS or FAILURE the session is finished:
 * further steps fail with malformed-request. condition and reason may be
 * NULL. */
enum pl_sasl_result pl_sasl_step_data(struct pl_sasl *sasl, const uint8_t *data, size_t len,
				      bool has_data, struct pl_buf *out,
				      enum pl_sasl_condition *condition, const char **reason);
/* The same with has_data = (len > 0), for callers that fold "=" and no
 * text together: an empty first message then asks for the initial
 * response, as RFC 6120 6.4.2 does for none. */
enum pl_sasl_result pl_sasl_step(struct pl_sasl *sasl, const uint8_t *data, size_t len,
				 struct pl_buf *out, enum pl_sasl_condition *condition,
				 const char **reason);

/* The authenticated username (SASLprepped; the caller nodepreps it into
 * a localpart), or NULL unless the last step returned SUCCESS. */
const char *pl_sasl_username(const struct pl_sasl *sasl);

/* Tests and fuzzing only: the server part of the nonce to use instead of
 * 24 random base64 characters. */
void pl_sasl_set_server_nonce(struct pl_sasl *sasl, const char *nonce);

#endif
