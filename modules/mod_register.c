/* mod_register: XEP-0077 In-Band Registration. Closed by default: with
 * open="true", a client may create an account on the stream's host before
 * logging in (inside TLS unless the stream is allowed plaintext), at most
 * `per-address-per-hour` times from one address. Logged-in users may
 * change their password. Accounts are created through accounts.c, so
 * only SCRAM keys are stored, and the answer comes after the commit.
 * A logged-in user may also cancel the registration (XEP-0077 3.2): the
 * account and all its data are deleted, the IQ is answered once that is
 * durable, and then every session of the account ends with
 * <not-authorized/> (c2s does that on "user-deleted"). */
#include "accounts.h"
#include "c2s.h"
#include "iq_storage.h"
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_REGISTER "jabber:iq:register"

struct register_conf {
	bool open;
	int64_t per_address_per_hour;
};

static const struct pl_option register_options[] = {
	{ "open", PL_OPT_BOOL, "false", 0, 0, NULL, offsetof(struct register_conf, open),
	  "let anyone create an account in-band" },
	{ "per-address-per-hour", PL_OPT_INT, "5", 1, 100000, NULL,
	  offsetof(struct register_conf, per_address_per_hour), "registrations from one address" },
	{ NULL }
};

static struct register_conf conf;
static struct pl_module *self;

/* Recent registrations per address: a small ring is enough to stop one
 * address from creating accounts in bulk. */
struct recent {
	char address[46];
	int64_t when_ms;
};
#define RECENT_SIZE 1024
static struct recent recent[RECENT_SIZE];
static size_t recent_next;

static int64_t count_recent(const char *address)
{
	int64_t hour_ago = pl_now_ms() - 3600 * 1000;
	int64_t n = 0;
	for (size_t i = 0; i < RECENT_SIZE; i++)
		if (recent[i].when_ms > hour_ago && strcmp(recent[i].address, address) == 0)
			n++;
	return n;
}

static char *child_text(const struct pl_xnode *query, const char *name)
{
	struct pl_xnode *n = pl_xnode_find(query, name, NS_REGISTER);
	return n ? pl_xnode_text(n) : NULL;
}

static struct pl_xnode *form_reply(const struct pl_xnode *iq, bool registered, const char *user)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_REGISTER);
	if (registered) {
		pl_xnode_add_element(query, "registered", NULL);
		struct pl_xnode *username = pl_xnode_add_element(query, "username", NULL);
		pl_xnode_add_text(username, user, strlen(user));
	} else {
		static const char text[] = "Choose a username and password to register.";
		pl_xnode_add_text(pl_xnode_add_element(query, "instructions", NULL), text,
				  sizeof(text) - 1);
		pl_xnode_add_element(query, "username", NULL);
	}
	pl_xnode_add_element(query, "password", NULL);
	return reply;
}

/* A pending creation, answered when the store says how it went. */
struct pending {
	uint64_t connection;
	struct pl_xnode *iq;    /* owned copy */
	char *jid;
};

static void error_reply(uint64_t connection, const struct pl_xnode *iq,
			enum pl_stanza_error condition)
{
	struct pl_xnode *error = pl_xnode_copy(iq);
	pl_xnode_set_attr(error, "type", "error");
	pl_xnode_set_attr(error, "from", NULL);
	struct pl_xnode *e = pl_xnode_add_element(error, "error", PL_NS_CLIENT);
	pl_xnode_set_attr(e, "type", pl_stanza_error_type(condition));
	pl_xnode_add_element(e, pl_stanza_error_name(condition), PL_NS_STANZAS);
	pl_c2s_reply(connection, error);
	pl_xnode_unref(&error);
}

static void on_created(void *arg, int status)
{
	struct pending *p = arg;
	if (status == 0) {
		pl_module_log(self, 2, "registered %s", p->jid);
		struct pl_xnode *reply = pl_iq_result(p->iq);
		pl_xnode_set_attr(reply, "to", NULL);
		pl_c2s_reply(p->connection, reply);
		pl_xnode_unref(&reply);
	} else {
		pl_module_log(self, 2, "registration of %s refused: %s", p->jid, strerror(-status));
		error_reply(p->connection, p->iq,
			    status == -EEXIST ? PL_ERR_CONFLICT
			    : status == -EINVAL ? PL_ERR_NOT_ACCEPTABLE
						: PL_ERR_INTERNAL_SERVER_ERROR);
	}
	pl_xnode_unref(&p->iq);
	free(p->jid);
	free(p);
}

static int on_unauthenticated(struct pl_event *event, void *userdata)
{
	struct pl_unauthenticated_iq *iq = event->data;
	const char *type = pl_xnode_attr(iq->stanza, "type");
	if (!conf.open)
		return PL_HOOK_ERROR(PL_ERR_SERVICE_UNAVAILABLE);
	if (type && strcmp(type, "get") == 0) {
		struct pl_xnode *reply = form_reply(iq->stanza, false, NULL);
		pl_xnode_set_attr(reply, "to", NULL);
		pl_c2s_reply(iq->connection, reply);
		pl_xnode_unref(&reply);
		return PL_HANDLED;
	}
	if (!type || strcmp(type, "set") != 0)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	struct pl_xnode *query = pl_xnode_find(iq->stanza, "query", NS_REGISTER);
	char *username = query ? child_text(query, "username") : NULL;
	char *password = query ? child_text(query, "password") : NULL;
	int result = PL_HANDLED;
	char *local = username ? pl_jid_prep_local(username) : NULL;
	if (!username || !password || !*password) {
		result = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	} else if (!local) {
		result = PL_HOOK_ERROR(PL_ERR_JID_MALFORMED);
	} else if (count_recent(iq->address) >= conf.per_address_per_hour) {
		pl_module_log(self, 1, "%s: too many registrations from this address", iq->address);
		result = PL_HOOK_ERROR(PL_ERR_RESOURCE_CONSTRAINT);
	} else {
		struct pending *p = pl_calloc(1, sizeof(*p));
		p->connection = iq->connection;
		p->iq = pl_xnode_copy(iq->stanza);
		p->jid = pl_asprintf("%s@%s", local, iq->host);
		int rc = pl_accounts_create(p->jid, password, on_created, p);
		if (rc != 0) {
			on_created(p, rc);
		} else {
			snprintf(recent[recent_next].address, sizeof(recent[0].address), "%s",
				 iq->address);
			recent[recent_next].when_ms = pl_now_ms();
			recent_next = (recent_next + 1) % RECENT_SIZE;
		}
	}
	free(local);
	free(username);
	free(password);
	return result;
}

/* Removals in flight: answered from the "user-deleted" hook, which runs
 * (before c2s closes the account's streams) once the deletion is durable. */
struct removal {
	char *bare_jid;
	struct pl_xnode *iq;    /* owned copy */
	bool answered;
	struct removal *next;
};
static struct removal *removals;

static int on_user_deleted(struct pl_event *event, void *userdata)
{
	const char *bare = event->data;
	for (struct removal *r = removals; r; r = r->next) {
		if (!r->answered && strcmp(r->bare_jid, bare) == 0) {
			struct pl_xnode *reply = pl_iq_result(r->iq);
			pl_xnode_set_attr(reply, "from", NULL);
			pl_route(reply, NULL);
			pl_xnode_unref(&reply);
			r->answered = true;
		}
	}
	return PL_CONTINUE;
}

static void on_removed(void *arg, int status)
{
	struct removal *r = arg;
	if (status == 0)
		pl_module_log(self, 2, "%s cancelled their registration", r->bare_jid);
	else if (!r->answered)
		pl_route_error(r->iq, PL_ERR_INTERNAL_SERVER_ERROR, "the account could not be deleted");
	for (struct removal **link = &removals; *link; link = &(*link)->next) {
		if (*link == r) {
			*link = r->next;
			break;
		}
	}
	pl_xnode_unref(&r->iq);
	free(r->bare_jid);
	free(r);
}

static int remove_account(struct pl_iq_event *iq)
{
	struct removal *r = pl_calloc(1, sizeof(*r));
	r->bare_jid = pl_strdup(iq->session->bare_jid);
	r->iq = pl_xnode_copy(iq->stanza);
	r->next = removals;
	removals = r;
	int rc = pl_accounts_delete(r->bare_jid, on_removed, r);
	if (rc != 0) {
		removals = r->next;
		pl_xnode_unref(&r->iq);
		free(r->bare_jid);
		free(r);
		/* -ENOENT: a deletion of this account is already under way. */
		return PL_HOOK_ERROR(rc == -ENOENT ? PL_ERR_CONFLICT : PL_ERR_INTERNAL_SERVER_ERROR);
	}
	return PL_HANDLED;
}

/* A logged-in user: the form says they are registered; a set with a new
 * password changes it (XEP-0077 3.3). */
static int on_authenticated(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!iq->session || (to && strcmp(to, iq->session->bare_jid) != 0 && strchr(to, '@')))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	const char *type = pl_xnode_attr(iq->stanza, "type");
	char *user = pl_strndup(iq->session->bare_jid, strcspn(iq->session->bare_jid, "@"));
	int result = PL_HANDLED;
	if (strcmp(type, "get") == 0) {
		struct pl_xnode *reply = form_reply(iq->stanza, true, user);
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
	} else {
		struct pl_xnode *query = pl_xnode_find(iq->stanza, "query", NS_REGISTER);
		char *username = query ? child_text(query, "username") : NULL;
		char *password = query ? child_text(query, "password") : NULL;
		char *local = username ? pl_jid_prep_local(username) : NULL;
		if (query && pl_xnode_find(query, "remove", NS_REGISTER))
			result = remove_account(iq);
		else if (!password || !local || strcmp(local, user) != 0)
			result = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
		else {
			struct pl_xnode *copy = pl_xnode_copy(iq->stanza);
			if (pl_accounts_set_password(iq->session->bare_jid, password,
						     pl_iq_reply_when_stored, copy) != 0) {
				pl_xnode_unref(&copy);
				result = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
			}
		}
		free(local);
		free(username);
		free(password);
	}
	free(user);
	return result;
}

/* Its presence tells c2s to advertise the iq-register stream feature. */
static int feature_marker(struct pl_event *event, void *userdata)
{
	return PL_CONTINUE;
}

static int register_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct register_conf *)conf_ptr;
	self = m;
	memset(recent, 0, sizeof(recent));
	pl_feature(m, NS_REGISTER);
	pl_hook(m, "iq-unauthenticated/" NS_REGISTER, on_unauthenticated, NULL, 0);
	if (conf.open)
		pl_hook(m, "stream-feature/register", feature_marker, NULL, 0);
	pl_hook(m, "iq/get/" NS_REGISTER, on_authenticated, NULL, 0);
	pl_hook(m, "iq/set/" NS_REGISTER, on_authenticated, NULL, 0);
	/* Above c2s's handler, which ends the account's streams. */
	pl_hook(m, "user-deleted", on_user_deleted, NULL, 100);
	pl_module_log(m, 2, "in-band registration is %s", conf.open ? "open" : "closed");
	return 0;
}

PL_MODULE(register, .version = "0.1", .options = register_options,
	  .conf_size = sizeof(struct register_conf), .load = register_load);
