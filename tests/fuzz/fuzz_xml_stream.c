/* Fuzz target for the stream parser: the input is fed whole, then again
 * in slices of several sizes; elements named "proceed" reset the stream
 * from inside the callback and "starttls" pause it (then the caller
 * resets), as c2s does, and the remainder is fed on. Nothing may crash,
 * leak or loop, every element must serialize and parse back the same,
 * and an error must stop the parser (on_error once per stream life). */
#include "xml/stream.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	struct pl_xml_stream *stream;
	int errors;
	bool paused;
};

static void on_open(void *arg, const char *name, const char *ns, const char *content_ns,
		    const char *const *attributes)
{
	for (size_t i = 0; attributes[i]; i += 2)
		if (!attributes[i + 1])
			abort();
}

static void on_element(void *arg, struct pl_xnode *element)
{
	struct run *r = arg;
	char *xml = pl_xnode_to_string(element, "jabber:client");
	struct pl_xnode *again = pl_xml_parse_element(xml, strlen(xml), "jabber:client");
	char *xml2 = again ? pl_xnode_to_string(again, "jabber:client") : NULL;
	/* What the serializer writes must parse back to the same. */
	if (!xml2 || strcmp(xml, xml2) != 0)
		abort();
	free(xml);
	free(xml2);
	pl_xnode_unref(&again);
	struct pl_xnode *copy = pl_xnode_copy(element);
	pl_xnode_unref(&copy);
	if (strcmp(element->name, "proceed") == 0) {
		pl_xml_stream_reset(r->stream);
		r->errors = 0;
	} else if (strcmp(element->name, "starttls") == 0) {
		pl_xml_stream_pause(r->stream);
		r->paused = true;
	}
	pl_xnode_unref(&element);
}

static void on_close(void *arg)
{
}

static void on_error(void *arg, enum pl_xml_error error, const char *detail)
{
	struct run *r = arg;
	if (++r->errors > 1 || !detail)
		abort();
}

static const struct pl_xml_stream_callbacks callbacks = { on_open, on_element, on_close,
							  on_error };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t slices[] = { 0, 1, 7, 4096 };
	struct pl_xml_limits limits = pl_xml_default_limits;
	limits.max_stanza_bytes = 4096;
	limits.max_depth = 16;
	limits.max_attributes = 16;
	for (size_t k = 0; k < sizeof(slices) / sizeof(slices[0]); k++) {
		struct run r = { 0 };
		r.stream = pl_xml_stream_new(&limits, &callbacks, &r);
		size_t step = slices[k] ? slices[k] : size;
		size_t i = 0;
		while (i < size) {
			size_t n = size - i < step ? size - i : step;
			ssize_t used = pl_xml_stream_feed(r.stream, (const char *)data + i, n);
			if (used < 0)
				break;
			if ((size_t)used > n)
				abort();
			i += (size_t)used;
			if (r.paused) {
				r.paused = false;
				pl_xml_stream_reset(r.stream);
				r.errors = 0;
			}
		}
		pl_xml_stream_free(r.stream);
	}
	return 0;
}
