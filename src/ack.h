/* Durable acknowledgements (ARCHITECTURE.md, "Delivery guarantees" 1): a
 * stream may acknowledge a client stanza (XEP-0198 <a h=.../>) only once
 * it was delivered to a live stream or committed to the store. The stream
 * numbers each stanza and brackets its processing with pl_ack_begin/end;
 * every store write submitted in between takes a hold on that stanza,
 * released by the write's completion. The durable count is the highest
 * number up to which every stanza is done, in order. Network thread only.
 *
 * Sequence numbers are XEP-0198's: 32-bit and wrapping, compared with
 * pl_ack_after. */
#ifndef PL_ACK_H
#define PL_ACK_H

#include <stdbool.h>
#include <stdint.h>

struct pl_ack_tracker;

/* on_advance(owner, durable) runs when the durable count moves on
 * because a hold was released (not from within pl_ack_end). */
struct pl_ack_tracker *pl_ack_tracker_new(void (*on_advance)(void *owner, uint32_t durable),
					  void *owner, uint32_t start);
/* The owner goes away: holds still out keep the tracker alive, silently. */
void pl_ack_tracker_detach(struct pl_ack_tracker *tracker);
/* The owner changes (a resumed stream takes the tracker over). */
void pl_ack_tracker_set_owner(struct pl_ack_tracker *tracker, void *owner);
uint32_t pl_ack_durable(const struct pl_ack_tracker *tracker);

/* Brackets the processing of stanza `number` (the previous one + 1). */
void pl_ack_begin(struct pl_ack_tracker *tracker, uint32_t number);
void pl_ack_end(void);

/* For the store: a hold on the stanza being processed, or NULL outside
 * pl_ack_begin/end. */
void *pl_ack_hold(void);
void pl_ack_release(void *hold);

/* a comes after b in XEP-0198's wrapping 32-bit sequence. */
static inline bool pl_ack_after(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

#endif
