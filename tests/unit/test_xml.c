/* Element trees: building, attributes, lookup, text, copies, reference
 * counts, the arena ownership rules (detach, add_child across trees) and
 * serialization (escaping and namespace declarations). */
#include "xml/xnode.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
	struct pl_xnode *message = pl_xnode_new("message", "jabber:client");
	pl_xnode_set_attr(message, "to", "juliet@example.com");
	pl_xnode_set_attr(message, "type", "chat");
	pl_xnode_set_attr(message, "xml:lang", "en");
	struct pl_xnode *body = pl_xnode_add_element(message, "body", NULL);
	pl_xnode_add_text(body, "a < b & \"c\" > 'd'", 17);
	pl_xnode_add_text(body, "!", 1);
	pl_xnode_add_element(message, "active", "http://jabber.org/protocol/chatstates");

	is_str(pl_xnode_attr(message, "to"), "juliet@example.com", "attribute lookup");
	ok(pl_xnode_attr(message, "from") == NULL, "a missing attribute is NULL");
	pl_xnode_set_attr(message, "type", "normal");
	is_str(pl_xnode_attr(message, "type"), "normal", "set replaces");
	is_int(message->attr_count, 3, "without adding");
	pl_xnode_set_attr(message, "type", NULL);
	ok(pl_xnode_attr(message, "type") == NULL && message->attr_count == 2, "set NULL removes");

	ok(pl_xnode_find(message, "body", "jabber:client") == body, "find by name and namespace");
	ok(pl_xnode_find(message, "body", "urn:other") == NULL, "the namespace must match");
	ok(pl_xnode_find(message, "active", NULL) != NULL, "find with any namespace");
	ok(pl_xnode_first_element(message) == body, "first element");
	ok(pl_xnode_next_element(body) == pl_xnode_find(message, "active", NULL), "next element");

	char *text = pl_xnode_text(body);
	is_str(text, "a < b & \"c\" > 'd'!", "adjacent text is merged");
	free(text);
	is_int(body->first_child == body->last_child, 1, "into one text node");

	char *xml = pl_xnode_to_string(message, "jabber:client");
	is_str(xml,
	       "<message to='juliet@example.com' xml:lang='en'><body>a &lt; b &amp; \"c\" &gt; "
	       "'d'!</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
	       "serialization: escaping, inherited namespace omitted, others declared");
	free(xml);
	xml = pl_xnode_to_string(message, NULL);
	has_str(xml, "<message xmlns='jabber:client'", "the namespace is declared when not inherited");
	free(xml);

	pl_xnode_set_attr(message, "id", "q'\"<&>\n");
	xml = pl_xnode_to_string(message, "jabber:client");
	has_str(xml, "id='q&apos;&quot;&lt;&amp;&gt;&#10;'", "attribute values are escaped");
	free(xml);

	struct pl_xnode *copy = pl_xnode_copy(message);
	char *a = pl_xnode_to_string(message, NULL), *b = pl_xnode_to_string(copy, NULL);
	is_str(b, a, "a copy serializes the same");
	free(a);
	free(b);
	ok(copy->parent == NULL && copy->refcount == 1, "a copy is an independent root");

	struct pl_xnode *shared = pl_xnode_ref(copy);
	is_int(copy->refcount, 2, "ref counts up");
	pl_xnode_unref(&shared);
	ok(shared == NULL, "unref clears the caller's pointer");
	is_int(copy->refcount, 1, "the other holder keeps it");
	pl_xnode_unref(&copy);
	ok(copy == NULL, "the last unref frees (valgrind checks)");

	struct pl_xnode *active = pl_xnode_find(message, "active", NULL);
	pl_xnode_detach(active);
	ok(pl_xnode_find(message, "active", NULL) == NULL && message->last_child == body,
	   "detach unlinks the child");
	pl_xnode_unref(&active);

	struct pl_xnode *odd = pl_xnode_new("x", "urn:a");
	pl_xnode_set_attr(odd, "urn:b\x1f" "flag", "1");
	xml = pl_xnode_to_string(odd, "urn:a");
	is_str(xml, "<x xmlns:a0='urn:b' a0:flag='1'/>", "a namespaced attribute gets a prefix");
	free(xml);
	pl_xnode_unref(&odd);

	/* A child without a namespace inside a namespaced parent says so. */
	struct pl_xnode *iq = pl_xnode_new("iq", "jabber:client");
	struct pl_xnode *query = pl_xnode_add_element(iq, "query", "jabber:iq:private");
	struct pl_xnode *bare = pl_xnode_new("plain", NULL);
	pl_xnode_add_text(bare, "x\r\ny", 4);
	bare = pl_xnode_add_child(query, bare);
	ok(bare->parent == query && query->last_child == bare, "add_child links the subtree");
	ok(bare->arena == iq->arena, "a subtree from another tree is copied into this one");
	xml = pl_xnode_to_string(iq, "jabber:client");
	is_str(xml, "<iq><query xmlns='jabber:iq:private'><plain xmlns=''>x&#13;\ny</plain></query></iq>",
	       "xmlns='' undeclares; \\r survives as a character reference");
	free(xml);
	pl_xnode_add_element(query, "note", NULL);
	xml = pl_xnode_to_string(query, "jabber:client");
	has_str(xml, "<note/>", "an added element inherits its parent's namespace");
	free(xml);

	/* Detach: the subtree outlives its old tree, and can come back. */
	pl_xnode_detach(query);
	ok(iq->first_child == NULL && query->parent == NULL && query->refcount == 1,
	   "a detached subtree is a root");
	pl_xnode_unref(&iq);
	is_str(pl_xnode_find(query, "plain", NULL)->first_child->name, "x\r\ny",
	       "and outlives the tree it came from");
	struct pl_xnode *holder = pl_xnode_new("holder", NULL);
	struct pl_xnode *child = pl_xnode_add_element(holder, "child", "urn:c");
	pl_xnode_detach(child);
	ok(pl_xnode_add_child(holder, child) == child, "a node detached from this tree is relinked as is");
	struct pl_xnode *held = pl_xnode_new("held", NULL);
	struct pl_xnode *other_holder = pl_xnode_ref(held);
	struct pl_xnode *linked = pl_xnode_add_child(holder, held);
	ok(linked != other_holder && other_holder->refcount == 1 && other_holder->parent == NULL,
	   "a root someone else holds is copied, and the caller's reference dropped");
	pl_xnode_unref(&other_holder);
	pl_xnode_unref(&holder);
	pl_xnode_unref(&query);

	/* xml:lang is an ordinary attribute name and keeps its prefix. */
	struct pl_xnode *label = pl_xnode_new("text", "urn:ietf:params:xml:ns:xmpp-stanzas");
	pl_xnode_set_attr(label, "xml:lang", "de");
	pl_xnode_add_text(label, "Gr\xc3\xbc\xc3\x9f", 6);
	xml = pl_xnode_to_string(label, "urn:ietf:params:xml:ns:xmpp-stanzas");
	is_str(xml, "<text xml:lang='de'>Gr\xc3\xbc\xc3\x9f</text>", "xml:lang and UTF-8 text");
	free(xml);
	is_str(pl_xnode_attr(label, "xml:lang"), "de", "xml:lang lookup");

	/* Many attributes and children: arrays and the arena grow. */
	for (int i = 0; i < 200; i++) {
		char name[16];
		snprintf(name, sizeof(name), "a%d", i);
		pl_xnode_set_attr(label, name, name);
		pl_xnode_add_element(label, "item", NULL);
	}
	is_int(label->attr_count, 201, "200 attributes added");
	is_str(pl_xnode_attr(label, "a199"), "a199", "the last one is found");
	int items = 0;
	for (struct pl_xnode *c = pl_xnode_first_element(label); c; c = pl_xnode_next_element(c))
		items++;
	is_int(items, 200, "iteration sees every element child and skips text");
	struct pl_xnode *big = pl_xnode_copy(label);
	ok(pl_xnode_arena_size(big) < pl_xnode_arena_size(label),
	   "a copy's arena is sized to fit (%zu < %zu bytes)", pl_xnode_arena_size(big),
	   pl_xnode_arena_size(label));
	char *x1 = pl_xnode_to_string(label, NULL), *x2 = pl_xnode_to_string(big, NULL);
	is_str(x2, x1, "and serializes the same");
	free(x1);
	free(x2);
	pl_xnode_set_attr(big, "a0", pl_xnode_attr(big, "a1"));
	is_str(pl_xnode_attr(big, "a0"), "a1", "a value copied from the same tree");
	pl_xnode_unref(&label);
	pl_xnode_unref(&big);

	struct pl_xnode *empty = pl_xnode_new("x", NULL);
	char *none = pl_xnode_text(empty);
	is_str(none, "", "no text is the empty string");
	free(none);
	xml = pl_xnode_to_string(empty, "jabber:client");
	is_str(xml, "<x xmlns=''/>", "no namespace inside jabber:client");
	free(xml);
	pl_xnode_unref(&empty);
	pl_xnode_unref(&empty);
	ok(empty == NULL, "unref of NULL is harmless");

	pl_xnode_unref(&message);
	return done_testing();
}
