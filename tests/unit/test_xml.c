/* Element trees: building, attributes, lookup, text, copies, reference
 * counts and serialization (escaping and namespace declarations). */
#include "xml/xnode.h"
#include "../tap.h"

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
	pl_xnode_unref(&message);
	return done_testing();
}
