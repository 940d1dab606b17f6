/* XML element trees for stanzas. A node is an element (name, namespace
 * URI, ordered attributes, children) or a text node. Namespaces are kept
 * resolved: every element knows its URI, and the serializer writes an
 * xmlns declaration only where an element's namespace differs from its
 * parent's, which is how XMPP streams carry them. Network thread only.
 *
 * Ownership. A tree's nodes and strings live in an arena (a few large
 * blocks), so a parsed stanza costs a handful of mallocs and one free
 * however many elements it has. The rules that follow from it:
 *  - A tree belongs to its root. The root is reference-counted because
 *    routing fans one stanza out to several sessions (pl_xnode_ref,
 *    pl_xnode_unref; the last unref releases the tree). Nodes are never
 *    freed one by one.
 *  - Nodes made by pl_xnode_add_element/pl_xnode_add_text, and those the
 *    stream parser builds, belong to the arena of the tree they are in.
 *  - pl_xnode_copy makes an independent tree in a new arena: use it to
 *    keep part of a stanza past the stanza's life.
 *  - pl_xnode_detach turns a subtree into a root (refcount 1) that shares
 *    the arena with its old tree; the memory goes when both are unref'd.
 *  - Replacing an attribute or merging text does not return the old bytes
 *    to the arena before the tree goes; stanzas are short-lived, but do
 *    not use one tree as an endlessly edited document.
 *  - Pointers from pl_xnode_attr and the name/ns fields stay valid until
 *    the tree is released (a replaced attribute's old value too). */
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
	const char *name;
	const char *value;
};

struct pl_xarena;

/* Fields are read-only outside xnode.c: change a tree through the
 * functions below, which know where its memory comes from. */
struct pl_xnode {
	enum pl_xnode_type type;
	unsigned refcount;       /* meaningful on roots only */
	const char *name;        /* element: local name; text: the text (NUL-terminated) */
	const char *ns;          /* element namespace URI; NULL for none and for text */
	size_t text_len;         /* text nodes only */
	struct pl_xattr *attrs;
	size_t attr_count, attr_cap;
	struct pl_xnode *parent;
	struct pl_xnode *first_child, *last_child, *next;
	struct pl_xarena *arena; /* where this node's memory (and its subtree's) comes from */
};

/* A new root element (refcount 1) in a new arena; ns may be NULL. */
struct pl_xnode *pl_xnode_new(const char *name, const char *ns);
/* Appends a subtree to parent and takes the caller's reference to child,
 * which must be a root. Returns the node now in the tree: a root from
 * another arena (or one shared with other holders) is copied into
 * parent's arena and the caller's reference dropped, so use the returned
 * pointer, never `child`. */
struct pl_xnode *pl_xnode_add_child(struct pl_xnode *parent, struct pl_xnode *child);
/* A new element child in the parent's namespace unless ns is given. */
struct pl_xnode *pl_xnode_add_element(struct pl_xnode *parent, const char *name, const char *ns);
/* Appends text, merged into a trailing text node. */
void pl_xnode_add_text(struct pl_xnode *parent, const char *text, size_t len);
/* Sets (replacing) or, with value NULL, removes an attribute. */
void pl_xnode_set_attr(struct pl_xnode *n, const char *name, const char *value);
const char *pl_xnode_attr(const struct pl_xnode *n, const char *name);
/* First element child with this name and namespace (ns NULL: any). */
struct pl_xnode *pl_xnode_find(const struct pl_xnode *n, const char *name, const char *ns);
/* Iteration over element children, skipping text:
 *   for (c = pl_xnode_first_element(n); c; c = pl_xnode_next_element(c)) */
struct pl_xnode *pl_xnode_first_element(const struct pl_xnode *n);
struct pl_xnode *pl_xnode_next_element(const struct pl_xnode *n);
/* Concatenated text of the direct text children (caller frees; "" when
 * there is none). */
char *pl_xnode_text(const struct pl_xnode *n);
/* Deep copy, an independent root with refcount 1 in a new arena sized
 * to fit. */
struct pl_xnode *pl_xnode_copy(const struct pl_xnode *n);
/* Detaches n from its parent: n becomes a root with refcount 1 (see the
 * ownership rules above). No-op on a root. */
void pl_xnode_detach(struct pl_xnode *n);
/* Every element of the subtree in namespace `from` moves to `to`, which
 * must outlive the tree (a string literal): stanzas read from a component
 * or server stream (jabber:component:accept, jabber:server) become
 * jabber:client stanzas, the router's and the modules' one namespace. */
void pl_xnode_replace_ns(struct pl_xnode *n, const char *from, const char *to);

struct pl_xnode *pl_xnode_ref(struct pl_xnode *root);
/* Drops a reference and clears the caller's pointer; releases the tree at
 * zero. NULL is fine; a node that has a parent is a fatal error. */
void pl_xnode_unref(struct pl_xnode **root);

/* Serializes n as XML; `inherited_ns` is the namespace in scope (e.g.
 * "jabber:client" inside a client stream), so no xmlns is written for it.
 * Attributes use single quotes. */
void pl_xnode_serialize(const struct pl_xnode *n, const char *inherited_ns, struct pl_buf *out);
char *pl_xnode_to_string(const struct pl_xnode *n, const char *inherited_ns);
/* XML-escapes text into out (quotes too, so it serves attributes). */
void pl_xml_escape(struct pl_buf *out, const char *text, size_t len);

/* For the stream parser: an element built from expat's attribute list in
 * as few allocations as possible. `pairs` holds `count` name/value pairs
 * with names as expat reports them ("uri\x1flocal"; the XML namespace
 * becomes the xml: prefix); name and namespace come with their lengths
 * (ns NULL: none). With parent NULL the element is a new root whose arena
 * starts with at least `arena_hint` bytes. */
struct pl_xnode *pl_xnode_build(struct pl_xnode *parent, const char *name, size_t name_len,
				const char *ns, size_t ns_len, const char *const *pairs,
				size_t count, size_t arena_hint);
/* Bytes the arena of n's tree has taken from malloc (for accounting). */
size_t pl_xnode_arena_size(const struct pl_xnode *n);

#endif
