/* SASL on the server side (RFC 4422, RFC 6120 section 6) as a state
 * machine independent of sockets and XML: the stream feeds it the decoded
 * payload of <auth/> and <response/> and sends back what it returns
 * (base64-encoded by the caller) as <challenge/>, <success/> or <failure/>.
 * Mechanisms: SCRAM-SHA-256(-PLUS), SCRAM-SHA-1(-PLUS) (RFC 5802, 7677,
 * channel binding per RFC 5929/9266) and PLAIN (RFC 4616, to be offered
 * inside TLS only). An authorization identity other than the user's own
 * JID is refused (invalid-authzid). Unknown users run the whole exchange
 * with a stable fake salt and fail at the end, so that accounts cannot be
 * enumerated. */
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
const char *pl_sasl_condition_name(enum pl_sasl_condition condition);

struct pl_sasl_callbacks {
	/* username: the SASLprepped authentication identity (a localpart).
	 * 0 with *out filled, -ENOENT for no such account, -EACCES when the
	 * account is disabled (with *out filled too), other negative values
	 * for store errors. */
	int (*get_credentials)(void *userdata, const char *username,
			       struct pl_scram_credentials *out);
	/* Channel-binding data of the connection for `type`; 0 or -ENOTSUP. */
	int (*channel_binding)(void *userdata, const char *type, uint8_t *out, size_t *out_len);
};

struct pl_sasl_options {
	const char *domain;           /* the host: authzid must be user@domain */
	bool plus_offered;            /* -PLUS mechanisms were advertised */
	const char *binding_type;     /* "tls-exporter" or "tls-server-end-point" */
};

struct pl_sasl;

/* NULL when the mechanism is unknown (answer invalid-mechanism). */
struct pl_sasl *pl_sasl_new(const char *mechanism, const struct pl_sasl_callbacks *callbacks,
			    void *userdata, const struct pl_sasl_options *options);
void pl_sasl_free(struct pl_sasl *sasl);

/* One step with the client's decoded data. On CONTINUE, *out holds the
 * challenge; on SUCCESS it holds additional data (may be empty); on
 * FAILURE *condition and *reason (a static string for the log) are set. */
enum pl_sasl_result pl_sasl_step(struct pl_sasl *sasl, const uint8_t *data, size_t len,
				 struct pl_buf *out, enum pl_sasl_condition *condition,
				 const char **reason);
/* The authenticated username (localpart, SASLprepped), after SUCCESS. */
const char *pl_sasl_username(const struct pl_sasl *sasl);

/* Tests only: the server nonce part to use instead of a random one. */
void pl_sasl_set_server_nonce(struct pl_sasl *sasl, const char *nonce);

#endif
