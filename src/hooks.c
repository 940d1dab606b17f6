/* Named events and their handlers, plus the disco feature/identity
 * registry. Events are interned in a small open hash table so that firing
 * one per stanza costs a hash and a walk of a short sorted array. Each
 * handler, feature and identity remembers the module that attached it, so
 * a module's unload removes all of them at once (modules write no unhook
 * code). Network thread only. */
#include "hooks.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct handler {
	pl_hook_fn fn;
	void *userdata;
	int priority;
	uint64_t order;          /* registration order breaks priority ties */
	struct pl_module *owner;
};

struct event_entry {
	char *name;              /* owned */
	struct handler *handlers;
	size_t count, cap;
	struct event_entry *next; /* hash chain */
};

#define EVENT_BUCKETS 256
static struct event_entry *buckets[EVENT_BUCKETS];
static uint64_t registration_counter;

struct feature {
	char *name;
	struct pl_module *owner;
};
static struct feature *features;
static size_t feature_count, feature_cap;
static const char **feature_view;      /* sorted, de-duplicated, rebuilt lazily */
static size_t feature_view_count;
static bool feature_view_valid;

struct owned_identity {
	struct pl_identity identity;
	struct pl_module *owner;
};
static struct owned_identity *identity_entries;
static size_t identity_count, identity_cap;
static struct pl_identity *identity_view;

static struct event_entry *find_event(const char *name, bool create)
{
	uint32_t b = pl_hash_string(name) % EVENT_BUCKETS;
	for (struct event_entry *e = buckets[b]; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			return e;
	if (!create)
		return NULL;
	struct event_entry *e = pl_calloc(1, sizeof(*e));
	e->name = pl_strdup(name);
	e->next = buckets[b];
	buckets[b] = e;
	return e;
}

int pl_hook(struct pl_module *m, const char *event, pl_hook_fn fn, void *userdata,
	    int priority)
{
	if (!event || !*event || !fn)
		return -EINVAL;
	struct event_entry *e = find_event(event, true);
	pl_grow((void **)&e->handlers, &e->cap, e->count + 1, sizeof(*e->handlers));
	/* Insert after every handler of higher or equal priority: higher runs
	 * first, ties keep registration order. */
	size_t at = e->count;
	while (at > 0 && e->handlers[at - 1].priority < priority)
		at--;
	memmove(&e->handlers[at + 1], &e->handlers[at],
		(e->count - at) * sizeof(*e->handlers));
	e->handlers[at] = (struct handler){ fn, userdata, priority,
					    registration_counter++, m };
	e->count++;
	return 0;
}

int pl_hooks_fire(const char *event, void *data)
{
	struct event_entry *e = find_event(event, false);
	if (!e)
		return PL_CONTINUE;
	struct pl_event ev = { .name = e->name, .data = data };
	for (size_t i = 0; i < e->count; i++) {
		int result = e->handlers[i].fn(&ev, e->handlers[i].userdata);
		if (result != PL_CONTINUE)
			return result;
	}
	return PL_CONTINUE;
}

bool pl_hooks_has(const char *event)
{
	struct event_entry *e = find_event(event, false);
	return e && e->count > 0;
}

void pl_feature(struct pl_module *m, const char *feature_namespace)
{
	pl_grow((void **)&features, &feature_cap, feature_count + 1, sizeof(*features));
	features[feature_count++] = (struct feature){ pl_strdup(feature_namespace), m };
	feature_view_valid = false;
}

void pl_identity(struct pl_module *m, const char *category, const char *type,
		 const char *name)
{
	pl_grow((void **)&identity_entries, &identity_cap, identity_count + 1,
		sizeof(*identity_entries));
	identity_entries[identity_count++] = (struct owned_identity){
		{ pl_strdup(category), pl_strdup(type), name ? pl_strdup(name) : NULL }, m
	};
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

size_t pl_features_list(const char ***out)
{
	if (!feature_view_valid) {
		feature_view = pl_realloc(feature_view, (feature_count + 1) * sizeof(*feature_view));
		for (size_t i = 0; i < feature_count; i++)
			feature_view[i] = features[i].name;
		qsort(feature_view, feature_count, sizeof(*feature_view), compare_strings);
		size_t unique = 0;
		for (size_t i = 0; i < feature_count; i++)
			if (unique == 0 || strcmp(feature_view[unique - 1], feature_view[i]) != 0)
				feature_view[unique++] = feature_view[i];
		feature_view_count = unique;
		feature_view_valid = true;
	}
	*out = feature_view;
	return feature_view_count;
}

size_t pl_identities_list(const struct pl_identity **out)
{
	identity_view = pl_realloc(identity_view, (identity_count + 1) * sizeof(*identity_view));
	for (size_t i = 0; i < identity_count; i++)
		identity_view[i] = identity_entries[i].identity;
	*out = identity_view;
	return identity_count;
}

static void free_identity(struct pl_identity *identity)
{
	free(identity->category);
	free(identity->type);
	free(identity->name);
}

/* m == NULL removes everything (shutdown). */
static void remove_owned(struct pl_module *m)
{
	for (size_t b = 0; b < EVENT_BUCKETS; b++) {
		for (struct event_entry *e = buckets[b]; e; e = e->next) {
			size_t kept = 0;
			for (size_t i = 0; i < e->count; i++)
				if (m && e->handlers[i].owner != m)
					e->handlers[kept++] = e->handlers[i];
			e->count = kept;
		}
	}
	size_t kept = 0;
	for (size_t i = 0; i < feature_count; i++) {
		if (m && features[i].owner != m)
			features[kept++] = features[i];
		else
			free(features[i].name);
	}
	feature_count = kept;
	feature_view_valid = false;
	kept = 0;
	for (size_t i = 0; i < identity_count; i++) {
		if (m && identity_entries[i].owner != m)
			identity_entries[kept++] = identity_entries[i];
		else
			free_identity(&identity_entries[i].identity);
	}
	identity_count = kept;
}

void pl_hooks_remove_module(struct pl_module *m)
{
	if (m)
		remove_owned(m);
}

void pl_hooks_shutdown(void)
{
	remove_owned(NULL);
	for (size_t b = 0; b < EVENT_BUCKETS; b++) {
		struct event_entry *e = buckets[b];
		while (e) {
			struct event_entry *next = e->next;
			free(e->name);
			free(e->handlers);
			free(e);
			e = next;
		}
		buckets[b] = NULL;
	}
	free(features);
	features = NULL;
	feature_count = feature_cap = 0;
	free(feature_view);
	feature_view = NULL;
	feature_view_valid = false;
	free(identity_entries);
	identity_entries = NULL;
	identity_count = identity_cap = 0;
	free(identity_view);
	identity_view = NULL;
}
