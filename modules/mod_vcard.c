/* mod_vcard: XEP-0054 vcard-temp. A user sets their own vCard and anyone
 * may read it (nicknames and avatars in clients come from here). Stored
 * per user in vcard.cards under "user@host \0", answered after commit. */
#include "iq_storage.h"
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"

#include <stdlib.h>
#include <string.h>

#define NS_VCARD "vcard-temp"

struct vcard_conf {
	uint64_t max_size;
};

static const struct pl_option vcard_options[] = {
	{ "max-size", PL_OPT_SIZE, "200KiB", 1024, 16 << 20, NULL,
	  offsetof(struct vcard_conf, max_size), "largest vCard, photo included" },
	{ NULL }
};

static struct pl_store_space *cards;
static uint64_t max_size;

static int on_vcard(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	bool set = strcmp(pl_xnode_attr(iq->stanza, "type"), "set") == 0;
	struct pl_xnode *vcard = pl_xnode_find(iq->stanza, "vCard", NS_VCARD);
	if (!vcard)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	const char *to = pl_xnode_attr(iq->stanza, "to");
	struct pl_jid target;
	if (!to || pl_jid_parse(to, &target) != PL_JID_OK)
		return PL_HOOK_ERROR(PL_ERR_JID_MALFORMED);
	int result = PL_HANDLED;
	if (!target.local || target.resource || !pl_server_find_host(target.domain)) {
		result = PL_HOOK_ERROR(PL_ERR_SERVICE_UNAVAILABLE);
		goto out;
	}
	size_t key_len;
	void *key = pl_user_key(target.bare, "", &key_len);
	if (set) {
		char *text = pl_xnode_to_string(vcard, NULL);
		size_t size = strlen(text);
		free(text);
		if (!iq->session || strcmp(iq->session->bare_jid, target.bare) != 0)
			result = PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
		else if (size > max_size)
			result = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
		else
			pl_store_put_element_and_reply(cards, key, key_len, vcard, iq->stanza);
	} else {
		struct pl_xnode *stored = pl_store_get_element(cards, key, key_len);
		struct pl_xnode *reply = pl_iq_result(iq->stanza);
		pl_xnode_add_child(reply, stored ? stored : pl_xnode_new("vCard", NS_VCARD));
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
	}
	free(key);
out:
	pl_jid_free(&target);
	return result;
}

/* "user/display-name": the FN (else NICKNAME) of a stored vCard, for
 * contact search. */
static int on_display_name(struct pl_event *event, void *userdata)
{
	struct pl_display_name *query = event->data;
	size_t key_len;
	void *key = pl_user_key(query->bare_jid, "", &key_len);
	struct pl_xnode *card = pl_store_get_element(cards, key, key_len);
	free(key);
	if (!card)
		return PL_CONTINUE;
	struct pl_xnode *name = pl_xnode_find(card, "FN", NULL);
	if (!name)
		name = pl_xnode_find(card, "NICKNAME", NULL);
	if (name && !query->name)
		query->name = pl_xnode_text(name);
	pl_xnode_unref(&card);
	return PL_CONTINUE;
}

static int vcard_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	const struct vcard_conf *conf = conf_ptr;
	max_size = conf->max_size;
	cards = pl_store_open(m, "cards");
	if (!cards)
		return -1;
	pl_feature(m, NS_VCARD);
	pl_hook(m, "iq/get/" NS_VCARD, on_vcard, NULL, 0);
	pl_hook(m, "iq/set/" NS_VCARD, on_vcard, NULL, 0);
	pl_hook(m, "user/display-name", on_display_name, NULL, 0);
	return 0;
}

PL_MODULE(vcard, .version = "0.1", .options = vcard_options,
	  .conf_size = sizeof(struct vcard_conf), .load = vcard_load);
