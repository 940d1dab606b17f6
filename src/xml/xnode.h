/* XML element trees for stanzas. A node is an element (name, namespace
 * URI, ordered attributes, children) or a text node. Namespaces are kept
 * resolved: every element knows its URI, and the serializer writes an
 * xmlns declaration only where an element's namespace differs from its
 * parent's, which is how XMPP streams carry them. A tree belongs to its
 * root; the root is reference-counted because routing fans one stanza out
 * to several sessions (pl_xnode_ref/pl_xnode_unref; the last unref frees
 * the whole tree). Network thread only. */
#ifndef PL_XML_XNODE_H
#define PL_XML_XNODE_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define PL_NS_XML "http://www.w3.org/XML/1998/namespace"

enum pl_xnode_type { PL_XNODE_ELEMENT, PL_XNODE_TEXT };

/* An attribute name is "local", "xml:lang", or "uri\x1flocal" for an
 * attribute in another namespace (rare in XMPP; serialized with a
 * generated prefix). */
struct pl_xattr {
	char *name;
	char *value;
};

struct pl_xnode {
	enum pl_xnode_type type;
	char *name;              /* element: local name; text: the text (NUL-terminated) */
	size_t text_len;         /* text nodes only */
	char *ns;                /* element namespace URI; NULL for none and for text */
	struct pl_xattr *attrs;
	size_t attr_count, attr_cap;
	struct pl_xnode *parent;
	struct pl_xnode *first_child, *last_child, *next;
	unsigned refcount;       /* meaningful on roots only */
};

struct pl_xnode *pl_xnode_new(const char *name, const char *ns);
/* Appends child (which must have no parent) to parent; returns child. */
struct pl_xnode *pl_xnode_add_child(struct pl_xnode *parent, struct pl_xnode *child);
/* Convenience: a new element child in the parent's namespace unless ns given. */
struct pl_xnode *pl_xnode_add_element(struct pl_xnode *parent, const char *name, const char *ns);
/* Appends text, merged into a trailing text node. */
void pl_xnode_add_text(struct pl_xnode *parent, const char *text, size_t len);
/* Sets (replacing) or, with value NULL, removes an attribute. */
void pl_xnode_set_attr(struct pl_xnode *n, const char *name, const char *value);
const char *pl_xnode_attr(const struct pl_xnode *n, const char *name);
/* First element child with this name and namespace (ns NULL: any). */
struct pl_xnode *pl_xnode_find(const struct pl_xnode *n, const char *name, const char *ns);
/* First element child in any namespace-less order, or NULL. */
struct pl_xnode *pl_xnode_first_element(const struct pl_xnode *n);
/* Next element sibling. */
struct pl_xnode *pl_xnode_next_element(const struct pl_xnode *n);
/* Concatenated text of the direct text children (caller frees). */
char *pl_xnode_text(const struct pl_xnode *n);
/* Deep copy, an independent root with refcount 1. */
struct pl_xnode *pl_xnode_copy(const struct pl_xnode *n);
/* Detaches n from its parent (n becomes a root with refcount 1). */
void pl_xnode_detach(struct pl_xnode *n);

struct pl_xnode *pl_xnode_ref(struct pl_xnode *root);
/* Drops a reference and clears the caller's pointer; frees at zero. */
void pl_xnode_unref(struct pl_xnode **root);

/* Serializes n as XML; `inherited_ns` is the namespace in scope (e.g.
 * "jabber:client" inside a client stream), so no xmlns is written for it. */
void pl_xnode_serialize(const struct pl_xnode *n, const char *inherited_ns, struct pl_buf *out);
char *pl_xnode_to_string(const struct pl_xnode *n, const char *inherited_ns);
/* XML-escapes text into out (quotes too, so it serves attributes). */
void pl_xml_escape(struct pl_buf *out, const char *text, size_t len);

#endif
