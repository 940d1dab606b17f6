/* Configuration loading and typed options: the embedded default and the
 * example file validate, every class of bad file gives file:line, and each
 * option type parses, range-checks and reports errors the same way. */
#include "config.h"
#include "util.h"
#include "../tap.h"

#include <libxml/parser.h>
#include <stdlib.h>
#include <string.h>

struct sample {
	bool flag;
	int64_t count;
	int64_t timeout_ms;
	uint64_t quota;
	char *label;
	int mode;
	struct pl_string_list tags;
	char *admin;
};

static const char *const modes[] = { "fast", "safe", NULL };

static const struct pl_option sample_options[] = {
	{ "flag", PL_OPT_BOOL, "false", 0, 0, NULL, offsetof(struct sample, flag), NULL },
	{ "count", PL_OPT_INT, "10", 1, 100, NULL, offsetof(struct sample, count), NULL },
	{ "timeout", PL_OPT_DURATION, "30s", 1000, 3600000, NULL,
	  offsetof(struct sample, timeout_ms), NULL },
	{ "quota", PL_OPT_SIZE, "1MiB", 65536, INT64_MAX, NULL, offsetof(struct sample, quota),
	  NULL },
	{ "label", PL_OPT_STRING, "none", 0, 0, NULL, offsetof(struct sample, label), NULL },
	{ "mode", PL_OPT_ENUM, "safe", 0, 0, modes, offsetof(struct sample, mode), NULL },
	{ "tag", PL_OPT_LIST, NULL, 0, 0, NULL, offsetof(struct sample, tags), NULL },
	{ "admin", PL_OPT_JID, NULL, 0, 0, NULL, offsetof(struct sample, admin), NULL },
	{ NULL }
};

static int load(const char *xml, struct pl_config **config, char **error)
{
	*config = NULL;
	free(*error);
	*error = NULL;
	return pl_config_load_memory(xml, strlen(xml), "test.xml", config, error);
}

/* Applies the sample table to <module name="sample" ATTRS>BODY</module>. */
static int apply(const char *attributes, const char *body, struct sample *out, char **error)
{
	char *xml = pl_asprintf("<parley>\n<host name=\"localhost\"/>\n<modules>\n"
				"<module name=\"sample\" %s>%s</module>\n</modules>\n</parley>\n",
				attributes, body);
	struct pl_config *config;
	memset(out, 0, sizeof(*out));
	int rc = load(xml, &config, error);
	free(xml);
	if (rc)
		return rc;
	rc = pl_options_apply(sample_options, out, pl_config_find(config, "module", "sample"),
			      config->path, "<module name=\"sample\">", error);
	pl_config_free(config);
	return rc;
}

int main(void)
{
	char *error = NULL;
	struct pl_config *config;
	is_int(load(pl_config_embedded_default, &config, &error), 0, "the embedded default loads");
	ok(config && pl_config_find(config, "host", "localhost"), "it has the host localhost");
	ok(config && pl_config_find(config, "module", "version"), "it loads mod_version");
	pl_config_free(config);

	const char *srcdir = getenv("PARLEY_SRCDIR");
	char *example = pl_asprintf("%s/etc/parley.xml", srcdir ? srcdir : ".");
	is_int(pl_config_load_file(example, &config, &error), 0, "etc/parley.xml loads");
	const struct pl_config_section *host = config ? pl_config_find(config, "host", NULL) : NULL;
	ok(host && host->child_count == 1 && strcmp(host->children[0].kind, "certificate") == 0,
	   "the host's certificate is a nested section");
	pl_config_free(config);
	free(example);

	ok(load("<parley>\n<host name=\"a\">\n</parley>", &config, &error) != 0,
	   "malformed XML is refused");
	has_str(error, "test.xml:3", "with the file and line");
	ok(load("<parley>\n<host name=\"a\"/>\n<colour/>\n</parley>", &config, &error) != 0,
	   "an unknown element is refused");
	has_str(error, "test.xml:3", "with its line");
	ok(load("<parley>\n<host name=\"a\"/>\n<storage durability=\"maybe\"/>\n</parley>", &config,
		&error) != 0,
	   "a bad enumerated value is refused by the schema");
	has_str(error, "test.xml:3", "with its line");
	ok(load("<parley/>", &config, &error) != 0, "a configuration without a host is refused");
	ok(load("<!DOCTYPE parley [<!ENTITY x \"y\">]>\n<parley><host name=\"a\"/></parley>",
		&config, &error) != 0,
	   "a DOCTYPE is refused");
	has_str(error, "DOCTYPE", "and the error says so");
	ok(load("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n"
		"<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
		"<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n]>\n"
		"<parley><host name=\"&lol3;\"/></parley>",
		&config, &error) != 0,
	   "entity expansion (billion laughs) is refused");
	ok(pl_config_load_file("/nonexistent/parley.xml", &config, &error) != 0,
	   "a missing file is refused");
	has_str(error, "/nonexistent/parley.xml", "the error names the file");

	struct sample s;
	is_int(apply("", "", &s, &error), 0, "no options: defaults");
	ok(!s.flag && s.count == 10 && s.timeout_ms == 30000 && s.quota == 1048576 &&
		   strcmp(s.label, "none") == 0 && s.mode == 1 && s.tags.count == 0 && !s.admin,
	   "every default is applied");
	pl_options_free(sample_options, &s);

	is_int(apply("flag=\"yes\" count=\"42\" timeout=\"5m\" quota=\"10MiB\" label=\"x y\" "
		     "mode=\"fast\" admin=\"admin@localhost\"",
		     "<tag>a</tag><tag>b</tag>", &s, &error),
	       0, "every type parses");
	ok(s.flag && s.count == 42 && s.timeout_ms == 300000 && s.quota == 10485760 &&
		   strcmp(s.label, "x y") == 0 && s.mode == 0 && s.tags.count == 2 &&
		   strcmp(s.tags.items[1], "b") == 0 && strcmp(s.admin, "admin@localhost") == 0,
	   "to the right values");
	pl_options_free(sample_options, &s);
	ok(s.label == NULL && s.tags.items == NULL, "pl_options_free clears what it frees");

	is_int(apply("timeout=\"1500ms\" quota=\"1MB\"", "", &s, &error), 0, "more units");
	ok(s.timeout_ms == 1500 && s.quota == 1000000, "milliseconds and decimal megabytes");
	pl_options_free(sample_options, &s);

	ok(apply("colour=\"red\"", "", &s, &error) != 0, "an unknown option is an error");
	has_str(error, "has no option 'colour' (known: flag, count, timeout", "listing known ones");
	has_str(error, "test.xml:4", "with the line");
	pl_options_free(sample_options, &s);
	ok(apply("count=\"101\"", "", &s, &error) != 0, "above the maximum is an error");
	has_str(error, "101 is above the maximum 100", "saying so");
	pl_options_free(sample_options, &s);
	ok(apply("quota=\"1KiB\"", "", &s, &error) != 0, "below the minimum is an error");
	has_str(error, "1KiB is below the minimum 64KiB", "in the option's units");
	pl_options_free(sample_options, &s);
	ok(apply("count=\"12\"", "<count>13</count>", &s, &error) != 0, "a repeated scalar is an error");
	has_str(error, "given twice", "saying so");
	pl_options_free(sample_options, &s);
	ok(apply("flag=\"perhaps\"", "", &s, &error) != 0, "a bad boolean is an error");
	has_str(error, "expected true or false", "saying what is expected");
	pl_options_free(sample_options, &s);
	ok(apply("mode=\"turbo\"", "", &s, &error) != 0, "a bad enum is an error");
	has_str(error, "expected one of: fast, safe", "listing the choices");
	pl_options_free(sample_options, &s);
	ok(apply("quota=\"99999999999999999999GiB\"", "", &s, &error) != 0, "overflow is an error");
	pl_options_free(sample_options, &s);
	ok(apply("timeout=\"5 fortnights\"", "", &s, &error) != 0, "an unknown unit is an error");
	has_str(error, "expected a duration", "saying what is expected");
	pl_options_free(sample_options, &s);
	ok(apply("admin=\"a b\"", "", &s, &error) != 0, "a JID with a space is an error");
	pl_options_free(sample_options, &s);

	int64_t number;
	ok(pl_parse_int("-5", &number, NULL) == 0 && number == -5, "negative integers");
	ok(pl_parse_int("9223372036854775808", &number, NULL) != 0, "int64 overflow detected");
	uint64_t size;
	ok(pl_parse_size("2 GB", &size, NULL) == 0 && size == 2000000000ull, "decimal units");
	free(error);
	xmlCleanupParser();
	return done_testing();
}
