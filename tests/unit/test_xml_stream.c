/* The stream parser: stanzas delivered whole whatever the chunking,
 * stream open and close, namespaces, keepalives, every error class of RFC
 * 6120 (not-well-formed, restricted-xml, policy-violation) including a
 * 10 MB stanza, 500 attributes and a billion-laughs document, and a pause
 * and reset in the middle of a buffer as STARTTLS needs. */
#include "xml/stream.h"
#include "../tap.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

struct recorder {
	struct pl_xml_stream *stream;
	int opens, closes, errors;
	char open_name[64], open_ns[128], content_ns[64], to[64], lang[16];
	enum pl_xml_error error;
	struct pl_buf stanzas;     /* serialized, one per line */
	const char *pause_on;      /* element name that pauses the parser */
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
	pl_buf_free(&buffer);
	stop(&r);

	/* Text and attributes keep their characters. */
	start(&r);
	pl_xml_stream_feed(r.stream, header, strlen(header));
	const char *unicode = "<message to='\xcf\x80@example.com'><body>caf\xc3\xa9 &#x2603; &lt;3</body></message>";
	pl_xml_stream_feed(r.stream, unicode, strlen(unicode));
	has_str(r.stanzas.data, "caf\xc3\xa9 \xe2\x98\x83 &lt;3", "UTF-8 and character references");
	stop(&r);
	return done_testing();
}
