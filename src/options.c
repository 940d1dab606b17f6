/* Typed options: one parser per type, and pl_options_apply, which fills a
 * conf struct from a config section through an option table. The core's
 * sections and every module's <module> element go through here, so each
 * setting gets the same strictness (unknown, repeated, ill-typed or
 * out-of-range values are errors with file and line, never clamped) and
 * the same wording. Option tables are code, so a default that does not
 * parse is a bug and aborts at once rather than becoming a user's error. */
#include "config.h"
#include "jid.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int pl_parse_bool(const char *text, bool *out, char **error)
{
	static const char *const truths[] = { "true", "yes", "on", "1" };
	static const char *const lies[] = { "false", "no", "off", "0" };
	for (size_t i = 0; i < PL_ARRAY_LEN(truths); i++) {
		if (strcasecmp(text, truths[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(text, lies[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return pl_error(error, -EINVAL,
			"expected true or false (or yes/no, on/off, 1/0), got \"%s\"", text);
}

/* Reads an unsigned decimal prefix; *end points past it. -ERANGE when it
 * does not fit in 64 bits, so "99999999999999999999GiB" is not 0. */
static int parse_digits(const char *text, uint64_t *value, const char **end)
{
	uint64_t v = 0;
	const char *p = text;
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned digit = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - digit) / 10)
			return -ERANGE;
		v = v * 10 + digit;
	}
	*value = v;
	*end = p;
	return 0;
}

int pl_parse_int(const char *text, int64_t *out, char **error)
{
	const char *p = text;
	bool negative = false;
	if (*p == '-' || *p == '+')
		negative = *p++ == '-';
	uint64_t v = 0;
	const char *end = p;
	int rc = parse_digits(p, &v, &end);
	if (rc == 0 && *end != '\0')
		rc = -EINVAL;
	if (rc == 0 && v > (negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
		rc = -ERANGE;
	if (rc == -ERANGE)
		return pl_error(error, -EINVAL, "%s is too large", text);
	if (rc)
		return pl_error(error, -EINVAL, "expected an integer, got \"%s\"", text);
	/* Unsigned negation, so INT64_MIN needs no signed overflow. */
	*out = negative ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

struct unit {
	const char *name;
	uint64_t factor;
};

/* "<digits>[ *]<unit>", the unit from the table; no unit means
 * default_factor. */
static int parse_with_units(const char *text, const struct unit *units, size_t unit_count,
			    uint64_t default_factor, uint64_t *out)
{
	uint64_t v;
	const char *end;
	int rc = parse_digits(text, &v, &end);
	if (rc)
		return rc;
	while (*end == ' ')
		end++;
	uint64_t factor = default_factor;
	if (*end) {
		factor = 0;
		for (size_t i = 0; i < unit_count && !factor; i++)
			if (strcmp(end, units[i].name) == 0)
				factor = units[i].factor;
		if (!factor)
			return -EINVAL;
	}
	if (v != 0 && factor > UINT64_MAX / v)
		return -ERANGE;
	*out = v * factor;
	return 0;
}

/* k/K/M/G are binary, as sysadmins mean them in "64M"; only the explicit
 * KB/MB/GB/TB are decimal. */
static const struct unit size_units[] = {
	{ "B", 1 },
	{ "k", 1ull << 10 }, { "K", 1ull << 10 }, { "KiB", 1ull << 10 }, { "KB", 1000ull },
	{ "M", 1ull << 20 }, { "MiB", 1ull << 20 }, { "MB", 1000000ull },
	{ "G", 1ull << 30 }, { "GiB", 1ull << 30 }, { "GB", 1000000000ull },
	{ "TiB", 1ull << 40 }, { "TB", 1000000000000ull },
};

static const struct unit duration_units[] = {
	{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
};

int pl_parse_size(const char *text, uint64_t *out, char **error)
{
	int rc = parse_with_units(text, size_units, PL_ARRAY_LEN(size_units), 1, out);
	if (rc == -ERANGE)
		return pl_error(error, -EINVAL, "%s is too large", text);
	if (rc)
		return pl_error(error, -EINVAL,
				"expected a size such as 512, 64KiB, 10MiB or 1GiB, got \"%s\"", text);
	return 0;
}

int pl_parse_duration_ms(const char *text, int64_t *out, char **error)
{
	uint64_t v = 0;
	int rc = parse_with_units(text, duration_units, PL_ARRAY_LEN(duration_units), 1000, &v);
	if (rc == 0 && v > INT64_MAX)
		rc = -ERANGE;
	if (rc == -ERANGE)
		return pl_error(error, -EINVAL, "%s is too long", text);
	if (rc)
		return pl_error(error, -EINVAL,
				"expected a duration such as 250ms, 30s, 5m, 2h or 1d, got \"%s\"",
				text);
	*out = (int64_t)v;
	return 0;
}

/* A value in the largest unit that divides it, so limits read as the
 * sysadmin would write them: "64KiB", "5m". */
static char *human(enum pl_option_type type, int64_t value)
{
	if (type == PL_OPT_SIZE && value > 0) {
		static const char *const binary[] = { "KiB", "MiB", "GiB", "TiB" };
		static const char *const decimal[] = { "KB", "MB", "GB", "TB" };
		uint64_t v = (uint64_t)value;
		const char *name = "B";
		if (v % 1024 == 0) {
			for (size_t i = 0; i < PL_ARRAY_LEN(binary) && v % 1024 == 0; i++) {
				v /= 1024;
				name = binary[i];
			}
		} else {
			for (size_t i = 0; i < PL_ARRAY_LEN(decimal) && v % 1000 == 0; i++) {
				v /= 1000;
				name = decimal[i];
			}
		}
		return pl_asprintf("%" PRIu64 "%s", v, name);
	}
	if (type == PL_OPT_DURATION && value != 0) {
		for (size_t i = PL_ARRAY_LEN(duration_units); i-- > 0;)
			if (value % (int64_t)duration_units[i].factor == 0)
				return pl_asprintf("%" PRId64 "%s",
						   value / (int64_t)duration_units[i].factor,
						   duration_units[i].name);
	}
	return pl_asprintf("%" PRId64, value);
}

static char *choices_text(const char *const *choices)
{
	struct pl_buf list = { 0 };
	for (size_t i = 0; choices && choices[i]; i++)
		pl_buf_printf(&list, "%s%s", i ? ", " : "", choices[i]);
	return list.data ? pl_buf_take(&list) : pl_strdup("(none)");
}

/* A number of an INT, DURATION or SIZE option, range-checked. */
static int parse_number(const struct pl_option *o, const char *text, int64_t *out,
			char **error)
{
	int64_t number = 0;
	int rc;
	if (o->type == PL_OPT_INT) {
		rc = pl_parse_int(text, &number, error);
	} else if (o->type == PL_OPT_DURATION) {
		rc = pl_parse_duration_ms(text, &number, error);
	} else {
		uint64_t size = 0;
		rc = pl_parse_size(text, &size, error);
		/* Limits are int64_t; nothing real is 8 EiB. */
		if (rc == 0 && size > INT64_MAX)
			rc = pl_error(error, -EINVAL, "%s is too large", text);
		number = (int64_t)size;
	}
	if (rc)
		return rc;
	if (o->max > o->min && (number < o->min || number > o->max)) {
		bool below = number < o->min;
		char *value = human(o->type, number);
		char *limit = human(o->type, below ? o->min : o->max);
		rc = pl_error(error, -EINVAL, "%s is %s the %s %s", value,
			      below ? "below" : "above", below ? "minimum" : "maximum", limit);
		free(value);
		free(limit);
		return rc;
	}
	*out = number;
	return 0;
}

/* Parses one value into the option's slot. The slot holds a valid value
 * already (a default or zero), which a STRING or JID replaces and a LIST
 * grows. */
static int parse_value(const struct pl_option *o, void *slot, const char *text, char **error)
{
	switch (o->type) {
	case PL_OPT_BOOL:
		return pl_parse_bool(text, slot, error);
	case PL_OPT_INT:
	case PL_OPT_DURATION: {
		int64_t number;
		int rc = parse_number(o, text, &number, error);
		if (rc == 0)
			*(int64_t *)slot = number;
		return rc;
	}
	case PL_OPT_SIZE: {
		int64_t number;
		int rc = parse_number(o, text, &number, error);
		if (rc == 0)
			*(uint64_t *)slot = (uint64_t)number;
		return rc;
	}
	case PL_OPT_ENUM:
		for (int i = 0; o->choices && o->choices[i]; i++) {
			if (strcmp(o->choices[i], text) == 0) {
				*(int *)slot = i;
				return 0;
			}
		}
		{
			char *list = choices_text(o->choices);
			int rc = pl_error(error, -EINVAL, "expected one of: %s; got \"%s\"", list,
					  text);
			free(list);
			return rc;
		}
	case PL_OPT_STRING:
		free(*(char **)slot);
		*(char **)slot = pl_strdup(text);
		return 0;
	case PL_OPT_JID: {
		struct pl_jid jid;
		enum pl_jid_error rc = pl_jid_parse(text, &jid);
		if (rc != PL_JID_OK)
			return pl_error(error, -EINVAL,
					"expected a JID such as admin@example.org, got \"%s\" (%s)",
					text, pl_jid_strerror(rc));
		free(*(char **)slot);
		*(char **)slot = pl_strdup(jid.full);
		pl_jid_free(&jid);
		return 0;
	}
	case PL_OPT_LIST: {
		struct pl_string_list *list = slot;
		list->items = pl_realloc(list->items, (list->count + 1) * sizeof(*list->items));
		list->items[list->count++] = pl_strdup(text);
		return 0;
	}
	}
	pl_fatal("option %s has an unknown type %d", o->name, (int)o->type);
}

static void free_slot(const struct pl_option *o, void *slot)
{
	if (o->type == PL_OPT_STRING || o->type == PL_OPT_JID) {
		free(*(char **)slot);
		*(char **)slot = NULL;
	} else if (o->type == PL_OPT_LIST) {
		struct pl_string_list *list = slot;
		for (size_t i = 0; i < list->count; i++)
			free(list->items[i]);
		free(list->items);
		list->items = NULL;
		list->count = 0;
	}
}

void pl_options_free(const struct pl_option *options, void *conf)
{
	for (const struct pl_option *o = options; o && o->name; o++)
		free_slot(o, (char *)conf + o->offset);
}

/* Zeroes the slot (whatever the conf held is not ours to free), then
 * parses the default into it. */
static void set_default(const struct pl_option *o, void *slot, const char *what)
{
	switch (o->type) {
	case PL_OPT_BOOL:
		*(bool *)slot = false;
		break;
	case PL_OPT_INT:
	case PL_OPT_DURATION:
		*(int64_t *)slot = 0;
		break;
	case PL_OPT_SIZE:
		*(uint64_t *)slot = 0;
		break;
	case PL_OPT_ENUM:
		*(int *)slot = 0;
		break;
	case PL_OPT_STRING:
	case PL_OPT_JID:
		*(char **)slot = NULL;
		break;
	case PL_OPT_LIST:
		*(struct pl_string_list *)slot = (struct pl_string_list){ NULL, 0 };
		break;
	}
	char *reason = NULL;
	if (o->default_value && parse_value(o, slot, o->default_value, &reason) != 0)
		pl_fatal("%s %s: the default \"%s\" is invalid: %s", what, o->name,
			 o->default_value, reason ? reason : "?");
}

static int unknown_option(const struct pl_option *options, const struct pl_config_entry *e,
			  const char *file, const char *what, char **error)
{
	struct pl_buf known = { 0 };
	for (const struct pl_option *k = options; k->name; k++)
		pl_buf_printf(&known, "%s%s", known.len ? ", " : "", k->name);
	int rc = pl_error(error, -EINVAL, "%s:%d: %s has no option '%s' (known: %s)", file,
			  e->line, what, e->key, known.len ? known.data : "none");
	pl_buf_free(&known);
	return rc;
}

int pl_options_apply(const struct pl_option *options, void *conf,
		     const struct pl_config_section *section, const char *file,
		     const char *what, char **error)
{
	if (!what)
		what = "option";
	if (!file)
		file = "(configuration)";
	for (const struct pl_option *o = options; o->name; o++)
		set_default(o, (char *)conf + o->offset, what);
	if (!section)
		return 0;
	for (size_t i = 0; i < section->entry_count; i++) {
		const struct pl_config_entry *e = &section->entries[i];
		const struct pl_option *o = options;
		while (o->name && strcmp(o->name, e->key) != 0)
			o++;
		if (!o->name)
			return unknown_option(options, e, file, what, error);
		/* Attributes and child elements share one key space, so
		 * <x count="1"><count>2</count></x> is a repeat too. */
		const struct pl_config_entry *first = NULL;
		for (size_t j = 0; j < i && !first; j++)
			if (strcmp(section->entries[j].key, e->key) == 0)
				first = &section->entries[j];
		void *slot = (char *)conf + o->offset;
		if (first && o->type != PL_OPT_LIST)
			return pl_error(error, -EINVAL,
					"%s:%d: %s %s is given twice (first at line %d)", file,
					e->line, what, e->key, first->line);
		/* A list's configured items replace its default, not extend it. */
		if (!first && o->type == PL_OPT_LIST)
			free_slot(o, slot);
		char *reason = NULL;
		if (parse_value(o, slot, e->value, &reason) != 0) {
			int rc = pl_error(error, -EINVAL, "%s:%d: %s %s: %s", file, e->line, what,
					  e->key, reason ? reason : "invalid value");
			free(reason);
			return rc;
		}
	}
	return 0;
}
