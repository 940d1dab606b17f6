/* mod_muc: XEP-0045 multi-user chat. Each host gets a chat service at
 * `<subdomain>.<host>` (a domain service of the router); rooms live in
 * memory while anyone is in them, and persistent rooms (configuration,
 * subject, affiliations) are also kept in muc.rooms ("room" -> <room/>)
 * and muc.affiliations ("room\0bare" -> <affiliation/>), one key per
 * member so that a change writes one small record, and restored at start.
 *
 * Ordering and archive: every groupchat message is stored ONCE, in the
 * room's archive kept by mod_mam (read diffusion), whose per-room
 * sequence number becomes the XEP-0359 stanza-id every occupant gets;
 * all occupants are served in that order from this one thread, so every
 * device sees one order, and a device that was away asks the room's
 * archive (XEP-0313) for what follows its last id. The archive write is
 * part of the sender's stanza, so its XEP-0198 ack means "on disk".
 *
 * An occupant is a nick held by one bare JID from one or more sessions
 * (multi-session nicks); sessions are also indexed by real full JID so
 * that the end of a session (an unavailable presence, or the router's
 * "session/unbound" when none came) removes it from every room. */
#include "archive.h"
#include "counters.h"
#include "datetime.h"
#include "hooks.h"
#include "iq_storage.h"
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "scram.h"
#include "server.h"
#include "store/store.h"
#include "util.h"
#include "xml/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define NS_MUC_ADMIN "http://jabber.org/protocol/muc#admin"
#define NS_MUC_OWNER "http://jabber.org/protocol/muc#owner"
#define NS_MUC_ROOMCONFIG "http://jabber.org/protocol/muc#roomconfig"
#define NS_MUC_ROOMINFO "http://jabber.org/protocol/muc#roominfo"
#define NS_MUC_STABLE_ID "http://jabber.org/protocol/muc#stable_id"
#define NS_MUC_SELF_PING "http://jabber.org/protocol/muc#self-ping-optimization"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_DATA "jabber:x:data"
#define NS_DELAY "urn:xmpp:delay"
#define NS_SID "urn:xmpp:sid:0"
#define NS_OCCUPANT_ID "urn:xmpp:occupant-id:0"
#define NS_PING "urn:xmpp:ping"
#define NS_MAM "urn:xmpp:mam:2"
#define NS_VCARD "vcard-temp"
#define NS_RECORD "urn:parley:muc:0"

/* ---- configuration -------------------------------------------------------- */

enum creators { CREATE_LOCAL, CREATE_ANYONE, CREATE_ADMINS };
static const char *const creator_names[] = { "local", "anyone", "admins", NULL };

struct muc_conf {
	char *subdomain;
	int create;
	struct pl_string_list admins;
	int64_t max_occupants;
	int64_t default_max_occupants;
	int64_t max_rooms;
	int64_t max_rooms_per_user;
	int64_t default_history;
	int64_t max_history;
	int64_t message_rate;
	int64_t message_burst;
	int64_t max_nick_length;
	int64_t max_subject_length;
	bool default_persistent;
	bool default_public;
};

static const struct pl_option muc_options[] = {
	{ "subdomain", PL_OPT_STRING, "conference", 0, 0, NULL, offsetof(struct muc_conf, subdomain),
	  "the service of host H is <subdomain>.H" },
	{ "create", PL_OPT_ENUM, "local", 0, 0, creator_names, offsetof(struct muc_conf, create),
	  "who may create rooms: accounts of this server, anyone, or the admins only" },
	{ "admin", PL_OPT_LIST, NULL, 0, 0, NULL, offsetof(struct muc_conf, admins),
	  "bare JIDs that own every room (may repeat)" },
	{ "max-occupants", PL_OPT_INT, "1000", 2, 100000, NULL,
	  offsetof(struct muc_conf, max_occupants), "occupants per room at most" },
	{ "default-max-occupants", PL_OPT_INT, "200", 2, 100000, NULL,
	  offsetof(struct muc_conf, default_max_occupants), "a new room's limit" },
	{ "max-rooms", PL_OPT_INT, "100000", 1, 10000000, NULL, offsetof(struct muc_conf, max_rooms),
	  "rooms per service at most" },
	{ "max-rooms-per-user", PL_OPT_INT, "100", 1, 100000, NULL,
	  offsetof(struct muc_conf, max_rooms_per_user), "rooms one account may be in at once" },
	{ "default-history", PL_OPT_INT, "20", 0, 1000, NULL,
	  offsetof(struct muc_conf, default_history), "messages of history a new room keeps for joins" },
	{ "max-history", PL_OPT_INT, "100", 0, 1000, NULL, offsetof(struct muc_conf, max_history),
	  "history messages a room may be configured to keep" },
	{ "message-rate", PL_OPT_INT, "5", 1, 100000, NULL, offsetof(struct muc_conf, message_rate),
	  "groupchat messages per second per occupant (flood control)" },
	{ "message-burst", PL_OPT_INT, "20", 1, 100000, NULL,
	  offsetof(struct muc_conf, message_burst), "messages an occupant may send at once" },
	{ "max-nick-length", PL_OPT_INT, "64", 1, 1023, NULL,
	  offsetof(struct muc_conf, max_nick_length), "bytes" },
	{ "max-subject-length", PL_OPT_INT, "1024", 1, 65536, NULL,
	  offsetof(struct muc_conf, max_subject_length), "bytes" },
	{ "default-persistent", PL_OPT_BOOL, "false", 0, 0, NULL,
	  offsetof(struct muc_conf, default_persistent), "new rooms outlive their last occupant" },
	{ "default-public", PL_OPT_BOOL, "true", 0, 0, NULL,
	  offsetof(struct muc_conf, default_public), "new rooms are listed in disco#items" },
	{ NULL }
};

static struct muc_conf conf;
static struct pl_module *self;
static struct pl_store_space *rooms_space, *affiliations_space, *meta_space;
static struct pl_counter *rooms_created, *messages_routed;
/* The key of XEP-0421 occupant ids (kept in muc.meta: ids are stable). */
static uint8_t occupant_secret[32];

/* ---- model ------------------------------------------------------------------ */

/* Ranked: comparisons mean "at least". */
enum affiliation { AFF_OUTCAST, AFF_NONE, AFF_MEMBER, AFF_ADMIN, AFF_OWNER };
static const char *const affiliation_names[] = { "outcast", "none", "member", "admin", "owner",
						 NULL };
enum role { ROLE_NONE, ROLE_VISITOR, ROLE_PARTICIPANT, ROLE_MODERATOR };
static const char *const role_names[] = { "none", "visitor", "participant", "moderator", NULL };
enum private_messages { PM_ANYONE, PM_PARTICIPANTS, PM_MODERATORS, PM_NONE };
static const char *const pm_names[] = { "anyone", "participants", "moderators", "none", NULL };

static int name_index(const char *const *names, const char *name)
{
	for (int i = 0; name && names[i]; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

struct room_config {
	char *name, *description, *password, *lang;   /* owned, never NULL */
	bool persistent, public, members_only, moderated, non_anonymous;
	bool allow_invites, change_subject;
	bool member_history_all;  /* new members read the archive from its start */
	int allow_pm;             /* enum private_messages */
	int64_t max_occupants;
	int64_t history;
};

struct service;
struct room;
struct occupant;

/* One real session in one room. */
struct session_ref {
	char *full_jid;                  /* owned: the user's real JID */
	struct pl_jid jid;               /* owned: full_jid parsed once (fan-out) */
	struct occupant *occupant;
	struct pl_xnode *presence;       /* owned: the last presence it sent the room */
	struct session_ref *next_of_occupant;
	struct session_ref *next_of_jid; /* session_index chain (every room) */
};

struct occupant {
	struct room *room;
	char *nick;                      /* owned */
	char *bare_jid;                  /* owned: the real account */
	enum role role;
	char occupant_id[32];            /* XEP-0421 */
	struct session_ref *sessions;    /* owned; the newest first */
	double tokens;                   /* flood control bucket */
	int64_t refilled_ms;
	struct occupant *next;
};

struct affiliation_entry {
	char *bare_jid;                  /* owned */
	enum affiliation affiliation;
	char *nick;                      /* owned, reserved nick or NULL */
	char *reason;                    /* owned or NULL */
	int64_t since_ms;
	struct affiliation_entry *next;
};

struct history_entry {
	struct pl_xnode *message;        /* owned: as broadcast, without 'to' */
	int64_t at_ms;
};

/* An IQ relayed between occupants (XEP-0045 7.x: vCard, version, ping to
 * another nick): the answer must find its way back with the asker's id. */
struct relayed_iq {
	char *id;                        /* owned: the id the target sees */
	char *asker;                     /* owned: real full JID */
	char *asker_nick;                /* owned */
	char *original_id;               /* owned */
	char *target;                    /* owned: real full JID */
	int64_t expires_ms;
	struct relayed_iq *next;
};
#define MAX_RELAYED_IQS 256
#define RELAYED_IQ_TTL_MS 60000

struct room {
	char *jid;                       /* owned: node@service */
	struct service *service;
	struct room_config config;
	struct occupant *occupants;      /* owned */
	size_t occupant_count;
	struct affiliation_entry *affiliations;   /* owned */
	char *subject, *subject_nick;    /* owned or NULL */
	/* The room's vCard (XEP-0054 on the room JID, set by owners) and the
	 * SHA-1 of its photo, announced in disco#info (XEP-0486). Owned. */
	struct pl_xnode *vcard;
	char *avatar_hash;
	int64_t subject_at_ms;
	struct history_entry *history;   /* ring of config.history entries */
	size_t history_start, history_count, history_cap;
	bool history_loaded;             /* from the archive after a restart */
	bool locked;                     /* created, waiting for its configuration */
	struct relayed_iq *relayed;
	size_t relayed_count;
	uint64_t relay_counter;
	struct room *next;
};

struct service {
	char *domain;                    /* owned */
	char *host;                      /* owned: the host it serves */
	bool registered;                 /* with the router (ours to remove) */
	size_t room_count;
	struct service *next;
};

static struct service *services;
#define ROOM_BUCKETS 4096
static struct room *rooms[ROOM_BUCKETS];
#define SESSION_BUCKETS 4096
static struct session_ref *session_index[SESSION_BUCKETS];

/* The admin option's JIDs, normalised at load (owned). */
static struct pl_string_list admins;

static bool service_admin(const char *bare_jid)
{
	for (size_t i = 0; i < admins.count; i++)
		if (strcmp(admins.items[i], bare_jid) == 0)
			return true;
	return false;
}

static struct room *find_room(const char *jid)
{
	for (struct room *r = rooms[pl_hash_string(jid) % ROOM_BUCKETS]; r; r = r->next)
		if (strcmp(r->jid, jid) == 0)
			return r;
	return NULL;
}

static struct affiliation_entry *find_affiliation(const struct room *r, const char *bare_jid)
{
	for (struct affiliation_entry *a = r->affiliations; a; a = a->next)
		if (strcmp(a->bare_jid, bare_jid) == 0)
			return a;
	return NULL;
}

static enum affiliation affiliation_of(const struct room *r, const char *bare_jid)
{
	if (service_admin(bare_jid))
		return AFF_OWNER;
	struct affiliation_entry *a = find_affiliation(r, bare_jid);
	return a ? a->affiliation : AFF_NONE;
}

static struct occupant *find_nick(const struct room *r, const char *nick)
{
	for (struct occupant *o = r->occupants; o; o = o->next)
		if (strcmp(o->nick, nick) == 0)
			return o;
	return NULL;
}

static struct occupant *find_occupant_of(const struct room *r, const char *bare_jid)
{
	for (struct occupant *o = r->occupants; o; o = o->next)
		if (strcmp(o->bare_jid, bare_jid) == 0)
			return o;
	return NULL;
}

/* The session of real JID `full_jid` in room r, if it is in. */
static struct session_ref *find_session(const struct room *r, const char *full_jid)
{
	for (struct session_ref *s = session_index[pl_hash_string(full_jid) % SESSION_BUCKETS]; s;
	     s = s->next_of_jid)
		if (s->occupant->room == r && strcmp(s->full_jid, full_jid) == 0)
			return s;
	return NULL;
}

/* How many rooms each account is in (max-rooms-per-user), without a walk
 * over every room. */
struct user_rooms {
	char *bare_jid;                  /* owned */
	size_t count;
	struct user_rooms *next;
};
#define USER_BUCKETS 1024
static struct user_rooms *user_rooms[USER_BUCKETS];

static struct user_rooms **user_rooms_link(const char *bare_jid)
{
	struct user_rooms **link = &user_rooms[pl_hash_string(bare_jid) % USER_BUCKETS];
	while (*link && strcmp((*link)->bare_jid, bare_jid) != 0)
		link = &(*link)->next;
	return link;
}

static size_t rooms_of_user(const char *bare_jid)
{
	struct user_rooms *u = *user_rooms_link(bare_jid);
	return u ? u->count : 0;
}

static void count_user_room(const char *bare_jid, int delta)
{
	struct user_rooms **link = user_rooms_link(bare_jid);
	if (!*link) {
		*link = pl_calloc(1, sizeof(**link));
		(*link)->bare_jid = pl_strdup(bare_jid);
	}
	struct user_rooms *u = *link;
	u->count += (size_t)delta;
	if (u->count == 0) {
		*link = u->next;
		free(u->bare_jid);
		free(u);
	}
}

static char *room_nick_jid(const struct room *r, const char *nick)
{
	return pl_asprintf("%s/%s", r->jid, nick);
}

/* ---- persistence ---------------------------------------------------------- */

static void config_defaults(struct room_config *c)
{
	c->name = pl_strdup("");
	c->description = pl_strdup("");
	c->password = pl_strdup("");
	c->lang = pl_strdup("");
	c->persistent = conf.default_persistent;
	c->public = conf.default_public;
	c->allow_pm = PM_ANYONE;
	c->change_subject = false;
	c->max_occupants = conf.default_max_occupants < conf.max_occupants
				   ? conf.default_max_occupants
				   : conf.max_occupants;
	c->history = conf.default_history < conf.max_history ? conf.default_history
							      : conf.max_history;
	c->member_history_all = true;
}

static void config_free(struct room_config *c)
{
	free(c->name);
	free(c->description);
	free(c->password);
	free(c->lang);
}

static void set_string(char **slot, const char *value)
{
	free(*slot);
	*slot = pl_strdup(value ? value : "");
}

static void put_room(struct pl_store_write *w, const struct room *r)
{
	struct pl_xnode *n = pl_xnode_new("room", NS_RECORD);
	const struct room_config *c = &r->config;
	pl_xnode_set_attr(n, "name", c->name);
	pl_xnode_set_attr(n, "description", c->description);
	pl_xnode_set_attr(n, "password", c->password);
	pl_xnode_set_attr(n, "lang", c->lang);
	pl_xnode_set_attr(n, "public", c->public ? "1" : "0");
	pl_xnode_set_attr(n, "members-only", c->members_only ? "1" : "0");
	pl_xnode_set_attr(n, "moderated", c->moderated ? "1" : "0");
	pl_xnode_set_attr(n, "non-anonymous", c->non_anonymous ? "1" : "0");
	pl_xnode_set_attr(n, "allow-invites", c->allow_invites ? "1" : "0");
	pl_xnode_set_attr(n, "change-subject", c->change_subject ? "1" : "0");
	pl_xnode_set_attr(n, "member-history", c->member_history_all ? "all" : "since-membership");
	pl_xnode_set_attr(n, "allow-pm", pm_names[c->allow_pm]);
	char number[24];
	snprintf(number, sizeof(number), "%" PRId64, c->max_occupants);
	pl_xnode_set_attr(n, "max-occupants", number);
	snprintf(number, sizeof(number), "%" PRId64, c->history);
	pl_xnode_set_attr(n, "history", number);
	if (r->subject) {
		struct pl_xnode *s = pl_xnode_add_element(n, "subject", NULL);
		if (r->subject_nick)
			pl_xnode_set_attr(s, "nick", r->subject_nick);
		snprintf(number, sizeof(number), "%" PRId64, r->subject_at_ms);
		pl_xnode_set_attr(s, "at", number);
		pl_xnode_add_text(s, r->subject, strlen(r->subject));
	}
	if (r->vcard)
		pl_xnode_add_child(n, pl_xnode_copy(r->vcard));
	struct pl_buf value = { 0 };
	pl_xnode_serialize(n, NULL, &value);
	pl_store_put(w, rooms_space, r->jid, strlen(r->jid), value.data, value.len);
	pl_buf_free(&value);
	pl_xnode_unref(&n);
}

static void affiliation_key(struct pl_store_key *k, const char *room, const char *bare)
{
	pl_store_key_init(k);
	pl_store_key_str(k, room);
	if (bare)
		pl_store_key_str(k, bare);
}

static void put_affiliation(struct pl_store_write *w, const struct room *r,
			    const struct affiliation_entry *a)
{
	struct pl_store_key k;
	affiliation_key(&k, r->jid, a->bare_jid);
	if (k.overflow)
		return;
	if (a->affiliation == AFF_NONE && !a->nick) {
		pl_store_del(w, affiliations_space, k.data, k.len);
		return;
	}
	struct pl_xnode *n = pl_xnode_new("affiliation", NS_RECORD);
	pl_xnode_set_attr(n, "affiliation", affiliation_names[a->affiliation]);
	if (a->nick)
		pl_xnode_set_attr(n, "nick", a->nick);
	char since[24];
	snprintf(since, sizeof(since), "%" PRId64, a->since_ms);
	pl_xnode_set_attr(n, "since", since);
	if (a->reason)
		pl_xnode_add_text(n, a->reason, strlen(a->reason));
	struct pl_buf value = { 0 };
	pl_xnode_serialize(n, NULL, &value);
	pl_store_put(w, affiliations_space, k.data, k.len, value.data, value.len);
	pl_buf_free(&value);
	pl_xnode_unref(&n);
}

static void on_stored(void *arg, int status)
{
	char *room = arg;
	if (status != 0)
		pl_module_log(self, 0, "room %s: not saved: %s", room, strerror(-status));
	free(room);
}

/* Saves the room's record (configuration and subject), if it is persistent. */
static void save_room(const struct room *r)
{
	if (!r->config.persistent)
		return;
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	put_room(w, r);
	pl_store_write_submit(w, on_stored, pl_strdup(r->jid));
}

/* A room became persistent: everything goes to disk at once. */
static void save_room_fully(const struct room *r)
{
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	put_room(w, r);
	for (struct affiliation_entry *a = r->affiliations; a; a = a->next)
		put_affiliation(w, r, a);
	pl_store_write_submit(w, on_stored, pl_strdup(r->jid));
}

static void forget_room_on_disk(const struct room *r)
{
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	pl_store_del(w, rooms_space, r->jid, strlen(r->jid));
	struct pl_store_key prefix;
	affiliation_key(&prefix, r->jid, NULL);
	if (!prefix.overflow)
		pl_store_del_prefix(w, affiliations_space, prefix.data, prefix.len);
	pl_store_write_submit(w, on_stored, pl_strdup(r->jid));
}

static void set_affiliation(struct room *r, const char *bare_jid, enum affiliation affiliation,
			    const char *nick, const char *reason)
{
	struct affiliation_entry *a = find_affiliation(r, bare_jid);
	if (!a) {
		a = pl_calloc(1, sizeof(*a));
		a->bare_jid = pl_strdup(bare_jid);
		a->affiliation = AFF_NONE;
		a->next = r->affiliations;
		r->affiliations = a;
	}
	if (a->affiliation != affiliation)
		a->since_ms = pl_unix_ms();
	a->affiliation = affiliation;
	if (nick) {
		free(a->nick);
		a->nick = *nick ? pl_strdup(nick) : NULL;
	}
	free(a->reason);
	a->reason = reason && *reason ? pl_strdup(reason) : NULL;
	if (r->config.persistent) {
		struct pl_store_write *w = pl_store_write_begin(pl_server.store);
		put_affiliation(w, r, a);
		pl_store_write_submit(w, on_stored, pl_strdup(r->jid));
	}
	if (a->affiliation == AFF_NONE && !a->nick) {
		for (struct affiliation_entry **link = &r->affiliations; *link; link = &(*link)->next) {
			if (*link == a) {
				*link = a->next;
				break;
			}
		}
		free(a->bare_jid);
		free(a->nick);
		free(a->reason);
		free(a);
	}
}

/* ---- room life -------------------------------------------------------------- */

static struct room *room_new(struct service *sv, const char *jid)
{
	struct room *r = pl_calloc(1, sizeof(*r));
	r->jid = pl_strdup(jid);
	r->service = sv;
	config_defaults(&r->config);
	uint32_t b = pl_hash_string(jid) % ROOM_BUCKETS;
	r->next = rooms[b];
	rooms[b] = r;
	sv->room_count++;
	return r;
}

static void history_clear(struct room *r)
{
	for (size_t i = 0; i < r->history_count; i++)
		pl_xnode_unref(&r->history[(r->history_start + i) % r->history_cap].message);
	r->history_start = r->history_count = 0;
}

static void history_add(struct room *r, const struct pl_xnode *message, int64_t at_ms)
{
	size_t cap = (size_t)r->config.history;
	if (cap != r->history_cap) {
		/* Resized by a configuration change: keep the newest. */
		struct history_entry *fresh = cap ? pl_calloc(cap, sizeof(*fresh)) : NULL;
		size_t keep = r->history_count < cap ? r->history_count : cap;
		for (size_t i = 0; i < r->history_count; i++) {
			struct history_entry *e =
				&r->history[(r->history_start + i) % r->history_cap];
			if (i >= r->history_count - keep)
				fresh[i - (r->history_count - keep)] = *e;
			else
				pl_xnode_unref(&e->message);
		}
		free(r->history);
		r->history = fresh;
		r->history_cap = cap;
		r->history_start = 0;
		r->history_count = keep;
	}
	if (!cap || !message)
		return;
	struct history_entry *slot;
	if (r->history_count == cap) {
		slot = &r->history[r->history_start];
		pl_xnode_unref(&slot->message);
		r->history_start = (r->history_start + 1) % cap;
	} else {
		slot = &r->history[(r->history_start + r->history_count++) % cap];
	}
	slot->message = pl_xnode_ref((struct pl_xnode *)message);
	slot->at_ms = at_ms;
}

static void session_ref_free(struct session_ref *s)
{
	struct session_ref **link = &session_index[pl_hash_string(s->full_jid) % SESSION_BUCKETS];
	while (*link && *link != s)
		link = &(*link)->next_of_jid;
	if (*link)
		*link = s->next_of_jid;
	pl_xnode_unref(&s->presence);
	pl_jid_free(&s->jid);
	free(s->full_jid);
	free(s);
}

static void occupant_free(struct occupant *o)
{
	while (o->sessions) {
		struct session_ref *s = o->sessions;
		o->sessions = s->next_of_occupant;
		session_ref_free(s);
	}
	free(o->nick);
	free(o->bare_jid);
	free(o);
}

static void relayed_free(struct relayed_iq *q)
{
	free(q->id);
	free(q->asker);
	free(q->asker_nick);
	free(q->original_id);
	free(q->target);
	free(q);
}

static void room_free(struct room *r)
{
	while (r->occupants) {
		struct occupant *o = r->occupants;
		r->occupants = o->next;
		occupant_free(o);
	}
	while (r->affiliations) {
		struct affiliation_entry *a = r->affiliations;
		r->affiliations = a->next;
		free(a->bare_jid);
		free(a->nick);
		free(a->reason);
		free(a);
	}
	while (r->relayed) {
		struct relayed_iq *q = r->relayed;
		r->relayed = q->next;
		relayed_free(q);
	}
	history_clear(r);
	free(r->history);
	config_free(&r->config);
	free(r->subject);
	free(r->subject_nick);
	pl_xnode_unref(&r->vcard);
	free(r->avatar_hash);
	free(r->jid);
	free(r);
}

/* Takes the room out of the table and frees it. */
static void room_remove(struct room *r)
{
	struct room **link = &rooms[pl_hash_string(r->jid) % ROOM_BUCKETS];
	while (*link && *link != r)
		link = &(*link)->next;
	if (*link)
		*link = r->next;
	r->service->room_count--;
	room_free(r);
}

/* A temporary room ends with its last occupant (XEP-0045 10.9 for
 * persistent ones is an explicit destroy). */
static void room_maybe_end(struct room *r)
{
	if (r->occupant_count == 0 && !r->config.persistent) {
		pl_module_log(self, 3, "room %s ends with its last occupant", r->jid);
		room_remove(r);
	}
}

/* ---- presence ------------------------------------------------------------------ */

/* Status codes of XEP-0045 section 15.6 that Parley sends. */
enum {
	STATUS_NON_ANONYMOUS = 100,
	STATUS_CONFIG_CHANGED = 104,
	STATUS_SELF = 110,
	STATUS_LOGGED = 170,
	STATUS_NOW_NON_ANONYMOUS = 172,
	STATUS_NOW_SEMI_ANONYMOUS = 173,
	STATUS_CREATED = 201,
	STATUS_NICK_ASSIGNED = 210,
	STATUS_BANNED = 301,
	STATUS_NEW_NICK = 303,
	STATUS_KICKED = 307,
	STATUS_AFFILIATION_REMOVED = 321,
	STATUS_MEMBERS_ONLY = 322,
	STATUS_SHUTDOWN = 332,
	STATUS_ERROR = 333,
};

/* What a presence broadcast about an occupant says beyond its item. */
struct presence_news {
	const int *codes;                /* for everyone */
	size_t code_count;
	const int *self_codes;           /* for the occupant's own sessions, after 110 */
	size_t self_code_count;
	const char *new_nick;            /* 303 */
	const char *actor_nick;          /* kick, ban */
	const char *reason;
	const char *destroy_venue;       /* room destroyed: the alternate room, "" for none */
	bool unavailable;
	bool own_words;                  /* unavailable with the session's own <status/> */
	const struct session_ref *source; /* whose presence and jid (default: the newest) */
	bool self_only;                  /* the others do not hear of it */
	struct session_ref *only;        /* self copy to this session alone (a join) */
};

static bool sees_real_jids(const struct room *r, const struct occupant *viewer)
{
	return r->config.non_anonymous || viewer->role == ROLE_MODERATOR;
}

static void add_status(struct pl_xnode *x, int code)
{
	char text[8];
	snprintf(text, sizeof(text), "%d", code);
	pl_xnode_set_attr(pl_xnode_add_element(x, "status", NULL), "code", text);
}

/* The presence of occupant o as one kind of recipient sees it. */
static struct pl_xnode *occupant_presence(const struct room *r, const struct occupant *o,
					  const struct presence_news *news, bool with_jid,
					  bool for_self)
{
	struct pl_xnode *p;
	const struct session_ref *latest = news->source ? news->source : o->sessions;
	if ((!news->unavailable || news->own_words) && latest && latest->presence) {
		p = pl_xnode_copy(latest->presence);
		if (news->unavailable)
			pl_xnode_set_attr(p, "type", "unavailable");
	} else {
		p = pl_xnode_new("presence", PL_NS_CLIENT);
		if (news->unavailable)
			pl_xnode_set_attr(p, "type", "unavailable");
	}
	char *from = room_nick_jid(r, o->nick);
	pl_xnode_set_attr(p, "from", from);
	free(from);
	struct pl_xnode *x = pl_xnode_add_element(p, "x", NS_MUC_USER);
	struct pl_xnode *item = pl_xnode_add_element(x, "item", NULL);
	pl_xnode_set_attr(item, "affiliation", affiliation_names[affiliation_of(r, o->bare_jid)]);
	/* A nick change's unavailable keeps the role (XEP-0045 7.6). */
	pl_xnode_set_attr(item, "role", news->unavailable && !news->new_nick ? "none"
										 : role_names[o->role]);
	if (with_jid && latest)
		pl_xnode_set_attr(item, "jid", latest->full_jid);
	if (news->new_nick)
		pl_xnode_set_attr(item, "nick", news->new_nick);
	if (news->actor_nick)
		pl_xnode_set_attr(pl_xnode_add_element(item, "actor", NULL), "nick", news->actor_nick);
	if (news->reason && *news->reason)
		pl_xnode_add_text(pl_xnode_add_element(item, "reason", NULL), news->reason,
				  strlen(news->reason));
	if (news->destroy_venue) {
		struct pl_xnode *d = pl_xnode_add_element(x, "destroy", NULL);
		if (*news->destroy_venue)
			pl_xnode_set_attr(d, "jid", news->destroy_venue);
		if (news->reason && *news->reason)
			pl_xnode_add_text(pl_xnode_add_element(d, "reason", NULL), news->reason,
					  strlen(news->reason));
	}
	if (for_self)
		add_status(x, STATUS_SELF);
	for (size_t i = 0; for_self && i < news->self_code_count; i++)
		add_status(x, news->self_codes[i]);
	for (size_t i = 0; i < news->code_count; i++)
		add_status(x, news->codes[i]);
	/* XEP-0421: everyone sees the same stable id, never the real JID. */
	pl_xnode_set_attr(pl_xnode_add_element(p, "occupant-id", NS_OCCUPANT_ID), "id",
			  o->occupant_id);
	return p;
}

static void send_to(struct pl_xnode *stanza, const char *to)
{
	pl_xnode_set_attr(stanza, "to", to);
	pl_route(stanza, NULL);
}

/* Tells every occupant (o's own sessions with 110) about o. */
static void broadcast_presence(struct room *r, struct occupant *o, const struct presence_news *news)
{
	struct pl_xnode *variants[3] = { NULL, NULL, NULL }; /* anonymous, with jid, self */
	for (struct occupant *q = r->occupants; q; q = q->next) {
		bool is_self = q == o;
		if (!is_self && news->self_only)
			continue;
		int kind = is_self ? 2 : sees_real_jids(r, q) ? 1 : 0;
		for (struct session_ref *s = q->sessions; s; s = s->next_of_occupant) {
			if (is_self && news->only && s != news->only)
				continue;
			if (!variants[kind])
				variants[kind] = occupant_presence(r, o, news, kind >= 1, is_self);
			send_to(variants[kind], s->full_jid);
		}
	}
	for (size_t i = 0; i < 3; i++)
		pl_xnode_unref(&variants[i]);
}

/* A presence that says the occupant's session `s` is out, to that session
 * only (the others of a multi-session nick stay). */
static void send_self_unavailable(struct room *r, struct occupant *o, struct session_ref *s,
				  const struct presence_news *news)
{
	struct presence_news mine = *news;
	mine.source = s;
	struct pl_xnode *p = occupant_presence(r, o, &mine, true, true);
	send_to(p, s->full_jid);
	pl_xnode_unref(&p);
}

/* Removes one session from its occupant; the occupant leaves the room with
 * its last session (the others hear `news`). */
static void remove_session(struct room *r, struct session_ref *s, struct presence_news *news)
{
	struct occupant *o = s->occupant;
	news->unavailable = true;
	if (o->sessions == s && !s->next_of_occupant) {
		broadcast_presence(r, o, news);
		for (struct occupant **link = &r->occupants; *link; link = &(*link)->next) {
			if (*link == o) {
				*link = o->next;
				break;
			}
		}
		r->occupant_count--;
		count_user_room(o->bare_jid, -1);
		occupant_free(o);
		return;
	}
	send_self_unavailable(r, o, s, news);
	for (struct session_ref **link = &o->sessions; *link; link = &(*link)->next_of_occupant) {
		if (*link == s) {
			*link = s->next_of_occupant;
			break;
		}
	}
	session_ref_free(s);
	/* The others now see the nick's newest remaining presence. */
	struct presence_news update = { 0 };
	broadcast_presence(r, o, &update);
}

/* The whole occupant goes (kick, ban, members-only, destroy). */
static void remove_occupant(struct room *r, struct occupant *o, struct presence_news *news)
{
	while (o->sessions->next_of_occupant) {
		struct session_ref *s = o->sessions->next_of_occupant;
		news->unavailable = true;
		send_self_unavailable(r, o, s, news);
		o->sessions->next_of_occupant = s->next_of_occupant;
		session_ref_free(s);
	}
	remove_session(r, o->sessions, news);
}

/* ---- history and subject -------------------------------------------------------- */

static void add_stanza_id(struct pl_xnode *message, const char *room, uint64_t id)
{
	char text[24];
	snprintf(text, sizeof(text), "%" PRIu64, id);
	struct pl_xnode *sid = pl_xnode_add_element(message, "stanza-id", NS_SID);
	pl_xnode_set_attr(sid, "id", text);
	pl_xnode_set_attr(sid, "by", room);
}

static void take_archived(void *arg, uint64_t id, int64_t at_ms, const struct pl_xnode *message)
{
	struct room *r = arg;
	struct pl_xnode *copy = pl_xnode_copy(message);
	add_stanza_id(copy, r->jid, id);
	history_add(r, copy, at_ms);
	pl_xnode_unref(&copy);
}

/* After a restart the join history comes from the room's archive. */
static void load_history(struct room *r)
{
	r->history_loaded = true;
	history_add(r, NULL, 0);
	struct pl_archive_recent recent = { r->jid, (size_t)r->config.history, 0, take_archived, r };
	pl_hooks_fire("archive/recent", &recent);
}

static int64_t history_limit(const struct pl_xnode *history, const char *name)
{
	const char *value = history ? pl_xnode_attr(history, name) : NULL;
	if (!value)
		return -1;
	char *end;
	long long n = strtoll(value, &end, 10);
	return *end || n < 0 ? -1 : n;
}

/* XEP-0045 7.2.14: the newest messages within the joiner's limits, oldest
 * first, each with a delay. */
static void send_history(struct room *r, struct session_ref *s, const struct pl_xnode *muc_x)
{
	if (!r->history_loaded)
		load_history(r);
	struct pl_xnode *history = muc_x ? pl_xnode_find(muc_x, "history", NULL) : NULL;
	int64_t max_stanzas = history_limit(history, "maxstanzas");
	int64_t max_chars = history_limit(history, "maxchars");
	int64_t seconds = history_limit(history, "seconds");
	int64_t since = history ? pl_parse_datetime(pl_xnode_attr(history, "since")) : -1;
	int64_t now = pl_unix_ms();
	size_t take = 0;
	int64_t chars = 0;
	for (size_t k = r->history_count; k-- > 0;) {
		const struct history_entry *e = &r->history[(r->history_start + k) % r->history_cap];
		if (max_stanzas >= 0 && (int64_t)take >= max_stanzas)
			break;
		if (seconds >= 0 && e->at_ms < now - seconds * 1000)
			break;
		if (since >= 0 && e->at_ms < since)
			break;
		if (max_chars >= 0) {
			char *text = pl_xnode_to_string(e->message, PL_NS_CLIENT);
			chars += (int64_t)strlen(text);
			free(text);
			if (chars > max_chars)
				break;
		}
		take++;
	}
	for (size_t k = r->history_count - take; k < r->history_count; k++) {
		const struct history_entry *e = &r->history[(r->history_start + k) % r->history_cap];
		struct pl_xnode *m = pl_xnode_copy(e->message);
		struct pl_xnode *delay = pl_xnode_add_element(m, "delay", NS_DELAY);
		char stamp[40];
		pl_format_datetime(e->at_ms, stamp, sizeof(stamp));
		pl_xnode_set_attr(delay, "stamp", stamp);
		pl_xnode_set_attr(delay, "from", r->jid);
		send_to(m, s->full_jid);
		pl_xnode_unref(&m);
	}
}

static struct pl_xnode *subject_message(const struct room *r)
{
	struct pl_xnode *m = pl_xnode_new("message", PL_NS_CLIENT);
	pl_xnode_set_attr(m, "type", "groupchat");
	char *from = r->subject_nick ? room_nick_jid(r, r->subject_nick) : pl_strdup(r->jid);
	pl_xnode_set_attr(m, "from", from);
	free(from);
	char id[24];
	snprintf(id, sizeof(id), "subject-%" PRId64, r->subject_at_ms);
	pl_xnode_set_attr(m, "id", id);
	struct pl_xnode *subject = pl_xnode_add_element(m, "subject", NULL);
	if (r->subject)
		pl_xnode_add_text(subject, r->subject, strlen(r->subject));
	return m;
}

/* ---- joining, leaving, changing ---------------------------------------------- */

/* The presence an occupant's session gave, without what the room adds. */
static struct pl_xnode *stripped_presence(const struct pl_xnode *stanza)
{
	struct pl_xnode *p = pl_xnode_copy(stanza);
	pl_xnode_set_attr(p, "to", NULL);
	pl_xnode_set_attr(p, "from", NULL);
	pl_xnode_set_attr(p, "id", NULL);
	pl_xnode_set_attr(p, "type", NULL);
	struct pl_xnode *next;
	for (struct pl_xnode *c = pl_xnode_first_element(p); c; c = next) {
		next = pl_xnode_next_element(c);
		if (c->ns && (strcmp(c->ns, NS_MUC) == 0 || strcmp(c->ns, NS_MUC_USER) == 0 ||
			      strcmp(c->ns, NS_OCCUPANT_ID) == 0)) {
			pl_xnode_detach(c);
			pl_xnode_unref(&c);
		}
	}
	return p;
}

static enum role default_role(const struct room *r, enum affiliation a)
{
	if (a >= AFF_ADMIN)
		return ROLE_MODERATOR;
	if (a == AFF_MEMBER || !r->config.moderated)
		return ROLE_PARTICIPANT;
	return ROLE_VISITOR;
}

static void make_occupant_id(const struct room *r, const char *bare_jid, char *out, size_t size)
{
	char *input = pl_asprintf("%s%c%s", r->jid, 0, bare_jid);
	size_t len = strlen(r->jid) + 1 + strlen(bare_jid);
	uint8_t digest[64];
	pl_scram_hmac(PL_SCRAM_SHA256, occupant_secret, sizeof(occupant_secret), input, len, digest);
	free(input);
	char *text = pl_base64_encode(digest, 18);
	snprintf(out, size, "%s", text);
	free(text);
}

/* Somebody other than `bare_jid` reserved `nick` in this room. */
static bool nick_reserved_by_other(const struct room *r, const char *nick, const char *bare_jid)
{
	for (const struct affiliation_entry *a = r->affiliations; a; a = a->next)
		if (a->nick && strcmp(a->nick, nick) == 0 && strcmp(a->bare_jid, bare_jid) != 0)
			return true;
	return false;
}

static bool may_create(const struct service *sv, const char *bare_jid)
{
	if (service_admin(bare_jid))
		return true;
	if (conf.create == CREATE_ANYONE)
		return true;
	if (conf.create == CREATE_ADMINS)
		return false;
	const char *at = strchr(bare_jid, '@');
	(void)sv;
	return at && pl_server_find_host(at + 1) != NULL;
}

/* Sends the joiner what XEP-0045 7.2.3 lists, in its order: the others'
 * presence, its own (everyone else hears of it), history, subject. */
static void welcome(struct room *r, struct occupant *o, struct session_ref *s,
		    const struct pl_xnode *muc_x, bool created, bool nick_assigned)
{
	bool sees = sees_real_jids(r, o);
	struct presence_news plain = { 0 };
	for (struct occupant *q = r->occupants; q; q = q->next) {
		if (q == o)
			continue;
		struct pl_xnode *p = occupant_presence(r, q, &plain, sees, false);
		send_to(p, s->full_jid);
		pl_xnode_unref(&p);
	}
	int self_codes[4];
	size_t count = 0;
	if (r->config.non_anonymous)
		self_codes[count++] = STATUS_NON_ANONYMOUS;
	self_codes[count++] = STATUS_LOGGED;
	if (created)
		self_codes[count++] = STATUS_CREATED;
	if (nick_assigned)
		self_codes[count++] = STATUS_NICK_ASSIGNED;
	struct presence_news joined = { .self_codes = self_codes, .self_code_count = count };
	broadcast_presence(r, o, &joined);
	if (r->locked)
		return;
	send_history(r, s, muc_x);
	struct pl_xnode *subject = subject_message(r);
	send_to(subject, s->full_jid);
	pl_xnode_unref(&subject);
}

static void join_error(struct room *r, bool created, const struct pl_xnode *stanza,
		       enum pl_stanza_error condition, const char *text)
{
	pl_route_error(stanza, condition, text);
	if (created)
		room_remove(r);
}

static void join(struct service *sv, struct room *r, const struct pl_jid *to,
		 struct pl_xnode *stanza, const char *from, const char *bare)
{
	struct pl_xnode *muc_x = pl_xnode_find(stanza, "x", NS_MUC);
	const char *nick = to->resource;
	if (strlen(nick) > (size_t)conf.max_nick_length) {
		pl_route_error(stanza, PL_ERR_NOT_ACCEPTABLE, "the nickname is too long");
		return;
	}
	bool created = false;
	if (!r) {
		if (!may_create(sv, bare)) {
			pl_route_error(stanza, PL_ERR_NOT_ALLOWED, "rooms are created by their admins");
			return;
		}
		if ((int64_t)sv->room_count >= conf.max_rooms) {
			pl_route_error(stanza, PL_ERR_RESOURCE_CONSTRAINT, "too many rooms");
			return;
		}
		r = room_new(sv, to->bare);
		created = true;
		r->history_loaded = true;
		/* XEP-0045 10.1.1: a client that does not speak MUC gets an
		 * instant room; one that does configures it (or accepts the
		 * defaults) before anyone else may enter. */
		r->locked = muc_x != NULL;
		set_affiliation(r, bare, AFF_OWNER, NULL, NULL);
	}
	enum affiliation affiliation = affiliation_of(r, bare);
	struct occupant *holder = find_nick(r, nick);
	if (r->locked && affiliation < AFF_OWNER)
		return join_error(r, created, stanza, PL_ERR_ITEM_NOT_FOUND,
				  "the room is locked until its owner configures it");
	if (affiliation == AFF_OUTCAST)
		return join_error(r, created, stanza, PL_ERR_FORBIDDEN, "you are banned from this room");
	if (r->config.members_only && affiliation < AFF_MEMBER)
		return join_error(r, created, stanza, PL_ERR_REGISTRATION_REQUIRED,
				  "this room is for members only");
	if ((holder && strcmp(holder->bare_jid, bare) != 0) || nick_reserved_by_other(r, nick, bare))
		return join_error(r, created, stanza, PL_ERR_CONFLICT,
				  "that nickname is taken in this room");
	if (*r->config.password && affiliation < AFF_ADMIN) {
		struct pl_xnode *password = muc_x ? pl_xnode_find(muc_x, "password", NULL) : NULL;
		char *given = password ? pl_xnode_text(password) : NULL;
		bool right = given && strcmp(given, r->config.password) == 0;
		free(given);
		if (!right)
			return join_error(r, created, stanza, PL_ERR_NOT_AUTHORIZED,
					  "a password is required");
	}
	if (!holder && (int64_t)r->occupant_count >= r->config.max_occupants &&
	    affiliation < AFF_ADMIN)
		return join_error(r, created, stanza, PL_ERR_SERVICE_UNAVAILABLE, "the room is full");
	if (!holder && (int64_t)rooms_of_user(bare) >= conf.max_rooms_per_user)
		return join_error(r, created, stanza, PL_ERR_RESOURCE_CONSTRAINT,
				  "you are in too many rooms");
	struct occupant *o = holder;
	if (!o) {
		o = pl_calloc(1, sizeof(*o));
		o->room = r;
		o->nick = pl_strdup(nick);
		o->bare_jid = pl_strdup(bare);
		o->role = default_role(r, affiliation);
		o->tokens = (double)conf.message_burst;
		o->refilled_ms = pl_unix_ms();
		make_occupant_id(r, bare, o->occupant_id, sizeof(o->occupant_id));
		struct occupant **tail = &r->occupants;
		while (*tail)
			tail = &(*tail)->next;
		*tail = o;
		r->occupant_count++;
		count_user_room(bare, 1);
	}
	struct session_ref *s = pl_calloc(1, sizeof(*s));
	s->full_jid = pl_strdup(from);
	if (pl_jid_parse(from, &s->jid) != PL_JID_OK)
		memset(&s->jid, 0, sizeof(s->jid));
	s->occupant = o;
	s->presence = stripped_presence(stanza);
	s->next_of_occupant = o->sessions;
	o->sessions = s;
	struct session_ref **index = &session_index[pl_hash_string(from) % SESSION_BUCKETS];
	s->next_of_jid = *index;
	*index = s;
	pl_module_log(self, 2, "%s joined %s as %s%s", from, r->jid, nick,
		      created ? " (created it)" : "");
	welcome(r, o, s, muc_x, created, false);
}

/* XEP-0045 7.6. */
static void change_nick(struct room *r, struct session_ref *s, struct pl_xnode *stanza,
			const char *nick)
{
	struct occupant *o = s->occupant;
	if (strlen(nick) > (size_t)conf.max_nick_length) {
		pl_route_error(stanza, PL_ERR_NOT_ACCEPTABLE, "the nickname is too long");
		return;
	}
	if (find_nick(r, nick) || nick_reserved_by_other(r, nick, o->bare_jid)) {
		pl_route_error(stanza, PL_ERR_CONFLICT, "that nickname is taken in this room");
		return;
	}
	static const int codes[] = { STATUS_NEW_NICK };
	struct presence_news gone = { .codes = codes, .code_count = 1, .new_nick = nick,
				      .unavailable = true };
	broadcast_presence(r, o, &gone);
	pl_module_log(self, 3, "%s: %s is now %s", r->jid, o->nick, nick);
	free(o->nick);
	o->nick = pl_strdup(nick);
	pl_xnode_unref(&s->presence);
	s->presence = stripped_presence(stanza);
	struct presence_news back = { 0 };
	broadcast_presence(r, o, &back);
}

/* A newer presence of a session: it becomes the nick's presence. */
static void update_presence(struct room *r, struct session_ref *s, struct pl_xnode *stanza)
{
	struct occupant *o = s->occupant;
	pl_xnode_unref(&s->presence);
	s->presence = stripped_presence(stanza);
	if (o->sessions != s) {
		struct session_ref **link = &o->sessions;
		while (*link != s)
			link = &(*link)->next_of_occupant;
		*link = s->next_of_occupant;
		s->next_of_occupant = o->sessions;
		o->sessions = s;
	}
	struct presence_news news = { 0 };
	broadcast_presence(r, o, &news);
}

static bool error_means_gone(const struct pl_xnode *stanza)
{
	struct pl_xnode *error = pl_xnode_find(stanza, "error", NULL);
	const char *type = error ? pl_xnode_attr(error, "type") : NULL;
	if (!type || strcmp(type, "cancel") != 0)
		return false;
	static const char *const gone[] = { "service-unavailable", "recipient-unavailable",
					    "item-not-found", "gone", "remote-server-not-found",
					    "jid-malformed" };
	for (size_t i = 0; i < PL_ARRAY_LEN(gone); i++)
		if (pl_xnode_find(error, gone[i], PL_NS_STANZAS))
			return true;
	return false;
}

/* A session that bounces what the room sends it is gone without having
 * said so (a "ghost"): it leaves with status 333. */
static void remove_ghost(struct room *r, const struct pl_xnode *stanza, const char *from)
{
	struct session_ref *s = r ? find_session(r, from) : NULL;
	if (!s || !error_means_gone(stanza))
		return;
	pl_module_log(self, 2, "%s: %s bounced a stanza and leaves the room", r->jid, from);
	static const int codes[] = { STATUS_ERROR };
	struct presence_news news = { .codes = codes, .code_count = 1 };
	remove_session(r, s, &news);
	room_maybe_end(r);
}

static void handle_presence(struct service *sv, const struct pl_jid *to, struct pl_xnode *stanza,
			    const char *from, const char *bare)
{
	const char *type = pl_xnode_attr(stanza, "type");
	struct room *r = find_room(to->bare);
	if (type && strcmp(type, "error") == 0) {
		remove_ghost(r, stanza, from);
		return;
	}
	if (type && strcmp(type, "unavailable") != 0)
		return; /* subscriptions and probes mean nothing to a room */
	struct session_ref *s = r ? find_session(r, from) : NULL;
	if (type) {
		if (s) {
			/* The others hear the leaver's own last words (status). */
			pl_xnode_unref(&s->presence);
			s->presence = stripped_presence(stanza);
			struct presence_news news = { .own_words = true, .source = s };
			pl_module_log(self, 3, "%s left %s", from, r->jid);
			remove_session(r, s, &news);
			room_maybe_end(r);
		}
		return;
	}
	if (!to->resource) {
		pl_route_error(stanza, PL_ERR_JID_MALFORMED, "join with room@service/nickname");
		return;
	}
	if (!s) {
		join(sv, r, to, stanza, from, bare);
	} else if (strcmp(s->occupant->nick, to->resource) != 0) {
		change_nick(r, s, stanza, to->resource);
	} else if (pl_xnode_find(stanza, "x", NS_MUC)) {
		/* A client that lost track of its state joins again: it gets
		 * the whole join sequence, the others only its presence. */
		pl_xnode_unref(&s->presence);
		s->presence = stripped_presence(stanza);
		welcome(r, s->occupant, s, pl_xnode_find(stanza, "x", NS_MUC), false, false);
	} else {
		update_presence(r, s, stanza);
	}
}

/* ---- messages ------------------------------------------------------------------ */

/* Sends `message` (from the room or a nick) to every session of every
 * occupant, in room order. It is serialized once; each recipient costs
 * its hooks (blocking) and a copy with its own 'to'. */
static void broadcast_message(struct room *r, struct pl_xnode *message)
{
	pl_xnode_set_attr(message, "to", NULL);
	struct pl_buf bytes = { 0 };
	pl_xnode_serialize(message, PL_NS_CLIENT, &bytes);
	struct pl_shared_stanza shared = { bytes.data, bytes.len, strlen("<message") };
	bool shareable = bytes.len > shared.to_at && strncmp(bytes.data, "<message", shared.to_at) == 0;
	for (struct occupant *q = r->occupants; q; q = q->next) {
		for (struct session_ref *s = q->sessions; s; s = s->next_of_occupant) {
			pl_xnode_set_attr(message, "to", s->full_jid);
			if (s->jid.full)
				pl_route_parsed(message, NULL, &s->jid, shareable ? &shared : NULL);
			else
				pl_route(message, NULL);
		}
	}
	pl_xnode_set_attr(message, "to", NULL);
	pl_buf_free(&bytes);
}

/* XEP-0045 status messages (104, 172, 173) from the room itself. */
static void broadcast_status(struct room *r, const int *codes, size_t count)
{
	struct pl_xnode *m = pl_xnode_new("message", PL_NS_CLIENT);
	pl_xnode_set_attr(m, "type", "groupchat");
	pl_xnode_set_attr(m, "from", r->jid);
	char id[32];
	snprintf(id, sizeof(id), "status-%" PRId64, pl_unix_ms());
	pl_xnode_set_attr(m, "id", id);
	struct pl_xnode *x = pl_xnode_add_element(m, "x", NS_MUC_USER);
	for (size_t i = 0; i < count; i++)
		add_status(x, codes[i]);
	broadcast_message(r, m);
	pl_xnode_unref(&m);
}

/* Flood control: a token bucket per occupant. */
static bool may_send_now(struct occupant *o)
{
	int64_t now = pl_unix_ms();
	o->tokens += (double)(now - o->refilled_ms) * (double)conf.message_rate / 1000.0;
	if (o->tokens > (double)conf.message_burst)
		o->tokens = (double)conf.message_burst;
	o->refilled_ms = now;
	if (o->tokens < 1.0)
		return false;
	o->tokens -= 1.0;
	return true;
}

/* What a room stamps itself is never taken from a sender. */
static void remove_forgeries(struct pl_xnode *message, const char *room)
{
	struct pl_xnode *next;
	for (struct pl_xnode *c = pl_xnode_first_element(message); c; c = next) {
		next = pl_xnode_next_element(c);
		bool forged = false;
		if (c->ns && strcmp(c->ns, NS_OCCUPANT_ID) == 0)
			forged = true;
		if (c->ns && strcmp(c->ns, NS_SID) == 0 && strcmp(c->name, "stanza-id") == 0) {
			const char *by = pl_xnode_attr(c, "by");
			forged = by && strcmp(by, room) == 0;
		}
		if (c->ns && strcmp(c->ns, NS_DELAY) == 0)
			forged = true;
		if (forged) {
			pl_xnode_detach(c);
			pl_xnode_unref(&c);
		}
	}
}

static bool live_in_room(const struct room *r, const char *bare_jid)
{
	const struct occupant *o = find_occupant_of(r, bare_jid);
	for (const struct session_ref *s = o ? o->sessions : NULL; s; s = s->next_of_occupant) {
		struct pl_session *session = pl_router_find(s->full_jid);
		if (!session || !session->suspended)
			return true; /* remote sessions count as live: not ours to wake */
	}
	return false;
}

/* Group chats notify their absent members too (no server did): a member
 * of this server whose reserved nick, or else account name, the message
 * mentions and who has no live session in the room gets a push through
 * mod_push (documented in parley.xml(5): the body goes only where
 * include-body allows). */
static void wake_mentioned(struct room *r, const struct occupant *speaker,
			   const struct pl_xnode *message)
{
	char *body = pl_xnode_text(pl_xnode_find(message, "body", NULL));
	for (const struct affiliation_entry *a = r->affiliations; a; a = a->next) {
		if (a->affiliation < AFF_MEMBER || strcmp(a->bare_jid, speaker->bare_jid) == 0)
			continue;
		const char *at = strchr(a->bare_jid, '@');
		if (!at || !pl_server_find_host(at + 1))
			continue;
		char *name = a->nick ? pl_strdup(a->nick) : pl_strndup(a->bare_jid, (size_t)(at - a->bare_jid));
		bool mentioned = *name && strcasestr(body, name) != NULL;
		free(name);
		if (!mentioned || live_in_room(r, a->bare_jid))
			continue;
		struct pl_push_wake wake = { a->bare_jid, pl_xnode_attr(message, "from"), body };
		pl_hooks_fire("push/wake", &wake);
	}
	free(body);
}

static void groupchat(struct room *r, struct pl_xnode *stanza, const char *from)
{
	struct session_ref *s = find_session(r, from);
	if (!s) {
		pl_route_error(stanza, PL_ERR_NOT_ACCEPTABLE, "only occupants may speak in the room");
		return;
	}
	struct occupant *o = s->occupant;
	struct pl_xnode *subject = pl_xnode_find(stanza, "subject", NULL);
	bool has_body = pl_xnode_find(stanza, "body", NULL) != NULL;
	if (o->role < ROLE_PARTICIPANT) {
		pl_route_error(stanza, PL_ERR_FORBIDDEN, "visitors may not speak in a moderated room");
		return;
	}
	if (!may_send_now(o)) {
		pl_module_log(self, 2, "%s: %s sends too fast", r->jid, from);
		pl_route_error(stanza, PL_ERR_RESOURCE_CONSTRAINT,
			       "too many messages: wait a moment");
		return;
	}
	if (subject && !has_body) {
		if (o->role < ROLE_MODERATOR && !r->config.change_subject) {
			pl_route_error(stanza, PL_ERR_FORBIDDEN, "only moderators change the subject");
			return;
		}
		char *text = pl_xnode_text(subject);
		if (strlen(text) > (size_t)conf.max_subject_length) {
			free(text);
			pl_route_error(stanza, PL_ERR_NOT_ACCEPTABLE, "the subject is too long");
			return;
		}
		free(r->subject);
		free(r->subject_nick);
		r->subject = *text ? text : NULL;
		if (!*text)
			free(text);
		r->subject_nick = pl_strdup(o->nick);
		r->subject_at_ms = pl_unix_ms();
		save_room(r);
	}
	struct pl_xnode *m = pl_xnode_copy(stanza);
	pl_xnode_set_attr(m, "to", NULL);
	char *nick_jid = room_nick_jid(r, o->nick);
	pl_xnode_set_attr(m, "from", nick_jid);
	free(nick_jid);
	remove_forgeries(m, r->jid);
	pl_xnode_set_attr(pl_xnode_add_element(m, "occupant-id", NS_OCCUPANT_ID), "id",
			  o->occupant_id);
	if (has_body) {
		/* Once in the room's archive; its number orders it for everyone. */
		struct pl_archive_append append = { r->jid, NULL, m, 0 };
		if (pl_hooks_fire("archive/append", &append) == PL_HANDLED && append.id)
			add_stanza_id(m, r->jid, append.id);
		history_add(r, m, pl_unix_ms());
	}
	broadcast_message(r, m);
	pl_counter_add(messages_routed, 1);
	if (has_body && pl_hooks_has("push/wake"))
		wake_mentioned(r, o, m);
	pl_xnode_unref(&m);
}

static bool may_send_private(const struct room *r, const struct occupant *o)
{
	switch (r->config.allow_pm) {
	case PM_ANYONE:
		return true;
	case PM_PARTICIPANTS:
		return o->role >= ROLE_PARTICIPANT;
	case PM_MODERATORS:
		return o->role >= ROLE_MODERATOR;
	default:
		return false;
	}
}

/* XEP-0045 7.5: to the occupant's every session, from the sender's nick. */
static void private_message(struct room *r, struct pl_xnode *stanza, const char *from,
			    const char *nick)
{
	const char *type = pl_xnode_attr(stanza, "type");
	if (type && strcmp(type, "groupchat") == 0) {
		pl_route_error(stanza, PL_ERR_BAD_REQUEST, "a groupchat message goes to the room");
		return;
	}
	struct session_ref *s = find_session(r, from);
	if (!s) {
		pl_route_error(stanza, PL_ERR_NOT_ACCEPTABLE, "only occupants send private messages");
		return;
	}
	if (!may_send_private(r, s->occupant)) {
		pl_route_error(stanza, PL_ERR_FORBIDDEN, "private messages are off in this room");
		return;
	}
	struct occupant *target = find_nick(r, nick);
	if (!target) {
		pl_route_error(stanza, PL_ERR_ITEM_NOT_FOUND, "nobody has that nickname here");
		return;
	}
	struct pl_xnode *m = pl_xnode_copy(stanza);
	char *nick_jid = room_nick_jid(r, s->occupant->nick);
	pl_xnode_set_attr(m, "from", nick_jid);
	free(nick_jid);
	remove_forgeries(m, r->jid);
	if (!pl_xnode_find(m, "x", NS_MUC_USER))
		pl_xnode_add_element(m, "x", NS_MUC_USER);
	pl_xnode_set_attr(pl_xnode_add_element(m, "occupant-id", NS_OCCUPANT_ID), "id",
			  s->occupant->occupant_id);
	for (struct session_ref *t = target->sessions; t; t = t->next_of_occupant)
		send_to(m, t->full_jid);
	pl_xnode_unref(&m);
}

/* XEP-0045 7.8.2: mediated invitations, and their declines. */
static void invitations(struct room *r, struct pl_xnode *stanza, struct pl_xnode *x,
			const char *from, const char *bare)
{
	struct session_ref *s = find_session(r, from);
	enum affiliation affiliation = affiliation_of(r, bare);
	struct pl_xnode *decline = pl_xnode_find(x, "decline", NULL);
	if (decline) {
		char *to = pl_jid_normalize_bare(pl_xnode_attr(decline, "to") ?
							 pl_xnode_attr(decline, "to") : "");
		if (!to) {
			pl_route_error(stanza, PL_ERR_JID_MALFORMED, NULL);
			return;
		}
		struct pl_xnode *m = pl_xnode_new("message", PL_NS_CLIENT);
		pl_xnode_set_attr(m, "from", r->jid);
		struct pl_xnode *out = pl_xnode_add_element(m, "x", NS_MUC_USER);
		struct pl_xnode *d = pl_xnode_add_element(out, "decline", NULL);
		pl_xnode_set_attr(d, "from", bare);
		struct pl_xnode *reason = pl_xnode_find(decline, "reason", NULL);
		if (reason)
			pl_xnode_add_child(d, pl_xnode_copy(reason));
		send_to(m, to);
		pl_xnode_unref(&m);
		free(to);
		return;
	}
	if (!s && affiliation < AFF_ADMIN) {
		pl_route_error(stanza, PL_ERR_NOT_ACCEPTABLE, "only occupants invite");
		return;
	}
	if (r->config.members_only && !r->config.allow_invites && affiliation < AFF_ADMIN) {
		pl_route_error(stanza, PL_ERR_FORBIDDEN, "only admins invite to this room");
		return;
	}
	for (struct pl_xnode *invite = pl_xnode_first_element(x); invite;
	     invite = pl_xnode_next_element(invite)) {
		if (strcmp(invite->name, "invite") != 0)
			continue;
		char *to = pl_jid_normalize_bare(pl_xnode_attr(invite, "to") ?
							 pl_xnode_attr(invite, "to") : "");
		if (!to) {
			pl_route_error(stanza, PL_ERR_JID_MALFORMED, "whom to invite?");
			return;
		}
		/* An invitation into a members-only room makes a member. */
		if (r->config.members_only && affiliation_of(r, to) < AFF_MEMBER &&
		    affiliation_of(r, to) != AFF_OUTCAST)
			set_affiliation(r, to, AFF_MEMBER, NULL, NULL);
		struct pl_xnode *m = pl_xnode_new("message", PL_NS_CLIENT);
		pl_xnode_set_attr(m, "from", r->jid);
		struct pl_xnode *out = pl_xnode_add_element(m, "x", NS_MUC_USER);
		struct pl_xnode *i = pl_xnode_add_element(out, "invite", NULL);
		pl_xnode_set_attr(i, "from", from);
		struct pl_xnode *reason = pl_xnode_find(invite, "reason", NULL);
		if (reason)
			pl_xnode_add_child(i, pl_xnode_copy(reason));
		if (*r->config.password)
			pl_xnode_add_text(pl_xnode_add_element(out, "password", NULL),
					  r->config.password, strlen(r->config.password));
		char *body = pl_asprintf("%s invites you to the room %s", bare, r->jid);
		pl_xnode_add_text(pl_xnode_add_element(m, "body", NULL), body, strlen(body));
		free(body);
		send_to(m, to);
		pl_xnode_unref(&m);
		pl_module_log(self, 3, "%s: %s invites %s", r->jid, bare, to);
		free(to);
	}
}

static void handle_message(struct room *r, const struct pl_jid *to, struct pl_xnode *stanza,
			   const char *from, const char *bare)
{
	const char *type = pl_xnode_attr(stanza, "type");
	if (type && strcmp(type, "error") == 0) {
		remove_ghost(r, stanza, from);
		return;
	}
	if (!r) {
		pl_route_error(stanza, PL_ERR_ITEM_NOT_FOUND, "no such room");
		return;
	}
	if (to->resource) {
		private_message(r, stanza, from, to->resource);
		return;
	}
	if (type && strcmp(type, "groupchat") == 0) {
		groupchat(r, stanza, from);
		return;
	}
	struct pl_xnode *x = pl_xnode_find(stanza, "x", NS_MUC_USER);
	if (x && (pl_xnode_find(x, "invite", NULL) || pl_xnode_find(x, "decline", NULL))) {
		invitations(r, stanza, x, from, bare);
		return;
	}
	pl_route_error(stanza, PL_ERR_BAD_REQUEST, "messages to a room are of type groupchat");
}

/* ---- administration (XEP-0045 8, 9, 10) --------------------------------------- */

static void reply_empty(const struct pl_xnode *iq)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
}

/* After an affiliation change, what happens to its holder in the room. */
static void apply_affiliation_to_occupants(struct room *r, const char *bare, const char *actor,
					   const char *reason)
{
	enum affiliation a = affiliation_of(r, bare);
	struct occupant *next;
	for (struct occupant *o = r->occupants; o; o = next) {
		next = o->next;
		if (strcmp(o->bare_jid, bare) != 0)
			continue;
		if (a == AFF_OUTCAST || (r->config.members_only && a < AFF_MEMBER)) {
			static const int banned[] = { STATUS_BANNED };
			static const int removed[] = { STATUS_AFFILIATION_REMOVED };
			struct presence_news news = { .codes = a == AFF_OUTCAST ? banned : removed,
						      .code_count = 1, .actor_nick = actor,
						      .reason = reason };
			remove_occupant(r, o, &news);
			continue;
		}
		enum role role = default_role(r, a);
		/* A voice given by a moderator survives becoming a member. */
		if (o->role > role && a < AFF_ADMIN && o->role != ROLE_MODERATOR)
			role = o->role;
		o->role = role;
		struct presence_news news = { .actor_nick = actor, .reason = reason };
		broadcast_presence(r, o, &news);
	}
}

static int admin_list(struct room *r, const struct pl_xnode *iq, const struct pl_xnode *item,
		      enum affiliation actor_affiliation, enum role actor_role)
{
	int affiliation = name_index(affiliation_names, pl_xnode_attr(item, "affiliation"));
	int role = name_index(role_names, pl_xnode_attr(item, "role"));
	if (affiliation < 0 && role < 0)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	if (affiliation >= 0 && actor_affiliation < AFF_ADMIN &&
	    !(affiliation == AFF_MEMBER && actor_affiliation == AFF_MEMBER && r->config.members_only))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	if (role >= 0 && actor_role < ROLE_MODERATOR)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_MUC_ADMIN);
	if (affiliation >= 0) {
		for (struct affiliation_entry *a = r->affiliations; a; a = a->next) {
			if ((int)a->affiliation != affiliation)
				continue;
			struct pl_xnode *i = pl_xnode_add_element(query, "item", NULL);
			pl_xnode_set_attr(i, "affiliation", affiliation_names[affiliation]);
			pl_xnode_set_attr(i, "jid", a->bare_jid);
			if (a->nick)
				pl_xnode_set_attr(i, "nick", a->nick);
			if (a->reason)
				pl_xnode_add_text(pl_xnode_add_element(i, "reason", NULL), a->reason,
						  strlen(a->reason));
		}
	} else {
		for (struct occupant *o = r->occupants; o; o = o->next) {
			if ((int)o->role != role)
				continue;
			struct pl_xnode *i = pl_xnode_add_element(query, "item", NULL);
			pl_xnode_set_attr(i, "role", role_names[role]);
			pl_xnode_set_attr(i, "nick", o->nick);
			pl_xnode_set_attr(i, "affiliation",
					  affiliation_names[affiliation_of(r, o->bare_jid)]);
			if (sees_real_jids(r, o) || actor_role == ROLE_MODERATOR)
				pl_xnode_set_attr(i, "jid", o->sessions->full_jid);
		}
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static size_t owner_count(const struct room *r)
{
	size_t n = 0;
	for (const struct affiliation_entry *a = r->affiliations; a; a = a->next)
		n += a->affiliation == AFF_OWNER;
	return n;
}

/* Checks one <item/> of an admin set; 0 or a PL_HOOK_ERROR. */
static int check_admin_item(struct room *r, const struct pl_xnode *item, const char *actor_bare,
			    enum affiliation actor_affiliation, enum role actor_role,
			    char **jid_out)
{
	const char *role_text = pl_xnode_attr(item, "role");
	const char *affiliation_text = pl_xnode_attr(item, "affiliation");
	if (affiliation_text) {
		int wanted = name_index(affiliation_names, affiliation_text);
		char *jid = pl_jid_normalize_bare(pl_xnode_attr(item, "jid") ? pl_xnode_attr(item, "jid")
									       : "");
		if (!jid && pl_xnode_attr(item, "nick")) {
			struct occupant *o = find_nick(r, pl_xnode_attr(item, "nick"));
			jid = o ? pl_strdup(o->bare_jid) : NULL;
		}
		if (wanted < 0 || !jid) {
			free(jid);
			return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
		}
		enum affiliation current = affiliation_of(r, jid);
		int error = 0;
		if (actor_affiliation < AFF_ADMIN)
			error = PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
		else if ((current >= AFF_ADMIN || wanted >= AFF_ADMIN) && actor_affiliation < AFF_OWNER)
			error = PL_HOOK_ERROR(PL_ERR_NOT_ALLOWED);
		else if (service_admin(jid) && wanted != AFF_OWNER)
			error = PL_HOOK_ERROR(PL_ERR_NOT_ALLOWED);
		else if (current == AFF_OWNER && wanted != AFF_OWNER && owner_count(r) <= 1)
			error = PL_HOOK_ERROR(PL_ERR_CONFLICT); /* the last owner stays */
		if (error) {
			free(jid);
			return error;
		}
		*jid_out = jid;
		return 0;
	}
	int wanted = name_index(role_names, role_text);
	const char *nick = pl_xnode_attr(item, "nick");
	if (wanted < 0 || !nick)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	struct occupant *o = find_nick(r, nick);
	if (!o)
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	enum affiliation target = affiliation_of(r, o->bare_jid);
	if (actor_role < ROLE_MODERATOR)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	if ((wanted == ROLE_MODERATOR || o->role == ROLE_MODERATOR) && actor_affiliation < AFF_ADMIN)
		return PL_HOOK_ERROR(PL_ERR_NOT_ALLOWED);
	/* Nobody lowers the role of an admin or owner (XEP-0045 8.2, 9.7). */
	if (wanted < ROLE_MODERATOR && target >= AFF_ADMIN)
		return PL_HOOK_ERROR(PL_ERR_NOT_ALLOWED);
	if (target > actor_affiliation && strcmp(o->bare_jid, actor_bare) != 0)
		return PL_HOOK_ERROR(PL_ERR_NOT_ALLOWED);
	*jid_out = NULL;
	return 0;
}

static int admin_set(struct room *r, const struct pl_xnode *iq, const struct pl_xnode *query,
		     const char *actor_bare, struct occupant *actor)
{
	enum affiliation actor_affiliation = affiliation_of(r, actor_bare);
	enum role actor_role = actor ? actor->role : ROLE_NONE;
	size_t count = 0;
	/* All or nothing: every item is checked before any is applied. */
	for (struct pl_xnode *item = pl_xnode_first_element(query); item;
	     item = pl_xnode_next_element(item)) {
		if (strcmp(item->name, "item") != 0)
			continue;
		char *jid = NULL;
		int error = check_admin_item(r, item, actor_bare, actor_affiliation, actor_role, &jid);
		free(jid);
		if (error)
			return error;
		count++;
	}
	if (!count)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	const char *actor_nick = actor ? actor->nick : NULL;
	for (struct pl_xnode *item = pl_xnode_first_element(query); item;
	     item = pl_xnode_next_element(item)) {
		if (strcmp(item->name, "item") != 0)
			continue;
		char *jid = NULL;
		if (check_admin_item(r, item, actor_bare, actor_affiliation, actor_role, &jid))
			continue; /* an earlier item of the same set changed the picture */
		struct pl_xnode *reason_node = pl_xnode_find(item, "reason", NULL);
		char *reason = reason_node ? pl_xnode_text(reason_node) : NULL;
		if (jid) {
			int wanted = name_index(affiliation_names, pl_xnode_attr(item, "affiliation"));
			set_affiliation(r, jid, (enum affiliation)wanted, pl_xnode_attr(item, "nick"),
					reason);
			pl_module_log(self, 2, "%s: %s makes %s %s", r->jid, actor_bare, jid,
				      affiliation_names[wanted]);
			apply_affiliation_to_occupants(r, jid, actor_nick, reason);
			free(jid);
		} else {
			int wanted = name_index(role_names, pl_xnode_attr(item, "role"));
			struct occupant *o = find_nick(r, pl_xnode_attr(item, "nick"));
			pl_module_log(self, 2, "%s: %s makes %s %s", r->jid, actor_bare, o->nick,
				      role_names[wanted]);
			if (wanted == ROLE_NONE) {
				static const int kicked[] = { STATUS_KICKED };
				struct presence_news news = { .codes = kicked, .code_count = 1,
							      .actor_nick = actor_nick,
							      .reason = reason };
				remove_occupant(r, o, &news);
			} else {
				o->role = (enum role)wanted;
				struct presence_news news = { .actor_nick = actor_nick,
							      .reason = reason };
				broadcast_presence(r, o, &news);
			}
		}
		free(reason);
	}
	reply_empty(iq);
	room_maybe_end(r);
	return PL_HANDLED;
}

/* ---- configuration (XEP-0045 10.2) -------------------------------------------- */

static void add_field(struct pl_xnode *form, const char *var, const char *type, const char *label,
		      const char *value)
{
	struct pl_xnode *f = pl_xnode_add_element(form, "field", NULL);
	pl_xnode_set_attr(f, "var", var);
	if (type)
		pl_xnode_set_attr(f, "type", type);
	if (label)
		pl_xnode_set_attr(f, "label", label);
	if (value)
		pl_xnode_add_text(pl_xnode_add_element(f, "value", NULL), value, strlen(value));
}

static void add_options(struct pl_xnode *form, const char *const *names)
{
	struct pl_xnode *field = form->last_child;
	for (size_t i = 0; names[i]; i++) {
		struct pl_xnode *o = pl_xnode_add_element(field, "option", NULL);
		pl_xnode_set_attr(o, "label", names[i]);
		pl_xnode_add_text(pl_xnode_add_element(o, "value", NULL), names[i], strlen(names[i]));
	}
}

static void add_jids_field(struct pl_xnode *form, const struct room *r, const char *var,
			   const char *label, enum affiliation which)
{
	struct pl_xnode *f = pl_xnode_add_element(form, "field", NULL);
	pl_xnode_set_attr(f, "var", var);
	pl_xnode_set_attr(f, "type", "jid-multi");
	pl_xnode_set_attr(f, "label", label);
	for (const struct affiliation_entry *a = r->affiliations; a; a = a->next)
		if (a->affiliation == which)
			pl_xnode_add_text(pl_xnode_add_element(f, "value", NULL), a->bare_jid,
					  strlen(a->bare_jid));
}

static struct pl_xnode *config_form(const struct room *r)
{
	const struct room_config *c = &r->config;
	struct pl_xnode *form = pl_xnode_new("x", NS_DATA);
	pl_xnode_set_attr(form, "type", "form");
	char *title = pl_asprintf("Configuration of %s", r->jid);
	pl_xnode_add_text(pl_xnode_add_element(form, "title", NULL), title, strlen(title));
	free(title);
	char number[24];
	add_field(form, "FORM_TYPE", "hidden", NULL, NS_MUC_ROOMCONFIG);
	add_field(form, "muc#roomconfig_roomname", "text-single", "Name", c->name);
	add_field(form, "muc#roomconfig_roomdesc", "text-single", "Description", c->description);
	add_field(form, "muc#roomconfig_lang", "text-single", "Language", c->lang);
	add_field(form, "muc#roomconfig_persistentroom", "boolean", "Persistent",
		  c->persistent ? "1" : "0");
	add_field(form, "muc#roomconfig_publicroom", "boolean", "Listed in the directory",
		  c->public ? "1" : "0");
	add_field(form, "muc#roomconfig_membersonly", "boolean", "Members only",
		  c->members_only ? "1" : "0");
	add_field(form, "muc#roomconfig_moderatedroom", "boolean", "Moderated",
		  c->moderated ? "1" : "0");
	add_field(form, "muc#roomconfig_passwordprotectedroom", "boolean", "Password protected",
		  *c->password ? "1" : "0");
	add_field(form, "muc#roomconfig_roomsecret", "text-private", "Password", c->password);
	snprintf(number, sizeof(number), "%" PRId64, c->max_occupants);
	add_field(form, "muc#roomconfig_maxusers", "text-single", "Occupants at most", number);
	static const char *const whois[] = { "moderators", "anyone", NULL };
	add_field(form, "muc#roomconfig_whois", "list-single", "Who sees real JIDs",
		  c->non_anonymous ? "anyone" : "moderators");
	add_options(form, whois);
	snprintf(number, sizeof(number), "%" PRId64, c->history);
	add_field(form, "muc#maxhistoryfetch", "text-single", "History messages sent on join",
		  number);
	add_field(form, "muc#roomconfig_allowinvites", "boolean", "Occupants may invite",
		  c->allow_invites ? "1" : "0");
	add_field(form, "muc#roomconfig_allowpm", "list-single", "Private messages from",
		  pm_names[c->allow_pm]);
	add_options(form, pm_names);
	add_field(form, "muc#roomconfig_changesubject", "boolean", "Occupants may change the subject",
		  c->change_subject ? "1" : "0");
	static const char *const history_choices[] = { "all", "since-membership", NULL };
	add_field(form, "parley#memberhistory", "list-single",
		  "What a new member may read of the archive",
		  c->member_history_all ? "all" : "since-membership");
	add_options(form, history_choices);
	add_jids_field(form, r, "muc#roomconfig_roomadmins", "Admins", AFF_ADMIN);
	add_jids_field(form, r, "muc#roomconfig_roomowners", "Owners", AFF_OWNER);
	return form;
}

static bool parse_bool(const char *value, bool *out)
{
	if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0)
		*out = true;
	else if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0)
		*out = false;
	else
		return false;
	return true;
}

/* Applies a submitted form to a copy of the configuration; on success the
 * copy replaces the room's and the owner/admin lists are applied. */
static int apply_config(struct room *r, const struct pl_xnode *form, const char *actor)
{
	struct room_config c = r->config;
	c.name = pl_strdup(r->config.name);
	c.description = pl_strdup(r->config.description);
	c.password = pl_strdup(r->config.password);
	c.lang = pl_strdup(r->config.lang);
	bool password_protected = *c.password != 0;
	int error = 0;
	struct pl_string_list lists[2] = { { 0 } }; /* admins, owners */
	bool list_given[2] = { false, false };
	for (struct pl_xnode *f = pl_xnode_first_element(form); f && !error;
	     f = pl_xnode_next_element(f)) {
		const char *var = pl_xnode_attr(f, "var");
		if (strcmp(f->name, "field") != 0 || !var)
			continue;
		struct pl_xnode *value_node = pl_xnode_find(f, "value", NULL);
		char *value = value_node ? pl_xnode_text(value_node) : pl_strdup("");
		bool flag;
		char *end;
		if (strcmp(var, "FORM_TYPE") == 0) {
			if (strcmp(value, NS_MUC_ROOMCONFIG) != 0)
				error = PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
		} else if (strcmp(var, "muc#roomconfig_roomname") == 0) {
			set_string(&c.name, value);
		} else if (strcmp(var, "muc#roomconfig_roomdesc") == 0) {
			set_string(&c.description, value);
		} else if (strcmp(var, "muc#roomconfig_lang") == 0) {
			set_string(&c.lang, value);
		} else if (strcmp(var, "muc#roomconfig_roomsecret") == 0) {
			set_string(&c.password, value);
		} else if (strcmp(var, "muc#roomconfig_whois") == 0) {
			if (strcmp(value, "anyone") == 0)
				c.non_anonymous = true;
			else if (strcmp(value, "moderators") == 0)
				c.non_anonymous = false;
			else
				error = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
		} else if (strcmp(var, "muc#roomconfig_allowpm") == 0) {
			int pm = name_index(pm_names, value);
			if (pm < 0)
				error = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
			else
				c.allow_pm = pm;
		} else if (strcmp(var, "parley#memberhistory") == 0) {
			if (strcmp(value, "all") == 0)
				c.member_history_all = true;
			else if (strcmp(value, "since-membership") == 0)
				c.member_history_all = false;
			else
				error = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
		} else if (strcmp(var, "muc#roomconfig_maxusers") == 0) {
			long long n = strcmp(value, "none") == 0 ? conf.max_occupants
								: strtoll(value, &end, 10);
			if ((strcmp(value, "none") != 0 && *end) || n < 1 || n > conf.max_occupants)
				error = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
			else
				c.max_occupants = n;
		} else if (strcmp(var, "muc#maxhistoryfetch") == 0 ||
			   strcmp(var, "muc#roomconfig_historylength") == 0) {
			long long n = strtoll(value, &end, 10);
			if (*end || n < 0 || n > conf.max_history)
				error = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
			else
				c.history = n;
		} else if (strcmp(var, "muc#roomconfig_roomadmins") == 0 ||
			   strcmp(var, "muc#roomconfig_roomowners") == 0) {
			int which = strcmp(var, "muc#roomconfig_roomowners") == 0;
			list_given[which] = true;
			for (struct pl_xnode *v = pl_xnode_first_element(f); v && !error;
			     v = pl_xnode_next_element(v)) {
				char *text = pl_xnode_text(v);
				char *jid = *text ? pl_jid_normalize_bare(text) : NULL;
				free(text);
				if (!jid) {
					error = PL_HOOK_ERROR(PL_ERR_JID_MALFORMED);
					break;
				}
				lists[which].items = pl_realloc(lists[which].items,
								(lists[which].count + 1) * sizeof(char *));
				lists[which].items[lists[which].count++] = jid;
			}
		} else {
			static const struct {
				const char *var;
				size_t offset;
			} flags[] = {
				{ "muc#roomconfig_persistentroom", offsetof(struct room_config, persistent) },
				{ "muc#roomconfig_publicroom", offsetof(struct room_config, public) },
				{ "muc#roomconfig_membersonly", offsetof(struct room_config, members_only) },
				{ "muc#roomconfig_moderatedroom", offsetof(struct room_config, moderated) },
				{ "muc#roomconfig_allowinvites", offsetof(struct room_config, allow_invites) },
				{ "muc#roomconfig_changesubject",
				  offsetof(struct room_config, change_subject) },
			};
			bool known = false;
			for (size_t i = 0; i < PL_ARRAY_LEN(flags); i++) {
				if (strcmp(var, flags[i].var) != 0)
					continue;
				known = true;
				if (!parse_bool(value, &flag))
					error = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
				else
					*(bool *)((char *)&c + flags[i].offset) = flag;
			}
			if (!known && strcmp(var, "muc#roomconfig_passwordprotectedroom") == 0) {
				if (!parse_bool(value, &password_protected))
					error = PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
			}
			/* Other fields (a client's extras) are ignored, as XEP-0004 allows. */
		}
		free(value);
	}
	if (!error && !password_protected)
		set_string(&c.password, "");
	if (!error && list_given[1] && lists[1].count == 0)
		error = PL_HOOK_ERROR(PL_ERR_CONFLICT); /* a room keeps an owner */
	if (error) {
		config_free(&c);
		for (size_t w = 0; w < 2; w++) {
			for (size_t i = 0; i < lists[w].count; i++)
				free(lists[w].items[i]);
			free(lists[w].items);
		}
		return error;
	}
	bool was_persistent = r->config.persistent;
	bool was_non_anonymous = r->config.non_anonymous;
	bool was_members_only = r->config.members_only;
	config_free(&r->config);
	r->config = c;
	history_add(r, NULL, 0); /* resizes the ring */
	/* The lists replace the admins and owners they name. */
	for (int which = 0; which < 2; which++) {
		if (!list_given[which])
			continue;
		enum affiliation level = which ? AFF_OWNER : AFF_ADMIN;
		struct affiliation_entry *next;
		for (struct affiliation_entry *a = r->affiliations; a; a = next) {
			next = a->next;
			bool kept = false;
			for (size_t i = 0; i < lists[which].count; i++)
				kept |= strcmp(lists[which].items[i], a->bare_jid) == 0;
			if (a->affiliation == level && !kept) {
				char *bare = pl_strdup(a->bare_jid);
				set_affiliation(r, bare, AFF_NONE, NULL, NULL);
				apply_affiliation_to_occupants(r, bare, NULL, NULL);
				free(bare);
			}
		}
		for (size_t i = 0; i < lists[which].count; i++) {
			if (affiliation_of(r, lists[which].items[i]) != level) {
				set_affiliation(r, lists[which].items[i], level, NULL, NULL);
				apply_affiliation_to_occupants(r, lists[which].items[i], NULL, NULL);
			}
			free(lists[which].items[i]);
		}
		free(lists[which].items);
	}
	if (r->config.persistent && !was_persistent)
		save_room_fully(r);
	else if (r->config.persistent)
		save_room(r);
	else if (was_persistent)
		forget_room_on_disk(r);
	if (r->config.members_only && !was_members_only) {
		/* XEP-0045 9.3: non-members leave with 322. */
		struct occupant *next;
		for (struct occupant *o = r->occupants; o; o = next) {
			next = o->next;
			if (affiliation_of(r, o->bare_jid) >= AFF_MEMBER)
				continue;
			static const int codes[] = { STATUS_MEMBERS_ONLY };
			struct presence_news news = { .codes = codes, .code_count = 1 };
			remove_occupant(r, o, &news);
		}
	}
	if (r->config.moderated) {
		for (struct occupant *o = r->occupants; o; o = o->next) {
			if (o->role == ROLE_PARTICIPANT &&
			    affiliation_of(r, o->bare_jid) < AFF_MEMBER) {
				o->role = ROLE_VISITOR;
				struct presence_news news = { 0 };
				broadcast_presence(r, o, &news);
			}
		}
	}
	int codes[2] = { STATUS_CONFIG_CHANGED, 0 };
	size_t count = 1;
	if (r->config.non_anonymous != was_non_anonymous)
		codes[count++] = r->config.non_anonymous ? STATUS_NOW_NON_ANONYMOUS
							 : STATUS_NOW_SEMI_ANONYMOUS;
	if (!r->locked)
		broadcast_status(r, codes, count);
	pl_module_log(self, 2, "%s configured by %s%s", r->jid, actor,
		      r->locked ? " (now open)" : "");
	return 0;
}

/* XEP-0045 10.9: everyone leaves with the venue, then the room and its
 * records are gone. */
static void destroy_room(struct room *r, const char *venue, const char *reason, const char *actor)
{
	pl_module_log(self, 2, "%s destroyed by %s", r->jid, actor);
	while (r->occupants) {
		struct presence_news news = { .destroy_venue = venue ? venue : "", .reason = reason };
		remove_occupant(r, r->occupants, &news);
	}
	if (r->config.persistent)
		forget_room_on_disk(r);
	pl_hooks_fire("archive/delete", r->jid);
	room_remove(r);
}

static int owner_iq(struct room *r, const struct pl_xnode *iq, const char *bare)
{
	if (affiliation_of(r, bare) < AFF_OWNER)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *query = pl_xnode_find(iq, "query", NS_MUC_OWNER);
	if (strcmp(pl_xnode_attr(iq, "type"), "get") == 0) {
		struct pl_xnode *reply = pl_iq_result(iq);
		struct pl_xnode *q = pl_xnode_add_element(reply, "query", NS_MUC_OWNER);
		pl_xnode_add_child(q, config_form(r));
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
		return PL_HANDLED;
	}
	struct pl_xnode *destroy = pl_xnode_find(query, "destroy", NULL);
	if (destroy) {
		struct pl_xnode *reason_node = pl_xnode_find(destroy, "reason", NULL);
		char *reason = reason_node ? pl_xnode_text(reason_node) : NULL;
		char *venue = pl_xnode_attr(destroy, "jid") ? pl_jid_normalize_bare(pl_xnode_attr(destroy, "jid")) : NULL;
		reply_empty(iq);
		destroy_room(r, venue, reason, bare);
		free(reason);
		free(venue);
		return PL_HANDLED;
	}
	struct pl_xnode *form = pl_xnode_find(query, "x", NS_DATA);
	const char *form_type = form ? pl_xnode_attr(form, "type") : NULL;
	if (!form_type)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	if (strcmp(form_type, "cancel") == 0) {
		reply_empty(iq);
		/* XEP-0045 10.1.3: cancelling a new room's form destroys it. */
		if (r->locked)
			destroy_room(r, NULL, NULL, bare);
		return PL_HANDLED;
	}
	if (strcmp(form_type, "submit") != 0)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	int error = apply_config(r, form, bare);
	if (error)
		return error;
	reply_empty(iq);
	if (r->locked) {
		/* The room opens: its owner gets what a join into an open room
		 * ends with (history is empty, the subject may be). */
		r->locked = false;
		struct pl_xnode *subject = subject_message(r);
		broadcast_message(r, subject);
		pl_xnode_unref(&subject);
	}
	room_maybe_end(r);
	return PL_HANDLED;
}

/* ---- discovery, archive, pings, relayed IQs -------------------------------------- */

static void add_feature(struct pl_xnode *query, const char *var)
{
	pl_xnode_set_attr(pl_xnode_add_element(query, "feature", NULL), "var", var);
}

static int service_info(const struct service *sv, const struct pl_xnode *iq)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_DISCO_INFO);
	struct pl_xnode *identity = pl_xnode_add_element(query, "identity", NULL);
	pl_xnode_set_attr(identity, "category", "conference");
	pl_xnode_set_attr(identity, "type", "text");
	pl_xnode_set_attr(identity, "name", "Chatrooms");
	add_feature(query, NS_DISCO_INFO);
	add_feature(query, NS_DISCO_ITEMS);
	add_feature(query, NS_MUC);
	add_feature(query, NS_OCCUPANT_ID);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	(void)sv;
	return PL_HANDLED;
}

/* The public rooms that are open (XEP-0045 6.3). */
static int service_items(const struct service *sv, const struct pl_xnode *iq)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_DISCO_ITEMS);
	for (size_t b = 0; b < ROOM_BUCKETS; b++) {
		for (struct room *r = rooms[b]; r; r = r->next) {
			if (r->service != sv || !r->config.public || r->locked)
				continue;
			struct pl_xnode *item = pl_xnode_add_element(query, "item", NULL);
			pl_xnode_set_attr(item, "jid", r->jid);
			pl_xnode_set_attr(item, "name", *r->config.name ? r->config.name : r->jid);
		}
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int room_info(const struct room *r, const struct pl_xnode *iq, const char *bare)
{
	struct pl_xnode *request = pl_xnode_find(iq, "query", NS_DISCO_INFO);
	const char *node = pl_xnode_attr(request, "node");
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_DISCO_INFO);
	if (node && strcmp(node, "x-roomuser-item") == 0) {
		/* XEP-0045 7.12: the asker's reserved nickname, if any. */
		pl_xnode_set_attr(query, "node", node);
		const struct affiliation_entry *a = find_affiliation(r, bare);
		if (a && a->nick) {
			struct pl_xnode *identity = pl_xnode_add_element(query, "identity", NULL);
			pl_xnode_set_attr(identity, "category", "conference");
			pl_xnode_set_attr(identity, "type", "text");
			pl_xnode_set_attr(identity, "name", a->nick);
		}
	} else if (node) {
		pl_xnode_unref(&reply);
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	} else {
		const struct room_config *c = &r->config;
		struct pl_xnode *identity = pl_xnode_add_element(query, "identity", NULL);
		pl_xnode_set_attr(identity, "category", "conference");
		pl_xnode_set_attr(identity, "type", "text");
		pl_xnode_set_attr(identity, "name", *c->name ? c->name : r->jid);
		add_feature(query, NS_DISCO_INFO);
		add_feature(query, NS_MUC);
		add_feature(query, NS_MUC_STABLE_ID);
		add_feature(query, NS_MUC_SELF_PING);
		add_feature(query, NS_MAM);
		add_feature(query, NS_SID);
		add_feature(query, NS_OCCUPANT_ID);
		add_feature(query, c->public ? "muc_public" : "muc_hidden");
		add_feature(query, c->persistent ? "muc_persistent" : "muc_temporary");
		add_feature(query, c->members_only ? "muc_membersonly" : "muc_open");
		add_feature(query, c->moderated ? "muc_moderated" : "muc_unmoderated");
		add_feature(query, c->non_anonymous ? "muc_nonanonymous" : "muc_semianonymous");
		add_feature(query, *c->password ? "muc_passwordprotected" : "muc_unsecured");
		struct pl_xnode *form = pl_xnode_add_element(query, "x", NS_DATA);
		pl_xnode_set_attr(form, "type", "result");
		add_field(form, "FORM_TYPE", "hidden", NULL, NS_MUC_ROOMINFO);
		add_field(form, "muc#roomconfig_roomname", NULL, "Name", c->name);
		add_field(form, "muc#roominfo_description", NULL, "Description", c->description);
		add_field(form, "muc#roominfo_lang", NULL, "Language", c->lang);
		char number[24];
		snprintf(number, sizeof(number), "%zu", r->occupant_count);
		add_field(form, "muc#roominfo_occupants", NULL, "Occupants", number);
		add_field(form, "muc#roominfo_subject", NULL, "Subject", r->subject ? r->subject : "");
		if (r->avatar_hash)
			add_field(form, "muc#roominfo_avatarhash", "text-multi", "Avatar hash",
				  r->avatar_hash);
		add_field(form, "muc#roomconfig_changesubject", "boolean", NULL,
			  c->change_subject ? "1" : "0");
		snprintf(number, sizeof(number), "%" PRId64, c->history);
		add_field(form, "muc#maxhistoryfetch", NULL, NULL, number);
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int archive_form(const struct pl_xnode *iq)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *query = pl_xnode_add_element(reply, "query", NS_MAM);
	struct pl_xnode *form = pl_xnode_add_element(query, "x", NS_DATA);
	pl_xnode_set_attr(form, "type", "form");
	add_field(form, "FORM_TYPE", "hidden", NULL, NS_MAM);
	add_field(form, "with", "jid-single", NULL, NULL);
	add_field(form, "start", "text-single", NULL, NULL);
	add_field(form, "end", "text-single", NULL, NULL);
	add_field(form, "before-id", "text-single", NULL, NULL);
	add_field(form, "after-id", "text-single", NULL, NULL);
	add_field(form, "ids", "list-multi", NULL, NULL);
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

/* XEP-0313 on the room JID: members-only rooms answer their members. */
static int archive_query(struct room *r, const struct pl_xnode *iq, const char *from,
			 const char *bare)
{
	enum affiliation a = affiliation_of(r, bare);
	if (a == AFF_OUTCAST || (r->config.members_only && a < AFF_MEMBER))
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	/* A local session directly; a remote occupant's results are routed. */
	struct pl_session *recipient = pl_router_find(from);
	int64_t not_before = 0;
	if (r->config.members_only && !r->config.member_history_all && a == AFF_MEMBER) {
		const struct affiliation_entry *entry = find_affiliation(r, bare);
		not_before = entry ? entry->since_ms : 0;
	}
	struct pl_archive_query q = { iq, r->jid, recipient, from, not_before };
	int result = pl_hooks_fire("archive/query", &q);
	return result == PL_CONTINUE ? PL_HOOK_ERROR(PL_ERR_SERVICE_UNAVAILABLE) : result;
}

/* Keeps a copy of `vcard` and the hash of its photo. */
static void set_room_vcard(struct room *r, const struct pl_xnode *vcard)
{
	pl_xnode_unref(&r->vcard);
	free(r->avatar_hash);
	r->avatar_hash = NULL;
	r->vcard = vcard && pl_xnode_first_element(vcard) ? pl_xnode_copy(vcard) : NULL;
	struct pl_xnode *photo = r->vcard ? pl_xnode_find(r->vcard, "PHOTO", NS_VCARD) : NULL;
	struct pl_xnode *binval = photo ? pl_xnode_find(photo, "BINVAL", NS_VCARD) : NULL;
	char *text = binval ? pl_xnode_text(binval) : NULL;
	uint8_t *bytes = NULL;
	size_t len = 0;
	if (text) {
		/* Base64 in a vCard may be folded over lines. */
		char *w = text;
		for (char *c = text; *c; c++)
			if (*c != '\n' && *c != '\r' && *c != ' ' && *c != '\t')
				*w++ = *c;
		*w = 0;
	}
	if (text && pl_base64_decode(text, strlen(text), &bytes, &len) == 0 && len) {
		uint8_t digest[64];
		pl_scram_hash(PL_SCRAM_SHA1, bytes, len, digest);
		r->avatar_hash = pl_calloc(41, 1);
		for (size_t i = 0; i < 20; i++)
			snprintf(r->avatar_hash + i * 2, 3, "%02x", digest[i]);
	}
	free(bytes);
	free(text);
}

#define MAX_ROOM_VCARD (256 * 1024)

static int room_vcard(struct room *r, const struct pl_xnode *iq, const char *bare, bool get)
{
	if (get) {
		struct pl_xnode *reply = pl_iq_result(iq);
		if (r->vcard)
			pl_xnode_add_child(reply, pl_xnode_copy(r->vcard));
		else
			pl_xnode_add_element(reply, "vCard", NS_VCARD);
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
		return PL_HANDLED;
	}
	if (affiliation_of(r, bare) < AFF_OWNER)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *vcard = pl_xnode_find(iq, "vCard", NS_VCARD);
	if (!vcard)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	struct pl_buf size = { 0 };
	pl_xnode_serialize(vcard, NULL, &size);
	bool too_big = size.len > MAX_ROOM_VCARD;
	pl_buf_free(&size);
	if (too_big)
		return PL_HOOK_ERROR(PL_ERR_NOT_ACCEPTABLE);
	set_room_vcard(r, vcard);
	save_room(r);
	reply_empty(iq);
	/* XEP-0486: occupants refetch the avatar on a configuration change. */
	static const int codes[] = { STATUS_CONFIG_CHANGED };
	broadcast_status(r, codes, 1);
	pl_module_log(self, 3, "%s: vCard set by %s", r->jid, bare);
	return PL_HANDLED;
}

static int room_iq(struct room *r, const struct pl_xnode *iq, const char *from, const char *bare)
{
	const char *type = pl_xnode_attr(iq, "type");
	struct pl_xnode *payload = pl_xnode_first_element(iq);
	const char *ns = payload && payload->ns ? payload->ns : "";
	bool get = strcmp(type, "get") == 0;
	if (r->locked && affiliation_of(r, bare) < AFF_OWNER)
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	if (strcmp(ns, NS_DISCO_INFO) == 0 && get)
		return room_info(r, iq, bare);
	if (strcmp(ns, NS_DISCO_ITEMS) == 0 && get) {
		struct pl_xnode *reply = pl_iq_result(iq);
		pl_xnode_add_element(reply, "query", NS_DISCO_ITEMS);
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
		return PL_HANDLED;
	}
	if (strcmp(ns, NS_MUC_OWNER) == 0)
		return owner_iq(r, iq, bare);
	if (strcmp(ns, NS_MUC_ADMIN) == 0) {
		struct session_ref *s = find_session(r, from);
		struct occupant *actor = s ? s->occupant : find_occupant_of(r, bare);
		if (get) {
			struct pl_xnode *item = pl_xnode_find(payload, "item", NULL);
			if (!item)
				return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
			return admin_list(r, iq, item, affiliation_of(r, bare),
					  actor ? actor->role : ROLE_NONE);
		}
		return admin_set(r, iq, payload, bare, actor);
	}
	if (strcmp(ns, NS_MAM) == 0)
		return get ? archive_form(iq) : archive_query(r, iq, from, bare);
	if (strcmp(ns, NS_PING) == 0 && get) {
		reply_empty(iq);
		return PL_HANDLED;
	}
	if (strcmp(ns, NS_VCARD) == 0)
		return room_vcard(r, iq, bare, get);
	return PL_HOOK_ERROR(PL_ERR_SERVICE_UNAVAILABLE);
}

static void expire_relayed(struct room *r)
{
	int64_t now = pl_unix_ms();
	for (struct relayed_iq **link = &r->relayed; *link;) {
		struct relayed_iq *q = *link;
		if (q->expires_ms < now) {
			*link = q->next;
			relayed_free(q);
			r->relayed_count--;
		} else {
			link = &q->next;
		}
	}
}

/* An IQ to an occupant's nick. XEP-0410: a ping to one's own nick is the
 * room's to answer (and proves one is still in); others go to the
 * occupant (vCards to its account, XEP-0045 7.x), with an id of the room's
 * so that the answer comes back here. */
static void occupant_iq(struct room *r, struct pl_xnode *iq, const char *from, const char *nick)
{
	const char *type = pl_xnode_attr(iq, "type");
	bool request = type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0);
	if (!request) {
		/* An answer to a relayed request. */
		const char *id = pl_xnode_attr(iq, "id");
		for (struct relayed_iq **link = &r->relayed; id && *link; link = &(*link)->next) {
			struct relayed_iq *q = *link;
			if (strcmp(q->id, id) != 0 || strcmp(q->target, from) != 0)
				continue;
			struct pl_xnode *answer = pl_xnode_copy(iq);
			pl_xnode_set_attr(answer, "id", q->original_id);
			char *responder = room_nick_jid(r, q->asker_nick);
			pl_xnode_set_attr(answer, "from", responder);
			free(responder);
			send_to(answer, q->asker);
			pl_xnode_unref(&answer);
			*link = q->next;
			relayed_free(q);
			r->relayed_count--;
			return;
		}
		return;
	}
	struct session_ref *s = find_session(r, from);
	if (!s) {
		pl_route_error(iq, PL_ERR_NOT_ACCEPTABLE, "only occupants reach other occupants");
		return;
	}
	struct pl_xnode *payload = pl_xnode_first_element(iq);
	if (strcmp(s->occupant->nick, nick) == 0 && payload && payload->ns &&
	    strcmp(payload->ns, NS_PING) == 0) {
		reply_empty(iq);
		return;
	}
	struct occupant *target = find_nick(r, nick);
	if (!target) {
		pl_route_error(iq, PL_ERR_ITEM_NOT_FOUND, "nobody has that nickname here");
		return;
	}
	expire_relayed(r);
	if (r->relayed_count >= MAX_RELAYED_IQS) {
		pl_route_error(iq, PL_ERR_RESOURCE_CONSTRAINT, "too many requests in flight");
		return;
	}
	bool vcard = payload && payload->ns && strcmp(payload->ns, NS_VCARD) == 0;
	struct relayed_iq *q = pl_calloc(1, sizeof(*q));
	q->id = pl_asprintf("muc%" PRIu64, ++r->relay_counter);
	q->asker = pl_strdup(from);
	/* The answer comes from the nick that was asked. */
	q->asker_nick = pl_strdup(target->nick);
	q->original_id = pl_strdup(pl_xnode_attr(iq, "id") ? pl_xnode_attr(iq, "id") : "");
	q->target = pl_strdup(vcard ? target->bare_jid : target->sessions->full_jid);
	q->expires_ms = pl_unix_ms() + RELAYED_IQ_TTL_MS;
	q->next = r->relayed;
	r->relayed = q;
	r->relayed_count++;
	struct pl_xnode *relay = pl_xnode_copy(iq);
	pl_xnode_set_attr(relay, "id", q->id);
	char *asker_jid = room_nick_jid(r, s->occupant->nick);
	pl_xnode_set_attr(relay, "from", asker_jid);
	free(asker_jid);
	send_to(relay, q->target);
	pl_xnode_unref(&relay);
}

static void service_iq(struct service *sv, struct pl_xnode *iq)
{
	const char *type = pl_xnode_attr(iq, "type");
	if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
		return;
	struct pl_xnode *payload = pl_xnode_first_element(iq);
	const char *ns = payload && payload->ns ? payload->ns : "";
	bool get = strcmp(type, "get") == 0;
	int result = PL_HOOK_ERROR(PL_ERR_SERVICE_UNAVAILABLE);
	if (get && strcmp(ns, NS_DISCO_INFO) == 0) {
		result = pl_xnode_attr(payload, "node") ? PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND)
							: service_info(sv, iq);
	} else if (get && strcmp(ns, NS_DISCO_ITEMS) == 0) {
		result = service_items(sv, iq);
	} else if (get && strcmp(ns, NS_PING) == 0) {
		reply_empty(iq);
		result = PL_HANDLED;
	}
	if (PL_HOOK_IS_ERROR(result))
		pl_route_error(iq, PL_HOOK_ERROR_CONDITION(result), NULL);
}

/* The router's entry: every stanza for the service's domain. */
static void route_to_service(void *context, struct pl_xnode *stanza, struct pl_session *origin,
			     const struct pl_jid *to)
{
	struct service *sv = context;
	const char *from = pl_xnode_attr(stanza, "from");
	char *bare = from ? pl_jid_normalize_bare(from) : NULL;
	(void)origin;
	if (!bare) {
		free(bare);
		return; /* nobody to answer */
	}
	const char *at = strchr(bare, '@');
	const char *from_domain = at ? at + 1 : bare;
	for (struct service *other = services; other; other = other->next) {
		if (strcmp(other->domain, from_domain) == 0) {
			/* A room talking to a room (or answering one with an
			 * error) could echo forever: rooms are never occupants. */
			pl_module_log(self, 3, "dropped a %s from %s to %s", stanza->name, from,
				      to->full);
			free(bare);
			return;
		}
	}
	bool is_iq = strcmp(stanza->name, "iq") == 0;
	bool is_message = strcmp(stanza->name, "message") == 0;
	if (!to->local) {
		if (is_iq && !to->resource)
			service_iq(sv, stanza);
		else if (is_message && !pl_xnode_attr(stanza, "type"))
			pl_route_error(stanza, PL_ERR_SERVICE_UNAVAILABLE, NULL);
		free(bare);
		return;
	}
	struct room *r = find_room(to->bare);
	if (strcmp(stanza->name, "presence") == 0) {
		handle_presence(sv, to, stanza, from, bare);
	} else if (is_message) {
		handle_message(r, to, stanza, from, bare);
	} else if (is_iq) {
		const char *type = pl_xnode_attr(stanza, "type");
		bool request = type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0);
		if (!r) {
			if (request)
				pl_route_error(stanza, PL_ERR_ITEM_NOT_FOUND, "no such room");
		} else if (to->resource) {
			occupant_iq(r, stanza, from, to->resource);
		} else if (request) {
			struct pl_xnode *payload = pl_xnode_first_element(stanza);
			int result = payload && !pl_xnode_next_element(payload)
					     ? room_iq(r, stanza, from, bare)
					     : PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
			if (PL_HOOK_IS_ERROR(result))
				pl_route_error(stanza, PL_HOOK_ERROR_CONDITION(result), NULL);
		}
	}
	free(bare);
}

/* ---- hooks, load, unload -------------------------------------------------------- */

/* A session ended without telling its rooms (no unavailable presence was
 * sent, e.g. it never sent initial presence): it leaves them now. */
static int on_session_unbound(struct pl_event *event, void *userdata)
{
	struct pl_session *session = event->data;
	struct session_ref *s;
	for (;;) {
		for (s = session_index[pl_hash_string(session->full_jid) % SESSION_BUCKETS]; s;
		     s = s->next_of_jid)
			if (strcmp(s->full_jid, session->full_jid) == 0)
				break;
		if (!s)
			break;
		struct room *r = s->occupant->room;
		struct presence_news news = { 0 };
		remove_session(r, s, &news);
		room_maybe_end(r);
	}
	return PL_CONTINUE;
}

static int on_disco_items(struct pl_event *event, void *userdata)
{
	struct pl_disco_items *items = event->data;
	for (struct service *sv = services; sv; sv = sv->next) {
		if (!items->host || strcmp(sv->host, items->host) != 0)
			continue;
		struct pl_xnode *item = pl_xnode_add_element(items->query, "item", NULL);
		pl_xnode_set_attr(item, "jid", sv->domain);
		pl_xnode_set_attr(item, "name", "Chatrooms");
	}
	return PL_CONTINUE;
}

static struct service *service_of_room(const char *room_jid)
{
	const char *at = strchr(room_jid, '@');
	for (struct service *sv = services; at && sv; sv = sv->next)
		if (strcmp(sv->domain, at + 1) == 0)
			return sv;
	return NULL;
}

static bool flag_attr(const struct pl_xnode *n, const char *name)
{
	const char *v = pl_xnode_attr(n, name);
	return v && strcmp(v, "1") == 0;
}

static void set_room_vcard(struct room *r, const struct pl_xnode *vcard);

static int restore_room(void *arg, const void *key, size_t key_len, const void *value,
			size_t value_len)
{
	size_t *count = arg;
	char *jid = pl_strndup(key, key_len);
	struct service *sv = service_of_room(jid);
	struct pl_xnode *n = pl_xml_parse_element(value, value_len, NS_RECORD);
	if (!sv || !n || find_room(jid)) {
		/* A room of a host no longer configured stays on disk, unused. */
		pl_module_log(self, 2, "room %s is not served by this configuration", jid);
		free(jid);
		pl_xnode_unref(&n);
		return 0;
	}
	struct room *r = room_new(sv, jid);
	struct room_config *c = &r->config;
	set_string(&c->name, pl_xnode_attr(n, "name"));
	set_string(&c->description, pl_xnode_attr(n, "description"));
	set_string(&c->password, pl_xnode_attr(n, "password"));
	set_string(&c->lang, pl_xnode_attr(n, "lang"));
	c->persistent = true;
	c->public = flag_attr(n, "public");
	c->members_only = flag_attr(n, "members-only");
	c->moderated = flag_attr(n, "moderated");
	c->non_anonymous = flag_attr(n, "non-anonymous");
	c->allow_invites = flag_attr(n, "allow-invites");
	c->change_subject = flag_attr(n, "change-subject");
	const char *history = pl_xnode_attr(n, "member-history");
	c->member_history_all = !history || strcmp(history, "all") == 0;
	int pm = name_index(pm_names, pl_xnode_attr(n, "allow-pm"));
	c->allow_pm = pm < 0 ? PM_ANYONE : pm;
	const char *number = pl_xnode_attr(n, "max-occupants");
	if (number)
		c->max_occupants = strtoll(number, NULL, 10);
	if (c->max_occupants < 1 || c->max_occupants > conf.max_occupants)
		c->max_occupants = conf.max_occupants;
	number = pl_xnode_attr(n, "history");
	if (number)
		c->history = strtoll(number, NULL, 10);
	if (c->history < 0 || c->history > conf.max_history)
		c->history = conf.max_history;
	struct pl_xnode *subject = pl_xnode_find(n, "subject", NULL);
	if (subject) {
		r->subject = pl_xnode_text(subject);
		if (pl_xnode_attr(subject, "nick"))
			r->subject_nick = pl_strdup(pl_xnode_attr(subject, "nick"));
		number = pl_xnode_attr(subject, "at");
		r->subject_at_ms = number ? strtoll(number, NULL, 10) : 0;
	}
	struct pl_xnode *vcard = pl_xnode_find(n, "vCard", NS_VCARD);
	if (vcard)
		set_room_vcard(r, vcard);
	pl_xnode_unref(&n);
	free(jid);
	(*count)++;
	return 0;
}

static int restore_affiliation(void *arg, const void *key, size_t key_len, const void *value,
			       size_t value_len)
{
	const char *room_jid, *bare;
	size_t room_len, bare_len;
	size_t used = pl_store_key_read_str(key, key_len, &room_jid, &room_len);
	if (!used || !pl_store_key_read_str((const uint8_t *)key + used, key_len - used, &bare,
					    &bare_len))
		return 0;
	struct room *r = find_room(room_jid);
	struct pl_xnode *n = pl_xml_parse_element(value, value_len, NS_RECORD);
	int affiliation = n ? name_index(affiliation_names, pl_xnode_attr(n, "affiliation")) : -1;
	if (r && affiliation >= 0) {
		struct affiliation_entry *a = pl_calloc(1, sizeof(*a));
		a->bare_jid = pl_strndup(bare, bare_len);
		a->affiliation = (enum affiliation)affiliation;
		if (pl_xnode_attr(n, "nick"))
			a->nick = pl_strdup(pl_xnode_attr(n, "nick"));
		const char *since = pl_xnode_attr(n, "since");
		a->since_ms = since ? strtoll(since, NULL, 10) : 0;
		char *reason = pl_xnode_text(n);
		if (*reason)
			a->reason = reason;
		else
			free(reason);
		a->next = r->affiliations;
		r->affiliations = a;
	}
	pl_xnode_unref(&n);
	(void)arg;
	return 0;
}


static void muc_unload(struct pl_module *m);

static int load_services(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct muc_conf *)conf_ptr;
	self = m;
	if (!conf.subdomain || !*conf.subdomain || strchr(conf.subdomain, '@') ||
	    strchr(conf.subdomain, '/'))
		return pl_error(error, -EINVAL, "subdomain must be a DNS label such as \"conference\"");
	memset(&admins, 0, sizeof(admins));
	for (size_t i = 0; i < conf.admins.count; i++) {
		char *bare = pl_jid_normalize_bare(conf.admins.items[i]);
		if (!bare || !strchr(bare, '@')) {
			free(bare);
			return pl_error(error, -EINVAL, "admin \"%s\" is not an account's JID",
					conf.admins.items[i]);
		}
		admins.items = pl_realloc(admins.items, (admins.count + 1) * sizeof(char *));
		admins.items[admins.count++] = bare;
	}
	rooms_space = pl_store_open(m, "rooms");
	affiliations_space = pl_store_open(m, "affiliations");
	meta_space = pl_store_open(m, "meta");
	if (!rooms_space || !affiliations_space || !meta_space)
		return pl_error(error, -EIO, "cannot open the chat service's store spaces");
	memset(rooms, 0, sizeof(rooms));
	memset(session_index, 0, sizeof(session_index));
	memset(user_rooms, 0, sizeof(user_rooms));
	pl_store_secret(meta_space, "occupant-id-secret", occupant_secret, sizeof(occupant_secret));
	for (size_t i = 0; i < pl_server.host_count; i++) {
		char *raw = pl_asprintf("%s.%s", conf.subdomain, pl_server.hosts[i].name);
		char *domain = pl_jid_prep_domain(raw);
		free(raw);
		if (!domain)
			return pl_error(error, -EINVAL, "subdomain \"%s\" makes no valid domain",
					conf.subdomain);
		struct service *sv = pl_calloc(1, sizeof(*sv));
		sv->domain = domain;
		sv->host = pl_strdup(pl_server.hosts[i].name);
		sv->next = services;
		services = sv;
		if (pl_router_add_domain(domain, route_to_service, sv) != 0)
			return pl_error(error, -EEXIST, "the domain %s is already served", domain);
		sv->registered = true;
		pl_module_log(m, 2, "chat service %s for %s", domain, sv->host);
	}
	size_t restored = 0;
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (read) {
		pl_store_scan(read, rooms_space, NULL, 0, NULL, 0, restore_room, &restored);
		pl_store_scan(read, affiliations_space, NULL, 0, NULL, 0, restore_affiliation, NULL);
		pl_store_read_end(read);
	}
	if (restored)
		pl_module_log(m, 2, "%zu persistent rooms restored", restored);
	rooms_created = pl_counter("muc-rooms-created");
	messages_routed = pl_counter("muc-messages");
	pl_hook(m, "session/unbound", on_session_unbound, NULL, 0);
	pl_hook(m, "disco/items", on_disco_items, NULL, 0);
	return 0;
}

/* The core does not unload a module whose load failed: undo here. */
static int muc_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	int rc = load_services(m, conf_ptr, error);
	if (rc)
		muc_unload(m);
	return rc;
}

static void muc_unload(struct pl_module *m)
{
	for (size_t i = 0; i < admins.count; i++)
		free(admins.items[i]);
	free(admins.items);
	memset(&admins, 0, sizeof(admins));
	for (size_t b = 0; b < ROOM_BUCKETS; b++) {
		while (rooms[b]) {
			struct room *r = rooms[b];
			rooms[b] = r->next;
			room_free(r);
		}
	}
	for (size_t b = 0; b < USER_BUCKETS; b++) {
		while (user_rooms[b]) {
			struct user_rooms *u = user_rooms[b];
			user_rooms[b] = u->next;
			free(u->bare_jid);
			free(u);
		}
	}
	while (services) {
		struct service *sv = services;
		services = sv->next;
		if (sv->registered)
			pl_router_remove_domain(sv->domain);
		free(sv->domain);
		free(sv->host);
		free(sv);
	}
	(void)m;
}

static const char *const muc_requires[] = { "mam", NULL };

PL_MODULE(muc, .version = "0.1", .requires = muc_requires, .options = muc_options,
	  .conf_size = sizeof(struct muc_conf), .load = muc_load, .unload = muc_unload);
