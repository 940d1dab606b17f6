/* Element trees: construction, lookup, copies, reference counting and the
 * serializer. Nodes are plain heap objects owned by their parent; only a
 * root carries a meaningful reference count. */
#include "xml/xnode.h"

#include <stdlib.h>
#include <string.h>

struct pl_xnode *pl_xnode_new(const char *name, const char *ns)
{
	struct pl_xnode *n = pl_calloc(1, sizeof(*n));
	n->type = PL_XNODE_ELEMENT;
	n->name = pl_strdup(name);
	n->ns = ns ? pl_strdup(ns) : NULL;
	n->refcount = 1;
	return n;
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

struct pl_xnode *pl_xnode_add_child(struct pl_xnode *parent, struct pl_xnode *child)
{
	link_child(parent, child);
	return child;
}

struct pl_xnode *pl_xnode_add_element(struct pl_xnode *parent, const char *name, const char *ns)
{
	return pl_xnode_add_child(parent, pl_xnode_new(name, ns ? ns : parent->ns));
}

void pl_xnode_add_text(struct pl_xnode *parent, const char *text, size_t len)
{
	if (len == 0)
		return;
	struct pl_xnode *last = parent->last_child;
	if (last && last->type == PL_XNODE_TEXT) {
		last->name = pl_realloc(last->name, last->text_len + len + 1);
		memcpy(last->name + last->text_len, text, len);
		last->text_len += len;
		last->name[last->text_len] = '\0';
		return;
	}
	struct pl_xnode *t = pl_calloc(1, sizeof(*t));
	t->type = PL_XNODE_TEXT;
	t->name = pl_strndup(text, len);
	t->text_len = len;
	link_child(parent, t);
}

void pl_xnode_set_attr(struct pl_xnode *n, const char *name, const char *value)
{
	for (size_t i = 0; i < n->attr_count; i++) {
		if (strcmp(n->attrs[i].name, name) != 0)
			continue;
		free(n->attrs[i].value);
		if (value) {
			n->attrs[i].value = pl_strdup(value);
		} else {
			free(n->attrs[i].name);
			memmove(&n->attrs[i], &n->attrs[i + 1],
				(n->attr_count - i - 1) * sizeof(*n->attrs));
			n->attr_count--;
		}
		return;
	}
	if (!value)
		return;
	pl_grow((void **)&n->attrs, &n->attr_cap, n->attr_count + 1, sizeof(*n->attrs));
	n->attrs[n->attr_count++] = (struct pl_xattr){ pl_strdup(name), pl_strdup(value) };
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
	struct pl_buf text = { 0 };
	pl_buf_append(&text, "", 0);
	for (struct pl_xnode *c = n->first_child; c; c = c->next)
		if (c->type == PL_XNODE_TEXT)
			pl_buf_append(&text, c->name, c->text_len);
	return pl_buf_take(&text);
}

static void free_tree(struct pl_xnode *n)
{
	struct pl_xnode *c = n->first_child;
	while (c) {
		struct pl_xnode *next = c->next;
		free_tree(c);
		c = next;
	}
	for (size_t i = 0; i < n->attr_count; i++) {
		free(n->attrs[i].name);
		free(n->attrs[i].value);
	}
	free(n->attrs);
	free(n->name);
	free(n->ns);
	free(n);
}

struct pl_xnode *pl_xnode_copy(const struct pl_xnode *n)
{
	struct pl_xnode *copy;
	if (n->type == PL_XNODE_TEXT) {
		copy = pl_calloc(1, sizeof(*copy));
		copy->type = PL_XNODE_TEXT;
		copy->name = pl_strndup(n->name, n->text_len);
		copy->text_len = n->text_len;
		copy->refcount = 1;
		return copy;
	}
	copy = pl_xnode_new(n->name, n->ns);
	for (size_t i = 0; i < n->attr_count; i++)
		pl_xnode_set_attr(copy, n->attrs[i].name, n->attrs[i].value);
	for (struct pl_xnode *c = n->first_child; c; c = c->next)
		link_child(copy, pl_xnode_copy(c));
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
		free_tree(n);
}

/* Attribute values also escape quotes and whitespace controls (attribute
 * normalisation would turn a raw newline into a space); text needs only
 * the markup characters and \r (which XML parsers would drop). */
static void escape(struct pl_buf *out, const char *text, size_t len, bool attribute)
{
	size_t start = 0;
	for (size_t i = 0; i < len; i++) {
		const char *entity = NULL;
		switch (text[i]) {
		case '&': entity = "&amp;"; break;
		case '<': entity = "&lt;"; break;
		case '>': entity = "&gt;"; break;
		case '\r': entity = "&#13;"; break;
		case '"': entity = attribute ? "&quot;" : NULL; break;
		case '\'': entity = attribute ? "&apos;" : NULL; break;
		case '\n': entity = attribute ? "&#10;" : NULL; break;
		case '\t': entity = attribute ? "&#9;" : NULL; break;
		default: break;
		}
		if (!entity)
			continue;
		pl_buf_append(out, text + start, i - start);
		pl_buf_puts(out, entity);
		start = i + 1;
	}
	pl_buf_append(out, text + start, len - start);
}

void pl_xml_escape(struct pl_buf *out, const char *text, size_t len)
{
	escape(out, text, len, true);
}

static void escape_text(struct pl_buf *out, const char *text, size_t len)
{
	escape(out, text, len, false);
}

static bool same_ns(const char *a, const char *b)
{
	if (!a || !*a)
		return !b || !*b;
	return b && strcmp(a, b) == 0;
}

void pl_xnode_serialize(const struct pl_xnode *n, const char *inherited_ns, struct pl_buf *out)
{
	if (n->type == PL_XNODE_TEXT) {
		escape_text(out, n->name, n->text_len);
		return;
	}
	pl_buf_puts(out, "<");
	pl_buf_puts(out, n->name);
	if (!same_ns(n->ns, inherited_ns)) {
		pl_buf_puts(out, " xmlns='");
		if (n->ns)
			pl_xml_escape(out, n->ns, strlen(n->ns));
		pl_buf_puts(out, "'");
	}
	unsigned prefixes = 0;
	for (size_t i = 0; i < n->attr_count; i++) {
		const struct pl_xattr *a = &n->attrs[i];
		const char *separator = strchr(a->name, '\x1f');
		pl_buf_puts(out, " ");
		if (separator) {
			/* A namespaced attribute: declare a prefix for it here. */
			pl_buf_printf(out, "xmlns:a%u='", prefixes);
			pl_xml_escape(out, a->name, (size_t)(separator - a->name));
			pl_buf_printf(out, "' a%u:%s", prefixes++, separator + 1);
		} else {
			pl_buf_puts(out, a->name);
		}
		pl_buf_puts(out, "='");
		pl_xml_escape(out, a->value, strlen(a->value));
		pl_buf_puts(out, "'");
	}
	if (!n->first_child) {
		pl_buf_puts(out, "/>");
		return;
	}
	pl_buf_puts(out, ">");
	for (const struct pl_xnode *c = n->first_child; c; c = c->next)
		pl_xnode_serialize(c, n->ns, out);
	pl_buf_puts(out, "</");
	pl_buf_puts(out, n->name);
	pl_buf_puts(out, ">");
}

char *pl_xnode_to_string(const struct pl_xnode *n, const char *inherited_ns)
{
	struct pl_buf out = { 0 };
	pl_xnode_serialize(n, inherited_ns, &out);
	return pl_buf_take(&out);
}
