/* XEP-0115 entity capabilities: the verification string of a disco#info
 * answer (identities, features and extended forms, each sorted, section
 * 5.1), hashed with SHA-1 and base64-encoded. mod_pep checks the hashes
 * clients announce against their disco#info; mod_disco announces the
 * server's own. Pure function. */
#include "caps.h"
#include "scram.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define NS_DATA "jabber:x:data"

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* qsort must not be handed NULL, even for no elements. */
static void sort_strings(char **strings, size_t count)
{
	if (count > 1)
		qsort(strings, count, sizeof(char *), compare_strings);
}

char *pl_caps_hash(const struct pl_xnode *query)
{
	char **identities = NULL, **features = NULL;
	size_t identity_count = 0, feature_count = 0;
	struct pl_buf forms = { 0 };
	char **form_texts = NULL;
	size_t form_count = 0;
	for (struct pl_xnode *c = pl_xnode_first_element(query); c; c = pl_xnode_next_element(c)) {
		if (strcmp(c->name, "identity") == 0) {
			const char *lang = pl_xnode_attr(c, "xml:lang");
			if (!lang)
				lang = pl_xnode_attr(c, "lang");
			identities = pl_realloc(identities, (identity_count + 1) * sizeof(char *));
			identities[identity_count++] = pl_asprintf(
				"%s/%s/%s/%s", pl_xnode_attr(c, "category") ? pl_xnode_attr(c, "category") : "",
				pl_xnode_attr(c, "type") ? pl_xnode_attr(c, "type") : "", lang ? lang : "",
				pl_xnode_attr(c, "name") ? pl_xnode_attr(c, "name") : "");
		} else if (strcmp(c->name, "feature") == 0 && pl_xnode_attr(c, "var")) {
			features = pl_realloc(features, (feature_count + 1) * sizeof(char *));
			features[feature_count++] = pl_strdup(pl_xnode_attr(c, "var"));
		} else if (strcmp(c->name, "x") == 0 && c->ns && strcmp(c->ns, NS_DATA) == 0) {
			/* FORM_TYPE first, then fields by var, values sorted. */
			char *form_type = NULL;
			char **fields = NULL;
			size_t field_count = 0;
			for (struct pl_xnode *f = pl_xnode_first_element(c); f; f = pl_xnode_next_element(f)) {
				const char *var = pl_xnode_attr(f, "var");
				if (strcmp(f->name, "field") != 0 || !var)
					continue;
				char **values = NULL;
				size_t value_count = 0;
				for (struct pl_xnode *v = pl_xnode_first_element(f); v; v = pl_xnode_next_element(v)) {
					if (strcmp(v->name, "value") != 0)
						continue;
					values = pl_realloc(values, (value_count + 1) * sizeof(char *));
					values[value_count++] = pl_xnode_text(v);
				}
				sort_strings(values, value_count);
				struct pl_buf text = { 0 };
				if (strcmp(var, "FORM_TYPE") == 0) {
					free(form_type);
					form_type = pl_strdup(value_count ? values[0] : "");
				} else {
					pl_buf_printf(&text, "%s<", var);
					for (size_t i = 0; i < value_count; i++)
						pl_buf_printf(&text, "%s<", values[i]);
					fields = pl_realloc(fields, (field_count + 1) * sizeof(char *));
					fields[field_count++] = pl_buf_take(&text);
				}
				for (size_t i = 0; i < value_count; i++)
					free(values[i]);
				free(values);
				pl_buf_free(&text);
			}
			sort_strings(fields, field_count);
			struct pl_buf text = { 0 };
			pl_buf_printf(&text, "%s<", form_type ? form_type : "");
			for (size_t i = 0; i < field_count; i++) {
				pl_buf_puts(&text, fields[i]);
				free(fields[i]);
			}
			free(fields);
			free(form_type);
			form_texts = pl_realloc(form_texts, (form_count + 1) * sizeof(char *));
			form_texts[form_count++] = pl_buf_take(&text);
			pl_buf_free(&text);
		}
	}
	sort_strings(identities, identity_count);
	sort_strings(features, feature_count);
	sort_strings(form_texts, form_count);
	struct pl_buf s = { 0 };
	for (size_t i = 0; i < identity_count; i++) {
		pl_buf_printf(&s, "%s<", identities[i]);
		free(identities[i]);
	}
	for (size_t i = 0; i < feature_count; i++) {
		pl_buf_printf(&s, "%s<", features[i]);
		free(features[i]);
	}
	for (size_t i = 0; i < form_count; i++) {
		pl_buf_puts(&s, form_texts[i]);
		free(form_texts[i]);
	}
	free(identities);
	free(features);
	free(form_texts);
	pl_buf_free(&forms);
	uint8_t digest[64];
	pl_scram_hash(PL_SCRAM_SHA1, s.data ? s.data : "", s.len, digest);
	pl_buf_free(&s);
	return pl_base64_encode(digest, 20);
}

