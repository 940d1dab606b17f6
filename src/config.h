/* The configuration file (etc/parley.xml): parsed by libxml2, validated
 * against the RELAX NG schema etc/parley.rng (embedded in the binary), then
 * flattened into sections of key/value entries with line numbers. Typed
 * values come out through option tables (struct pl_option, the same ones
 * modules declare), so the core and the modules share one parser and one
 * set of error messages: "parley.xml:12: <storage> map-size: expected a
 * size such as 64MiB, got \"lots\"". */
#ifndef PL_CONFIG_H
#define PL_CONFIG_H

#include "parley/module.h"

/* One setting: an attribute of the section element, or the text of a
 * child element (which may repeat, for PL_OPT_LIST). */
struct pl_config_entry {
	char *key;
	char *value;
	int line;
};

/* One element directly under <parley> (log, storage, control, server,
 * host) or one <module> inside <modules>. */
struct pl_config_section {
	char *kind;  /* element name: "storage", "host", "module", ... */
	char *name;  /* its name="" attribute (hosts, modules); NULL if none. Not an entry. */
	int line;
	struct pl_config_entry *entries;
	size_t entry_count;
	/* Nested sections, e.g. <certificate> inside <host>. */
	struct pl_config_section *children;
	size_t child_count;
};

struct pl_config {
	char *path; /* the file, or "(embedded default)" */
	struct pl_config_section *sections;
	size_t section_count;
};

/* The configuration used when parleyd starts without -c. */
extern const char pl_config_embedded_default[];

/* Parses and validates. On error returns -EINVAL (or -errno for I/O) and
 * sets *error to a message naming the file and line and what was expected. */
int pl_config_load_file(const char *path, struct pl_config **out, char **error);
int pl_config_load_memory(const char *xml, size_t len, const char *label,
			  struct pl_config **out, char **error);
void pl_config_free(struct pl_config *config);

/* First section of the given kind (and name, unless name is NULL). */
const struct pl_config_section *pl_config_find(const struct pl_config *config,
					       const char *kind, const char *name);
/* Iteration: sections of a kind in file order. Returns the next after
 * `previous` (NULL to start), or NULL. */
const struct pl_config_section *pl_config_next(const struct pl_config *config,
					       const char *kind,
					       const struct pl_config_section *previous);

/* Fills `conf` (a struct laid out per options[].offset) with defaults,
 * then with the section's entries (section may be NULL: defaults only).
 * Unknown keys, repeated scalars, ill-typed or out-of-range values are
 * errors with file:line. `what` names the section in messages, e.g.
 * "<module name=\"ping\">". Returns 0 or -EINVAL with *error. On error the
 * conf is left freeable with pl_options_free. */
int pl_options_apply(const struct pl_option *options, void *conf,
		     const struct pl_config_section *section, const char *file,
		     const char *what, char **error);
/* Frees the strings and lists pl_options_apply put into conf. */
void pl_options_free(const struct pl_option *options, void *conf);

/* Value parsers, shared with anything that reads a typed value. Each
 * returns 0, or -EINVAL with a message that says what was expected. */
int pl_parse_bool(const char *text, bool *out, char **error);
int pl_parse_int(const char *text, int64_t *out, char **error);
int pl_parse_duration_ms(const char *text, int64_t *out, char **error);
int pl_parse_size(const char *text, uint64_t *out, char **error);

#endif
