/* Durable acknowledgement counting (src/ack.c): XEP-0198's wrapping
 * comparison, and a durable count that advances in stanza order only as
 * store holds are released, across the 2^32 wrap. */
#include "ack.h"
#include "../tap.h"

#include <stdint.h>

static uint32_t advanced_to;
static int advances;

static void on_advance(void *owner, uint32_t durable)
{
	(void)owner;
	advanced_to = durable;
	advances++;
}

int main(void)
{
	ok(pl_ack_after(1, 0), "1 comes after 0");
	ok(!pl_ack_after(0, 1), "0 does not come after 1");
	ok(pl_ack_after(0, UINT32_MAX), "0 comes after 2^32-1 (wrap)");
	ok(pl_ack_after(5, UINT32_MAX - 5), "5 comes after 2^32-6");
	ok(!pl_ack_after(7, 7), "a number does not come after itself");

	int owner;
	struct pl_ack_tracker *t = pl_ack_tracker_new(on_advance, &owner, UINT32_MAX - 1);
	is_int(pl_ack_durable(t), UINT32_MAX - 1, "the count starts where it is told");
	pl_ack_begin(t, UINT32_MAX);
	pl_ack_end();
	is_int(pl_ack_durable(t), UINT32_MAX, "a stanza without store writes is durable at once");

	/* Stanza 0 (after the wrap) writes twice, stanza 1 once, stanza 2 not. */
	pl_ack_begin(t, 0);
	void *a = pl_ack_hold(), *b = pl_ack_hold();
	pl_ack_end();
	pl_ack_begin(t, 1);
	void *c = pl_ack_hold();
	pl_ack_end();
	pl_ack_begin(t, 2);
	pl_ack_end();
	is_int(pl_ack_durable(t), UINT32_MAX, "nothing after a stanza with writes in flight");
	pl_ack_release(c);
	is_int(pl_ack_durable(t), UINT32_MAX, "a later stanza's commit does not jump the queue");
	is_int(advances, 0, "so nobody is told");
	pl_ack_release(a);
	is_int(pl_ack_durable(t), UINT32_MAX, "one of two writes is not enough");
	pl_ack_release(b);
	is_int(pl_ack_durable(t), 2, "the last write moves the count over 0, 1 and 2 at once");
	is_int(advances, 1, "and the owner hears about it once");
	is_int(advanced_to, 2, "with the new count");
	ok(pl_ack_hold() == NULL, "outside a stanza there is nothing to hold");

	/* A hold released before its stanza's processing ends. */
	pl_ack_begin(t, 3);
	void *early = pl_ack_hold();
	pl_ack_release(early);
	pl_ack_end();
	is_int(pl_ack_durable(t), 3, "a write that completes at once still counts as done");

	/* The owner leaves while a write is in flight: no callback, no leak. */
	pl_ack_begin(t, 4);
	void *late = pl_ack_hold();
	pl_ack_end();
	pl_ack_tracker_detach(t);
	pl_ack_release(late);
	is_int(advances, 1, "a detached tracker tells nobody");
	return done_testing();
}
