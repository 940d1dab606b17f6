/* Fuzz target for the stream parser: the input is fed whole, then again
 * in slices of several sizes; nothing may crash, leak or loop, and an
 * error must stop the parser. */
#include "xml/stream.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_open(void *arg, const char *name, const char *ns, const char *content_ns,
		    const char *const *attributes)
{
}

static void on_element(void *arg, struct pl_xnode *element)
{
	struct pl_buf out = { 0 };
	pl_xnode_serialize(element, "jabber:client", &out);
	pl_buf_free(&out);
	pl_xnode_unref(&element);
}

static void on_close(void *arg)
{
}

static void on_error(void *arg, enum pl_xml_error error, const char *detail)
{
	(*(int *)arg)++;
}

static const struct pl_xml_stream_callbacks callbacks = { on_open, on_element, on_close,
							  on_error };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t slices[] = { 0, 1, 7, 4096 };
	struct pl_xml_limits limits = pl_xml_default_limits;
	limits.max_stanza_bytes = 4096;
	for (size_t k = 0; k < sizeof(slices) / sizeof(slices[0]); k++) {
		int errors = 0;
		struct pl_xml_stream *s = pl_xml_stream_new(&limits, &callbacks, &errors);
		size_t step = slices[k] ? slices[k] : size;
		for (size_t i = 0; i < size; i += step) {
			size_t n = size - i < step ? size - i : step;
			if (pl_xml_stream_feed(s, (const char *)data + i, n) < 0)
				break;
		}
		if (errors > 1)
			abort();
		pl_xml_stream_free(s);
	}
	return 0;
}
