/* Expat-driven stream parsing. Expat reports names as "uri\x1flocal"
 * (namespace processing with a 0x1F separator, a byte that cannot occur in
 * XML). The parser keeps the element under construction and its depth;
 * depth 1 is the stream header, depth 2 closes a whole element that goes
 * to on_element. Size is enforced in feed(): the bytes of one element seen
 * so far are counted before expat buffers them, and input is handed over
 * in slices so the limit is checked often. */
#include "xml/stream.h"
#include "log.h"

#include <expat.h>
#include <stdlib.h>
#include <string.h>

#define NS_SEPARATOR '\x1f'
/* Input goes to expat in slices of this size so that a limit is checked
 * at least this often. */
#define FEED_SLICE 8192

const struct pl_xml_limits pl_xml_default_limits = {
	.max_stanza_bytes = 256 * 1024,
	.max_depth = 64,
	.max_attributes = 128,
};

struct pl_xml_stream {
	XML_Parser parser;
	struct pl_xml_limits limits;
	const struct pl_xml_stream_callbacks *callbacks;
	void *userdata;
	unsigned depth;
	struct pl_xnode *root;     /* depth-2 element under construction (owned) */
	struct pl_xnode *current;  /* innermost open element inside root */
	char *content_ns;          /* default namespace declared on the stream */
	long long fed;             /* bytes given to expat since the last reset */
	long long element_start;   /* offset where the current depth-2 element began */
	long long event_end;       /* offset after the last element boundary */
	bool failed, paused, in_parse;
};

const char *pl_xml_error_condition(enum pl_xml_error error)
{
	switch (error) {
	case PL_XML_NOT_WELL_FORMED: return "not-well-formed";
	case PL_XML_RESTRICTED_XML: return "restricted-xml";
	case PL_XML_POLICY_VIOLATION: return "policy-violation";
	}
	return "undefined-condition";
}

static void fail(struct pl_xml_stream *s, enum pl_xml_error error, const char *detail)
{
	if (s->failed)
		return;
	s->failed = true;
	if (s->in_parse)
		XML_StopParser(s->parser, XML_FALSE);
	s->callbacks->on_error(s->userdata, error, detail);
}

/* Splits "uri\x1flocal" into a namespace (NULL when absent) and a name. */
static const char *split_name(const char *qualified, char *ns, size_t ns_len, bool *has_ns)
{
	const char *separator = strchr(qualified, NS_SEPARATOR);
	if (!separator) {
		*has_ns = false;
		return qualified;
	}
	size_t len = (size_t)(separator - qualified);
	if (len >= ns_len)
		len = ns_len - 1;
	memcpy(ns, qualified, len);
	ns[len] = '\0';
	*has_ns = true;
	return separator + 1;
}

static char *attribute_name(const char *qualified)
{
	static const char xml_prefix[] = PL_NS_XML "\x1f";
	if (strncmp(qualified, xml_prefix, sizeof(xml_prefix) - 1) == 0)
		return pl_asprintf("xml:%s", qualified + sizeof(xml_prefix) - 1);
	return pl_strdup(qualified);
}

static long long current_end(struct pl_xml_stream *s)
{
	return (long long)XML_GetCurrentByteIndex(s->parser) + XML_GetCurrentByteCount(s->parser);
}

static void on_start(void *arg, const XML_Char *qualified, const XML_Char **attributes)
{
	struct pl_xml_stream *s = arg;
	if (s->failed)
		return;
	if (++s->depth > s->limits.max_depth) {
		fail(s, PL_XML_POLICY_VIOLATION, "elements nested too deep");
		return;
	}
	unsigned count = 0;
	while (attributes[count * 2])
		count++;
	if (count > s->limits.max_attributes) {
		fail(s, PL_XML_POLICY_VIOLATION, "too many attributes on one element");
		return;
	}
	char ns[1024];
	bool has_ns;
	const char *name = split_name(qualified, ns, sizeof(ns), &has_ns);

	if (s->depth == 1) {
		const char **pairs = pl_calloc((size_t)count * 2 + 1, sizeof(*pairs));
		char **names = pl_calloc((size_t)count + 1, sizeof(*names));
		for (unsigned i = 0; i < count; i++) {
			names[i] = attribute_name(attributes[i * 2]);
			pairs[i * 2] = names[i];
			pairs[i * 2 + 1] = attributes[i * 2 + 1];
		}
		s->event_end = current_end(s);
		s->callbacks->on_open(s->userdata, name, has_ns ? ns : NULL, s->content_ns, pairs);
		for (unsigned i = 0; i < count; i++)
			free(names[i]);
		free(names);
		free(pairs);
		return;
	}
	struct pl_xnode *n = pl_xnode_new(name, has_ns ? ns : NULL);
	for (unsigned i = 0; i < count; i++) {
		char *attribute = attribute_name(attributes[i * 2]);
		pl_xnode_set_attr(n, attribute, attributes[i * 2 + 1]);
		free(attribute);
	}
	if (s->depth == 2) {
		s->root = n;
		s->element_start = XML_GetCurrentByteIndex(s->parser);
	} else {
		pl_xnode_add_child(s->current, n);
	}
	s->current = n;
}

static void on_end(void *arg, const XML_Char *qualified)
{
	struct pl_xml_stream *s = arg;
	if (s->failed)
		return;
	unsigned depth = s->depth--;
	if (depth == 1) {
		s->event_end = current_end(s);
		s->callbacks->on_close(s->userdata);
		return;
	}
	if (depth > 2) {
		s->current = s->current->parent;
		return;
	}
	struct pl_xnode *element = s->root;
	s->root = s->current = NULL;
	s->event_end = current_end(s);
	s->element_start = -1;
	s->callbacks->on_element(s->userdata, element);
	if (s->paused && !s->failed)
		XML_StopParser(s->parser, XML_FALSE);
}

static void on_text(void *arg, const XML_Char *text, int len)
{
	struct pl_xml_stream *s = arg;
	if (s->failed || s->depth < 2 || !s->current)
		return; /* whitespace between stanzas (keepalives) */
	pl_xnode_add_text(s->current, text, (size_t)len);
}

static void on_namespace(void *arg, const XML_Char *prefix, const XML_Char *uri)
{
	struct pl_xml_stream *s = arg;
	/* The default namespace declared on the stream header is the content
	 * namespace (jabber:client, jabber:server, jabber:component:accept). */
	if (s->depth == 0 && !prefix) {
		free(s->content_ns);
		s->content_ns = pl_strdup(uri ? uri : "");
	}
}

static void on_doctype(void *arg, const XML_Char *name, const XML_Char *sysid,
		       const XML_Char *pubid, int has_internal_subset)
{
	fail(arg, PL_XML_RESTRICTED_XML, "DOCTYPE is not allowed");
}

static void on_entity(void *arg, const XML_Char *name, int is_parameter, const XML_Char *value,
		      int value_len, const XML_Char *base, const XML_Char *system_id,
		      const XML_Char *public_id, const XML_Char *notation)
{
	fail(arg, PL_XML_RESTRICTED_XML, "entity declarations are not allowed");
}

static void on_processing_instruction(void *arg, const XML_Char *target, const XML_Char *data)
{
	fail(arg, PL_XML_RESTRICTED_XML, "processing instructions are not allowed");
}

static void on_comment(void *arg, const XML_Char *data)
{
	fail(arg, PL_XML_RESTRICTED_XML, "comments are not allowed");
}

static void install(struct pl_xml_stream *s)
{
	XML_SetUserData(s->parser, s);
	XML_SetElementHandler(s->parser, on_start, on_end);
	XML_SetCharacterDataHandler(s->parser, on_text);
	XML_SetStartNamespaceDeclHandler(s->parser, on_namespace);
	XML_SetStartDoctypeDeclHandler(s->parser, on_doctype);
	XML_SetEntityDeclHandler(s->parser, on_entity);
	XML_SetProcessingInstructionHandler(s->parser, on_processing_instruction);
	XML_SetCommentHandler(s->parser, on_comment);
	XML_SetParamEntityParsing(s->parser, XML_PARAM_ENTITY_PARSING_NEVER);
}

struct pl_xml_stream *pl_xml_stream_new(const struct pl_xml_limits *limits,
					const struct pl_xml_stream_callbacks *callbacks,
					void *userdata)
{
	struct pl_xml_stream *s = pl_calloc(1, sizeof(*s));
	s->limits = limits ? *limits : pl_xml_default_limits;
	s->callbacks = callbacks;
	s->userdata = userdata;
	s->parser = XML_ParserCreateNS("UTF-8", NS_SEPARATOR);
	if (!s->parser)
		pl_fatal("cannot create an XML parser");
	s->element_start = -1;
	install(s);
	return s;
}

void pl_xml_stream_reset(struct pl_xml_stream *s)
{
	XML_ParserReset(s->parser, "UTF-8");
	install(s);
	if (s->root)
		pl_xnode_unref(&s->root);
	s->current = NULL;
	free(s->content_ns);
	s->content_ns = NULL;
	s->depth = 0;
	s->fed = s->event_end = 0;
	s->element_start = -1;
	s->failed = s->paused = false;
}

void pl_xml_stream_free(struct pl_xml_stream *s)
{
	if (!s)
		return;
	if (s->root)
		pl_xnode_unref(&s->root);
	free(s->content_ns);
	XML_ParserFree(s->parser);
	free(s);
}

void pl_xml_stream_pause(struct pl_xml_stream *s)
{
	s->paused = true;
}

bool pl_xml_stream_failed(const struct pl_xml_stream *s)
{
	return s->failed;
}

static enum pl_xml_error classify(enum XML_Error code)
{
	switch (code) {
	case XML_ERROR_UNDEFINED_ENTITY:
	case XML_ERROR_RECURSIVE_ENTITY_REF:
	case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
	case XML_ERROR_ENTITY_DECLARED_IN_PE:
	case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
		return PL_XML_RESTRICTED_XML;
	default:
		return PL_XML_NOT_WELL_FORMED;
	}
}

ssize_t pl_xml_stream_feed(struct pl_xml_stream *s, const char *data, size_t len)
{
	if (s->failed)
		return -1;
	size_t done = 0;
	while (done < len) {
		/* The bytes of the element in progress (or of whatever sits
		 * between elements) must stay under the limit before expat is
		 * allowed to buffer more of them. */
		long long since = s->element_start >= 0 ? s->element_start : s->event_end;
		if (s->fed - since > (long long)s->limits.max_stanza_bytes) {
			fail(s, PL_XML_POLICY_VIOLATION, "stanza too large");
			return -1;
		}
		size_t slice = len - done < FEED_SLICE ? len - done : FEED_SLICE;
		long long slice_start = s->fed;
		s->in_parse = true;
		enum XML_Status status = XML_Parse(s->parser, data + done, (int)slice, XML_FALSE);
		s->in_parse = false;
		if (s->failed)
			return -1;
		if (s->paused) {
			s->paused = false;
			size_t used = (size_t)(s->event_end - slice_start);
			s->fed = s->event_end;
			return (ssize_t)(done + used);
		}
		if (status != XML_STATUS_OK) {
			enum XML_Error code = XML_GetErrorCode(s->parser);
			fail(s, classify(code), XML_ErrorString(code));
			return -1;
		}
		s->fed += (long long)slice;
		done += slice;
	}
	return (ssize_t)len;
}

struct fragment {
	struct pl_xnode *element;
	bool error;
};

static void fragment_open(void *arg, const char *name, const char *ns, const char *content_ns,
			  const char *const *attributes)
{
}

static void fragment_element(void *arg, struct pl_xnode *element)
{
	struct fragment *f = arg;
	if (f->element) {
		f->error = true;
		pl_xnode_unref(&element);
		return;
	}
	f->element = element;
}

static void fragment_close(void *arg)
{
}

static void fragment_error(void *arg, enum pl_xml_error error, const char *detail)
{
	((struct fragment *)arg)->error = true;
}

struct pl_xnode *pl_xml_parse_element(const char *xml, size_t len, const char *ns)
{
	static const struct pl_xml_stream_callbacks callbacks = {
		fragment_open, fragment_element, fragment_close, fragment_error
	};
	struct fragment f = { 0 };
	struct pl_xml_limits unlimited = pl_xml_default_limits;
	unlimited.max_stanza_bytes = len + 1024;
	struct pl_xml_stream *s = pl_xml_stream_new(&unlimited, &callbacks, &f);
	struct pl_buf open = { 0 };
	pl_buf_puts(&open, "<wrapper xmlns='");
	pl_xml_escape(&open, ns, strlen(ns));
	pl_buf_puts(&open, "'>");
	if (pl_xml_stream_feed(s, open.data, open.len) < 0 || pl_xml_stream_feed(s, xml, len) < 0 ||
	    pl_xml_stream_feed(s, "</wrapper>", 10) < 0)
		f.error = true;
	pl_buf_free(&open);
	pl_xml_stream_free(s);
	if (f.error && f.element)
		pl_xnode_unref(&f.element);
	return f.element;
}
