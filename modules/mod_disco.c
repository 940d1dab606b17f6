/* mod_disco: XEP-0030 service discovery for the server. disco#info lists
 * the identities and features that every loaded module declared through
 * pl_feature/pl_identity (so the list is never kept by hand and cannot
 * drift from what is loaded); disco#items lists what the core and other
 * modules add through the "disco/items" hook (data: the <query/>), such
 * as connected components. */
#include "hooks.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"

#include <stdlib.h>
#include <string.h>

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

/* Queries to a user's bare JID are the account's (on_account_info), not
 * the server's: only answer for a host itself here. */
static bool addressed_to_host(const struct pl_xnode *stanza)
{
	const char *to = pl_xnode_attr(stanza, "to");
	return to && !strchr(to, '@') && pl_server_find_host(to);
}

static int on_info(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	if (!addressed_to_host(iq->stanza))
		return PL_CONTINUE;
	struct pl_xnode *request = pl_xnode_find(iq->stanza, "query", NS_DISCO_INFO);
	if (request && pl_xnode_attr(request, "node"))
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_DISCO_INFO);
	const struct pl_identity *identities;
	size_t count = pl_identities_list(&identities);
	for (size_t i = 0; i < count; i++) {
		struct pl_xnode *identity = pl_xnode_add_element(query, "identity", NULL);
		pl_xnode_set_attr(identity, "category", identities[i].category);
		pl_xnode_set_attr(identity, "type", identities[i].type);
		if (identities[i].name)
			pl_xnode_set_attr(identity, "name", identities[i].name);
	}
	const char **features;
	count = pl_features_list(&features);
	for (size_t i = 0; i < count; i++) {
		struct pl_xnode *feature = pl_xnode_add_element(query, "feature", NULL);
		pl_xnode_set_attr(feature, "var", features[i]);
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

/* disco#info of an account, asked by the account itself: the features
 * modules serve on the bare JID (archives...), collected through the
 * "disco/account" hook (data: the <query/> to add <feature/>s to). */
static int on_account_info(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!to || !strchr(to, '@') || strchr(to, '/') || !iq->session ||
	    strcmp(to, iq->session->bare_jid) != 0)
		return PL_CONTINUE;
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_DISCO_INFO);
	struct pl_xnode *identity = pl_xnode_add_element(query, "identity", NULL);
	pl_xnode_set_attr(identity, "category", "account");
	pl_xnode_set_attr(identity, "type", "registered");
	pl_xnode_set_attr(pl_xnode_add_element(query, "feature", NULL), "var", NS_DISCO_INFO);
	pl_hooks_fire("disco/account", query);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int on_items(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	if (!addressed_to_host(iq->stanza))
		return PL_CONTINUE;
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_DISCO_ITEMS);
	pl_hooks_fire("disco/items", query);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int disco_load(struct pl_module *m, const void *conf, char **error)
{
	pl_identity(m, "server", "im", "Parley");
	pl_feature(m, NS_DISCO_INFO);
	pl_feature(m, NS_DISCO_ITEMS);
	pl_hook(m, "iq/get/" NS_DISCO_INFO, on_info, NULL, 0);
	pl_hook(m, "iq/get/" NS_DISCO_INFO, on_account_info, NULL, 0);
	pl_hook(m, "iq/get/" NS_DISCO_ITEMS, on_items, NULL, 0);
	return 0;
}

PL_MODULE(disco, .version = "0.1", .load = disco_load);
