/* Message roaming with a thousand messages: paging through the archive in
 * pages of 37, forwards (after) and backwards (before), reproduces the
 * exact sequence; a second device that was away for the last 500
 * messages catches up with after-id and ends with the same ordered list
 * of archive ids as the device that was online throughout. */
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TOTAL = 1000, PAGE = 37 };

static struct raw_client *online(const struct ph_server *s, const char *user, const char *resource)
{
	char password[128];
	snprintf(password, sizeof(password), "%s-secret", user);
	struct raw_client *c = raw_client_new_session(s->c2s_tls_port, user, password, resource);
	if (c) {
		raw_client_send(c, "<presence/>");
		raw_client_sync(c);
	}
	return c;
}

/* The value of attribute `name` in xml at or after `from` (caller frees). */
static char *attr_after(const char *xml, const char *from, const char *name)
{
	const char *at = xml ? strstr(xml, from) : NULL;
	char needle[32];
	snprintf(needle, sizeof(needle), " %s='", name);
	at = at ? strstr(at, needle) : NULL;
	return at ? strndup(at + strlen(needle), strcspn(at + strlen(needle), "'")) : NULL;
}

/* One page: appends the archive ids of its results (in the order they
 * came) to ids[], returns how many; *complete and the <set/> edges. */
static int page(struct raw_client *c, const char *rsm, bool flip, char ids[][16], int at,
		bool *complete)
{
	static int n;
	char qid[16], iqid[16];
	snprintf(qid, sizeof(qid), "s%d", ++n);
	snprintf(iqid, sizeof(iqid), "sq%d", n);
	raw_client_send(c, "<iq type='set' id='%s'><query xmlns='urn:xmpp:mam:2' queryid='%s'>"
			   "<set xmlns='http://jabber.org/protocol/rsm'>%s</set>%s</query></iq>",
			iqid, qid, rsm, flip ? "<flip-page/>" : "");
	char needle[32];
	snprintf(needle, sizeof(needle), "id='%s'", iqid);
	char *fin = raw_client_wait(c, needle, 10000);
	*complete = fin && strstr(fin, "complete='true'");
	free(fin);
	snprintf(needle, sizeof(needle), "queryid='%s'", qid);
	int count = 0;
	char *result;
	while ((result = raw_client_wait(c, needle, 0)) != NULL) {
		char *id = attr_after(result, "<result", "id");
		if (id && at + count < TOTAL + 10)
			snprintf(ids[at + count], 16, "%s", id);
		free(id);
		count++;
		free(result);
	}
	return count;
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = ph_standard_config(&s, NULL, NULL);
	char *patched = ph_config_with_attributes(config, "c2s",
						  "max-stanzas-per-second=\"0\" max-bytes-per-second=\"0\"");
	ph_server_write_config(&s, patched);
	free(patched);
	free(config);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();
	ph_add_user(&s, "dave");
	ph_add_user(&s, "erin");
	struct raw_client *phone = online(&s, "dave", "phone");
	struct raw_client *laptop = online(&s, "dave", "laptop");
	struct raw_client *erin = online(&s, "erin", "e");
	if (!ok(phone && laptop && erin, "dave (phone, laptop) and erin are online"))
		return done_testing();

	static char live_ids[TOTAL + 10][16];
	static char laptop_ids[TOTAL + 10][16];
	int live = 0, laptop_live = 0;
	for (int i = 1; i <= TOTAL; i++) {
		if (i == TOTAL / 2 + 1) {
			/* The laptop goes away for the second half. */
			raw_client_sync(erin);
			raw_client_sync(laptop);
			char *m;
			while ((m = raw_client_wait(laptop, "<body>", 0)) != NULL) {
				char *id = attr_after(m, "<stanza-id", "id");
				if (id && laptop_live < TOTAL)
					snprintf(laptop_ids[laptop_live++], 16, "%s", id);
				free(id);
				free(m);
			}
			raw_client_free(laptop);
			laptop = NULL;
		}
		raw_client_send(erin, "<message to='dave@localhost' type='chat'><body>p%d</body></message>", i);
	}
	raw_client_sync(erin);
	char last[32];
	snprintf(last, sizeof(last), "<body>p%d</body>", TOTAL);
	ok(raw_client_seen(phone, last, 20000), "the phone receives all %d messages", TOTAL);
	raw_client_sync(phone);
	char *m;
	while ((m = raw_client_wait(phone, "<body>", 0)) != NULL) {
		char *id = attr_after(m, "<stanza-id", "id");
		if (id && live < TOTAL)
			snprintf(live_ids[live++], 16, "%s", id);
		free(id);
		free(m);
	}
	is_int(live, TOTAL, "each with an archive id");
	is_int(laptop_live, TOTAL / 2, "the laptop got the first half before leaving");

	/* Forwards in pages of 37. */
	static char forward[TOTAL + 10][16];
	int got = 0, pages = 0;
	bool complete = false;
	char rsm[96];
	snprintf(rsm, sizeof(rsm), "<max>%d</max>", PAGE);
	while (!complete && pages < 100) {
		int n = page(phone, rsm, false, forward, got, &complete);
		if (n == 0)
			break;
		got += n;
		pages++;
		snprintf(rsm, sizeof(rsm), "<max>%d</max><after>%s</after>", PAGE, forward[got - 1]);
	}
	is_int(got, TOTAL, "paging forwards in pages of %d visits %d messages", PAGE, TOTAL);
	is_int(pages, (TOTAL + PAGE - 1) / PAGE, "in %d pages", (TOTAL + PAGE - 1) / PAGE);
	int same = 0;
	for (int i = 0; i < TOTAL && i < got; i++)
		same += strcmp(forward[i], live_ids[i]) == 0;
	is_int(same, TOTAL, "in exactly the order the phone received them");

	/* Backwards from the end, pages of 37 (each page in archive order). */
	static char backward[TOTAL + 10][16];
	static char page_ids[PAGE + 10][16];
	int back = 0;
	complete = false;
	snprintf(rsm, sizeof(rsm), "<max>%d</max><before/>", PAGE);
	pages = 0;
	while (!complete && pages < 100) {
		int n = page(phone, rsm, false, page_ids, 0, &complete);
		if (n == 0)
			break;
		/* Prepend this page. */
		memmove(backward[n], backward[0], (size_t)back * sizeof(backward[0]));
		memcpy(backward[0], page_ids[0], (size_t)n * sizeof(backward[0]));
		back += n;
		pages++;
		snprintf(rsm, sizeof(rsm), "<max>%d</max><before>%s</before>", PAGE, page_ids[0]);
	}
	is_int(back, TOTAL, "paging backwards visits the %d messages too", TOTAL);
	same = 0;
	for (int i = 0; i < TOTAL && i < back; i++)
		same += strcmp(backward[i], live_ids[i]) == 0;
	is_int(same, TOTAL, "and puts them back in the same order");

	/* The laptop comes back and catches up after the last id it saw. */
	laptop = online(&s, "dave", "laptop");
	complete = false;
	snprintf(rsm, sizeof(rsm), "<max>%d</max><after>%s</after>", PAGE,
		 laptop_live ? laptop_ids[laptop_live - 1] : "");
	pages = 0;
	while (laptop && !complete && pages < 100) {
		int n = page(laptop, rsm, false, laptop_ids, laptop_live, &complete);
		if (n == 0)
			break;
		laptop_live += n;
		pages++;
		snprintf(rsm, sizeof(rsm), "<max>%d</max><after>%s</after>", PAGE,
			 laptop_ids[laptop_live - 1]);
	}
	is_int(laptop_live, TOTAL, "the laptop catches up with the %d it missed", TOTAL / 2);
	same = 0;
	for (int i = 0; i < TOTAL && i < laptop_live; i++)
		same += strcmp(laptop_ids[i], live_ids[i]) == 0;
	is_int(same, TOTAL, "and ends with the phone's list, in the phone's order");

	raw_client_free(phone);
	raw_client_free(laptop);
	raw_client_free(erin);
	is_int(ph_server_stop(&s), 0, "the server stops cleanly");
	ph_server_cleanup(&s);
	return done_testing();
}
