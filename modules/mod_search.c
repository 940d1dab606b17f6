/* mod_search: XEP-0055 Jabber Search over the server's own accounts, the
 * "find a person to add" of an IM system. Not loaded by the default
 * configuration: listing who has an account is a choice an operator
 * makes. Logged-in users ask the server's JID with a word; accounts
 * whose localpart or vCard name (FN, else NICKNAME) contains it, case
 * insensitively, are returned, at most max-results of them. Both the
 * legacy fields (<nick/>) and the data form (XEP-0004) are understood;
 * the answer uses the form when the question did. */
#include "accounts.h"
#include "hooks.h"
#include "parley/module.h"
#include "router.h"
#include "util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NS_SEARCH "jabber:iq:search"
#define NS_DATA "jabber:x:data"

struct search_conf {
	int64_t max_results;
	int64_t min_length;
};

static const struct pl_option search_options[] = {
	{ "max-results", PL_OPT_INT, "50", 1, 1000, NULL, offsetof(struct search_conf, max_results),
	  "accounts in one answer" },
	{ "min-length", PL_OPT_INT, "2", 1, 100, NULL, offsetof(struct search_conf, min_length),
	  "shortest word searched for (short words would list everyone)" },
	{ NULL }
};

static struct search_conf conf;

static int on_get(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (to && strchr(to, '@'))
		return PL_HOOK_ERROR(PL_ERR_SERVICE_UNAVAILABLE);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_SEARCH);
	static const char text[] = "Find people on this server by user name or full name.";
	pl_xnode_add_text(pl_xnode_add_element(query, "instructions", NULL), text,
			  sizeof(text) - 1);
	pl_xnode_add_element(query, "nick", NULL);
	struct pl_xnode *form = pl_xnode_add_element(query, "x", NS_DATA);
	pl_xnode_set_attr(form, "type", "form");
	pl_xnode_add_text(pl_xnode_add_element(form, "title", NULL), "People search", 13);
	struct pl_xnode *type = pl_xnode_add_element(form, "field", NULL);
	pl_xnode_set_attr(type, "var", "FORM_TYPE");
	pl_xnode_set_attr(type, "type", "hidden");
	pl_xnode_add_text(pl_xnode_add_element(type, "value", NULL), NS_SEARCH, strlen(NS_SEARCH));
	struct pl_xnode *field = pl_xnode_add_element(form, "field", NULL);
	pl_xnode_set_attr(field, "var", "search");
	pl_xnode_set_attr(field, "type", "text-single");
	pl_xnode_set_attr(field, "label", "User name or full name contains");
	pl_xnode_add_element(field, "required", NULL);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

struct match {
	char *jid;
	char *name;
};

struct search {
	const char *word;
	const char *domain;
	struct match *found;
	size_t count, cap;
};

static bool contains(const char *haystack, const char *needle)
{
	size_t n = strlen(needle);
	for (const char *p = haystack; *p; p++)
		if (strncasecmp(p, needle, n) == 0)
			return true;
	return false;
}

static void consider(void *arg, const char *bare_jid)
{
	struct search *s = arg;
	if (s->count >= (size_t)conf.max_results)
		return;
	char *local = pl_strndup(bare_jid, strcspn(bare_jid, "@"));
	struct pl_display_name display = { bare_jid, NULL };
	pl_hooks_fire("user/display-name", &display);
	if (contains(local, s->word) || (display.name && contains(display.name, s->word))) {
		pl_grow((void **)&s->found, &s->cap, s->count + 1, sizeof(*s->found));
		s->found[s->count].jid = pl_strdup(bare_jid);
		s->found[s->count].name = display.name;
		display.name = NULL;
		s->count++;
	}
	free(display.name);
	free(local);
}

/* The searched word: the form's "search" (or "nick") field, else <nick/>. */
static char *searched_word(const struct pl_xnode *query, bool *used_form)
{
	struct pl_xnode *form = pl_xnode_find(query, "x", NS_DATA);
	*used_form = form != NULL;
	for (struct pl_xnode *f = form ? pl_xnode_first_element(form) : NULL; f;
	     f = pl_xnode_next_element(f)) {
		const char *var = pl_xnode_attr(f, "var");
		struct pl_xnode *value = pl_xnode_find(f, "value", NULL);
		if (var && value && (strcmp(var, "search") == 0 || strcmp(var, "nick") == 0))
			return pl_xnode_text(value);
	}
	struct pl_xnode *nick = pl_xnode_find(query, "nick", NULL);
	return nick ? pl_xnode_text(nick) : NULL;
}

static void add_form_field(struct pl_xnode *item, const char *var, const char *value)
{
	struct pl_xnode *field = pl_xnode_add_element(item, "field", NULL);
	pl_xnode_set_attr(field, "var", var);
	pl_xnode_add_text(pl_xnode_add_element(field, "value", NULL), value, strlen(value));
}

static int on_set(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (to && strchr(to, '@'))
		return PL_HOOK_ERROR(PL_ERR_SERVICE_UNAVAILABLE);
	if (!iq->session)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *query = pl_xnode_find(iq->stanza, "query", NS_SEARCH);
	bool used_form = false;
	char *word = query ? searched_word(query, &used_form) : NULL;
	if (!word || strlen(word) < (size_t)conf.min_length) {
		free(word);
		return PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
	}
	struct search s = { word, iq->session->host, NULL, 0, 0 };
	if (pl_accounts_list(s.domain, consider, &s) != 0) {
		free(word);
		return PL_HOOK_ERROR(PL_ERR_INTERNAL_SERVER_ERROR);
	}
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *answer = pl_xnode_add_element(reply, "query", NS_SEARCH);
	struct pl_xnode *form = NULL;
	if (used_form) {
		form = pl_xnode_add_element(answer, "x", NS_DATA);
		pl_xnode_set_attr(form, "type", "result");
		struct pl_xnode *reported = pl_xnode_add_element(form, "reported", NULL);
		struct pl_xnode *f = pl_xnode_add_element(reported, "field", NULL);
		pl_xnode_set_attr(f, "var", "jid");
		pl_xnode_set_attr(f, "label", "JID");
		pl_xnode_set_attr(f, "type", "jid-single");
		f = pl_xnode_add_element(reported, "field", NULL);
		pl_xnode_set_attr(f, "var", "name");
		pl_xnode_set_attr(f, "label", "Name");
		pl_xnode_set_attr(f, "type", "text-single");
	}
	for (size_t i = 0; i < s.count; i++) {
		const char *name = s.found[i].name ? s.found[i].name : "";
		if (form) {
			struct pl_xnode *item = pl_xnode_add_element(form, "item", NULL);
			add_form_field(item, "jid", s.found[i].jid);
			add_form_field(item, "name", name);
		} else {
			struct pl_xnode *item = pl_xnode_add_element(answer, "item", NULL);
			pl_xnode_set_attr(item, "jid", s.found[i].jid);
			if (*name)
				pl_xnode_add_text(pl_xnode_add_element(item, "nick", NULL), name,
						  strlen(name));
		}
		free(s.found[i].jid);
		free(s.found[i].name);
	}
	free(s.found);
	free(word);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int search_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct search_conf *)conf_ptr;
	pl_feature(m, NS_SEARCH);
	pl_hook(m, "iq/get/" NS_SEARCH, on_get, NULL, 0);
	pl_hook(m, "iq/set/" NS_SEARCH, on_set, NULL, 0);
	return 0;
}

PL_MODULE(search, .version = "0.1", .options = search_options,
	  .conf_size = sizeof(struct search_conf), .load = search_load);
