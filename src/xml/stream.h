/* The XMPP stream parser: expat with namespace processing, fed raw bytes,
 * building one depth-2 element (a stanza or a stream-level element such as
 * <auth/>) at a time and handing it over whole. It enforces the limits of
 * RFC 6120 section 11 and ARCHITECTURE.md: no DTD, entity declaration,
 * comment or processing instruction (restricted-xml), a maximum stanza
 * size, depth and attribute count and a ceiling on expat's own memory
 * (policy-violation), and well-formed UTF-8 XML (not-well-formed). A
 * stanza is never buffered past the size limit: input is checked before
 * expat sees it. After an error the parser refuses further input.
 *
 * Memory: an idle stream costs about 11 KiB, nearly all of it expat's
 * (measured by test_xml_stream through pl_xml_stream_memory). A stream
 * whose parser grew (a large start tag, thousands of distinct names) is
 * given a fresh parser between stanzas. Network thread only; never free
 * a stream from inside one of its callbacks. */
#ifndef PL_XML_STREAM_H
#define PL_XML_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "xml/xnode.h"

#define PL_NS_STREAMS "http://etherx.jabber.org/streams"

enum pl_xml_error {
	PL_XML_NOT_WELL_FORMED,
	PL_XML_RESTRICTED_XML,
	PL_XML_POLICY_VIOLATION,
};
/* The RFC 6120 stream error condition name for an error. */
const char *pl_xml_error_condition(enum pl_xml_error error);

/* Start from pl_xml_default_limits and change fields; a zero field means
 * the default. */
struct pl_xml_limits {
	size_t max_stanza_bytes;  /* default 256 KiB */
	unsigned max_depth;       /* default 64, counting the stream element */
	unsigned max_attributes;  /* per element, default 128 */
	/* What expat itself may allocate, default 16 x max_stanza_bytes +
	 * 1 MiB: a safety net behind the other limits. */
	size_t max_parser_bytes;
};
extern const struct pl_xml_limits pl_xml_default_limits;

struct pl_xml_stream_callbacks {
	/* <stream:stream ...>: its qualified name parts, the default namespace
	 * declared on it (e.g. "jabber:client", or NULL), and its attributes as
	 * NULL-terminated name/value pairs (xml:lang as "xml:lang"). */
	void (*on_open)(void *userdata, const char *name, const char *ns,
			const char *content_ns, const char *const *attributes);
	/* A complete depth-2 element; the callee owns it (pl_xnode_unref). */
	void (*on_element)(void *userdata, struct pl_xnode *element);
	/* </stream:stream>. */
	void (*on_close)(void *userdata);
	void (*on_error)(void *userdata, enum pl_xml_error error, const char *detail);
};

struct pl_xml_stream;

struct pl_xml_stream *pl_xml_stream_new(const struct pl_xml_limits *limits,
					const struct pl_xml_stream_callbacks *callbacks,
					void *userdata);
void pl_xml_stream_free(struct pl_xml_stream *stream);

/* Parses data. Returns how many bytes were consumed: all of them, unless a
 * callback called pl_xml_stream_pause or pl_xml_stream_reset, in which
 * case parsing stopped right after the element (or stream header) being
 * delivered: bytes [0, returned) were parsed, bytes [returned, len) were
 * not looked at and belong to what comes next (TLS after <starttls/>, the
 * new stream header after SASL <success/>: feed them again after the
 * reset, or not at all for TLS). -1 after an error (on_error was called
 * once); every later feed returns -1 too, until a reset.
 * Input may be held back (not parsed yet, but counted as consumed) while
 * an unfinished tag of several KiB is pending and the new bytes cannot
 * finish it: this keeps a large tag fed in tiny pieces linear rather
 * than quadratic (expat 2.5 rescans a pending token on every call). */
ssize_t pl_xml_stream_feed(struct pl_xml_stream *stream, const char *data, size_t len);
/* From inside a callback: stop after the current element; the stream must
 * then be reset before the next feed (a feed without one is an error).
 * Outside a callback it does nothing. */
void pl_xml_stream_pause(struct pl_xml_stream *stream);
/* Starts over for a new stream header (after STARTTLS and SASL), keeping
 * the limits. Safe from inside a callback: it then pauses as above, and
 * the reset happens once expat has returned, before feed does. */
void pl_xml_stream_reset(struct pl_xml_stream *stream);
bool pl_xml_stream_failed(const struct pl_xml_stream *stream);
/* Frees the parser of an idle stream (between stanzas, nothing pending)
 * and makes a new one, in the same place, when input comes again: an idle
 * stream then costs a few hundred bytes instead of expat's ~11 KB. False
 * when the stream is not at such a point (nothing is done). */
bool pl_xml_stream_hibernate(struct pl_xml_stream *stream);
/* Bytes the stream holds now (expat's allocations, input held back, text
 * pending, the element being built), and the most expat ever held. */
size_t pl_xml_stream_memory(const struct pl_xml_stream *stream);
size_t pl_xml_stream_peak_parser_memory(const struct pl_xml_stream *stream);

/* Parses one serialized element (as stored by modules) back into a tree,
 * in the namespace context `ns` (e.g. "jabber:client"); NULL if it is not
 * exactly one well-formed element. The caller owns the result. */
struct pl_xnode *pl_xml_parse_element(const char *xml, size_t len, const char *ns);

#endif
