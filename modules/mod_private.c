/* mod_private: XEP-0049 Private XML Storage. A user stores and reads back
 * any XML element under its name and namespace; clients keep settings and
 * legacy bookmarks here. Stored per user in private.items, keyed by
 * "user@host \0 {namespace}name", and acknowledged only once on disk. */
#include "iq_storage.h"
#include "parley/module.h"
#include "router.h"

#include <stdlib.h>
#include <string.h>

#define NS_PRIVATE "jabber:iq:private"

struct private_conf {
	uint64_t max_item_size;
};

static const struct pl_option private_options[] = {
	{ "max-item-size", PL_OPT_SIZE, "64KiB", 256, 16 << 20, NULL,
	  offsetof(struct private_conf, max_item_size), "largest element a user may store" },
	{ NULL }
};

static struct pl_store_space *items;
static uint64_t max_item_size;

/* The request must be about the sender's own account. */
static bool own_account(const struct pl_iq_event *iq)
{
	if (!iq->session)
		return false;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	return !to || strcmp(to, iq->session->bare_jid) == 0;
}

static char *item_name(const struct pl_xnode *element)
{
	return pl_asprintf("{%s}%s", element->ns ? element->ns : "", element->name);
}

static int on_private(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	bool set = strcmp(pl_xnode_attr(iq->stanza, "type"), "set") == 0;
	if (!own_account(iq))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *query = pl_xnode_find(iq->stanza, "query", NS_PRIVATE);
	struct pl_xnode *element = query ? pl_xnode_first_element(query) : NULL;
	/* Exactly one child, and not in a jabber: namespace (XEP-0049 3.3). */
	if (!element || pl_xnode_next_element(element) || !element->ns ||
	    strncmp(element->ns, "jabber:", 7) == 0)
		return PL_HOOK_ERROR(set ? PL_ERR_NOT_ACCEPTABLE : PL_ERR_BAD_REQUEST);
	char *name = item_name(element);
	size_t key_len;
	void *key = pl_user_key(iq->session->bare_jid, name, &key_len);
	free(name);
	int result = PL_HANDLED;
	if (set) {
		char *text = pl_xnode_to_string(element, NULL);
		size_t size = strlen(text);
		free(text);
		if (size > max_item_size)
			result = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
		else
			pl_store_put_element_and_reply(items, key, key_len, element, iq->stanza);
	} else {
		struct pl_xnode *stored = pl_store_get_element(items, key, key_len);
		struct pl_xnode *reply = pl_iq_result(iq->stanza);
		struct pl_xnode *answer = pl_xnode_add_element(reply, "query", NS_PRIVATE);
		pl_xnode_add_child(answer, stored ? stored : pl_xnode_copy(element));
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
	}
	free(key);
	return result;
}

static int private_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	const struct private_conf *conf = conf_ptr;
	max_item_size = conf->max_item_size;
	items = pl_store_open(m, "items");
	if (!items)
		return -1;
	pl_feature(m, NS_PRIVATE);
	pl_hook(m, "iq/get/" NS_PRIVATE, on_private, NULL, 0);
	pl_hook(m, "iq/set/" NS_PRIVATE, on_private, NULL, 0);
	return 0;
}

PL_MODULE(private, .version = "0.1", .options = private_options,
	  .conf_size = sizeof(struct private_conf), .load = private_load);
