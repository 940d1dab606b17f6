/* The archive service that mod_mam offers to other modules through hooks,
 * for archives that belong to something other than an account (a MUC
 * room keeps one archive per room: read diffusion, not one copy per
 * member). The archive has the same layout, sequence numbers (the
 * XEP-0359 stanza-ids), retention and XEP-0313 paging as a user's.
 * Without mod_mam loaded the hooks are unanswered: callers check the
 * PL_HANDLED result. Network thread only. */
#ifndef PL_ARCHIVE_H
#define PL_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "router.h"
#include "xml/xnode.h"

/* "archive/append": stores `message` in `owner`'s archive and sets `id`
 * (its sequence number, > 0). Like every store write made while a client
 * stanza is processed, it holds that stanza's XEP-0198 ack until it is on
 * disk. `with` (may be NULL: not indexed) is what a query's with-filter
 * matches. */
struct pl_archive_append {
	const char *owner;
	const char *with;
	const struct pl_xnode *message;  /* borrowed; copied into the record */
	uint64_t id;                     /* out */
};

/* "archive/query": answers the XEP-0313 query `iq` (type set) over
 * `owner`'s archive: result messages from `owner` to the recipient, then the
 * <fin/> IQ result. Records older than `not_before_ms` (0: none) are left
 * out, as if they did not exist. The result is the hook's: PL_HANDLED or a
 * PL_HOOK_ERROR for the IQ. */
struct pl_archive_query {
	const struct pl_xnode *iq;
	const char *owner;
	struct pl_session *recipient;    /* a local session, or NULL: */
	const char *recipient_jid;       /* a remote full JID, results routed */
	int64_t not_before_ms;
};

/* "archive/recent": the last `max` records of `owner`'s archive that are
 * not older than `since_ms` (0: any age), passed to `each` oldest first
 * (borrowed message; the stamp in unix ms). For a room's history on join
 * after a restart. */
struct pl_archive_recent {
	const char *owner;
	size_t max;
	int64_t since_ms;
	void (*each)(void *arg, uint64_t id, int64_t at_ms, const struct pl_xnode *message);
	void *arg;
};

/* "archive/delete": removes `owner`'s whole archive (data: the owner's
 * JID as a const char *). */

#endif
