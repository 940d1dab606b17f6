/* JIDs (RFC 7622): parsing, validation and normalisation. The domain goes
 * through IDNA2008 (libidn2, UTS #46 mapping, lower case, trailing dot
 * removed; IP literals kept as written) and is stored as U-labels, so
 * "EXAMPLE.com" and "xn--bcher-kva.example" normalise to "example.com"
 * and "bücher.example". The localpart goes through nodeprep and the
 * resource through resourceprep (libidn stringprep), as Prosody does.
 * Each part must be 1..1023 bytes after preparation; empty parts, '@' or
 * '/' in the wrong place and forbidden code points are errors. Equal JIDs
 * have byte-for-byte equal normal forms. */
#ifndef PL_JID_H
#define PL_JID_H

#include <stdbool.h>
#include <stddef.h>

/* A parsed, normalised JID. The struct owns `storage`, `full` and `bare`;
 * local/domain/resource point into `storage` (or are NULL when absent). */
struct pl_jid {
	char *local;    /* NULL when absent */
	char *domain;   /* never NULL in a valid JID */
	char *resource; /* NULL when absent */
	char *full;     /* "local@domain/resource" normalised */
	char *bare;     /* "local@domain" or "domain" normalised */
	char *storage;  /* owns the parts */
};

enum pl_jid_error {
	PL_JID_OK = 0,
	PL_JID_EMPTY,             /* empty string or an empty part */
	PL_JID_TOO_LONG,          /* a part over 1023 bytes */
	PL_JID_BAD_LOCALPART,     /* nodeprep refused it */
	PL_JID_BAD_DOMAIN,        /* IDNA refused it */
	PL_JID_BAD_RESOURCE,      /* resourceprep refused it */
	PL_JID_BAD_UTF8,
};

/* Parses and normalises `text` (NUL-terminated). Returns PL_JID_OK and
 * fills *jid (free with pl_jid_free), or an error and leaves *jid zeroed
 * (so pl_jid_free on it is harmless). The resource is everything after the
 * first '/', the localpart what precedes the first '@' before that. */
enum pl_jid_error pl_jid_parse(const char *text, struct pl_jid *jid);
void pl_jid_free(struct pl_jid *jid);
const char *pl_jid_strerror(enum pl_jid_error error);

/* Convenience: the normalised bare JID as a new string, or NULL if the
 * text is not a valid JID. */
char *pl_jid_normalize_bare(const char *text);
/* Normalises one part alone, with the same rules as pl_jid_parse; NULL if
 * invalid. Caller frees with free(). */
char *pl_jid_prep_local(const char *local);
char *pl_jid_prep_domain(const char *domain);
char *pl_jid_prep_resource(const char *resource);

#endif
