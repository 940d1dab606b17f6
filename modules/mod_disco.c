/* mod_disco: XEP-0030 service discovery for the server. disco#info lists
 * the identities and features that every loaded module declared through
 * pl_feature/pl_identity (so the list is never kept by hand and cannot
 * drift from what is loaded); disco#items lists the services that
 * the core and modules host on subdomains (MUC, connected components),
 * collected through the
 * "disco/items" hook (data: struct pl_disco_items). The operator's contact
 * addresses (XEP-0157: abuse, admin, security, support...) go into the
 * server's disco#info as a serverinfo form, so that other operators and
 * users know whom to tell about abuse. */
#include "caps.h"
#include "hooks.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"
#include "util.h"

#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_DATA "jabber:x:data"
#define NS_SERVERINFO "http://jabber.org/network/serverinfo"

/* XEP-0157's fields, each a repeatable option "<kind>-address". */
static const char *const address_kinds[] = { "abuse", "admin", "feedback", "sales",
					     "security", "status", "support" };

struct disco_conf {
	struct pl_string_list addresses[7];
};

#define ADDRESS_OPTION(i, kind)                                                           \
	{ kind "-address", PL_OPT_LIST, NULL, 0, 0, NULL,                                \
	  offsetof(struct disco_conf, addresses) + (i) * sizeof(struct pl_string_list),    \
	  "a URI (mailto:, xmpp:, https:) listed as " kind "-addresses (XEP-0157)" }

static const struct pl_option disco_options[] = {
	ADDRESS_OPTION(0, "abuse"),    ADDRESS_OPTION(1, "admin"),  ADDRESS_OPTION(2, "feedback"),
	ADDRESS_OPTION(3, "sales"),    ADDRESS_OPTION(4, "security"), ADDRESS_OPTION(5, "status"),
	ADDRESS_OPTION(6, "support"),  { NULL }
};

static struct disco_conf conf;

/* A URI has a scheme: "mailto:x", "xmpp:x", "https://x". */
static int check_addresses(const void *conf_ptr, char **error)
{
	const struct disco_conf *c = conf_ptr;
	for (size_t k = 0; k < PL_ARRAY_LEN(address_kinds); k++) {
		for (size_t i = 0; i < c->addresses[k].count; i++) {
			const char *uri = c->addresses[k].items[i];
			const char *colon = strchr(uri, ':');
			if (!colon || colon == uri || !colon[1])
				return pl_error(error, -EINVAL, "%s-address \"%s\" is not a URI "
						"(mailto:, xmpp:, https:)", address_kinds[k], uri);
		}
	}
	return 0;
}

/* Queries to a user's bare JID are the account's (on_account_info), not
 * the server's: only answer for a host itself here. */
static bool addressed_to_host(const struct pl_xnode *stanza)
{
	const char *to = pl_xnode_attr(stanza, "to");
	return to && !strchr(to, '@') && pl_server_find_host(to);
}

/* The server's disco#info: identities, features, contact addresses. */
static void fill_server_info(struct pl_xnode *query)
{
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
	bool any = false;
	for (size_t k = 0; k < PL_ARRAY_LEN(address_kinds); k++)
		any |= conf.addresses[k].count > 0;
	if (any) {
		struct pl_xnode *form = pl_xnode_add_element(query, "x", NS_DATA);
		pl_xnode_set_attr(form, "type", "result");
		struct pl_xnode *f = pl_xnode_add_element(form, "field", NULL);
		pl_xnode_set_attr(f, "var", "FORM_TYPE");
		pl_xnode_set_attr(f, "type", "hidden");
		pl_xnode_add_text(pl_xnode_add_element(f, "value", NULL), NS_SERVERINFO,
				  strlen(NS_SERVERINFO));
		for (size_t k = 0; k < PL_ARRAY_LEN(address_kinds); k++) {
			if (!conf.addresses[k].count)
				continue;
			char var[32];
			snprintf(var, sizeof(var), "%s-addresses", address_kinds[k]);
			f = pl_xnode_add_element(form, "field", NULL);
			pl_xnode_set_attr(f, "var", var);
			for (size_t i = 0; i < conf.addresses[k].count; i++)
				pl_xnode_add_text(pl_xnode_add_element(f, "value", NULL),
						  conf.addresses[k].items[i],
						  strlen(conf.addresses[k].items[i]));
		}
	}
}

/* XEP-0115: the server's own capabilities, announced in stream features so
 * that clients (Conversations) learn them without a disco#info round trip.
 * What modules declare does not change once they are loaded: computed
 * once. Owned. */
#define CAPS_NODE "https://parley.im"
static char *caps_ver;

static const char *server_caps_ver(void)
{
	if (!caps_ver) {
		struct pl_xnode *query = pl_xnode_new("query", NS_DISCO_INFO);
		fill_server_info(query);
		caps_ver = pl_caps_hash(query);
		pl_xnode_unref(&query);
	}
	return caps_ver;
}

static int on_stream_features(struct pl_event *event, void *userdata)
{
	pl_buf_printf(event->data, "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='"
				   CAPS_NODE "' ver='%s'/>", server_caps_ver());
	return PL_CONTINUE;
}

static int on_info(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	if (!addressed_to_host(iq->stanza))
		return PL_CONTINUE;
	struct pl_xnode *request = pl_xnode_find(iq->stanza, "query", NS_DISCO_INFO);
	const char *node = request ? pl_xnode_attr(request, "node") : NULL;
	char *caps_node = pl_asprintf(CAPS_NODE "#%s", server_caps_ver());
	bool caps = node && strcmp(node, caps_node) == 0;
	free(caps_node);
	if (node && !caps)
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_DISCO_INFO);
	if (caps)
		pl_xnode_set_attr(query, "node", node);
	fill_server_info(query);
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
	struct pl_xnode *request = pl_xnode_find(iq->stanza, "query", NS_DISCO_ITEMS);
	if (request && pl_xnode_attr(request, "node"))
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_disco_items items = { pl_xnode_attr(iq->stanza, "to"),
					pl_xnode_add_element(reply, "query", NS_DISCO_ITEMS) };
	pl_hooks_fire("disco/items", &items);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int disco_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct disco_conf *)conf_ptr;
	pl_identity(m, "server", "im", "Parley");
	pl_feature(m, NS_DISCO_INFO);
	pl_feature(m, NS_DISCO_ITEMS);
	pl_hook(m, "iq/get/" NS_DISCO_INFO, on_info, NULL, 0);
	pl_hook(m, "iq/get/" NS_DISCO_INFO, on_account_info, NULL, 0);
	pl_hook(m, "iq/get/" NS_DISCO_ITEMS, on_items, NULL, 0);
	pl_hook(m, "stream-features/bind", on_stream_features, NULL, 0);
	return 0;
}

static void disco_unload(struct pl_module *m)
{
	free(caps_ver);
	caps_ver = NULL;
	(void)m;
}

PL_MODULE(disco, .version = "0.1", .options = disco_options, .conf_size = sizeof(struct disco_conf),
	  .check = check_addresses, .load = disco_load, .unload = disco_unload);
