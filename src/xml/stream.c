/* Expat-driven stream parsing. Expat reports names as "uri\x1flocal"
 * (namespace processing with a 0x1F separator, a byte that cannot occur in
 * XML). The parser keeps the element under construction and its depth;
 * depth 1 is the stream header, depth 2 closes a whole element that goes
 * to on_element. All positions below are byte offsets in expat's input
 * since the last reset (XML_GetCurrentByteIndex counts the same way).
 *
 * Three things keep a hostile peer's cost bounded. Size is enforced in
 * feed(): the bytes of one element seen so far are counted before expat
 * buffers them, and input goes in slices so the limit is checked often.
 * Expat's allocations are counted through XML_ParserCreate_MM and refused
 * past a ceiling. And a large unfinished token is not handed to expat
 * again until the new input could finish it (see hold_back), since
 * expat 2.5 rescans a pending token from its start on every call. */
#include "xml/stream.h"
#include "log.h"

#include <expat.h>
#include <stdlib.h>
#include <string.h>

#define NS_SEPARATOR '\x1f'
/* Input goes to expat in slices of this size so that a limit is checked
 * at least this often. */
#define FEED_SLICE 8192
/* Pending tokens shorter than this are simply reparsed: cheap, and every
 * ordinary tag is shorter. */
#define HOLD_MIN_TOKEN 4096
/* Between stanzas, a parser holding more than this gets replaced (its
 * buffer grew for a large tag, or its name tables for many names). */
#define RECYCLE_PARSER_BYTES (64 * 1024)
/* A stanza's first arena block; most messages fit it. Larger stanzas
 * make the next one start bigger, up to the maximum. */
#define STANZA_ARENA_MIN 1024
#define STANZA_ARENA_MAX 8192
/* The text gathering buffer is given back after a stanza that made it
 * grow past this, so an idle stream stays small. */
#define TEXT_KEEP_BYTES 4096

const struct pl_xml_limits pl_xml_default_limits = {
	.max_stanza_bytes = 256 * 1024,
	.max_depth = 64,
	.max_attributes = 128,
	.max_parser_bytes = 0, /* derived from max_stanza_bytes */
};

/* Where a pending token stands, as far as "could the next bytes finish
 * it" goes: a tag ends at a '>' outside quotes, a reference at ';'.
 * Anything else (text, a finished token) is taken as finishable. */
enum token_scan { SCAN_NONE, SCAN_START, SCAN_TAG, SCAN_SINGLE, SCAN_DOUBLE, SCAN_REF, SCAN_OPEN };

struct pl_xml_stream {
	XML_Parser parser;
	struct pl_xml_limits limits;
	const struct pl_xml_stream_callbacks *callbacks;
	void *userdata;
	unsigned depth;
	struct pl_xnode *root;      /* depth-2 element under construction (owned) */
	struct pl_xnode *current;   /* innermost open element inside root */
	char *content_ns;           /* default namespace declared on the stream */
	struct pl_buf text;         /* character data not yet attached to current */
	struct pl_buf held;         /* input not yet given to expat (see hold_back) */
	struct pl_buf header;       /* the raw stream start tag, for recycle */
	long long fed;              /* bytes given to expat since the last reset */
	long long element_start;    /* where the current depth-2 element began, or -1 */
	long long event_end;        /* after the last element boundary or keepalive */
	long long token_start;      /* after the last event: where expat's pending token begins */
	enum token_scan parsed_scan, held_scan;
	size_t stanza_arena;        /* first arena block for the next stanza */
	size_t parser_bytes, parser_peak;
	bool failed, paused, reset_requested, in_parse, replaying, out_of_budget;
	bool dormant;               /* parser freed while idle (pl_xml_stream_hibernate) */
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

/* ---- expat's memory, counted per stream ------------------------------------ */

/* Expat's allocator hooks take no user pointer, so the stream on whose
 * behalf expat runs is set around every call into expat (and restored
 * after: a callback may parse another document, pl_xml_parse_element);
 * each block records its owner so frees are charged right. */
static _Thread_local struct pl_xml_stream *charged_stream;

struct charge {
	struct pl_xml_stream *owner;
	size_t size;
} __attribute__((aligned(16)));

static void *charged_malloc(size_t size)
{
	struct pl_xml_stream *s = charged_stream;
	if (!s)
		pl_fatal("expat allocated outside a stream call");
	if (s->parser_bytes + size > s->limits.max_parser_bytes) {
		s->out_of_budget = true;
		return NULL;
	}
	struct charge *c = pl_malloc(sizeof(*c) + size);
	c->owner = s;
	c->size = size;
	s->parser_bytes += size;
	if (s->parser_bytes > s->parser_peak)
		s->parser_peak = s->parser_bytes;
	return c + 1;
}

static void charged_free(void *p)
{
	if (!p)
		return;
	struct charge *c = (struct charge *)p - 1;
	c->owner->parser_bytes -= c->size;
	free(c);
}

static void *charged_realloc(void *p, size_t size)
{
	if (!p)
		return charged_malloc(size);
	struct charge *c = (struct charge *)p - 1;
	struct pl_xml_stream *s = c->owner;
	if (size > c->size && s->parser_bytes + (size - c->size) > s->limits.max_parser_bytes) {
		s->out_of_budget = true;
		return NULL;
	}
	s->parser_bytes -= c->size;
	c = pl_realloc(c, sizeof(*c) + size);
	c->size = size;
	s->parser_bytes += size;
	if (s->parser_bytes > s->parser_peak)
		s->parser_peak = s->parser_bytes;
	return c + 1;
}

static const XML_Memory_Handling_Suite charged_memory = { charged_malloc, charged_realloc,
							  charged_free };

/* ---- events ------------------------------------------------------------------ */

static void fail(struct pl_xml_stream *s, enum pl_xml_error error, const char *detail)
{
	if (s->failed)
		return;
	s->failed = true;
	if (s->in_parse)
		XML_StopParser(s->parser, XML_FALSE);
	pl_log(PL_LOG_DEBUG, "xml", "stream error %s: %s", pl_xml_error_condition(error), detail);
	s->callbacks->on_error(s->userdata, error, detail);
}

static long long current_end(struct pl_xml_stream *s)
{
	return (long long)XML_GetCurrentByteIndex(s->parser) + XML_GetCurrentByteCount(s->parser);
}

/* Text arrives in pieces (entities, buffer ends); it is gathered here and
 * attached once, so the tree gets one text node per run. */
static void flush_text(struct pl_xml_stream *s)
{
	if (s->text.len && s->current)
		pl_xnode_add_text(s->current, s->text.data, s->text.len);
	s->text.len = 0;
}

static const char xml_ns_prefix[] = PL_NS_XML "\x1f";

static void open_stream(struct pl_xml_stream *s, const char *name, const char *ns,
			const XML_Char **attributes, unsigned count)
{
	/* Kept so that a renewed parser can be put back into the same
	 * namespace context (see recycle). */
	int offset = 0, size = 0;
	const char *context = XML_GetInputContext(s->parser, &offset, &size);
	int length = XML_GetCurrentByteCount(s->parser);
	pl_buf_reset(&s->header);
	if (context && length > 0 && offset + length <= size)
		pl_buf_append(&s->header, context + offset, (size_t)length);
	s->event_end = current_end(s);
	if (s->replaying)
		return;

	const char **pairs = pl_calloc((size_t)count * 2 + 1, sizeof(*pairs));
	char **names = pl_calloc((size_t)count + 1, sizeof(*names));
	for (unsigned i = 0; i < count; i++) {
		const char *attribute = attributes[i * 2];
		if (strncmp(attribute, xml_ns_prefix, sizeof(xml_ns_prefix) - 1) == 0)
			names[i] = pl_asprintf("xml:%s", attribute + sizeof(xml_ns_prefix) - 1);
		else
			names[i] = pl_strdup(attribute);
		pairs[i * 2] = names[i];
		pairs[i * 2 + 1] = attributes[i * 2 + 1];
	}
	s->callbacks->on_open(s->userdata, name, ns, s->content_ns, pairs);
	for (unsigned i = 0; i < count; i++)
		free(names[i]);
	free(names);
	free(pairs);
}

static void on_start(void *arg, const XML_Char *qualified, const XML_Char **attributes)
{
	struct pl_xml_stream *s = arg;
	if (s->failed)
		return;
	s->token_start = current_end(s);
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
	const char *separator = strchr(qualified, NS_SEPARATOR);
	const char *name = separator ? separator + 1 : qualified;
	size_t ns_len = separator ? (size_t)(separator - qualified) : 0;

	if (s->depth == 1) {
		char *ns = separator ? pl_strndup(qualified, ns_len) : NULL;
		open_stream(s, name, ns, attributes, count);
		free(ns);
		return;
	}
	flush_text(s);
	if (s->depth == 2)
		s->element_start = XML_GetCurrentByteIndex(s->parser);
	s->current = pl_xnode_build(s->depth == 2 ? NULL : s->current, name, strlen(name),
				    separator ? qualified : NULL, ns_len,
				    (const char *const *)attributes, count, s->stanza_arena);
	if (s->depth == 2)
		s->root = s->current;
}

static void on_end(void *arg, const XML_Char *qualified)
{
	struct pl_xml_stream *s = arg;
	if (s->failed)
		return;
	s->token_start = current_end(s);
	unsigned depth = s->depth--;
	if (depth == 1) {
		s->event_end = s->token_start;
		if (!s->replaying)
			s->callbacks->on_close(s->userdata);
		return;
	}
	flush_text(s);
	if (depth > 2) {
		s->current = s->current->parent;
		return;
	}
	struct pl_xnode *element = s->root;
	s->root = s->current = NULL;
	s->event_end = s->token_start;
	s->element_start = -1;
	/* The next stanza's arena starts about as big as this one needed. */
	size_t used = pl_xnode_arena_size(element);
	s->stanza_arena = used < STANZA_ARENA_MIN ? STANZA_ARENA_MIN
			  : used > STANZA_ARENA_MAX ? STANZA_ARENA_MAX : used;
	if (s->text.cap > TEXT_KEEP_BYTES)
		pl_buf_free(&s->text);
	s->callbacks->on_element(s->userdata, element);
}

static void on_text(void *arg, const XML_Char *text, int len)
{
	struct pl_xml_stream *s = arg;
	if (s->failed)
		return;
	s->token_start = current_end(s);
	if (s->depth < 2) {
		/* Whitespace between stanzas (keepalives): nothing to keep, and
		 * it must not add up towards the size limit over the hours. */
		s->event_end = s->token_start;
		return;
	}
	pl_buf_append(&s->text, text, (size_t)len);
}

static void on_xml_declaration(void *arg, const XML_Char *version, const XML_Char *encoding,
			       int standalone)
{
	struct pl_xml_stream *s = arg;
	s->token_start = current_end(s);
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

/* ---- life cycle --------------------------------------------------------------- */

static void install(struct pl_xml_stream *s)
{
	XML_SetUserData(s->parser, s);
	XML_SetElementHandler(s->parser, on_start, on_end);
	XML_SetCharacterDataHandler(s->parser, on_text);
	XML_SetXmlDeclHandler(s->parser, on_xml_declaration);
	XML_SetStartNamespaceDeclHandler(s->parser, on_namespace);
	XML_SetStartDoctypeDeclHandler(s->parser, on_doctype);
	XML_SetEntityDeclHandler(s->parser, on_entity);
	XML_SetProcessingInstructionHandler(s->parser, on_processing_instruction);
	XML_SetCommentHandler(s->parser, on_comment);
	XML_SetParamEntityParsing(s->parser, XML_PARAM_ENTITY_PARSING_NEVER);
#ifdef XML_DTD
	/* DOCTYPE is refused before any entity exists; this is the belt to
	 * those braces. */
	XML_SetBillionLaughsAttackProtectionMaximumAmplification(s->parser, 2.0f);
	XML_SetBillionLaughsAttackProtectionActivationThreshold(s->parser, 64 * 1024);
#endif
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
	/* Expat 2.6's own deferral can sit on a finished stanza until more
	 * bytes come, which an interactive protocol cannot have; hold_back
	 * does that job without the wait. */
	XML_SetReparseDeferralEnabled(s->parser, XML_FALSE);
#endif
}

static void clear_state(struct pl_xml_stream *s)
{
	if (s->root)
		pl_xnode_unref(&s->root);
	s->current = NULL;
	free(s->content_ns);
	s->content_ns = NULL;
	s->depth = 0;
	s->fed = s->event_end = s->token_start = 0;
	s->element_start = -1;
	s->parsed_scan = s->held_scan = SCAN_NONE;
	s->failed = s->paused = s->reset_requested = s->out_of_budget = false;
	pl_buf_free(&s->text);
	pl_buf_free(&s->held);
	pl_buf_free(&s->header);
}

static void create_parser(struct pl_xml_stream *s)
{
	struct pl_xml_stream *outer = charged_stream;
	charged_stream = s;
	s->parser = XML_ParserCreate_MM("UTF-8", &charged_memory, "\x1f");
	if (!s->parser)
		pl_fatal("cannot create an XML parser");
	install(s);
	charged_stream = outer;
}

static void free_parser(struct pl_xml_stream *s)
{
	struct pl_xml_stream *outer = charged_stream;
	charged_stream = s;
	XML_ParserFree(s->parser);
	charged_stream = outer;
	s->parser = NULL;
}

struct pl_xml_stream *pl_xml_stream_new(const struct pl_xml_limits *limits,
					const struct pl_xml_stream_callbacks *callbacks,
					void *userdata)
{
	struct pl_xml_stream *s = pl_calloc(1, sizeof(*s));
	s->limits = limits ? *limits : pl_xml_default_limits;
	const struct pl_xml_limits *d = &pl_xml_default_limits;
	if (!s->limits.max_stanza_bytes)
		s->limits.max_stanza_bytes = d->max_stanza_bytes;
	if (!s->limits.max_depth)
		s->limits.max_depth = d->max_depth;
	if (!s->limits.max_attributes)
		s->limits.max_attributes = d->max_attributes;
	if (!s->limits.max_parser_bytes)
		s->limits.max_parser_bytes = 16 * s->limits.max_stanza_bytes + 1024 * 1024;
	s->callbacks = callbacks;
	s->userdata = userdata;
	s->stanza_arena = STANZA_ARENA_MIN;
	s->element_start = -1;
	create_parser(s);
	return s;
}

static void reset_now(struct pl_xml_stream *s)
{
	clear_state(s);
	s->dormant = false;
	/* A new parser rather than XML_ParserReset, which keeps the input
	 * buffer and the name tables at whatever size they grew to. */
	free_parser(s);
	create_parser(s);
}

void pl_xml_stream_reset(struct pl_xml_stream *s)
{
	if (s->in_parse) {
		/* Expat cannot be reset from its own handler: stop it, and feed
		 * resets once XML_Parse has returned. */
		s->reset_requested = true;
		pl_xml_stream_pause(s);
		return;
	}
	reset_now(s);
}

void pl_xml_stream_free(struct pl_xml_stream *s)
{
	if (!s)
		return;
	clear_state(s);
	free_parser(s);
	free(s);
}

void pl_xml_stream_pause(struct pl_xml_stream *s)
{
	if (!s->in_parse || s->paused || s->failed)
		return;
	s->paused = true;
	XML_StopParser(s->parser, XML_FALSE);
}

bool pl_xml_stream_failed(const struct pl_xml_stream *s)
{
	return s->failed;
}

size_t pl_xml_stream_memory(const struct pl_xml_stream *s)
{
	return sizeof(*s) + s->parser_bytes + s->held.cap + s->text.cap + s->header.cap +
	       (s->root ? pl_xnode_arena_size(s->root) : 0);
}

size_t pl_xml_stream_peak_parser_memory(const struct pl_xml_stream *s)
{
	return s->parser_peak;
}

/* ---- feeding ------------------------------------------------------------------ */

static enum pl_xml_error classify(enum XML_Error code)
{
	switch (code) {
	case XML_ERROR_UNDEFINED_ENTITY:
	case XML_ERROR_RECURSIVE_ENTITY_REF:
	case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
	case XML_ERROR_ENTITY_DECLARED_IN_PE:
	case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
		return PL_XML_RESTRICTED_XML;
	case XML_ERROR_NO_MEMORY:
		return PL_XML_POLICY_VIOLATION;
	default:
		return PL_XML_NOT_WELL_FORMED;
	}
}

/* Advances a pending token's scan over data; true when those bytes could
 * finish the token. */
static bool scan_token(enum token_scan *state, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		switch (*state) {
		case SCAN_NONE:
		case SCAN_OPEN:
			*state = SCAN_OPEN;
			return true;
		case SCAN_START:
			*state = c == '<' ? SCAN_TAG : c == '&' ? SCAN_REF : SCAN_OPEN;
			if (*state == SCAN_OPEN)
				return true;
			break;
		case SCAN_TAG:
			if (c == '>') {
				*state = SCAN_OPEN;
				return true;
			}
			if (c == '\'' || c == '"')
				*state = c == '\'' ? SCAN_SINGLE : SCAN_DOUBLE;
			break;
		case SCAN_SINGLE:
			if (c == '\'')
				*state = SCAN_TAG;
			break;
		case SCAN_DOUBLE:
			if (c == '"')
				*state = SCAN_TAG;
			break;
		case SCAN_REF:
			if (c == ';') {
				*state = SCAN_OPEN;
				return true;
			}
			break;
		}
	}
	return false;
}

/* Once expat returned, the token it keeps pending starts at token_start;
 * brings its scan up to the end of what was parsed. The scan only ever
 * covers a pending token's bytes, each once. */
static void rescan_pending(struct pl_xml_stream *s, const char *data, size_t len,
			   long long start)
{
	long long end = start + (long long)len;
	if (s->token_start >= end) {
		s->parsed_scan = SCAN_NONE;
		return;
	}
	if (s->token_start >= start) {
		s->parsed_scan = SCAN_START;
		scan_token(&s->parsed_scan, data + (s->token_start - start),
			   (size_t)(end - s->token_start));
	} else {
		scan_token(&s->parsed_scan, data, len);
	}
}

/* Decides whether a slice waits in s->held instead of going to expat:
 * only while a long token is pending, the slice cannot finish it, and
 * less than the token's length has waited (so each reparse is paid for
 * by as many new bytes: linear overall). */
static bool hold_back(struct pl_xml_stream *s, const char *data, size_t len)
{
	long long pending = s->fed - s->token_start;
	if (pending < HOLD_MIN_TOKEN)
		return false;
	enum token_scan scan = s->held.len ? s->held_scan : s->parsed_scan;
	if (scan_token(&scan, data, len))
		return false;
	if ((long long)(s->held.len + len) >= pending)
		return false;
	pl_buf_append(&s->held, data, len);
	s->held_scan = scan;
	return true;
}

/* Runs expat on data; false when parsing ended (an error or a pause). */
static bool parse(struct pl_xml_stream *s, const char *data, size_t len)
{
	long long start = s->fed;
	struct pl_xml_stream *outer = charged_stream;
	s->in_parse = true;
	charged_stream = s;
	enum XML_Status status = XML_Parse(s->parser, data, (int)len, XML_FALSE);
	charged_stream = outer;
	s->in_parse = false;
	if (s->failed || s->paused)
		return false;
	if (status != XML_STATUS_OK) {
		enum XML_Error code = XML_GetErrorCode(s->parser);
		if (code == XML_ERROR_NO_MEMORY && s->out_of_budget)
			fail(s, PL_XML_POLICY_VIOLATION, "the parser needs too much memory");
		else
			fail(s, classify(code), XML_ErrorString(code));
		return false;
	}
	s->fed += (long long)len;
	rescan_pending(s, data, len, start);
	return true;
}

/* Between stanzas, with nothing pending: the parser can be replaced. */
static bool at_boundary(const struct pl_xml_stream *s)
{
	return s->parser && !s->in_parse && !s->failed && !s->paused && s->depth == 1 &&
	       !s->root && !s->held.len && s->fed == s->token_start && s->header.len;
}

/* A new parser put into the place of the old one by replaying the
 * stream's start tag with the callbacks quiet. False (after on_error) if
 * that somehow fails. */
static bool renew(struct pl_xml_stream *s)
{
	struct pl_buf header = s->header;
	char *content_ns = s->content_ns;
	s->header = (struct pl_buf){ 0 };
	s->content_ns = NULL;
	reset_now(s);
	s->replaying = true;
	bool replayed = parse(s, header.data, header.len);
	s->replaying = false;
	free(s->content_ns);
	s->content_ns = content_ns;
	pl_buf_free(&header);
	if (!replayed || s->depth != 1) {
		fail(s, PL_XML_POLICY_VIOLATION, "cannot renew the parser");
		return false;
	}
	s->event_end = s->token_start = s->fed;
	return true;
}

/* Between stanzas, a parser that grew is swapped for a new one. */
static bool recycle(struct pl_xml_stream *s)
{
	if (!at_boundary(s) || s->parser_bytes < RECYCLE_PARSER_BYTES)
		return true;
	return renew(s);
}

bool pl_xml_stream_hibernate(struct pl_xml_stream *s)
{
	if (s->dormant)
		return true;
	if (!at_boundary(s))
		return false;
	free_parser(s);
	pl_buf_free(&s->text);
	s->dormant = true;
	return true;
}

ssize_t pl_xml_stream_feed(struct pl_xml_stream *s, const char *data, size_t len)
{
	if (s->failed)
		return -1;
	if (s->paused) {
		fail(s, PL_XML_NOT_WELL_FORMED, "input after a pause without a reset");
		return -1;
	}
	if (s->dormant && !renew(s))
		return -1;
	size_t done = 0;
	while (done < len) {
		/* The bytes of the element in progress (or of whatever sits
		 * between elements) must stay under the limit before expat is
		 * allowed to buffer more of them. */
		long long since = s->element_start >= 0 ? s->element_start : s->event_end;
		if (s->fed + (long long)s->held.len - since > (long long)s->limits.max_stanza_bytes) {
			fail(s, PL_XML_POLICY_VIOLATION, "stanza too large");
			return -1;
		}
		size_t slice = len - done < FEED_SLICE ? len - done : FEED_SLICE;
		if (hold_back(s, data + done, slice)) {
			done += slice;
			continue;
		}
		/* Bytes held earlier go first, with this slice, in one call. */
		const char *chunk = data + done;
		size_t chunk_len = slice, earlier = s->held.len;
		if (earlier) {
			pl_buf_append(&s->held, chunk, slice);
			chunk = s->held.data;
			chunk_len = s->held.len;
		}
		long long chunk_start = s->fed;
		bool more = parse(s, chunk, chunk_len);
		if (earlier) {
			pl_buf_free(&s->held);
			s->held_scan = SCAN_NONE;
		}
		if (s->failed)
			return -1;
		if (!more) {
			/* Paused: what follows the delivered element is the
			 * caller's again. A pause inside held bytes (which only a
			 * garbled tag could cause) gives back none of them. */
			long long used = s->event_end - chunk_start - (long long)earlier;
			if (used < 0)
				used = 0;
			if (s->reset_requested)
				reset_now(s);
			return (ssize_t)(done + (size_t)used);
		}
		done += slice;
	}
	if (!recycle(s))
		return -1;
	return (ssize_t)len;
}

/* ---- one element from a string -------------------------------------------------- */

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
