/* Helpers for modules that keep XML per user in the store and answer IQs
 * about it (private XML storage, vCards, later bookmarks): read one stored
 * element back into a tree, and answer an IQ set only once its write is
 * durable, so that a client's "saved" really is saved. */
#ifndef PL_IQ_STORAGE_H
#define PL_IQ_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "xml/xnode.h"

/* The key of a user's item: "bare_jid \0 name" (name may be ""), so that
 * deleting the user removes it. Caller frees the result; *len is set. */
void *pl_user_key(const char *bare_jid, const char *name, size_t *len);
/* The stored element, parsed (caller owns), or NULL when absent. */
struct pl_xnode *pl_store_get_element(struct pl_store_space *space, const void *key,
				      size_t key_len);
/* Puts `element` serialized under key in a new write set, submits it and
 * routes the IQ result (or an error) for `iq` after the commit. */
void pl_store_put_element_and_reply(struct pl_store_space *space, const void *key,
				    size_t key_len, const struct pl_xnode *element,
				    const struct pl_xnode *iq);

/* A random secret of `len` bytes kept under `name` in `space` (occupant
 * ids, URL tokens): read into out, or made and written on first use so it
 * stays the same across restarts. */
void pl_store_secret(struct pl_store_space *space, const char *name, uint8_t *out, size_t len);

/* A store completion for an IQ set: routes the result, or the stanza
 * error matching `status` (-ENOSPC resource-constraint, -EINVAL
 * not-acceptable, else internal-server-error); frees `iq`, a copy the
 * caller made with pl_xnode_copy. */
void pl_iq_reply_when_stored(void *iq, int status);

#endif
