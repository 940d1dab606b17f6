/* RFC 6121 presence subscriptions, table-driven and written from the RFC
 * alone (not from modules/mod_roster.c), so that it is an independent
 * check of the server.
 *
 * The core table: for each of the nine subscription states of RFC 6121
 * Appendix A.1 ("None", "None + Pending Out", ... "Both") a fresh pair of
 * local users u<N>a (the user, who acts) and u<N>b (the contact) is brought
 * into that state from both sides with the protocol itself, then the user
 * sends one of subscribe, unsubscribe, subscribed, unsubscribed. The user's
 * side follows the outbound tables (A.2.1-A.2.4: new state, route or not),
 * the contact's side the inbound tables (A.3.1-A.3.4: deliver or not, new
 * state). Both users are local, so the two items always mirror each other
 * (the user's "To" is the contact's "From", "Pending Out" is "Pending In").
 *
 * Each row checks: the roster push and a fresh roster get of both sides
 * (subscription, ask, approved), which subscription stanzas each client got
 * (with a bare 'from') and which it must not get (after a ping round trip
 * on both clients), and the presence that follows an approval or a
 * cancellation (available / unavailable from the other's full JID).
 *
 * Then scenario rows: a request to an offline contact (delivered at each
 * login until answered), pre-approval (3.4) and its cancellation, roster
 * remove of a 'both', 'to' and 'from' contact (2.5.2), presence probes at
 * login (4.2.2 / 4.3), roster basics (2.1-2.5) and versioning (2.6). */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- timing */

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Expected events are waited for with a bounded timeout; once a few of
 * them have timed out (a broken server) the timeout shrinks so that the
 * whole test still ends well within a minute. */
static int timeouts_seen;
static int wait_budget(void)
{
	return timeouts_seen < 6 ? 2000 : 300;
}

/* ------------------------------------------------------------- XML bits */

/* The value of attribute `name` in the start tag beginning at `tag` (which
 * points at '<'), accepting either quote style; copied into out. */
static bool tag_attr(const char *tag, const char *name, char *out, size_t out_len)
{
	if (!tag || *tag != '<')
		return false;
	const char *p = tag + 1;
	while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '>' && *p != '/')
		p++;
	size_t name_len = strlen(name);
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p || *p == '>' || *p == '/')
			return false;
		const char *attr = p;
		while (*p && *p != '=' && *p != ' ' && *p != '>')
			p++;
		size_t attr_len = (size_t)(p - attr);
		while (*p == ' ')
			p++;
		if (*p != '=')
			return false;
		p++;
		while (*p == ' ')
			p++;
		char quote = *p;
		if (quote != '\'' && quote != '"')
			return false;
		const char *value = ++p;
		while (*p && *p != quote)
			p++;
		if (!*p)
			return false;
		if (attr_len == name_len && strncmp(attr, name, name_len) == 0) {
			size_t len = (size_t)(p - value);
			if (len >= out_len)
				len = out_len - 1;
			memcpy(out, value, len);
			out[len] = '\0';
			return true;
		}
		p++;
	}
}

/* Attribute of the element's own (first) start tag. */
static bool el_attr(const char *el, const char *name, char *out, size_t out_len)
{
	return tag_attr(el, name, out, out_len);
}

static bool el_attr_is(const char *el, const char *name, const char *value)
{
	char got[512];
	if (!el_attr(el, name, got, sizeof(got)))
		return value == NULL;
	return value && strcmp(got, value) == 0;
}

/* The first start tag "<name" (followed by a space, '>' or '/') in el. */
static const char *find_tag(const char *el, const char *name)
{
	size_t len = strlen(name);
	for (const char *p = el ? strchr(el, '<') : NULL; p; p = strchr(p + 1, '<')) {
		if (strncmp(p + 1, name, len) == 0 &&
		    (p[1 + len] == ' ' || p[1 + len] == '>' || p[1 + len] == '/' ||
		     p[1 + len] == '\t' || p[1 + len] == '\n'))
			return p;
	}
	return NULL;
}

/* The <item/> of jid `jid` inside el, or NULL. */
static const char *find_item(const char *el, const char *jid)
{
	char got[512];
	for (const char *p = find_tag(el, "item"); p; p = find_tag(p + 1, "item"))
		if (tag_attr(p, "jid", got, sizeof(got)) && strcmp(got, jid) == 0)
			return p;
	return NULL;
}

/* A roster item as a client sees it. */
struct view {
	bool present;
	char sub[64];   /* "none" when absent from the attribute */
	bool ask;       /* ask='subscribe' */
	bool approved;  /* approved='true' */
};

static struct view item_view(const char *el, const char *jid)
{
	struct view v = { 0 };
	const char *item = find_item(el, jid);
	strcpy(v.sub, "none");
	if (!item)
		return v;
	v.present = true;
	char buf[64];
	if (tag_attr(item, "subscription", buf, sizeof(buf)))
		snprintf(v.sub, sizeof(v.sub), "%s", buf);
	v.ask = tag_attr(item, "ask", buf, sizeof(buf)) && strcmp(buf, "subscribe") == 0;
	v.approved = tag_attr(item, "approved", buf, sizeof(buf)) &&
		     (strcmp(buf, "true") == 0 || strcmp(buf, "1") == 0);
	return v;
}

static const char *describe(const struct view *v, char *buf, size_t len)
{
	if (!v->present)
		snprintf(buf, len, "(no item)");
	else
		if (snprintf(buf, len, "subscription=%s%s%s", v->sub, v->ask ? " ask=subscribe" : "",
			     v->approved ? " approved=true" : "") >= (int)len)
			buf[len - 1] = '\0'; /* a shortened description is fine */
	return buf;
}

/* ---------------------------------------------------------------- peers */

/* A logged-in client with its own mailbox, so that elements can be matched
 * on several attributes at once and counted after a sync. */
struct peer {
	struct raw_client *c;
	char bare[64];
	char full[128];
	char **q;
	size_t n, cap;
	unsigned ids;
};

static void mailbox_add(struct peer *p, char *el)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 32;
		p->q = realloc(p->q, p->cap * sizeof(*p->q));
	}
	p->q[p->n++] = el;
}

static void mailbox_clear(struct peer *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->q[i]);
	p->n = 0;
}

/* Moves what the raw client has queued into the mailbox; waits up to
 * wait_ms for the first element. */
static void pull(struct peer *p, int wait_ms)
{
	if (!p->c)
		return;
	char *el = raw_client_wait(p->c, NULL, wait_ms);
	while (el) {
		mailbox_add(p, el);
		el = raw_client_wait(p->c, NULL, 0);
	}
}

/* Ping round trip: everything the server sent before is in the mailbox. */
static bool settle(struct peer *p)
{
	if (!p->c)
		return false;
	bool answered = raw_client_sync(p->c);
	pull(p, 0);
	return answered;
}

enum match_kind { M_PRESENCE, M_PUSH, M_IQ };

struct match {
	enum match_kind kind;
	const char *type;   /* presence type (NULL: available) / iq type */
	const char *jid;    /* presence: sender (bare, any resource); push: item jid; iq: id */
	bool full_only;     /* presence: sender must be a full JID of jid */
};

static bool matches(const char *el, const struct match *m)
{
	char from[256];
	switch (m->kind) {
	case M_PRESENCE: {
		if (strncmp(el, "<presence", 9) != 0)
			return false;
		if (!el_attr_is(el, "type", m->type))
			return false;
		if (!el_attr(el, "from", from, sizeof(from)))
			return false;
		size_t len = strlen(m->jid);
		if (strncmp(from, m->jid, len) != 0)
			return false;
		if (m->full_only)
			return from[len] == '/';
		return from[len] == '\0' || from[len] == '/';
	}
	case M_PUSH:
		return strncmp(el, "<iq", 3) == 0 && el_attr_is(el, "type", "set") &&
		       strstr(el, "jabber:iq:roster") && find_item(el, m->jid);
	case M_IQ:
		return strncmp(el, "<iq", 3) == 0 && el_attr_is(el, "id", m->jid) &&
		       (!m->type || el_attr_is(el, "type", m->type));
	}
	return false;
}

static ssize_t mailbox_find(struct peer *p, const struct match *m)
{
	for (size_t i = 0; i < p->n; i++)
		if (matches(p->q[i], m))
			return (ssize_t)i;
	return -1;
}

/* Waits (bounded) for an element that matches, removes and returns it. */
static char *take(struct peer *p, struct match m)
{
	long long deadline = now_ms() + wait_budget();
	for (;;) {
		ssize_t i = mailbox_find(p, &m);
		if (i >= 0) {
			char *el = p->q[i];
			memmove(p->q + i, p->q + i + 1, (p->n - (size_t)i - 1) * sizeof(*p->q));
			p->n--;
			return el;
		}
		long long left = deadline - now_ms();
		if (left <= 0 || !p->c || raw_client_closed(p->c)) {
			timeouts_seen++;
			return NULL;
		}
		pull(p, (int)(left < 50 ? left : 50));
	}
}

/* Shows what a client has queued (after a failed check). */
static void dump(struct peer *p, const char *who)
{
	settle(p);
	diag("  %s (%s) has %zu queued element(s):", who, p->bare, p->n);
	for (size_t i = 0; i < p->n; i++)
		diag("    %.300s", p->q[i]);
}

static int count(struct peer *p, struct match m)
{
	int n = 0;
	for (size_t i = 0; i < p->n; i++)
		if (matches(p->q[i], &m))
			n++;
	return n;
}

static struct match presence_from(const char *type, const char *jid)
{
	return (struct match){ M_PRESENCE, type, jid, false };
}

static struct match presence_from_full(const char *type, const char *jid)
{
	return (struct match){ M_PRESENCE, type, jid, true };
}

static struct match push_for(const char *jid)
{
	return (struct match){ M_PUSH, NULL, jid, false };
}

static struct match iq_id(const char *id)
{
	return (struct match){ M_IQ, NULL, id, false };
}

static const char *password_of(const char *user, char *buf, size_t len)
{
	snprintf(buf, len, "%s-secret", user);
	return buf;
}

/* Logs in (direct TLS), asks for the roster (an interested resource) when
 * `roster`, sends initial presence `presence` (NULL: none). */
static bool peer_login(struct ph_server *s, struct peer *p, const char *user,
		       const char *resource, bool roster, const char *presence)
{
	/* A peer logged in again keeps nothing of its last session. */
	char **old_queue = p->q;
	size_t old_count = p->n;
	for (size_t i = 0; old_queue && i < old_count; i++)
		free(old_queue[i]);
	free(old_queue);
	memset(p, 0, sizeof(*p));
	char pw[80];
	snprintf(p->bare, sizeof(p->bare), "%s@localhost", user);
	p->c = raw_client_new_session(s->c2s_tls_port, user, password_of(user, pw, sizeof(pw)),
				      resource);
	if (!p->c)
		return false;
	snprintf(p->full, sizeof(p->full), "%s", raw_client_jid(p->c));
	if (roster) {
		raw_client_send(p->c, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
		char *answer = take(p, iq_id("r1"));
		bool fine = answer && el_attr_is(answer, "type", "result");
		free(answer);
		if (!fine)
			return false;
	}
	if (presence)
		raw_client_send(p->c, "%s", presence);
	return true;
}

static void peer_logout(struct peer *p)
{
	if (p->c) {
		raw_client_send(p->c, "<presence type='unavailable'/></stream:stream>");
		raw_client_free(p->c);
	}
	p->c = NULL;
	mailbox_clear(p);
}

static void peer_free(struct peer *p)
{
	if (p->c)
		raw_client_free(p->c);
	p->c = NULL;
	mailbox_clear(p);
	free(p->q);
	p->q = NULL;
	p->cap = 0;
}

/* Roster get; returns the result element (caller frees) or NULL. */
static char *roster_get(struct peer *p, const char *ver_attr)
{
	char id[32];
	snprintf(id, sizeof(id), "get%u", ++p->ids);
	raw_client_send(p->c, "<iq type='get' id='%s'><query xmlns='jabber:iq:roster'%s/></iq>", id,
			ver_attr ? ver_attr : "");
	return take(p, iq_id(id));
}

static struct view roster_view(struct peer *p, const char *jid)
{
	char *el = roster_get(p, NULL);
	struct view v = item_view(el ? el : "", jid);
	free(el);
	return v;
}

/* Roster set of one item (raw XML of the <item/>); returns the answer. */
static char *roster_set(struct peer *p, const char *item_xml)
{
	char id[32];
	snprintf(id, sizeof(id), "set%u", ++p->ids);
	raw_client_send(p->c, "<iq type='set' id='%s'><query xmlns='jabber:iq:roster'>%s</query></iq>",
			id, item_xml);
	return take(p, iq_id(id));
}

static void send_presence(struct peer *from, const char *type, const struct peer *to)
{
	raw_client_send(from->c, "<presence to='%s' type='%s'/>", to->bare, type);
}

/* ------------------------------------------------------------ the tables */

enum state { NONE, NONE_PO, NONE_PI, NONE_POI, TO, TO_PI, FROM, FROM_PO, BOTH, NSTATES };
static const char *const state_names[NSTATES] = {
	"None", "None + Pending Out", "None + Pending In", "None + Pending Out+In", "To",
	"To + Pending In", "From", "From + Pending Out", "Both",
};
/* The contact's state when the user's is s (both local, consistent). */
static const enum state mirror[NSTATES] = { NONE, NONE_PI, NONE_PO, NONE_POI, FROM, FROM_PO, TO,
					    TO_PI, BOTH };

enum action { SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBED, UNSUBSCRIBED, NACTIONS };
static const char *const action_names[NACTIONS] = { "subscribe", "unsubscribe", "subscribed",
						    "unsubscribed" };
static const char *const action_sections[NACTIONS][2] = {
	{ "A.2.1", "A.3.1" }, { "A.2.2", "A.3.2" }, { "A.2.3", "A.3.3" }, { "A.2.4", "A.3.4" }
};

struct transition {
	int pass;          /* outbound: route? inbound: deliver? (1, 0, -1: not checked) */
	enum state next;
};

/* RFC 6121 A.2: the user's server, on an outbound stanza. "subscribe" and
 * "unsubscribe" are always routed (3.1.2, 3.3.2); "subscribed" in None,
 * None + Pending Out and To is a pre-approval (3.4.2), not routed. */
static const struct transition outbound[NACTIONS][NSTATES] = {
	[SUBSCRIBE] = { { 1, NONE_PO }, { 1, NONE_PO }, { 1, NONE_POI }, { 1, NONE_POI }, { 1, TO },
			{ 1, TO_PI }, { 1, FROM_PO }, { 1, FROM_PO }, { 1, BOTH } },
	[UNSUBSCRIBE] = { { 1, NONE }, { 1, NONE }, { 1, NONE_PI }, { 1, NONE_PI }, { 1, NONE },
			  { 1, NONE_PI }, { 1, FROM }, { 1, FROM }, { 1, FROM } },
	[SUBSCRIBED] = { { 0, NONE }, { 0, NONE_PO }, { 1, FROM }, { 1, FROM_PO }, { 0, TO },
			 { 1, BOTH }, { 0, FROM }, { 0, FROM_PO }, { 0, BOTH } },
	[UNSUBSCRIBED] = { { 0, NONE }, { 0, NONE_PO }, { 1, NONE }, { 1, NONE_PO }, { 0, TO },
			   { 1, TO }, { 1, NONE }, { 1, NONE_PO }, { 1, TO } },
};

/* RFC 6121 A.3: the contact's server, on an inbound stanza. For an
 * "unsubscribe" to a contact with a pending-in request the RFC marks the
 * delivery with a footnote; it is not checked (-1). */
static const struct transition inbound[NACTIONS][NSTATES] = {
	[SUBSCRIBE] = { { 1, NONE_PI }, { 1, NONE_POI }, { 0, NONE_PI }, { 0, NONE_POI },
			{ 1, TO_PI }, { 0, TO_PI }, { 0, FROM }, { 0, FROM_PO }, { 0, BOTH } },
	[UNSUBSCRIBE] = { { 0, NONE }, { 0, NONE_PO }, { -1, NONE }, { -1, NONE_PO }, { 0, TO },
			  { -1, TO }, { 1, NONE }, { 1, NONE_PO }, { 1, TO } },
	[SUBSCRIBED] = { { 0, NONE }, { 1, TO }, { 0, NONE_PI }, { 1, TO_PI }, { 0, TO },
			 { 0, TO_PI }, { 0, FROM }, { 1, BOTH }, { 0, BOTH } },
	[UNSUBSCRIBED] = { { 0, NONE }, { 1, NONE }, { 0, NONE_PI }, { 1, NONE_PI }, { 1, NONE },
			   { 1, NONE_PI }, { 0, FROM }, { 1, FROM }, { 1, FROM } },
};

static const char *visible_sub(enum state s)
{
	switch (s) {
	case TO:
	case TO_PI:
		return "to";
	case FROM:
	case FROM_PO:
		return "from";
	case BOTH:
		return "both";
	default:
		return "none";
	}
}

static bool visible_ask(enum state s)
{
	return s == NONE_PO || s == NONE_POI || s == FROM_PO;
}

static bool has_to(enum state s)
{
	return s == TO || s == TO_PI || s == BOTH;
}

static bool has_from(enum state s)
{
	return s == FROM || s == FROM_PO || s == BOTH;
}

/* Does the view show state s (plus the approved flag)? A "None" without
 * ask and approval may also be no item at all. */
static bool view_is(const struct view *v, enum state s, bool approved)
{
	if (!v->present)
		return strcmp(visible_sub(s), "none") == 0 && !visible_ask(s) && !approved;
	return strcmp(v->sub, visible_sub(s)) == 0 && v->ask == visible_ask(s) &&
	       v->approved == approved;
}

static bool same_visible(enum state a, enum state b)
{
	return strcmp(visible_sub(a), visible_sub(b)) == 0 && visible_ask(a) == visible_ask(b);
}

static void check_view(struct peer *p, const char *jid, enum state s, bool approved,
		       const char *what)
{
	struct view v = roster_view(p, jid);
	char buf[96];
	if (!ok(view_is(&v, s, approved), "%s: roster get shows %s%s", what, state_names[s],
		approved ? " (approved)" : ""))
		diag("  got %s", describe(&v, buf, sizeof(buf)));
}

static void check_push(struct peer *p, const char *jid, enum state s, bool approved,
		       const char *what)
{
	char *el = take(p, push_for(jid));
	struct view v = item_view(el ? el : "", jid);
	char buf[96];
	if (!ok(el && view_is(&v, s, approved), "%s: roster push shows %s%s", what, state_names[s],
		approved ? " (approved)" : ""))
		diag("  got %s", el ? describe(&v, buf, sizeof(buf)) : "no push");
	free(el);
}

/* ---------------------------------------------------------------- setup */

/* Drives a pair into state s (the user a's view) from both sides. Steps:
 * subscribe / subscribed, each waited for at the receiving client. */
static bool step(struct peer *from, struct peer *to, const char *type)
{
	send_presence(from, type, to);
	char *el = take(to, presence_from(type, from->bare));
	free(el);
	return el != NULL;
}

static bool add_item(struct peer *p, const char *jid)
{
	char xml[128];
	snprintf(xml, sizeof(xml), "<item jid='%s'/>", jid);
	char *answer = roster_set(p, xml);
	bool fine = answer && el_attr_is(answer, "type", "result");
	free(answer);
	return fine;
}

static bool setup_state(struct peer *a, struct peer *b, enum state s)
{
	bool fine = true;
	switch (s) {
	case NONE:
		fine = add_item(a, b->bare) && add_item(b, a->bare);
		break;
	case NONE_PO:
		fine = step(a, b, "subscribe");
		break;
	case NONE_PI:
		fine = step(b, a, "subscribe");
		break;
	case NONE_POI:
		fine = step(a, b, "subscribe") && step(b, a, "subscribe");
		break;
	case TO:
		fine = step(a, b, "subscribe") && step(b, a, "subscribed");
		break;
	case TO_PI:
		fine = step(a, b, "subscribe") && step(b, a, "subscribed") && step(b, a, "subscribe");
		break;
	case FROM:
		fine = step(b, a, "subscribe") && step(a, b, "subscribed");
		break;
	case FROM_PO:
		fine = step(b, a, "subscribe") && step(a, b, "subscribed") && step(a, b, "subscribe");
		break;
	case BOTH:
		fine = step(a, b, "subscribe") && step(b, a, "subscribed") &&
		       step(b, a, "subscribe") && step(a, b, "subscribed");
		break;
	default:
		break;
	}
	settle(a);
	settle(b);
	settle(a);
	return fine;
}

static int row_number;

static bool pair_login(struct ph_server *s, struct peer *a, struct peer *b, char *name_a,
		       char *name_b, size_t len)
{
	row_number++;
	snprintf(name_a, len, "u%da", row_number);
	snprintf(name_b, len, "u%db", row_number);
	ph_add_user(s, name_a);
	ph_add_user(s, name_b);
	bool fine = peer_login(s, a, name_a, "ra", true, "<presence/>");
	fine = peer_login(s, b, name_b, "rb", true, "<presence/>") && fine;
	if (fine) {
		settle(a);
		settle(b);
	}
	return fine;
}

static const char *const sub_types[] = { "subscribe", "unsubscribe", "subscribed",
					 "unsubscribed" };

/* One row of the core table. */
static void table_row(struct ph_server *srv, enum state s, enum action act)
{
	struct peer a = { 0 }, b = { 0 };
	char na[32], nb[32], what[160];
	const struct transition out = outbound[act][s];
	const enum state bs = mirror[s];
	const struct transition in = out.pass ? inbound[act][bs]
					      : (struct transition){ 0, bs };
	const enum state a_next = out.next, b_next = in.next;
	const bool preapproval = act == SUBSCRIBED && out.pass == 0 &&
				 (s == NONE || s == NONE_PO || s == TO);

	bool logged = pair_login(srv, &a, &b, na, nb, sizeof(na));
	snprintf(what, sizeof(what), "row %d [%s %s / %s] user in '%s' sends %s", row_number,
		 action_sections[act][0], action_sections[act][1], state_names[bs], state_names[s],
		 action_names[act]);
	if (!ok(logged, "%s: both users log in", what))
		goto out;
	/* The starting state, as both sides see it. */
	bool reached = setup_state(&a, &b, s);
	struct view va = roster_view(&a, b.bare), vb = roster_view(&b, a.bare);
	char buf1[96], buf2[96];
	if (!ok(reached && view_is(&va, s, false) && view_is(&vb, bs, false),
		"%s: setup reaches user '%s' / contact '%s'", what, state_names[s],
		state_names[bs])) {
		diag("  user has %s, contact has %s", describe(&va, buf1, sizeof(buf1)),
		     describe(&vb, buf2, sizeof(buf2)));
		goto out;
	}
	mailbox_clear(&a);
	mailbox_clear(&b);

	send_presence(&a, action_names[act], &b);

	/* The user's side (A.2). */
	if (!same_visible(s, a_next) || preapproval)
		check_push(&a, b.bare, a_next, preapproval, "user's push");

	/* The contact's side (A.3). */
	if (in.pass == 1) {
		char *el = take(&b, presence_from(action_names[act], a.bare));
		ok(el != NULL, "%s: contact's client gets the %s", what, action_names[act]);
		ok(el && el_attr_is(el, "from", a.bare), "%s: stamped with the user's bare JID",
		   what);
		free(el);
	}
	if (!same_visible(bs, b_next))
		check_push(&b, a.bare, b_next, false, "contact's push");

	/* Presence that follows. */
	if (act == SUBSCRIBED && out.pass == 1) {
		/* 3.1.5: the contact's server sends current presence to the user
		 * from each of the contact's available resources (here the actor
		 * approved, so the other side gets the actor's presence). */
		char *el = take(&b, presence_from_full(NULL, a.bare));
		ok(el != NULL, "%s: then the other side gets the approver's available presence",
		   what);
		free(el);
	}
	if (act == UNSUBSCRIBE && has_from(bs)) {
		/* 3.3.3: the contact's server generates unavailable presence from
		 * each of the contact's available resources to the user. */
		char *el = take(&a, presence_from_full("unavailable", b.bare));
		if (!ok(el != NULL, "%s: the user gets unavailable presence from the contact", what))
			dump(&a, "user");
		free(el);
	}
	if (act == UNSUBSCRIBED && has_from(s)) {
		/* 3.2.2: unavailable presence from the user's resources to the
		 * contact whose subscription is cancelled. */
		char *el = take(&b, presence_from_full("unavailable", a.bare));
		ok(el != NULL, "%s: the contact gets unavailable presence from the user", what);
		free(el);
	}

	/* What must not have come. */
	settle(&a);
	settle(&b);
	settle(&a);
	settle(&b);
	for (size_t t = 0; t < 4; t++) {
		if (t == (size_t)act && in.pass == -1)
			continue;
		/* The delivered one was taken above: nothing of any subscription
		 * type may remain at the contact. */
		is_int(count(&b, presence_from(sub_types[t], a.bare)), 0,
		       "%s: contact's client gets no (further) %s", what, sub_types[t]);
		/* The user never gets a subscription stanza here: auto-replies
		 * ("subscribed" to a subscribe in From/Both) reach the user in
		 * To / To + Pending In / Both, where A.3.3 says not to deliver. */
		is_int(count(&a, presence_from(sub_types[t], b.bare)), 0,
		       "%s: user's client gets no %s", what, sub_types[t]);
	}
	if (has_to(s) && !has_to(a_next)) {
		/* 3.3 / 4.3: no longer subscribed, so no available presence. */
		is_int(count(&a, presence_from(NULL, b.bare)), 0,
		       "%s: the user gets no available presence from the contact", what);
	}

	/* The end state of both sides, from a fresh roster get. */
	snprintf(what, sizeof(what), "row %d [%s]", row_number, action_sections[act][0]);
	check_view(&a, b.bare, a_next, preapproval, "user's item");
	snprintf(what, sizeof(what), "row %d [%s]", row_number, action_sections[act][1]);
	check_view(&b, a.bare, b_next, false, "contact's item");

	/* Pending In is invisible in the roster: a new available resource of
	 * each side shows it, since an unanswered request is delivered again
	 * whenever the side creates an available resource (3.1.3). */
	struct peer *sides[2] = { &a, &b };
	const enum state next[2] = { a_next, b_next };
	for (int i = 0; i < 2; i++) {
		struct peer extra = { 0 }, *other = sides[1 - i];
		char user[32];
		snprintf(user, sizeof(user), "%.*s", (int)(strchr(sides[i]->bare, '@') - sides[i]->bare),
			 sides[i]->bare);
		bool pending_in = next[i] == NONE_PI || next[i] == NONE_POI || next[i] == TO_PI;
		if (peer_login(srv, &extra, user, "extra", true, "<presence/>")) {
			if (pending_in) {
				char *el = take(&extra, presence_from("subscribe", other->bare));
				ok(el != NULL, "%s: %s still has the request pending (a new resource gets it)",
				   what, i ? "contact" : "user");
				free(el);
			}
			settle(&extra);
			is_int(count(&extra, presence_from("subscribe", other->bare)), 0,
			       "%s: %s's new resource gets no %srequest", what, i ? "contact" : "user",
			       pending_in ? "further " : "");
		} else {
			ok(0, "%s: a new resource logs in", what);
		}
		peer_free(&extra);
	}
out:
	peer_free(&a);
	peer_free(&b);
}

/* ------------------------------------------------------- scenario rows */

/* 3.1.3: a request to a contact without available resources is delivered
 * when the contact next sends initial presence, and again at each login
 * until answered; then both see each other's presence. */
static void row_offline_contact(struct ph_server *srv)
{
	char na[32], nb[32];
	struct peer a = { 0 }, b = { 0 };
	row_number++;
	snprintf(na, sizeof(na), "u%da", row_number);
	snprintf(nb, sizeof(nb), "u%db", row_number);
	ph_add_user(srv, na);
	ph_add_user(srv, nb);
	memset(&b, 0, sizeof(b));
	if (!ok(peer_login(srv, &a, na, "ra", true, "<presence/>"),
		"offline row: the user logs in"))
		goto out;
	snprintf(b.bare, sizeof(b.bare), "%s@localhost", nb);
	send_presence(&a, "subscribe", &b);
	check_push(&a, b.bare, NONE_PO, false, "offline row: user's push (3.1.2)");

	/* Login without initial presence: not an available resource. */
	ok(peer_login(srv, &b, nb, "r1", true, NULL), "offline row: the contact logs in");
	settle(&a);
	settle(&b);
	is_int(count(&b, presence_from("subscribe", a.bare)), 0,
	       "offline row: no request before the contact's initial presence (3.1.3)");
	raw_client_send(b.c, "<presence/>");
	char *el = take(&b, presence_from("subscribe", a.bare));
	ok(el != NULL, "offline row: the request is delivered at initial presence (3.1.3)");
	ok(el && el_attr_is(el, "from", a.bare), "offline row: from the user's bare JID");
	free(el);
	settle(&b);
	is_int(count(&b, presence_from("subscribe", a.bare)), 0,
	       "offline row: delivered once (3.1.3: MUST deliver only one)");
	peer_logout(&b);

	ok(peer_login(srv, &b, nb, "r2", true, "<presence/>"),
	   "offline row: the contact logs in again");
	el = take(&b, presence_from("subscribe", a.bare));
	ok(el != NULL, "offline row: unanswered, the request is delivered again (3.1.3)");
	free(el);

	/* Approval: the user gets subscribed, push 'to', the contact's presence. */
	settle(&a);
	mailbox_clear(&a);
	send_presence(&b, "subscribed", &a);
	el = take(&a, presence_from("subscribed", b.bare));
	ok(el && el_attr_is(el, "from", b.bare),
	   "offline row: the user gets subscribed from the contact's bare JID (3.1.6)");
	free(el);
	check_push(&a, b.bare, TO, false, "offline row: user's push (3.1.6)");
	el = take(&a, presence_from_full(NULL, b.bare));
	ok(el && el_attr_is(el, "from", b.full),
	   "offline row: then the contact's available presence from %s (3.1.5)", b.full);
	free(el);
	check_push(&b, a.bare, FROM, false, "offline row: contact's push (3.1.5)");

	/* And the other way round, so both see each other. */
	ok(step(&b, &a, "subscribe"), "offline row: the contact subscribes back");
	ok(step(&a, &b, "subscribed"), "offline row: the user approves");
	el = take(&b, presence_from_full(NULL, a.bare));
	ok(el && el_attr_is(el, "from", a.full),
	   "offline row: the contact gets the user's available presence from %s", a.full);
	free(el);
	check_view(&a, b.bare, BOTH, false, "offline row: user's item");
	check_view(&b, a.bare, BOTH, false, "offline row: contact's item");

	/* Disconnects are seen as unavailable from the full JID (4.5.2). */
	char old_a[128];
	snprintf(old_a, sizeof(old_a), "%s", a.full);
	raw_client_free(a.c);
	a.c = NULL;
	mailbox_clear(&a);
	el = take(&b, presence_from_full("unavailable", a.bare));
	ok(el && el_attr_is(el, "from", old_a),
	   "offline row: the user's disconnection reaches the contact as unavailable");
	free(el);
	peer_free(&a);
	ok(peer_login(srv, &a, na, "ra2", true, "<presence/>"), "offline row: the user is back");
	el = take(&a, presence_from_full(NULL, b.bare));
	ok(el && el_attr_is(el, "from", b.full),
	   "offline row: at login the user gets the contact's presence (probe, 4.2.2)");
	free(el);
	el = take(&b, presence_from_full(NULL, a.bare));
	ok(el && el_attr_is(el, "from", a.full),
	   "offline row: and the contact gets the user's initial presence (4.2.2)");
	free(el);
	char old_b[128];
	snprintf(old_b, sizeof(old_b), "%s", b.full);
	raw_client_free(b.c);
	b.c = NULL;
	el = take(&a, presence_from_full("unavailable", b.bare));
	ok(el && el_attr_is(el, "from", old_b),
	   "offline row: the contact's disconnection reaches the user as unavailable");
	free(el);
out:
	peer_free(&a);
	peer_free(&b);
}

/* 3.4: pre-approval, then the request approved without asking. */
static void row_preapproval(struct ph_server *srv)
{
	struct peer a = { 0 }, b = { 0 };
	char na[32], nb[32];
	if (!ok(pair_login(srv, &a, &b, na, nb, sizeof(na)), "pre-approval row: log in"))
		goto out;
	/* The contact (b) pre-approves the user (a), no item yet. */
	send_presence(&b, "subscribed", &a);
	check_push(&b, a.bare, NONE, true,
		   "pre-approval row: contact's item created with approved='true' (3.4.2 step 4)");
	settle(&b);
	settle(&a);
	is_int(count(&a, presence_from("subscribed", b.bare)), 0,
	       "pre-approval row: the subscribed is not routed to the user (3.4.2)");
	check_view(&b, a.bare, NONE, true, "pre-approval row: contact's item");

	send_presence(&a, "subscribe", &b);
	char *el = take(&a, presence_from("subscribed", b.bare));
	ok(el && el_attr_is(el, "from", b.bare),
	   "pre-approval row: the user's subscribe is approved automatically (3.4.2/3.1.3)");
	free(el);
	el = take(&a, presence_from_full(NULL, b.bare));
	ok(el != NULL, "pre-approval row: and the user gets the contact's presence (3.1.5)");
	free(el);
	check_push(&b, a.bare, FROM, false, "pre-approval row: contact's push shows 'from'");
	settle(&a);
	settle(&b);
	is_int(count(&b, presence_from("subscribe", a.bare)), 0,
	       "pre-approval row: the contact's client is not asked (3.1.3 step 1)");
	check_view(&a, b.bare, TO, false, "pre-approval row: user's item");
	check_view(&b, a.bare, FROM, false, "pre-approval row: contact's item");
out:
	peer_free(&a);
	peer_free(&b);
}

/* 3.2.2 / 3.4: unsubscribed cancels a pre-approval, is not routed, and the
 * next request is asked again. */
static void row_preapproval_cancelled(struct ph_server *srv)
{
	struct peer a = { 0 }, b = { 0 };
	char na[32], nb[32];
	if (!ok(pair_login(srv, &a, &b, na, nb, sizeof(na)), "cancelled pre-approval row: log in"))
		goto out;
	send_presence(&b, "subscribed", &a);
	check_push(&b, a.bare, NONE, true, "cancelled pre-approval row: approved");
	send_presence(&b, "unsubscribed", &a);
	check_push(&b, a.bare, NONE, false,
		   "cancelled pre-approval row: unsubscribed removes the approval (3.2.2)");
	settle(&b);
	settle(&a);
	is_int(count(&a, presence_from("unsubscribed", b.bare)) +
		       count(&a, presence_from("subscribed", b.bare)),
	       0, "cancelled pre-approval row: neither stanza reaches the user (3.2.2 / 3.4.2)");
	send_presence(&a, "subscribe", &b);
	char *el = take(&b, presence_from("subscribe", a.bare));
	ok(el != NULL, "cancelled pre-approval row: the next request asks the contact");
	free(el);
	settle(&a);
	is_int(count(&a, presence_from("subscribed", b.bare)), 0,
	       "cancelled pre-approval row: and is not approved automatically");
	check_view(&a, b.bare, NONE_PO, false, "cancelled pre-approval row: user's item");
out:
	peer_free(&a);
	peer_free(&b);
}

/* 2.5.2: roster remove of a contact in state s. */
static void row_remove(struct ph_server *srv, enum state s)
{
	struct peer a = { 0 }, b = { 0 };
	char na[32], nb[32], what[96];
	bool logged = pair_login(srv, &a, &b, na, nb, sizeof(na));
	snprintf(what, sizeof(what), "row %d [2.5.2] remove of a '%s' contact", row_number,
		 visible_sub(s));
	if (!ok(logged, "%s: log in", what))
		goto out;
	if (!ok(setup_state(&a, &b, s), "%s: setup", what))
		goto out;
	mailbox_clear(&a);
	mailbox_clear(&b);
	char item[128];
	snprintf(item, sizeof(item), "<item jid='%s' subscription='remove'/>", b.bare);
	char *answer = roster_set(&a, item);
	ok(answer && el_attr_is(answer, "type", "result"), "%s: result", what);
	free(answer);
	char *el = take(&a, push_for(b.bare));
	const char *it = el ? find_item(el, b.bare) : NULL;
	if (!ok(it && strstr(it, "remove") && (tag_attr(it, "subscription", item, sizeof(item)) &&
						strcmp(item, "remove") == 0),
		"%s: push with subscription='remove' (2.5.2)", what))
		diag("the push taken: %s", el ? el : "(none)");
	free(el);
	bool to = has_to(s), from = has_from(s);
	if (to) {
		el = take(&b, presence_from("unsubscribe", a.bare));
		ok(el && el_attr_is(el, "from", a.bare), "%s: the contact gets unsubscribe", what);
		free(el);
	}
	if (from) {
		el = take(&b, presence_from("unsubscribed", a.bare));
		ok(el && el_attr_is(el, "from", a.bare), "%s: the contact gets unsubscribed", what);
		free(el);
		el = take(&b, presence_from_full("unavailable", a.bare));
		ok(el != NULL, "%s: and unavailable presence from the user (3.2.2)", what);
		free(el);
	}
	settle(&a);
	settle(&b);
	settle(&a);
	settle(&b);
	/* The contact may see an intermediate push ('both' -> 'to' -> 'none'
	 * when unsubscribe comes first): the last one counts. */
	char *last = NULL;
	for (ssize_t i; (i = mailbox_find(&b, &(struct match){ M_PUSH, NULL, a.bare, false })) >= 0;) {
		free(last);
		last = b.q[i];
		memmove(b.q + i, b.q + i + 1, (b.n - (size_t)i - 1) * sizeof(*b.q));
		b.n--;
	}
	struct view lv = item_view(last ? last : "", a.bare);
	char lbuf[96];
	if (!ok(last && view_is(&lv, NONE, false), "%s: the contact's last push shows None", what))
		diag("  got %s", last ? describe(&lv, lbuf, sizeof(lbuf)) : "no push");
	free(last);
	/* The one that does not apply is not delivered (A.3.2 'To' / A.3.4
	 * 'From': no), whether or not the user's server sent it. */
	if (!to)
		is_int(count(&b, presence_from("unsubscribe", a.bare)), 0,
		       "%s: the contact gets no unsubscribe", what);
	if (!from)
		is_int(count(&b, presence_from("unsubscribed", a.bare)), 0,
		       "%s: the contact gets no unsubscribed", what);
	struct view v = roster_view(&a, b.bare);
	ok(!v.present, "%s: the user's roster no longer has the contact", what);
	check_view(&b, a.bare, NONE, false, "contact's item after the remove");
out:
	peer_free(&a);
	peer_free(&b);
}

/* 4.2.2 / 4.3: a user with a subscription 'to' who logs in after the
 * contact gets the contact's current presence, status included. */
static void row_probe(struct ph_server *srv)
{
	struct peer a = { 0 }, b = { 0 };
	char na[32], nb[32];
	if (!ok(pair_login(srv, &a, &b, na, nb, sizeof(na)), "probe row: log in"))
		goto out;
	if (!ok(setup_state(&a, &b, TO), "probe row: the user has subscription 'to'"))
		goto out;
	peer_logout(&a);
	raw_client_send(b.c, "<presence><show>away</show><status>Gone fishing</status></presence>");
	settle(&b);
	mailbox_clear(&b);
	peer_free(&a);
	if (!ok(peer_login(srv, &a, na, "later", true, "<presence/>"),
		"probe row: the user logs in after the contact"))
		goto out;
	char *el = take(&a, presence_from_full(NULL, b.bare));
	ok(el && el_attr_is(el, "from", b.full), "probe row: the user gets the contact's presence");
	has_str(el, "Gone fishing", "probe row: with its current <status/> text");
	has_str(el, "away", "probe row: and its <show/>");
	free(el);
	settle(&a);
	settle(&b);
	is_int(count(&b, presence_from(NULL, a.bare)), 0,
	       "probe row: the contact (not subscribed to the user) gets no presence (4.2.2)");
	is_int(count(&b, presence_from("probe", a.bare)), 0,
	       "probe row: and no probe reaches the contact's client (4.3.2)");
out:
	peer_free(&a);
	peer_free(&b);
}

/* Section 2: roster get/set/push/remove and their errors. */
static bool is_error(const char *el, const char *condition)
{
	return el && el_attr_is(el, "type", "error") && strstr(el, condition) &&
	       strstr(el, "urn:ietf:params:xml:ns:xmpp-stanzas");
}

static void row_roster_basics(struct ph_server *srv)
{
	struct peer r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
	row_number++;
	char user[32];
	snprintf(user, sizeof(user), "u%dr", row_number);
	ph_add_user(srv, user);
	memset(&r2, 0, sizeof(r2));
	memset(&r3, 0, sizeof(r3));
	bool fine = peer_login(srv, &r1, user, "one", true, "<presence/>");
	fine = peer_login(srv, &r2, user, "two", true, "<presence/>") && fine;
	/* Logged in, available, but never asked for the roster. */
	fine = peer_login(srv, &r3, user, "three", false, "<presence/>") && fine;
	if (!ok(fine, "roster row: three resources log in"))
		goto out;
	settle(&r1);
	settle(&r2);
	settle(&r3);
	mailbox_clear(&r1);
	mailbox_clear(&r2);
	mailbox_clear(&r3);

	const char *friend = "friend@localhost";
	char *answer = roster_set(&r1, "<item jid='friend@localhost' name='Friend'>"
				       "<group>Work</group><group>Chess</group></item>");
	ok(answer && el_attr_is(answer, "type", "result"), "roster row: add is answered with a result (2.3.2)");
	free(answer);
	struct peer *both[] = { &r1, &r2 };
	for (int i = 0; i < 2; i++) {
		char *push = take(both[i], push_for(friend));
		const char *it = push ? find_item(push, friend) : NULL;
		char from[128];
		ok(it != NULL, "roster row: push to interested resource %d (2.3.2)", i + 1);
		ok(it && el_attr_is(it, "name", "Friend") && strstr(push, "<group>Work</group>") &&
			   strstr(push, "<group>Chess</group>"),
		   "roster row: push %d carries the name and both groups", i + 1);
		struct view v = item_view(push ? push : "", friend);
		ok(it && strcmp(v.sub, "none") == 0 && !v.ask,
		   "roster row: new item has subscription 'none' (2.1.2.5)");
		ok(push && (!el_attr(push, "from", from, sizeof(from)) || strcmp(from, r1.bare) == 0),
		   "roster row: push has no 'from' or the user's bare JID (2.1.6)");
		free(push);
	}
	settle(&r3);
	is_int(count(&r3, push_for(friend)), 0,
	       "roster row: no push to a resource that did not request the roster (2.1.6)");

	answer = roster_set(&r2, "<item jid='friend@localhost' name='Buddy'><group>Pub</group></item>");
	ok(answer && el_attr_is(answer, "type", "result"), "roster row: update is answered with a result (2.4)");
	free(answer);
	for (int i = 0; i < 2; i++) {
		char *push = take(both[i], push_for(friend));
		const char *it = push ? find_item(push, friend) : NULL;
		ok(it && el_attr_is(it, "name", "Buddy") && strstr(push, "<group>Pub</group>") &&
			   !strstr(push, "Work") && !strstr(push, "Chess"),
		   "roster row: update push %d replaces name and groups (2.4.2)", i + 1);
		free(push);
	}
	char *got = roster_get(&r1, NULL);
	const char *it = got ? find_item(got, friend) : NULL;
	ok(it && el_attr_is(it, "name", "Buddy") && strstr(got, "<group>Pub</group>"),
	   "roster row: a get returns the updated item (2.1.3)");
	free(got);

	/* 2.1.2.1/2.1.2.2/2.1.2.5: a client cannot set the subscription,
	 * ask or approved attributes with a roster set. */
	answer = roster_set(&r1, "<item jid='forged@localhost' subscription='both' ask='subscribe' "
				 "approved='true'/>");
	free(answer);
	struct view forged = roster_view(&r1, "forged@localhost");
	char buf[96];
	if (!ok(forged.present && strcmp(forged.sub, "none") == 0 && !forged.ask && !forged.approved,
		"roster row: subscription/ask/approved in a set are ignored (2.1.2)"))
		diag("  got %s", describe(&forged, buf, sizeof(buf)));

	answer = roster_set(&r1, "<item jid='friend@localhost' subscription='remove'/>");
	ok(answer && el_attr_is(answer, "type", "result"), "roster row: remove is answered with a result (2.5.2)");
	free(answer);
	for (int i = 0; i < 2; i++) {
		char *push = take(both[i], push_for(friend));
		const char *item = push ? find_item(push, friend) : NULL;
		char sub[32] = "";
		if (item)
			tag_attr(item, "subscription", sub, sizeof(sub));
		is_str(sub, "remove", "roster row: remove push %d has subscription='remove'", i + 1);
		free(push);
	}
	struct view gone = roster_view(&r1, friend);
	ok(!gone.present, "roster row: the removed item is gone from a get");

	answer = roster_set(&r1, "<item jid='nobody-here@localhost' subscription='remove'/>");
	ok(is_error(answer, "<item-not-found"), "roster row: removing an unknown item is item-not-found (2.5.3)");
	free(answer);
	answer = roster_set(&r1, "<item jid='x1@localhost'/><item jid='x2@localhost'/>");
	ok(is_error(answer, "<bad-request"), "roster row: two items in one set is bad-request (2.3.3)");
	free(answer);
	answer = roster_set(&r1, "<item jid='x3@localhost'><group></group></item>");
	ok(is_error(answer, "<not-acceptable"), "roster row: an empty <group/> is not-acceptable (2.3.3)");
	free(answer);
	answer = roster_set(&r1, "<item jid='x4@localhost'><group>Dup</group><group>Dup</group></item>");
	ok(is_error(answer, "<bad-request"), "roster row: duplicate groups are bad-request (2.3.3)");
	free(answer);
	answer = roster_set(&r1, "<item jid='@@'/>");
	ok(is_error(answer, "<jid-malformed") || is_error(answer, "<bad-request"),
	   "roster row: an invalid JID is jid-malformed or bad-request (2.3.3)");
	free(answer);
	settle(&r1);
	settle(&r2);
	int stray = count(&r2, push_for("x1@localhost")) + count(&r2, push_for("x2@localhost")) +
		    count(&r2, push_for("x3@localhost")) + count(&r2, push_for("x4@localhost"));
	is_int(stray, 0, "roster row: refused sets push nothing");
	struct view x1 = roster_view(&r1, "x1@localhost"), x4 = roster_view(&r1, "x4@localhost");
	ok(!x1.present && !x4.present, "roster row: and store nothing");
out:
	peer_free(&r1);
	peer_free(&r2);
	peer_free(&r3);
}

/* 2.6 / XEP-0237: roster versioning. */
static bool query_ver(const char *el, char *out, size_t len)
{
	const char *q = el ? find_tag(el, "query") : NULL;
	return q && tag_attr(q, "ver", out, len);
}

static void row_versioning(struct ph_server *srv)
{
	struct peer v1 = { 0 }, v2 = { 0 };
	row_number++;
	char user[32], pw[80];
	snprintf(user, sizeof(user), "u%dv", row_number);
	ph_add_user(srv, user);
	memset(&v2, 0, sizeof(v2));

	/* The stream features after authentication. */
	struct raw_client *c = raw_client_connect(srv->c2s_tls_port, true);
	char *features = c ? raw_client_open(c, "localhost") : NULL;
	free(features);
	char *auth = c ? raw_client_auth_plain(c, NULL, user, password_of(user, pw, sizeof(pw))) : NULL;
	free(auth);
	features = c ? raw_client_open(c, "localhost") : NULL;
	has_str(features, "urn:xmpp:features:rosterver",
		"versioning row: the stream features announce roster versioning (2.6.1)");
	has_str(features, "urn:xmpp:features:pre-approval",
		"pre-approval is announced in the stream features (3.4.1)");
	free(features);
	raw_client_free(c);

	if (!ok(peer_login(srv, &v1, user, "v1", true, "<presence/>"), "versioning row: log in"))
		goto out;
	char *answer = roster_set(&v1, "<item jid='x1@localhost'/>");
	free(answer);
	char *full = roster_get(&v1, " ver=''");
	char ver1[256] = "";
	ok(query_ver(full, ver1, sizeof(ver1)) && find_item(full, "x1@localhost"),
	   "versioning row: a get with ver='' returns the roster with a ver (2.6.3)");
	free(full);

	char attr[300];
	snprintf(attr, sizeof(attr), " ver='%s'", ver1);
	char *same = roster_get(&v1, attr);
	ok(same && el_attr_is(same, "type", "result") && !find_tag(same, "query"),
	   "versioning row: a get with the current ver is an empty result (2.6.3)");
	free(same);

	answer = roster_set(&v1, "<item jid='x2@localhost'/>");
	free(answer);
	answer = roster_set(&v1, "<item jid='x3@localhost'/>");
	free(answer);

	/* A new resource, old version: an empty result, then pushes of just
	 * the changes, each with a ver. */
	if (!ok(peer_login(srv, &v2, user, "v2", false, NULL), "versioning row: second resource"))
		goto out;
	char id[16] = "vget";
	raw_client_send(v2.c, "<iq type='get' id='%s'><query xmlns='jabber:iq:roster'%s/></iq>", id,
			attr);
	/* Collect (bounded) until the answer and both pushes are in, keeping
	 * the order in which they arrived. */
	struct match answer_m = iq_id(id), x2_m = push_for("x2@localhost"),
		     x3_m = push_for("x3@localhost");
	long long deadline = now_ms() + wait_budget();
	while ((mailbox_find(&v2, &answer_m) < 0 || mailbox_find(&v2, &x2_m) < 0 ||
		mailbox_find(&v2, &x3_m) < 0) &&
	       now_ms() < deadline)
		pull(&v2, 50);
	settle(&v2);
	ssize_t at = mailbox_find(&v2, &answer_m), at2 = mailbox_find(&v2, &x2_m),
		at3 = mailbox_find(&v2, &x3_m);
	char *result = at >= 0 ? strdup(v2.q[at]) : NULL;
	char *x2 = at2 >= 0 ? strdup(v2.q[at2]) : NULL;
	char *x3 = at3 >= 0 ? strdup(v2.q[at3]) : NULL;
	ok(result && el_attr_is(result, "type", "result") && !find_tag(result, "query"),
	   "versioning row: a get with an old ver is an empty result (2.6.3)");
	char pv2[256] = "", pv3[256] = "";
	ok(x2 && query_ver(x2, pv2, sizeof(pv2)) && x3 && query_ver(x3, pv3, sizeof(pv3)),
	   "versioning row: followed by pushes of the two changes, each with a ver (2.6.3)");
	ok(at >= 0 && at2 > at && at3 > at,
	   "versioning row: the empty result comes before the pushes (2.6.3)");
	is_int(count(&v2, push_for("x1@localhost")), 0,
	       "versioning row: no push for the unchanged item");
	free(result);
	char *now = roster_get(&v2, " ver=''");
	char current[256] = "";
	query_ver(now, current, sizeof(current));
	ok(current[0] && strcmp(current, ver1) != 0,
	   "versioning row: the version changed after the changes");
	ok(current[0] && (strcmp(pv3, current) == 0 || strcmp(pv2, current) == 0),
	   "versioning row: the last push carries the current version");
	free(now);
	free(x2);
	free(x3);
out:
	peer_free(&v1);
	peer_free(&v2);
}

int main(void)
{
	long long started = now_ms();
	struct ph_server s;
	if (ph_server_init(&s, NULL) != 0) {
		ok(0, "server directory");
		return done_testing();
	}
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts")) {
		ph_server_cleanup(&s);
		return done_testing();
	}

	/* The core table: every state of A.1 under every action. */
	for (int act = 0; act < NACTIONS; act++)
		for (int st = 0; st < NSTATES; st++)
			table_row(&s, (enum state)st, (enum action)act);

	row_offline_contact(&s);
	row_preapproval(&s);
	row_preapproval_cancelled(&s);
	row_remove(&s, BOTH);
	row_remove(&s, TO);
	row_remove(&s, FROM);
	row_probe(&s);
	row_roster_basics(&s);
	row_versioning(&s);

	diag("%d rows in %lld ms", row_number, now_ms() - started);
	int status = ph_server_stop(&s);
	if (!ok(status == 0, "the server stops cleanly")) {
		char *log = ph_server_log(&s);
		diag("log tail: %s", log ? log + (strlen(log) > 2000 ? strlen(log) - 2000 : 0) : "");
		free(log);
	}
	ph_server_cleanup(&s);
	return done_testing();
}
