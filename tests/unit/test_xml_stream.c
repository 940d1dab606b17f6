/* The stream parser: stanzas delivered whole whatever the chunking,
 * stream open and close, namespaces, keepalives, every error class of RFC
 * 6120 (not-well-formed, restricted-xml, policy-violation) including a
 * 10 MB stanza, 500 attributes and a billion-laughs document, a pause
 * and reset in the middle of a buffer as STARTTLS and SASL need, and the
 * memory bounds: idle size, a large tag fed byte by byte, and a peer that
 * makes expat remember thousands of names. */
#include "xml/stream.h"
#include "../tap.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct recorder {
	struct pl_xml_stream *stream;
	int opens, closes, errors;
	char open_name[64], open_ns[128], content_ns[64], to[64], lang[16];
	enum pl_xml_error error;
	struct pl_buf stanzas;     /* serialized, one per line */
	const char *pause_on;      /* element name that pauses the parser */
	const char *reset_on;      /* element name that resets it from the callback */
	int elements;
	bool reparse;              /* parse each element again from its serialization */
};

static void on_open(void *arg, const char *name, const char *ns, const char *content_ns,
		    const char *const *attributes)
{
	struct recorder *r = arg;
	r->opens++;
	snprintf(r->open_name, sizeof(r->open_name), "%s", name);
	snprintf(r->open_ns, sizeof(r->open_ns), "%s", ns ? ns : "");
	snprintf(r->content_ns, sizeof(r->content_ns), "%s", content_ns ? content_ns : "");
	for (size_t i = 0; attributes[i]; i += 2) {
		if (strcmp(attributes[i], "to") == 0)
			snprintf(r->to, sizeof(r->to), "%s", attributes[i + 1]);
		if (strcmp(attributes[i], "xml:lang") == 0)
			snprintf(r->lang, sizeof(r->lang), "%s", attributes[i + 1]);
	}
}

static void on_element(void *arg, struct pl_xnode *element)
{
	struct recorder *r = arg;
	pl_xnode_serialize(element, r->content_ns, &r->stanzas);
	pl_buf_puts(&r->stanzas, "\n");
	if (r->pause_on && strcmp(element->name, r->pause_on) == 0)
		pl_xml_stream_pause(r->stream);
	if (r->reset_on && strcmp(element->name, r->reset_on) == 0)
		pl_xml_stream_reset(r->stream);
	r->elements++;
	if (r->reparse) {
		/* Another parser from inside this one's callback. */
		char *xml = pl_xnode_to_string(element, "jabber:client");
		struct pl_xnode *again = pl_xml_parse_element(xml, strlen(xml), "jabber:client");
		char *xml2 = again ? pl_xnode_to_string(again, "jabber:client") : NULL;
		if (!xml2 || strcmp(xml, xml2) != 0)
			r->errors += 100;
		free(xml);
		free(xml2);
		pl_xnode_unref(&again);
	}
	pl_xnode_unref(&element);
}

static void on_close(void *arg)
{
	((struct recorder *)arg)->closes++;
}

static void on_error(void *arg, enum pl_xml_error error, const char *detail)
{
	struct recorder *r = arg;
	r->errors++;
	r->error = error;
}

static const struct pl_xml_stream_callbacks callbacks = { on_open, on_element, on_close,
							  on_error };

static void start(struct recorder *r)
{
	memset(r, 0, sizeof(*r));
	r->stream = pl_xml_stream_new(NULL, &callbacks, r);
}

static void stop(struct recorder *r)
{
	pl_xml_stream_free(r->stream);
	pl_buf_free(&r->stanzas);
}

static const char header[] =
	"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
	"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' "
	"xml:lang='en'>";

static void expect_error(const char *label, const char *document, enum pl_xml_error expected)
{
	struct recorder r;
	start(&r);
	ssize_t rc = pl_xml_stream_feed(r.stream, header, strlen(header));
	if (rc >= 0)
		rc = pl_xml_stream_feed(r.stream, document, strlen(document));
	ok(rc == -1 && r.errors == 1, "%s: refused", label);
	is_str(pl_xml_error_condition(r.error), pl_xml_error_condition(expected),
	       "%s: with %s", label, pl_xml_error_condition(expected));
	ok(pl_xml_stream_feed(r.stream, "<presence/>", 11) == -1 && r.errors == 1,
	   "%s: nothing is parsed after the error", label);
	stop(&r);
}

int main(void)
{
	{
		/* An idle stream hibernates: its parser is freed, and the next
		 * input finds the same stream context (namespaces, prefixes). */
		struct recorder r;
		start(&r);
		pl_xml_stream_feed(r.stream, header, strlen(header));
		const char *first = "<message to='a@b'><body>one</body></message>";
		pl_xml_stream_feed(r.stream, first, strlen(first));
		size_t awake = pl_xml_stream_memory(r.stream);
		ok(pl_xml_stream_hibernate(r.stream), "an idle stream between stanzas hibernates");
		size_t asleep = pl_xml_stream_memory(r.stream);
		ok(asleep * 4 < awake, "and holds far less memory (%zu bytes, was %zu)", asleep, awake);
		const char *second = "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
				     "</stream:error><message><body>two</body></message>";
		pl_xml_stream_feed(r.stream, second, strlen(second));
		is_int(r.opens, 1, "waking up does not report the stream header again");
		is_int(r.errors, 0, "nor any error");
		ok(strstr(r.stanzas.data, "<stream:error") || strstr(r.stanzas.data, "etherx.jabber.org"),
		   "the stream: prefix still resolves after waking up");
		ok(strstr(r.stanzas.data, "<body>two</body>") != NULL, "and stanzas come as before");
		const char *partial = "<message><bo";
		pl_xml_stream_feed(r.stream, partial, strlen(partial));
		ok(!pl_xml_stream_hibernate(r.stream), "a stream inside a stanza does not hibernate");
		pl_xml_stream_feed(r.stream, "dy>three</body></message>", 25);
		ok(strstr(r.stanzas.data, "<body>three</body>") != NULL, "and finishes the stanza");
		stop(&r);
	}
	const char *stanzas =
		"<message to='juliet@example.com' id='1'><body>Art thou &amp; there?</body>"
		"<x xmlns='jabber:x:oob'><url>http://e.x/a?b&amp;c</url></x></message>\n \t "
		"<iq type='get' id='2'><query xmlns='jabber:iq:roster'/></iq>"
		"<presence><show>away</show></presence></stream:stream>";
	struct recorder whole, bytewise;
	start(&whole);
	pl_xml_stream_feed(whole.stream, header, strlen(header));
	pl_xml_stream_feed(whole.stream, stanzas, strlen(stanzas));
	is_int(whole.opens, 1, "the stream header is reported");
	is_str(whole.open_name, "stream", "as stream");
	is_str(whole.open_ns, PL_NS_STREAMS, "in the streams namespace");
	is_str(whole.content_ns, "jabber:client", "with its content namespace");
	is_str(whole.to, "localhost", "and its attributes");
	is_str(whole.lang, "en", "including xml:lang");
	is_str(whole.stanzas.data,
	       "<message to='juliet@example.com' id='1'><body>Art thou &amp; there?</body>"
	       "<x xmlns='jabber:x:oob'><url>http://e.x/a?b&amp;c</url></x></message>\n"
	       "<iq type='get' id='2'><query xmlns='jabber:iq:roster'/></iq>\n"
	       "<presence><show>away</show></presence>\n",
	       "three stanzas, whitespace keepalives ignored");
	is_int(whole.closes, 1, "the stream close is reported");

	start(&bytewise);
	for (size_t i = 0; header[i]; i++)
		pl_xml_stream_feed(bytewise.stream, header + i, 1);
	for (size_t i = 0; stanzas[i]; i++)
		pl_xml_stream_feed(bytewise.stream, stanzas + i, 1);
	is_str(bytewise.stanzas.data, whole.stanzas.data, "byte-by-byte feeding gives the same");
	is_int(bytewise.errors, 0, "and no error");
	stop(&whole);
	stop(&bytewise);

	expect_error("mismatched tags", "<message><body></message>", PL_XML_NOT_WELL_FORMED);
	expect_error("invalid UTF-8", "<message><body>\xff\xfe</body></message>",
		     PL_XML_NOT_WELL_FORMED);
	expect_error("an unbound prefix", "<foo:message/>", PL_XML_NOT_WELL_FORMED);
	expect_error("a processing instruction", "<?evil data?>", PL_XML_RESTRICTED_XML);
	expect_error("a comment", "<message><!-- hi --></message>", PL_XML_RESTRICTED_XML);
	expect_error("an undefined entity", "<message><body>&foo;</body></message>",
		     PL_XML_RESTRICTED_XML);

	struct recorder r;
	start(&r);
	const char *doctype = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
			      "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>"
			      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&lol2;";
	ok(pl_xml_stream_feed(r.stream, doctype, strlen(doctype)) == -1 &&
		   r.error == PL_XML_RESTRICTED_XML,
	   "a DOCTYPE (billion laughs) is restricted-xml before any expansion");
	stop(&r);

	/* 500 attributes: refused at once, not after a long stall. */
	struct pl_buf many = { 0 };
	pl_buf_puts(&many, "<message");
	for (int i = 0; i < 500; i++)
		pl_buf_printf(&many, " a%d='%d'", i, i);
	pl_buf_puts(&many, "/>");
	expect_error("500 attributes", many.data, PL_XML_POLICY_VIOLATION);
	pl_buf_free(&many);

	struct pl_buf deep = { 0 };
	for (int i = 0; i < 1000; i++)
		pl_buf_puts(&deep, "<a>");
	expect_error("1000 nested elements", deep.data, PL_XML_POLICY_VIOLATION);
	pl_buf_free(&deep);

	/* A 10 MB stanza fed in 64 KiB chunks is refused early. */
	start(&r);
	pl_xml_stream_feed(r.stream, header, strlen(header));
	struct mallinfo2 before = mallinfo2();
	char *chunk = malloc(65536);
	memset(chunk, 'x', 65536);
	size_t fed = 0;
	pl_xml_stream_feed(r.stream, "<message><body>", 15);
	while (fed < 10 * 1024 * 1024 && !pl_xml_stream_failed(r.stream)) {
		pl_xml_stream_feed(r.stream, chunk, 65536);
		fed += 65536;
	}
	struct mallinfo2 after = mallinfo2();
	ok(r.error == PL_XML_POLICY_VIOLATION && r.errors == 1,
	   "a 10 MB stanza is a policy-violation");
	ok(fed <= 512 * 1024, "refused after %zu KiB, not 10 MB", fed / 1024);
	ok(pl_xml_stream_peak_parser_memory(r.stream) < 1024 * 1024,
	   "expat never held more than %zu KiB", pl_xml_stream_peak_parser_memory(r.stream) / 1024);
	ok(after.uordblks < before.uordblks + 4 * 1024 * 1024,
	   "memory did not grow by more than 4 MB (%zu KiB)",
	   (after.uordblks - before.uordblks) / 1024);
	free(chunk);
	stop(&r);

	/* STARTTLS: pause after <starttls/>, the rest of the buffer is not XML. */
	start(&r);
	r.pause_on = "starttls";
	struct pl_buf buffer = { 0 };
	pl_buf_puts(&buffer, header);
	pl_buf_puts(&buffer, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
	size_t tls_offset = buffer.len;
	pl_buf_append(&buffer, "\x16\x03\x01\x02\x00\x01", 6);
	ssize_t used = pl_xml_stream_feed(r.stream, buffer.data, buffer.len);
	is_int(used, tls_offset, "feed stops right after <starttls/>");
	ok(r.errors == 0, "the TLS bytes were not parsed");
	pl_xml_stream_reset(r.stream);
	r.opens = 0;
	pl_buf_reset(&r.stanzas);
	ok(pl_xml_stream_feed(r.stream, header, strlen(header)) == (ssize_t)strlen(header) &&
		   r.opens == 1,
	   "after a reset a new stream header parses");
	const char *auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGE=</auth>";
	pl_xml_stream_feed(r.stream, auth, strlen(auth));
	has_str(r.stanzas.data, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>",
		"and stanzas follow");
	stop(&r);

	/* STARTTLS with the reset asked for from the callback: feed stops
	 * right after <proceed/> and reports where the rest begins. */
	start(&r);
	r.reset_on = "proceed";
	pl_buf_reset(&buffer);
	pl_buf_puts(&buffer, header);
	pl_buf_puts(&buffer, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
	size_t garbage_at = buffer.len;
	pl_buf_puts(&buffer, "GARBAGE<<<");
	used = pl_xml_stream_feed(r.stream, buffer.data, buffer.len);
	is_int(used, garbage_at, "a reset from the callback stops feed at GARBAGE");
	ok(r.errors == 0 && !pl_xml_stream_failed(r.stream), "GARBAGE was not parsed");
	ok(pl_xml_stream_feed(r.stream, header, strlen(header)) == (ssize_t)strlen(header) &&
		   r.opens == 2,
	   "the stream was reset: a new header parses");
	stop(&r);

	/* SASL success: the new header may share the buffer; feeding the
	 * remainder after the reset parses it with the new parser. */
	start(&r);
	r.reset_on = "success";
	pl_buf_reset(&buffer);
	pl_buf_puts(&buffer, header);
	pl_buf_puts(&buffer, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
	pl_buf_puts(&buffer, header);
	pl_buf_puts(&buffer, "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
	used = pl_xml_stream_feed(r.stream, buffer.data, buffer.len);
	ok(used > 0 && (size_t)used < buffer.len && r.opens == 1, "feed stops after <success/>");
	ok(pl_xml_stream_feed(r.stream, buffer.data + used, buffer.len - (size_t)used) ==
		   (ssize_t)(buffer.len - (size_t)used),
	   "the rest is fed to the new parser");
	is_int(r.opens, 2, "which sees the new stream header");
	has_str(r.stanzas.data, "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
		"and the stanza after it");
	stop(&r);

	/* A pause without a reset: the next feed is refused, not misparsed. */
	start(&r);
	r.pause_on = "starttls";
	pl_xml_stream_feed(r.stream, header, strlen(header));
	const char *starttls = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><presence/>";
	is_int(pl_xml_stream_feed(r.stream, starttls, strlen(starttls)), strlen(starttls) - 11,
	       "pause leaves <presence/> to the caller");
	ok(pl_xml_stream_feed(r.stream, "<presence/>", 11) == -1 && r.errors == 1,
	   "feeding again without a reset is an error");
	stop(&r);
	pl_buf_free(&buffer);

	/* Keepalives: hours of whitespace never add up to a "stanza". */
	start(&r);
	pl_xml_stream_feed(r.stream, header, strlen(header));
	char spaces[1024];
	memset(spaces, ' ', sizeof(spaces));
	for (int i = 0; i < 400; i++)
		pl_xml_stream_feed(r.stream, spaces, sizeof(spaces));
	pl_xml_stream_feed(r.stream, "<presence/>", 11);
	ok(r.errors == 0 && r.elements == 1, "400 KiB of keepalive whitespace is fine");
	size_t idle = pl_xml_stream_memory(r.stream);
	ok(idle < 16 * 1024, "an idle stream holds %zu bytes (expat included)", idle);
	stop(&r);

	/* CDATA, xml:lang on a stanza, and a nested parse from the callback. */
	start(&r);
	r.reparse = true;
	pl_xml_stream_feed(r.stream, header, strlen(header));
	const char *cdata = "<message xml:lang='fr'><body><![CDATA[a<b & c]]></body></message>";
	pl_xml_stream_feed(r.stream, cdata, strlen(cdata));
	is_str(r.stanzas.data, "<message xml:lang='fr'><body>a&lt;b &amp; c</body></message>\n",
	       "CDATA becomes escaped text; xml:lang keeps its prefix");
	ok(r.errors == 0, "another document parsed inside the callback comes out the same");
	stop(&r);

	/* A 100 KiB start tag fed one byte at a time, with '>' inside its
	 * quotes: linear, not quadratic (expat 2.5 alone takes many seconds). */
	start(&r);
	pl_xml_stream_feed(r.stream, header, strlen(header));
	struct pl_buf tag = { 0 };
	pl_buf_puts(&tag, "<message id='");
	for (int i = 0; i < 100 * 1024; i++)
		pl_buf_append(&tag, i % 997 == 0 ? ">" : "v", 1);
	pl_buf_puts(&tag, "'><body>hi</body></message>");
	for (size_t i = 0; i < tag.len; i++)
		pl_xml_stream_feed(r.stream, tag.data + i, 1);
	ok(r.elements == 1 && r.errors == 0, "a 100 KiB tag fed bytewise arrives whole");
	struct pl_buf expected = { 0 };
	pl_buf_puts(&expected, "<message id='");
	pl_xml_escape(&expected, tag.data + 13, 100 * 1024);
	pl_buf_puts(&expected, "'><body>hi</body></message>\n");
	is_str(r.stanzas.data, expected.data, "with its value and content intact");
	pl_buf_free(&expected);
	ok(pl_xml_stream_memory(r.stream) < 32 * 1024,
	   "afterwards the stream is small again (%zu bytes; expat peaked at %zu)",
	   pl_xml_stream_memory(r.stream), pl_xml_stream_peak_parser_memory(r.stream));
	pl_buf_free(&tag);
	stop(&r);

	/* Thousands of distinct names: expat's tables would grow for the life
	 * of the stream; the parser is renewed between stanzas instead. */
	start(&r);
	pl_xml_stream_feed(r.stream, header, strlen(header));
	size_t largest = 0;
	for (int i = 0; i < 20000; i++) {
		char unique[128];
		int n = snprintf(unique, sizeof(unique), "<message n%d='1'><e%d xmlns='urn:x'/></message>", i, i);
		pl_xml_stream_feed(r.stream, unique, (size_t)n);
		if (pl_xml_stream_memory(r.stream) > largest)
			largest = pl_xml_stream_memory(r.stream);
	}
	ok(r.elements == 20000 && r.errors == 0 && r.opens == 1,
	   "20000 stanzas with new names all parse, one stream open reported");
	ok(largest < 128 * 1024, "memory stays bounded (at most %zu bytes)", largest);
	pl_xml_stream_feed(r.stream, "<presence/>", 11);
	has_str(r.stanzas.data, "<message n19999='1'><e19999 xmlns='urn:x'/></message>\n<presence/>",
		"the renewed parser keeps the stream's namespaces");
	stop(&r);

	/* The ceiling on expat's own memory answers policy-violation. */
	struct pl_xml_limits tight = pl_xml_default_limits;
	tight.max_parser_bytes = 48 * 1024;
	memset(&r, 0, sizeof(r));
	r.stream = pl_xml_stream_new(&tight, &callbacks, &r);
	pl_xml_stream_feed(r.stream, header, strlen(header));
	struct pl_buf wide = { 0 };
	pl_buf_puts(&wide, "<message");
	for (int i = 0; i < 100; i++) {
		pl_buf_printf(&wide, " a%d", i);
		for (int k = 0; k < 300; k++)
			pl_buf_puts(&wide, "x");
		pl_buf_puts(&wide, "='1'");
	}
	pl_buf_puts(&wide, "/>");
	ok(pl_xml_stream_feed(r.stream, wide.data, wide.len) == -1 &&
		   r.error == PL_XML_POLICY_VIOLATION && r.errors == 1,
	   "expat past its memory ceiling is a policy-violation");
	pl_buf_free(&wide);
	stop(&r);

	/* One stored element back into a tree. */
	const char *stored_xml = "<query xmlns='jabber:iq:private'><x xmlns='urn:a'>1</x></query>";
	struct pl_xnode *stored = pl_xml_parse_element(stored_xml, strlen(stored_xml), "jabber:client");
	ok(stored && strcmp(stored->ns, "jabber:iq:private") == 0 &&
		   pl_xnode_find(stored, "x", "urn:a"),
	   "pl_xml_parse_element rebuilds a stored element");
	pl_xnode_unref(&stored);
	ok(pl_xml_parse_element("<a/><b/>", 8, "jabber:client") == NULL, "two elements are refused");
	ok(pl_xml_parse_element("<a>", 3, "jabber:client") == NULL, "an unfinished one too");

	/* Text and attributes keep their characters. */
	start(&r);
	pl_xml_stream_feed(r.stream, header, strlen(header));
	const char *unicode = "<message to='\xcf\x80@example.com'><body>caf\xc3\xa9 &#x2603; &lt;3</body></message>";
	pl_xml_stream_feed(r.stream, unicode, strlen(unicode));
	has_str(r.stanzas.data, "caf\xc3\xa9 \xe2\x98\x83 &lt;3", "UTF-8 and character references");
	stop(&r);
	return done_testing();
}
