/* Per-user XML items in the store, answered after commit. The IQ is
 * copied into the completion so the reply can be built when the writer
 * thread says the data is on disk. */
#include "iq_storage.h"
#include "log.h"
#include "router.h"
#include "server.h"
#include "util.h"
#include "xml/stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void *pl_user_key(const char *bare_jid, const char *name, size_t *len)
{
	size_t bare_len = strlen(bare_jid), name_len = strlen(name);
	char *key = pl_malloc(bare_len + 1 + name_len);
	memcpy(key, bare_jid, bare_len + 1);
	memcpy(key + bare_len + 1, name, name_len);
	*len = bare_len + 1 + name_len;
	return key;
}

struct pl_xnode *pl_store_get_element(struct pl_store_space *space, const void *key,
				      size_t key_len)
{
	struct pl_store_read *r = pl_store_read_begin(pl_server.store);
	const void *value;
	size_t value_len;
	struct pl_xnode *element = NULL;
	if (pl_store_get(r, space, key, key_len, &value, &value_len) == 0)
		element = pl_xml_parse_element(value, value_len, PL_NS_CLIENT);
	pl_store_read_end(r);
	return element;
}

void pl_iq_reply_when_stored(void *arg, int status)
{
	struct pl_xnode *iq = arg;
	if (status == 0) {
		struct pl_xnode *reply = pl_iq_result(iq);
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
	} else {
		pl_route_error(iq, status == -ENOSPC   ? PL_ERR_RESOURCE_CONSTRAINT
				   : status == -EINVAL ? PL_ERR_NOT_ACCEPTABLE
						       : PL_ERR_INTERNAL_SERVER_ERROR,
			       "could not store the data");
	}
	pl_xnode_unref(&iq);
}

void pl_store_put_element_and_reply(struct pl_store_space *space, const void *key,
				    size_t key_len, const struct pl_xnode *element,
				    const struct pl_xnode *iq)
{
	struct pl_buf value = { 0 };
	pl_xnode_serialize(element, PL_NS_CLIENT, &value);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	pl_store_put(w, space, key, key_len, value.data, value.len);
	pl_buf_free(&value);
	pl_store_write_submit(w, pl_iq_reply_when_stored, pl_xnode_copy(iq));
}

static void on_secret_stored(void *arg, int status)
{
	char *name = arg;
	if (status != 0)
		pl_log(PL_LOG_ERROR, "store", "the secret %s was not saved: %s", name, strerror(-status));
	free(name);
}

void pl_store_secret(struct pl_store_space *space, const char *name, uint8_t *out, size_t len)
{
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	const void *value;
	size_t value_len;
	bool found = read && pl_store_get(read, space, name, strlen(name), &value, &value_len) == 0 &&
		     value_len == len;
	if (found)
		memcpy(out, value, len);
	if (read)
		pl_store_read_end(read);
	if (found)
		return;
	pl_random_bytes(out, len);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	pl_store_put(w, space, name, strlen(name), out, len);
	pl_store_write_submit(w, on_secret_stored, pl_strdup(name));
}
