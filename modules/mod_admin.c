/* mod_admin: XEP-0050 ad-hoc commands on the server JID with the XEP-0133
 * service administration set that operators script against: add, delete
 * and re-password accounts, count registered and online users, list the
 * online ones, announce to everyone online, a message of the day sent at
 * login, and a user's online resources. Only the JIDs of the `admin`
 * option see or run them. A command runs in one or two steps: an execute
 * without a form answers with the form (status executing, a session id),
 * a submitted form completes it; commands that change accounts answer
 * once the change is on disk. The message of the day is kept in
 * admin.settings. */
#include "accounts.h"
#include "hooks.h"
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "server.h"
#include "store/store.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_COMMANDS "http://jabber.org/protocol/commands"
#define NS_ADMIN "http://jabber.org/protocol/admin"
#define NS_DATA "jabber:x:data"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define MOTD_KEY "motd"

struct admin_conf {
	struct pl_string_list admins;
	int64_t max_list;
};

static const struct pl_option admin_options[] = {
	{ "admin", PL_OPT_LIST, NULL, 0, 0, NULL, offsetof(struct admin_conf, admins),
	  "bare JIDs allowed to run the administration commands (may repeat)" },
	{ "max-list", PL_OPT_INT, "1000", 1, 1000000, NULL, offsetof(struct admin_conf, max_list),
	  "online users listed at most by get-online-users-list" },
	{ NULL }
};

static struct admin_conf conf;
static struct pl_module *self;
static struct pl_store_space *settings_space;
static struct pl_string_list admins;  /* normalised copies, owned */
static char *motd;                    /* owned, NULL: none */

/* ---- the command table ------------------------------------------------------------ */

enum field_kind { TEXT, PRIVATE, MULTI, JID, JIDS };

struct field_spec {
	const char *var;
	enum field_kind kind;
	const char *label;
	bool required;
};

struct command;
typedef void run_fn(const struct command *cmd, const struct pl_xnode *iq, const char *session_id,
		    const struct pl_xnode *form);

struct command {
	const char *name;                /* after NS_ADMIN "#" */
	const char *label;
	const struct field_spec *fields; /* NULL-var terminated; none: runs at once */
	run_fn *run;
};

static bool is_admin(const char *from)
{
	char *bare = from ? pl_jid_normalize_bare(from) : NULL;
	bool yes = false;
	for (size_t i = 0; bare && i < admins.count; i++)
		yes |= strcmp(admins.items[i], bare) == 0;
	free(bare);
	return yes;
}

static struct pl_xnode *command_reply(const struct pl_xnode *iq, const struct command *cmd,
				      const char *session_id, const char *status)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *c = pl_xnode_add_element(reply, "command", NS_COMMANDS);
	char *node = pl_asprintf(NS_ADMIN "#%s", cmd->name);
	pl_xnode_set_attr(c, "node", node);
	free(node);
	pl_xnode_set_attr(c, "sessionid", session_id);
	pl_xnode_set_attr(c, "status", status);
	return reply;
}

static void add_value(struct pl_xnode *field, const char *value)
{
	pl_xnode_add_text(pl_xnode_add_element(field, "value", NULL), value, strlen(value));
}

static struct pl_xnode *result_form(struct pl_xnode *reply)
{
	struct pl_xnode *form = pl_xnode_add_element(pl_xnode_first_element(reply), "x", NS_DATA);
	pl_xnode_set_attr(form, "type", "result");
	struct pl_xnode *f = pl_xnode_add_element(form, "field", NULL);
	pl_xnode_set_attr(f, "var", "FORM_TYPE");
	pl_xnode_set_attr(f, "type", "hidden");
	add_value(f, NS_ADMIN);
	return form;
}

static struct pl_xnode *result_field(struct pl_xnode *form, const char *var, const char *type,
				     const char *value)
{
	struct pl_xnode *f = pl_xnode_add_element(form, "field", NULL);
	pl_xnode_set_attr(f, "var", var);
	if (type)
		pl_xnode_set_attr(f, "type", type);
	if (value)
		add_value(f, value);
	return f;
}

/* Completes the command with a note (info, or error with `failed`). */
static void finish(const struct pl_xnode *iq, const struct command *cmd, const char *session_id,
		   const char *note, bool failed)
{
	struct pl_xnode *reply = command_reply(iq, cmd, session_id, "completed");
	struct pl_xnode *n = pl_xnode_add_element(pl_xnode_first_element(reply), "note", NULL);
	pl_xnode_set_attr(n, "type", failed ? "error" : "info");
	pl_xnode_add_text(n, note, strlen(note));
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
}

static char *form_value(const struct pl_xnode *form, const char *var)
{
	for (struct pl_xnode *f = pl_xnode_first_element(form); f; f = pl_xnode_next_element(f)) {
		const char *name = pl_xnode_attr(f, "var");
		if (strcmp(f->name, "field") != 0 || !name || strcmp(name, var) != 0)
			continue;
		/* text-multi: the lines joined by newlines. */
		struct pl_buf text = { 0 };
		bool any = false;
		for (struct pl_xnode *v = pl_xnode_first_element(f); v; v = pl_xnode_next_element(v)) {
			if (strcmp(v->name, "value") != 0)
				continue;
			char *line = pl_xnode_text(v);
			if (any)
				pl_buf_puts(&text, "\n");
			pl_buf_puts(&text, line);
			free(line);
			any = true;
		}
		char *out = any ? pl_buf_take(&text) : pl_strdup("");
		pl_buf_free(&text);
		return out;
	}
	return NULL;
}

/* A JID field that names an account of one of our hosts, or NULL. */
static char *account_of(const char *text)
{
	char *bare = text ? pl_jid_normalize_bare(text) : NULL;
	const char *at = bare ? strchr(bare, '@') : NULL;
	if (!at || !pl_server_find_host(at + 1)) {
		free(bare);
		return NULL;
	}
	return bare;
}

/* ---- account commands (answered when durable) ------------------------------------------ */

struct pending {
	const struct command *cmd;
	struct pl_xnode *iq;             /* owned copy */
	char *session_id;                /* owned */
	char *subject;                   /* owned: the account */
	size_t outstanding;              /* deletions still running */
	int failures;
};

static void pending_done(void *arg, int status)
{
	struct pending *p = arg;
	if (status != 0)
		p->failures++;
	if (p->outstanding && --p->outstanding)
		return;
	char *note;
	if (p->failures)
		note = pl_asprintf("%s: failed (%s)", p->subject, status ? strerror(-status) : "see the log");
	else
		note = pl_asprintf("%s: done", p->subject);
	finish(p->iq, p->cmd, p->session_id, note, p->failures != 0);
	pl_module_log(self, 2, "%s %s by %s", p->cmd->name, p->failures ? "failed" : "done",
		      pl_xnode_attr(p->iq, "from"));
	free(note);
	pl_xnode_unref(&p->iq);
	free(p->session_id);
	free(p->subject);
	free(p);
}

static struct pending *pending_new(const struct command *cmd, const struct pl_xnode *iq,
				   const char *session_id, const char *subject)
{
	struct pending *p = pl_calloc(1, sizeof(*p));
	p->cmd = cmd;
	p->iq = pl_xnode_copy(iq);
	p->session_id = pl_strdup(session_id);
	p->subject = pl_strdup(subject);
	return p;
}

static void run_add_user(const struct command *cmd, const struct pl_xnode *iq, const char *sid,
			 const struct pl_xnode *form)
{
	char *text = form_value(form, "accountjid");
	char *jid = account_of(text);
	char *password = form_value(form, "password");
	char *verify = form_value(form, "password-verify");
	if (!jid)
		finish(iq, cmd, sid, "accountjid must name an account of this server", true);
	else if (!password || !*password || (verify && strcmp(password, verify) != 0))
		finish(iq, cmd, sid, "the passwords are empty or differ", true);
	else {
		struct pending *p = pending_new(cmd, iq, sid, jid);
		int rc = pl_accounts_create(jid, password, pending_done, p);
		if (rc) {
			p->outstanding = 0;
			pending_done(p, rc);
		}
	}
	free(text);
	free(jid);
	free(password);
	free(verify);
}

static void run_change_password(const struct command *cmd, const struct pl_xnode *iq,
				const char *sid, const struct pl_xnode *form)
{
	char *text = form_value(form, "accountjid");
	char *jid = account_of(text);
	char *password = form_value(form, "password");
	if (!jid || !password || !*password) {
		finish(iq, cmd, sid, "an account and a new password are required", true);
	} else {
		struct pending *p = pending_new(cmd, iq, sid, jid);
		int rc = pl_accounts_set_password(jid, password, pending_done, p);
		if (rc)
			pending_done(p, rc);
	}
	free(text);
	free(jid);
	free(password);
}

static void run_delete_user(const struct command *cmd, const struct pl_xnode *iq, const char *sid,
			    const struct pl_xnode *form)
{
	struct pl_xnode *field = NULL;
	for (struct pl_xnode *f = pl_xnode_first_element(form); f; f = pl_xnode_next_element(f)) {
		const char *var = pl_xnode_attr(f, "var");
		if (var && strcmp(var, "accountjids") == 0)
			field = f;
	}
	struct pending *p = pending_new(cmd, iq, sid, "");
	struct pl_buf names = { 0 };
	p->outstanding = 1; /* held until every deletion is submitted */
	for (struct pl_xnode *v = field ? pl_xnode_first_element(field) : NULL; v;
	     v = pl_xnode_next_element(v)) {
		char *text = pl_xnode_text(v);
		char *jid = account_of(text);
		free(text);
		if (!jid) {
			p->failures++;
			continue;
		}
		pl_buf_printf(&names, "%s%s", names.len ? " " : "", jid);
		p->outstanding++;
		int rc = pl_accounts_delete(jid, pending_done, p);
		if (rc) {
			p->failures++;
			p->outstanding--;
		}
		free(jid);
	}
	free(p->subject);
	p->subject = names.len ? pl_buf_take(&names) : pl_strdup("(no account)");
	pl_buf_free(&names);
	if (p->subject[0] == '(')
		p->failures++;
	pending_done(p, 0);
}

/* ---- information and announcements --------------------------------------------------- */

static void count_registered(void *arg, const char *bare_jid)
{
	(*(uint64_t *)arg)++;
	(void)bare_jid;
}

static void run_registered_num(const struct command *cmd, const struct pl_xnode *iq,
			       const char *sid, const struct pl_xnode *form)
{
	uint64_t count = 0;
	const char *to = pl_xnode_attr(iq, "to");
	pl_accounts_list(to, count_registered, &count);
	struct pl_xnode *reply = command_reply(iq, cmd, sid, "completed");
	char text[24];
	snprintf(text, sizeof(text), "%" PRIu64, count);
	result_field(result_form(reply), "registeredusersnum", NULL, text);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	(void)form;
}

struct online {
	struct pl_xnode *field;          /* NULL: only count */
	uint64_t users, listed;
};

static void each_online(void *arg, const char *bare_jid, struct pl_session *sessions)
{
	struct online *o = arg;
	bool available = false;
	for (struct pl_session *s = sessions; s; s = s->next_of_user)
		available |= s->available;
	if (!available)
		return;
	o->users++;
	if (o->field && o->listed < (uint64_t)conf.max_list) {
		add_value(o->field, bare_jid);
		o->listed++;
	}
}

static void run_online(const struct command *cmd, const struct pl_xnode *iq, const char *sid,
		       const struct pl_xnode *form)
{
	struct pl_xnode *reply = command_reply(iq, cmd, sid, "completed");
	struct pl_xnode *result = result_form(reply);
	bool list = strcmp(cmd->name, "get-online-users-list") == 0;
	struct online o = { NULL, 0, 0 };
	if (list)
		o.field = result_field(result, "onlineuserjids", "jid-multi", NULL);
	pl_router_each_user(each_online, &o);
	if (!list) {
		char text[24];
		snprintf(text, sizeof(text), "%" PRIu64, o.users);
		result_field(result, "onlineusersnum", NULL, text);
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	(void)form;
}

static void run_user_stats(const struct command *cmd, const struct pl_xnode *iq, const char *sid,
			   const struct pl_xnode *form)
{
	char *text = form_value(form, "accountjid");
	char *jid = account_of(text);
	free(text);
	if (!jid || !pl_accounts_exists(jid)) {
		finish(iq, cmd, sid, "no such account", true);
		free(jid);
		return;
	}
	struct pl_xnode *reply = command_reply(iq, cmd, sid, "completed");
	struct pl_xnode *result = result_form(reply);
	struct pl_xnode *resources = result_field(result, "onlineresources", "text-multi", NULL);
	for (struct pl_session *s = pl_router_sessions_of(jid); s; s = s->next_of_user)
		add_value(resources, s->full_jid);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	free(jid);
}

struct announcement {
	struct pl_xnode *message;
	size_t sent;
};

static void announce_to(void *arg, const char *bare_jid, struct pl_session *sessions)
{
	struct announcement *a = arg;
	for (struct pl_session *s = sessions; s; s = s->next_of_user) {
		if (!s->available)
			continue;
		pl_xnode_set_attr(a->message, "to", s->full_jid);
		s->deliver(s, a->message);
		a->sent++;
	}
	(void)bare_jid;
}

static struct pl_xnode *server_message(const char *host, const char *subject, const char *body)
{
	struct pl_xnode *m = pl_xnode_new("message", PL_NS_CLIENT);
	pl_xnode_set_attr(m, "from", host);
	pl_xnode_set_attr(m, "type", "normal");
	if (subject && *subject)
		pl_xnode_add_text(pl_xnode_add_element(m, "subject", NULL), subject, strlen(subject));
	pl_xnode_add_text(pl_xnode_add_element(m, "body", NULL), body, strlen(body));
	return m;
}

static void run_announce(const struct command *cmd, const struct pl_xnode *iq, const char *sid,
			 const struct pl_xnode *form)
{
	char *subject = form_value(form, "subject");
	char *body = form_value(form, "announcement");
	if (!body || !*body) {
		finish(iq, cmd, sid, "the announcement is empty", true);
	} else {
		struct announcement a = { server_message(pl_xnode_attr(iq, "to"), subject, body), 0 };
		pl_router_each_user(announce_to, &a);
		pl_xnode_unref(&a.message);
		char *note = pl_asprintf("sent to %zu sessions", a.sent);
		finish(iq, cmd, sid, note, false);
		pl_module_log(self, 2, "announcement by %s to %zu sessions", pl_xnode_attr(iq, "from"),
			      a.sent);
		free(note);
	}
	free(subject);
	free(body);
}

static void on_motd_stored(void *arg, int status)
{
	struct pending *p = arg;
	pending_done(p, status);
}

static void run_motd(const struct command *cmd, const struct pl_xnode *iq, const char *sid,
		     const struct pl_xnode *form)
{
	bool remove = strcmp(cmd->name, "delete-motd") == 0;
	char *text = remove ? NULL : form_value(form, "motd");
	if (!remove && (!text || !*text)) {
		free(text);
		finish(iq, cmd, sid, "the message of the day is empty", true);
		return;
	}
	free(motd);
	motd = text;
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	if (motd)
		pl_store_put(w, settings_space, MOTD_KEY, strlen(MOTD_KEY), motd, strlen(motd));
	else
		pl_store_del(w, settings_space, MOTD_KEY, strlen(MOTD_KEY));
	pl_store_write_submit(w, on_motd_stored, pending_new(cmd, iq, sid, "message of the day"));
}

static const struct field_spec add_user_fields[] = {
	{ "accountjid", JID, "The Jabber ID for the account to be added", true },
	{ "password", PRIVATE, "The password for this account", true },
	{ "password-verify", PRIVATE, "Retype password", true },
	{ NULL }
};
static const struct field_spec delete_user_fields[] = {
	{ "accountjids", JIDS, "The Jabber ID(s) to delete", true },
	{ NULL }
};
static const struct field_spec password_fields[] = {
	{ "accountjid", JID, "The Jabber ID for this account", true },
	{ "password", PRIVATE, "The new password", true },
	{ NULL }
};
static const struct field_spec user_fields[] = {
	{ "accountjid", JID, "The Jabber ID of the user", true },
	{ NULL }
};
static const struct field_spec announce_fields[] = {
	{ "subject", TEXT, "Subject", false },
	{ "announcement", MULTI, "Announcement", true },
	{ NULL }
};
static const struct field_spec motd_fields[] = {
	{ "motd", MULTI, "Message of the day", true },
	{ NULL }
};

static const struct command commands[] = {
	{ "add-user", "Add a user", add_user_fields, run_add_user },
	{ "delete-user", "Delete users", delete_user_fields, run_delete_user },
	{ "change-user-password", "Change a user's password", password_fields, run_change_password },
	{ "get-registered-users-num", "Number of registered users", NULL, run_registered_num },
	{ "get-online-users-num", "Number of online users", NULL, run_online },
	{ "get-online-users-list", "List of online users", NULL, run_online },
	{ "get-user-statistics", "A user's online resources", user_fields, run_user_stats },
	{ "announce", "Send an announcement to all online users", announce_fields, run_announce },
	{ "set-motd", "Set the message of the day", motd_fields, run_motd },
	{ "edit-motd", "Edit the message of the day", motd_fields, run_motd },
	{ "delete-motd", "Delete the message of the day", NULL, run_motd },
};

static const struct command *find_command(const char *node)
{
	size_t prefix = strlen(NS_ADMIN "#");
	if (!node || strncmp(node, NS_ADMIN "#", prefix) != 0)
		return NULL;
	for (size_t i = 0; i < PL_ARRAY_LEN(commands); i++)
		if (strcmp(commands[i].name, node + prefix) == 0)
			return &commands[i];
	return NULL;
}

/* ---- XEP-0050 --------------------------------------------------------------------- */

/* Two-step commands: the form was sent, its submission must come back
 * from the same admin with the same session id. */
struct command_session {
	char *id;                        /* owned */
	char *admin;                     /* owned: full JID */
	const struct command *cmd;
	int64_t started_ms;
	struct command_session *next;
};
static struct command_session *command_sessions;
static size_t command_session_count;
#define MAX_COMMAND_SESSIONS 256
#define COMMAND_SESSION_TTL_MS (10 * 60 * 1000)

static void session_free(struct command_session *s)
{
	free(s->id);
	free(s->admin);
	free(s);
}

static void expire_sessions(void)
{
	int64_t now = pl_now_ms();
	for (struct command_session **link = &command_sessions; *link;) {
		if (now - (*link)->started_ms > COMMAND_SESSION_TTL_MS) {
			struct command_session *gone = *link;
			*link = gone->next;
			session_free(gone);
			command_session_count--;
		} else {
			link = &(*link)->next;
		}
	}
}

static struct command_session *take_session(const char *id, const char *admin)
{
	for (struct command_session **link = &command_sessions; id && *link; link = &(*link)->next) {
		if (strcmp((*link)->id, id) == 0 && strcmp((*link)->admin, admin) == 0) {
			struct command_session *s = *link;
			*link = s->next;
			command_session_count--;
			return s;
		}
	}
	return NULL;
}

static void send_form(const struct pl_xnode *iq, const struct command *cmd, const char *from)
{
	expire_sessions();
	if (command_session_count >= MAX_COMMAND_SESSIONS) {
		pl_route_error(iq, PL_ERR_RESOURCE_CONSTRAINT, "too many commands in progress");
		return;
	}
	struct command_session *s = pl_calloc(1, sizeof(*s));
	uint8_t random[8];
	pl_random_bytes(random, sizeof(random));
	char id[20];
	for (size_t i = 0; i < sizeof(random); i++)
		snprintf(id + i * 2, 3, "%02x", random[i]);
	s->id = pl_strdup(id);
	s->admin = pl_strdup(from);
	s->cmd = cmd;
	s->started_ms = pl_now_ms();
	s->next = command_sessions;
	command_sessions = s;
	command_session_count++;
	struct pl_xnode *reply = command_reply(iq, cmd, id, "executing");
	struct pl_xnode *c = pl_xnode_first_element(reply);
	struct pl_xnode *actions = pl_xnode_add_element(c, "actions", NULL);
	pl_xnode_set_attr(actions, "execute", "complete");
	pl_xnode_add_element(actions, "complete", NULL);
	struct pl_xnode *form = pl_xnode_add_element(c, "x", NS_DATA);
	pl_xnode_set_attr(form, "type", "form");
	pl_xnode_add_text(pl_xnode_add_element(form, "title", NULL), cmd->label, strlen(cmd->label));
	struct pl_xnode *f = result_field(form, "FORM_TYPE", "hidden", NS_ADMIN);
	(void)f;
	static const char *const types[] = { "text-single", "text-private", "text-multi",
					     "jid-single", "jid-multi" };
	for (const struct field_spec *spec = cmd->fields; spec->var; spec++) {
		struct pl_xnode *field = result_field(form, spec->var, types[spec->kind], NULL);
		pl_xnode_set_attr(field, "label", spec->label);
		if (spec->required)
			pl_xnode_add_element(field, "required", NULL);
		if (strcmp(spec->var, "motd") == 0 && motd)
			add_value(field, motd);
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
}

static int on_command(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (!to || strchr(to, '@') || !pl_server_find_host(to))
		return PL_CONTINUE;
	const char *from = pl_xnode_attr(iq->stanza, "from");
	struct pl_xnode *request = pl_xnode_find(iq->stanza, "command", NS_COMMANDS);
	const struct command *cmd = find_command(pl_xnode_attr(request, "node"));
	if (!cmd)
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	if (!is_admin(from)) {
		pl_module_log(self, 2, "%s may not run %s", from ? from : "?", cmd->name);
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	}
	const char *action = pl_xnode_attr(request, "action");
	const char *sid = pl_xnode_attr(request, "sessionid");
	struct pl_xnode *form = pl_xnode_find(request, "x", NS_DATA);
	if (sid) {
		struct command_session *s = take_session(sid, from);
		if (!s || s->cmd != cmd) {
			if (s)
				session_free(s);
			/* XEP-0050 4.6: bad-request with <bad-sessionid/>. */
			return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
		}
		session_free(s);
		if (action && strcmp(action, "cancel") == 0) {
			struct pl_xnode *reply = command_reply(iq->stanza, cmd, sid, "canceled");
			pl_route(reply, NULL);
			pl_xnode_unref(&reply);
			return PL_HANDLED;
		}
		if (!form)
			return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
		pl_module_log(self, 3, "%s runs %s", from, cmd->name);
		cmd->run(cmd, iq->stanza, sid, form);
		return PL_HANDLED;
	}
	if (action && strcmp(action, "execute") != 0 && strcmp(action, "complete") != 0)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	if (!cmd->fields || (form && strcmp(pl_xnode_attr(form, "type") ? pl_xnode_attr(form, "type") : "", "submit") == 0)) {
		/* Nothing to ask, or the client answered the form already. */
		pl_module_log(self, 3, "%s runs %s", from, cmd->name);
		cmd->run(cmd, iq->stanza, "single", form);
		return PL_HANDLED;
	}
	send_form(iq->stanza, cmd, from);
	return PL_HANDLED;
}

/* disco#items node=commands: the commands this requester may run. */
static int on_items(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	struct pl_xnode *query = pl_xnode_find(iq->stanza, "query", NS_DISCO_ITEMS);
	const char *node = query ? pl_xnode_attr(query, "node") : NULL;
	if (!to || strchr(to, '@') || !pl_server_find_host(to) || !node || strcmp(node, NS_COMMANDS) != 0)
		return PL_CONTINUE;
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *items = pl_xnode_add_element(reply, "query", NS_DISCO_ITEMS);
	pl_xnode_set_attr(items, "node", NS_COMMANDS);
	for (size_t i = 0; is_admin(pl_xnode_attr(iq->stanza, "from")) && i < PL_ARRAY_LEN(commands); i++) {
		struct pl_xnode *item = pl_xnode_add_element(items, "item", NULL);
		pl_xnode_set_attr(item, "jid", to);
		char *cmd_node = pl_asprintf(NS_ADMIN "#%s", commands[i].name);
		pl_xnode_set_attr(item, "node", cmd_node);
		free(cmd_node);
		pl_xnode_set_attr(item, "name", commands[i].label);
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

/* disco#info on a command node (XEP-0050 2.3). */
static int on_info(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	struct pl_xnode *query = pl_xnode_find(iq->stanza, "query", NS_DISCO_INFO);
	const char *node = query ? pl_xnode_attr(query, "node") : NULL;
	const struct command *cmd = find_command(node);
	if (!to || strchr(to, '@') || !node || (!cmd && strcmp(node, NS_COMMANDS) != 0))
		return PL_CONTINUE;
	if (cmd && !is_admin(pl_xnode_attr(iq->stanza, "from")))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *answer = pl_xnode_add_element(reply, "query", NS_DISCO_INFO);
	pl_xnode_set_attr(answer, "node", node);
	struct pl_xnode *identity = pl_xnode_add_element(answer, "identity", NULL);
	pl_xnode_set_attr(identity, "category", "automation");
	pl_xnode_set_attr(identity, "type", cmd ? "command-node" : "command-list");
	if (cmd)
		pl_xnode_set_attr(identity, "name", cmd->label);
	pl_xnode_set_attr(pl_xnode_add_element(answer, "feature", NULL), "var", NS_COMMANDS);
	pl_xnode_set_attr(pl_xnode_add_element(answer, "feature", NULL), "var", NS_DATA);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

/* The message of the day, at each login (initial presence). */
static int on_broadcast(struct pl_event *event, void *userdata)
{
	struct pl_presence_event *e = event->data;
	if (!e->initial || !motd || !e->session)
		return PL_CONTINUE;
	struct pl_xnode *m = server_message(e->session->host, NULL, motd);
	pl_xnode_set_attr(m, "to", e->session->full_jid);
	e->session->deliver(e->session, m);
	pl_xnode_unref(&m);
	return PL_CONTINUE;
}

static int admin_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct admin_conf *)conf_ptr;
	self = m;
	memset(&admins, 0, sizeof(admins));
	for (size_t i = 0; i < conf.admins.count; i++) {
		char *bare = pl_jid_normalize_bare(conf.admins.items[i]);
		if (!bare || !strchr(bare, '@')) {
			free(bare);
			for (size_t k = 0; k < admins.count; k++)
				free(admins.items[k]);
			free(admins.items);
			memset(&admins, 0, sizeof(admins));
			return pl_error(error, -EINVAL, "admin \"%s\" is not an account's JID",
					conf.admins.items[i]);
		}
		admins.items = pl_realloc(admins.items, (admins.count + 1) * sizeof(char *));
		admins.items[admins.count++] = bare;
	}
	settings_space = pl_store_open(m, "settings");
	if (!settings_space)
		return pl_error(error, -EIO, "cannot open the admin store space");
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	const void *value;
	size_t len;
	if (read && pl_store_get(read, settings_space, MOTD_KEY, strlen(MOTD_KEY), &value, &len) == 0)
		motd = pl_strndup(value, len);
	if (read)
		pl_store_read_end(read);
	pl_feature(m, NS_COMMANDS);
	pl_hook(m, "iq/set/" NS_COMMANDS, on_command, NULL, 0);
	pl_hook(m, "iq/get/" NS_DISCO_ITEMS, on_items, NULL, 10);
	pl_hook(m, "iq/get/" NS_DISCO_INFO, on_info, NULL, 10);
	pl_hook(m, "presence/broadcast", on_broadcast, NULL, 0);
	if (!admins.count)
		pl_module_log(m, 1, "no admin configured: the commands are listed to nobody");
	return 0;
}

static void admin_unload(struct pl_module *m)
{
	for (size_t i = 0; i < admins.count; i++)
		free(admins.items[i]);
	free(admins.items);
	memset(&admins, 0, sizeof(admins));
	free(motd);
	motd = NULL;
	while (command_sessions) {
		struct command_session *s = command_sessions;
		command_sessions = s->next;
		session_free(s);
	}
	command_session_count = 0;
	(void)m;
}

PL_MODULE(admin, .version = "0.1", .options = admin_options,
	  .conf_size = sizeof(struct admin_conf), .load = admin_load, .unload = admin_unload);
