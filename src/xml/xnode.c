/* Element trees: the per-tree arena, construction, lookup, copies,
 * reference counting and the serializer. Every node of a tree shares its
 * root's arena (add_child copies a foreign subtree in rather than mixing
 * arenas), so releasing a tree is one walk over a few blocks, and an
 * arena is reference-counted only because a detached subtree keeps
 * living in the arena of the tree it came from. */
#include "xml/xnode.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Enough for pointers and size_t, the widest members of a node. */
#define ARENA_ALIGN 8
/* A built stanza (an IQ result, an error) fits the first block; parsed
 * stanzas pass a hint instead. Later blocks double up to the maximum, so
 * a large stanza costs few mallocs while a small one wastes little. */
#define ARENA_FIRST_BLOCK 512
#define ARENA_MAX_BLOCK (64 * 1024)

_Static_assert(alignof(struct pl_xnode) <= ARENA_ALIGN, "arena alignment");
_Static_assert(alignof(struct pl_xattr) <= ARENA_ALIGN, "arena alignment");

struct arena_block {
	struct arena_block *previous;
};

/* Sits at the start of its first block; the first block's free space
 * follows it. */
struct pl_xarena {
	unsigned refs;         /* roots that use this arena */
	char *pos, *end;       /* free space in the block being filled */
	char *last;            /* the latest allocation, which may grow in place */
	struct arena_block *blocks; /* later blocks, newest first */
	size_t next_block;     /* size of the next ordinary block */
	size_t total;          /* bytes taken from malloc */
};

#define ARENA_HEADER ((sizeof(struct pl_xarena) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1))
#define BLOCK_HEADER ((sizeof(struct arena_block) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1))

static size_t round_up(size_t n)
{
	return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

static struct pl_xarena *arena_new(size_t first)
{
	first = round_up(first);
	struct pl_xarena *a = pl_malloc(ARENA_HEADER + first);
	a->refs = 1;
	a->pos = (char *)a + ARENA_HEADER;
	a->end = a->pos + first;
	a->last = NULL;
	a->blocks = NULL;
	a->next_block = first * 2 < ARENA_MAX_BLOCK ? first * 2 : ARENA_MAX_BLOCK;
	a->total = ARENA_HEADER + first;
	return a;
}

static void arena_unref(struct pl_xarena *a)
{
	if (--a->refs > 0)
		return;
	struct arena_block *b = a->blocks;
	while (b) {
		struct arena_block *previous = b->previous;
		free(b);
		b = previous;
	}
	free(a);
}

static void *arena_alloc(struct pl_xarena *a, size_t size)
{
	size = round_up(size ? size : 1);
	if ((size_t)(a->end - a->pos) < size) {
		/* A request bigger than a quarter block gets a block of its
		 * own, and the current block keeps serving small ones. */
		bool own_block = size > a->next_block / 4;
		size_t block_size = own_block ? size : a->next_block;
		struct arena_block *b = pl_malloc(BLOCK_HEADER + block_size);
		b->previous = a->blocks;
		a->blocks = b;
		a->total += BLOCK_HEADER + block_size;
		char *data = (char *)b + BLOCK_HEADER;
		if (own_block) {
			a->last = NULL;
			return data;
		}
		if (a->next_block < ARENA_MAX_BLOCK)
			a->next_block *= 2;
		a->pos = data;
		a->end = data + block_size;
	}
	void *p = a->pos;
	a->pos += size;
	a->last = p;
	return p;
}

/* Grows the latest allocation where it lies when there is room. */
static bool arena_extend(struct pl_xarena *a, void *p, size_t new_size)
{
	if (p != a->last || (size_t)(a->end - (char *)p) < round_up(new_size))
		return false;
	a->pos = (char *)p + round_up(new_size);
	return true;
}

static char *arena_strndup(struct pl_xarena *a, const char *s, size_t len)
{
	char *copy = arena_alloc(a, len + 1);
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

static struct pl_xnode *node_in(struct pl_xarena *a, enum pl_xnode_type type)
{
	struct pl_xnode *n = arena_alloc(a, sizeof(*n));
	memset(n, 0, sizeof(*n));
	n->type = type;
	n->arena = a;
	return n;
}

/* Children in the parent's namespace share its string: most elements of
 * a stanza are, and it saves a copy per element. */
static const char *namespace_in(struct pl_xarena *a, const struct pl_xnode *parent,
				const char *ns, size_t ns_len)
{
	if (!ns)
		return NULL;
	if (parent && parent->ns && strncmp(parent->ns, ns, ns_len) == 0 &&
	    parent->ns[ns_len] == '\0')
		return parent->ns;
	return arena_strndup(a, ns, ns_len);
}

static void link_child(struct pl_xnode *parent, struct pl_xnode *child)
{
	child->parent = parent;
	child->next = NULL;
	if (parent->last_child)
		parent->last_child->next = child;
	else
		parent->first_child = child;
	parent->last_child = child;
}

struct pl_xnode *pl_xnode_new(const char *name, const char *ns)
{
	struct pl_xarena *a = arena_new(ARENA_FIRST_BLOCK);
	struct pl_xnode *n = node_in(a, PL_XNODE_ELEMENT);
	n->name = arena_strndup(a, name, strlen(name));
	n->ns = ns ? arena_strndup(a, ns, strlen(ns)) : NULL;
	n->refcount = 1;
	return n;
}

static const char xml_ns_prefix[] = PL_NS_XML "\x1f";

struct pl_xnode *pl_xnode_build(struct pl_xnode *parent, const char *name, size_t name_len,
				const char *ns, size_t ns_len, const char *const *pairs,
				size_t count, size_t arena_hint)
{
	struct pl_xarena *a;
	if (parent) {
		a = parent->arena;
	} else {
		size_t need = ARENA_HEADER + sizeof(struct pl_xnode) + name_len + ns_len + 16 +
			      count * sizeof(struct pl_xattr);
		a = arena_new(need > arena_hint ? need : arena_hint);
	}
	struct pl_xnode *n = node_in(a, PL_XNODE_ELEMENT);
	n->name = arena_strndup(a, name, name_len);
	n->ns = namespace_in(a, parent, ns, ns_len);
	if (count) {
		n->attrs = arena_alloc(a, count * sizeof(*n->attrs));
		n->attr_count = n->attr_cap = count;
		for (size_t i = 0; i < count; i++) {
			const char *attribute = pairs[i * 2], *value = pairs[i * 2 + 1];
			char *copy;
			if (strncmp(attribute, xml_ns_prefix, sizeof(xml_ns_prefix) - 1) == 0) {
				const char *local = attribute + sizeof(xml_ns_prefix) - 1;
				size_t local_len = strlen(local);
				copy = arena_alloc(a, 4 + local_len + 1);
				memcpy(copy, "xml:", 4);
				memcpy(copy + 4, local, local_len + 1);
			} else {
				copy = arena_strndup(a, attribute, strlen(attribute));
			}
			n->attrs[i].name = copy;
			n->attrs[i].value = arena_strndup(a, value, strlen(value));
		}
	}
	if (parent)
		link_child(parent, n);
	else
		n->refcount = 1;
	return n;
}

struct pl_xnode *pl_xnode_add_element(struct pl_xnode *parent, const char *name, const char *ns)
{
	struct pl_xnode *n = node_in(parent->arena, PL_XNODE_ELEMENT);
	n->name = arena_strndup(parent->arena, name, strlen(name));
	n->ns = ns ? namespace_in(parent->arena, parent, ns, strlen(ns)) : parent->ns;
	link_child(parent, n);
	return n;
}

void pl_xnode_add_text(struct pl_xnode *parent, const char *text, size_t len)
{
	if (len == 0)
		return;
	struct pl_xarena *a = parent->arena;
	struct pl_xnode *last = parent->last_child;
	if (last && last->type == PL_XNODE_TEXT) {
		char *merged = (char *)last->name;
		if (!arena_extend(a, merged, last->text_len + len + 1)) {
			merged = arena_alloc(a, last->text_len + len + 1);
			memcpy(merged, last->name, last->text_len);
		}
		memcpy(merged + last->text_len, text, len);
		last->text_len += len;
		merged[last->text_len] = '\0';
		last->name = merged;
		return;
	}
	struct pl_xnode *t = node_in(a, PL_XNODE_TEXT);
	t->name = arena_strndup(a, text, len);
	t->text_len = len;
	link_child(parent, t);
}

void pl_xnode_set_attr(struct pl_xnode *n, const char *name, const char *value)
{
	struct pl_xarena *a = n->arena;
	for (size_t i = 0; i < n->attr_count; i++) {
		if (strcmp(n->attrs[i].name, name) != 0)
			continue;
		if (value) {
			n->attrs[i].value = arena_strndup(a, value, strlen(value));
		} else {
			memmove(&n->attrs[i], &n->attrs[i + 1],
				(n->attr_count - i - 1) * sizeof(*n->attrs));
			n->attr_count--;
		}
		return;
	}
	if (!value)
		return;
	if (n->attr_count == n->attr_cap) {
		size_t cap = n->attr_cap ? n->attr_cap * 2 : 4;
		struct pl_xattr *attrs = arena_alloc(a, cap * sizeof(*attrs));
		if (n->attr_count)
			memcpy(attrs, n->attrs, n->attr_count * sizeof(*attrs));
		n->attrs = attrs;
		n->attr_cap = cap;
	}
	/* Both strings may point into this tree; copying never moves what
	 * they were copied from, so the order does not matter. */
	const char *value_copy = arena_strndup(a, value, strlen(value));
	n->attrs[n->attr_count++] =
		(struct pl_xattr){ arena_strndup(a, name, strlen(name)), value_copy };
}

const char *pl_xnode_attr(const struct pl_xnode *n, const char *name)
{
	for (size_t i = 0; i < n->attr_count; i++)
		if (strcmp(n->attrs[i].name, name) == 0)
			return n->attrs[i].value;
	return NULL;
}

struct pl_xnode *pl_xnode_find(const struct pl_xnode *n, const char *name, const char *ns)
{
	for (struct pl_xnode *c = n->first_child; c; c = c->next)
		if (c->type == PL_XNODE_ELEMENT && strcmp(c->name, name) == 0 &&
		    (!ns || (c->ns && strcmp(c->ns, ns) == 0)))
			return c;
	return NULL;
}

struct pl_xnode *pl_xnode_first_element(const struct pl_xnode *n)
{
	for (struct pl_xnode *c = n->first_child; c; c = c->next)
		if (c->type == PL_XNODE_ELEMENT)
			return c;
	return NULL;
}

struct pl_xnode *pl_xnode_next_element(const struct pl_xnode *n)
{
	for (struct pl_xnode *c = n->next; c; c = c->next)
		if (c->type == PL_XNODE_ELEMENT)
			return c;
	return NULL;
}

char *pl_xnode_text(const struct pl_xnode *n)
{
	size_t len = 0;
	for (const struct pl_xnode *c = n->first_child; c; c = c->next)
		if (c->type == PL_XNODE_TEXT)
			len += c->text_len;
	char *text = pl_malloc(len + 1), *p = text;
	for (const struct pl_xnode *c = n->first_child; c; c = c->next) {
		if (c->type == PL_XNODE_TEXT) {
			memcpy(p, c->name, c->text_len);
			p += c->text_len;
		}
	}
	*p = '\0';
	return text;
}

/* What a copy of n needs from an arena, so pl_xnode_copy makes one block. */
static size_t copy_size(const struct pl_xnode *n, const char *parent_ns)
{
	size_t size = round_up(sizeof(*n));
	if (n->type == PL_XNODE_TEXT)
		return size + round_up(n->text_len + 1);
	size += round_up(strlen(n->name) + 1);
	if (n->ns && (!parent_ns || strcmp(n->ns, parent_ns) != 0))
		size += round_up(strlen(n->ns) + 1);
	size += round_up(n->attr_count * sizeof(*n->attrs));
	for (size_t i = 0; i < n->attr_count; i++)
		size += round_up(strlen(n->attrs[i].name) + 1) +
			round_up(strlen(n->attrs[i].value) + 1);
	for (const struct pl_xnode *c = n->first_child; c; c = c->next)
		size += copy_size(c, n->ns);
	return size;
}

static struct pl_xnode *copy_into(struct pl_xarena *a, const struct pl_xnode *n,
				  struct pl_xnode *parent)
{
	struct pl_xnode *copy = node_in(a, n->type);
	if (n->type == PL_XNODE_TEXT) {
		copy->name = arena_strndup(a, n->name, n->text_len);
		copy->text_len = n->text_len;
	} else {
		copy->name = arena_strndup(a, n->name, strlen(n->name));
		copy->ns = n->ns ? namespace_in(a, parent, n->ns, strlen(n->ns)) : NULL;
		if (n->attr_count) {
			copy->attrs = arena_alloc(a, n->attr_count * sizeof(*copy->attrs));
			copy->attr_count = copy->attr_cap = n->attr_count;
			for (size_t i = 0; i < n->attr_count; i++) {
				const struct pl_xattr *from = &n->attrs[i];
				copy->attrs[i].name = arena_strndup(a, from->name, strlen(from->name));
				copy->attrs[i].value =
					arena_strndup(a, from->value, strlen(from->value));
			}
		}
		for (const struct pl_xnode *c = n->first_child; c; c = c->next)
			copy_into(a, c, copy);
	}
	if (parent)
		link_child(parent, copy);
	return copy;
}

struct pl_xnode *pl_xnode_copy(const struct pl_xnode *n)
{
	struct pl_xarena *a = arena_new(copy_size(n, NULL));
	struct pl_xnode *copy = copy_into(a, n, NULL);
	copy->refcount = 1;
	return copy;
}

struct pl_xnode *pl_xnode_add_child(struct pl_xnode *parent, struct pl_xnode *child)
{
	if (child->parent)
		pl_fatal("pl_xnode_add_child: the child already has a parent");
	if (child->arena == parent->arena && child->refcount == 1) {
		/* A subtree detached from this very tree: its root reference
		 * goes, the tree's own keeps the arena alive. */
		child->refcount = 0;
		arena_unref(child->arena);
		link_child(parent, child);
		return child;
	}
	struct pl_xnode *copy = copy_into(parent->arena, child, parent);
	pl_xnode_unref(&child);
	return copy;
}

void pl_xnode_detach(struct pl_xnode *n)
{
	struct pl_xnode *parent = n->parent;
	if (!parent)
		return;
	struct pl_xnode **link = &parent->first_child, *previous = NULL;
	while (*link && *link != n) {
		previous = *link;
		link = &(*link)->next;
	}
	if (*link)
		*link = n->next;
	if (parent->last_child == n)
		parent->last_child = previous;
	n->parent = NULL;
	n->next = NULL;
	n->refcount = 1;
	n->arena->refs++;
}

struct pl_xnode *pl_xnode_ref(struct pl_xnode *root)
{
	root->refcount++;
	return root;
}

void pl_xnode_unref(struct pl_xnode **root)
{
	struct pl_xnode *n = *root;
	*root = NULL;
	if (!n)
		return;
	if (n->parent)
		pl_fatal("pl_xnode_unref on a node that has a parent");
	if (--n->refcount == 0)
		arena_unref(n->arena);
}

size_t pl_xnode_arena_size(const struct pl_xnode *n)
{
	return n->arena->total;
}

/* Which bytes need an entity: 1 in text and attributes, 2 in attributes
 * only. Text escapes \r, which a parser would otherwise turn into \n;
 * attribute values also escape quotes and the whitespace that attribute
 * normalisation would turn into spaces. */
static const unsigned char escape_class[256] = {
	['&'] = 1, ['<'] = 1, ['>'] = 1, ['\r'] = 1,
	['"'] = 2, ['\''] = 2, ['\n'] = 2, ['\t'] = 2,
};

static void escape(struct pl_buf *out, const char *text, size_t len, unsigned char max_class)
{
	size_t start = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char class = escape_class[(unsigned char)text[i]];
		if (class == 0 || class > max_class)
			continue;
		const char *entity;
		switch (text[i]) {
		case '&': entity = "&amp;"; break;
		case '<': entity = "&lt;"; break;
		case '>': entity = "&gt;"; break;
		case '\r': entity = "&#13;"; break;
		case '"': entity = "&quot;"; break;
		case '\'': entity = "&apos;"; break;
		case '\n': entity = "&#10;"; break;
		default: entity = "&#9;"; break;
		}
		pl_buf_append(out, text + start, i - start);
		pl_buf_puts(out, entity);
		start = i + 1;
	}
	pl_buf_append(out, text + start, len - start);
}

void pl_xml_escape(struct pl_buf *out, const char *text, size_t len)
{
	escape(out, text, len, 2);
}

static bool same_ns(const char *a, const char *b)
{
	if (a == b)
		return true;
	if (!a || !*a)
		return !b || !*b;
	return b && strcmp(a, b) == 0;
}

void pl_xnode_serialize(const struct pl_xnode *n, const char *inherited_ns, struct pl_buf *out)
{
	if (n->type == PL_XNODE_TEXT) {
		escape(out, n->name, n->text_len, 1);
		return;
	}
	size_t name_len = strlen(n->name);
	pl_buf_append(out, "<", 1);
	pl_buf_append(out, n->name, name_len);
	if (!same_ns(n->ns, inherited_ns)) {
		pl_buf_append(out, " xmlns='", 8);
		if (n->ns)
			pl_xml_escape(out, n->ns, strlen(n->ns));
		pl_buf_append(out, "'", 1);
	}
	unsigned prefixes = 0;
	for (size_t i = 0; i < n->attr_count; i++) {
		const struct pl_xattr *a = &n->attrs[i];
		const char *separator = strchr(a->name, '\x1f');
		pl_buf_append(out, " ", 1);
		if (separator) {
			/* A namespaced attribute: declare a prefix for it here. */
			pl_buf_printf(out, "xmlns:a%u='", prefixes);
			pl_xml_escape(out, a->name, (size_t)(separator - a->name));
			pl_buf_printf(out, "' a%u:%s", prefixes++, separator + 1);
		} else {
			pl_buf_puts(out, a->name);
		}
		pl_buf_append(out, "='", 2);
		pl_xml_escape(out, a->value, strlen(a->value));
		pl_buf_append(out, "'", 1);
	}
	if (!n->first_child) {
		pl_buf_append(out, "/>", 2);
		return;
	}
	pl_buf_append(out, ">", 1);
	for (const struct pl_xnode *c = n->first_child; c; c = c->next)
		pl_xnode_serialize(c, n->ns, out);
	pl_buf_append(out, "</", 2);
	pl_buf_append(out, n->name, name_len);
	pl_buf_append(out, ">", 1);
}

char *pl_xnode_to_string(const struct pl_xnode *n, const char *inherited_ns)
{
	struct pl_buf out = { 0 };
	pl_buf_append(&out, "", 0);
	pl_xnode_serialize(n, inherited_ns, &out);
	return pl_buf_take(&out);
}

void pl_xnode_replace_ns(struct pl_xnode *n, const char *from, const char *to)
{
	if (n->type != PL_XNODE_ELEMENT)
		return;
	if (n->ns && strcmp(n->ns, from) == 0)
		n->ns = to;
	for (struct pl_xnode *c = n->first_child; c; c = c->next)
		pl_xnode_replace_ns(c, from, to);
}
