/* Durable acknowledgement counting (see ack.h). A tracker keeps a FIFO of
 * the stanzas that are processed but still waiting for store commits; the
 * durable count advances over the front of the FIFO as their holds are
 * released. Holds reference the tracker, so a stream that ends while
 * commits are in flight does not leave dangling pointers. */
#include "ack.h"
#include "util.h"

#include <stdlib.h>

struct pending {
	uint32_t number;
	unsigned holds;
};

struct pl_ack_tracker {
	void (*on_advance)(void *owner, uint32_t durable);
	void *owner;               /* NULL once detached */
	unsigned references;       /* the owner's + one per hold */
	uint32_t durable;
	struct pending *fifo;      /* owned ring */
	size_t head, count, cap;
};

struct hold {
	struct pl_ack_tracker *tracker;
	uint32_t number;
};

static struct pl_ack_tracker *current;
static uint32_t current_number;
static unsigned current_holds;

struct pl_ack_tracker *pl_ack_tracker_new(void (*on_advance)(void *owner, uint32_t durable),
					  void *owner, uint32_t start)
{
	struct pl_ack_tracker *t = pl_calloc(1, sizeof(*t));
	t->on_advance = on_advance;
	t->owner = owner;
	t->references = 1;
	t->durable = start;
	return t;
}

static void unref(struct pl_ack_tracker *t)
{
	if (--t->references == 0) {
		free(t->fifo);
		free(t);
	}
}

void pl_ack_tracker_detach(struct pl_ack_tracker *t)
{
	if (!t)
		return;
	t->owner = NULL;
	if (current == t)
		current = NULL;
	unref(t);
}

void pl_ack_tracker_set_owner(struct pl_ack_tracker *t, void *owner)
{
	t->owner = owner;
}

uint32_t pl_ack_durable(const struct pl_ack_tracker *t)
{
	return t->durable;
}

static struct pending *at(struct pl_ack_tracker *t, size_t i)
{
	return &t->fifo[(t->head + i) % t->cap];
}

static void push(struct pl_ack_tracker *t, uint32_t number, unsigned holds)
{
	if (t->count == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		struct pending *grown = pl_calloc(cap, sizeof(*grown));
		for (size_t i = 0; i < t->count; i++)
			grown[i] = *at(t, i);
		free(t->fifo);
		t->fifo = grown;
		t->cap = cap;
		t->head = 0;
	}
	*at(t, t->count++) = (struct pending){ number, holds };
}

/* Moves the durable count over every finished stanza at the front. */
static bool advance(struct pl_ack_tracker *t)
{
	bool moved = false;
	while (t->count && at(t, 0)->holds == 0) {
		t->durable = at(t, 0)->number;
		t->head = (t->head + 1) % t->cap;
		t->count--;
		moved = true;
	}
	return moved;
}

void pl_ack_begin(struct pl_ack_tracker *t, uint32_t number)
{
	current = t;
	current_number = number;
	current_holds = 0;
}

void pl_ack_end(void)
{
	struct pl_ack_tracker *t = current;
	current = NULL;
	if (!t)
		return;
	if (current_holds == 0 && t->count == 0)
		t->durable = current_number;
	else
		push(t, current_number, current_holds);
	advance(t);
}

void *pl_ack_hold(void)
{
	if (!current)
		return NULL;
	struct hold *h = pl_malloc(sizeof(*h));
	h->tracker = current;
	h->number = current_number;
	current->references++;
	current_holds++;
	return h;
}

void pl_ack_release(void *hold)
{
	struct hold *h = hold;
	if (!h)
		return;
	struct pl_ack_tracker *t = h->tracker;
	if (t == current && h->number == current_number && current_holds > 0) {
		/* Released before the stanza's processing even ended. */
		current_holds--;
	} else {
		for (size_t i = 0; i < t->count; i++) {
			struct pending *p = at(t, i);
			if (p->number == h->number && p->holds > 0) {
				p->holds--;
				break;
			}
		}
		if (advance(t) && t->owner && t->on_advance)
			t->on_advance(t->owner, t->durable);
	}
	free(h);
	unref(t);
}
