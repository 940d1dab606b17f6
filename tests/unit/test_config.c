/* Configuration loading and typed options: the embedded default and the
 * example file validate, every class of bad file is refused with file:line
 * and a message that says what was expected (and libxml2 itself prints
 * nothing), the tree flattens into the sections the core reads, and each
 * option type parses, range-checks and reports errors the same way. */
#include "config.h"
#include "util.h"
#include "../tap.h"

#include <errno.h>
#include <fcntl.h>
#include <libxml/parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct sample {
	bool flag;
	int64_t count;
	int64_t timeout_ms;
	uint64_t quota;
	char *label;
	int mode;
	struct pl_string_list tags;
	struct pl_string_list peers;
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
	{ "peer", PL_OPT_LIST, "localhost", 0, 0, NULL, offsetof(struct sample, peers), NULL },
	{ "admin", PL_OPT_JID, NULL, 0, 0, NULL, offsetof(struct sample, admin), NULL },
	{ .name = NULL }
};

static const struct pl_option bad_default_options[] = {
	{ "count", PL_OPT_INT, "many", 0, 0, NULL, 0, NULL },
	{ .name = NULL }
};

static int load(const char *xml, struct pl_config **config, char **error)
{
	*config = NULL;
	free(*error);
	*error = NULL;
	return pl_config_load_memory(xml, strlen(xml), "test.xml", config, error);
}

/* Applies the sample table to <module name="sample" ATTRS>BODY</module>,
 * which sits on line 4 of the generated file. */
static int apply(const char *attributes, const char *body, struct sample *out, char **error)
{
	char *xml = pl_asprintf("<parley>\n<host name=\"localhost\"/>\n<modules>\n"
				"<module name=\"sample\" %s>%s</module>\n</modules>\n</parley>\n",
				attributes, body);
	struct pl_config *config;
	memset(out, 0xa5, sizeof(*out)); /* apply must not trust what was there */
	int rc = load(xml, &config, error);
	free(xml);
	if (rc) {
		memset(out, 0, sizeof(*out));
		return rc;
	}
	free(*error);
	*error = NULL;
	rc = pl_options_apply(sample_options, out, pl_config_find(config, "module", "sample"),
			      config->path, "<module name=\"sample\">", error);
	pl_config_free(config);
	return rc;
}

/* Runs a load with stderr sent to a file; returns how many bytes libxml2
 * (or anything else) wrote there. */
static long stderr_bytes_during(const char *xml, char **error)
{
	FILE *capture = tmpfile();
	if (!capture)
		return -1;
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(fileno(capture), STDERR_FILENO);
	struct pl_config *config;
	load(xml, &config, error);
	pl_config_free(config);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	long size = ftell(capture) >= 0 ? (fseek(capture, 0, SEEK_END), ftell(capture)) : -1;
	fclose(capture);
	return size;
}

static void test_files(void)
{
	char *error = NULL;
	struct pl_config *config;
	is_int(load(pl_config_embedded_default, &config, &error), 0, "the embedded default loads");
	ok(config && pl_config_find(config, "host", "localhost"), "it has the host localhost");
	ok(config && pl_config_find(config, "module", "version"), "it loads mod_version");
	const struct pl_config_section *storage = config ? pl_config_find(config, "storage", NULL)
							 : NULL;
	ok(storage && storage->entry_count >= 1 && strcmp(storage->entries[0].key, "path") == 0 &&
		   strcmp(storage->entries[0].value, "./var/parley") == 0,
	   "it stores under ./var/parley");
	pl_config_free(config);

	const char *srcdir = getenv("PARLEY_SRCDIR");
	char *example = pl_asprintf("%s/etc/parley.xml", srcdir ? srcdir : ".");
	is_int(pl_config_load_file(example, &config, &error), 0, "etc/parley.xml loads");
	if (error)
		diag("%s", error);
	const struct pl_config_section *host = config ? pl_config_find(config, "host", NULL) : NULL;
	ok(host && host->child_count == 1 && strcmp(host->children[0].kind, "certificate") == 0 &&
		   host->children[0].entry_count == 2,
	   "the host's certificate is a nested section with file and key");
	pl_config_free(config);
	free(example);

	is_int(pl_config_load_file("/nonexistent/parley.xml", &config, &error), -ENOENT,
	       "a missing file is -ENOENT");
	has_str(error, "/nonexistent/parley.xml", "the error names the file");
	ok(config == NULL, "and there is no configuration");
	ok(pl_config_load_file("/", &config, &error) != 0, "a directory is refused");
	has_str(error, "cannot read /", "saying it cannot be read");
	free(error);
}

static void test_refusals(void)
{
	char *error = NULL;
	struct pl_config *config;
	ok(load("<parley>\n<host name=\"a\">\n</parley>", &config, &error) != 0,
	   "malformed XML is refused");
	has_str(error, "test.xml:3: ", "with the file and line");
	ok(load("<parley>\n<host name=\"a\"/>\n<colour/>\n</parley>", &config, &error) != 0,
	   "an unknown element is refused");
	has_str(error, "test.xml:3: <parley> has no element <colour> (known: log, storage",
		"with its line and the known elements");
	ok(load("<parley>\n<host name=\"a\"/>\n<storage mapsize=\"1\"/>\n</parley>", &config,
		&error) != 0,
	   "an unknown attribute is refused");
	has_str(error, "test.xml:3: <storage> has no attribute 'mapsize' (known: path, map-size",
		"naming it and the known ones");
	ok(load("<parley>\n<host name=\"a\"/>\n<storage durability=\"maybe\"/>\n</parley>", &config,
		&error) != 0,
	   "a bad enumerated value is refused by the schema");
	has_str(error, "test.xml:3: <storage> durability: expected one of: fsync, none; got \"maybe\"",
		"with its line and the choices");
	ok(load("<parley>\n<host name=\"a\"/>\n<storage map-size=\"lots\"/>\n</parley>", &config,
		&error) != 0,
	   "a size that is not one is refused");
	has_str(error, "expected a size such as", "saying what a size looks like");
	ok(load("<parley>\n<log/>\n<host name=\"a\"/>\n<log/>\n</parley>", &config, &error) != 0,
	   "a repeated section is refused");
	has_str(error, "test.xml:4: <log> may appear only once (first at line 2)", "saying where");
	ok(load("<parley/>", &config, &error) != 0, "a configuration without a host is refused");
	has_str(error, "needs at least one <host>", "saying what is missing");
	ok(load("<parley>\n<host name=\"a\"/>\n<modules><module name=\"x\"><opt><sub/></opt>"
		"</module></modules>\n</parley>",
		&config, &error) != 0,
	   "a module option with elements inside is refused");
	has_str(error, "test.xml:3: <opt> has no element <sub>", "saying which");

	ok(load("<parley>\n<host name=\"a\"/>\n<modules>\n<module name=\"x\"/>\n"
		"<module name=\"x\" opt=\"1\"/>\n</modules>\n</parley>",
		&config, &error) != 0,
	   "a module listed twice is refused");
	has_str(error, "test.xml:5: <module name=\"x\"> is listed twice (first at line 4)",
		"saying where");

	ok(load("<?xml version=\"1.0\"?>\n<!DOCTYPE parley [<!ENTITY x \"y\">]>\n"
		"<parley><host name=\"a\"/></parley>",
		&config, &error) != 0,
	   "a DOCTYPE is refused");
	has_str(error, "test.xml:2: DOCTYPE not allowed", "with its line");
	ok(load("<!DOCTYPE parley SYSTEM \"file:///etc/passwd\">\n<parley><host name=\"a\"/></parley>",
		&config, &error) != 0,
	   "an external DTD is refused too");
	ok(load("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n"
		"<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
		"<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n]>\n"
		"<parley><host name=\"&lol3;\"/></parley>",
		&config, &error) != 0,
	   "entity expansion (billion laughs) is refused");
	has_str(error, "DOCTYPE", "as a DOCTYPE");
	ok(load("<parley><host name=\"&undeclared;\"/></parley>", &config, &error) != 0,
	   "an undeclared entity is refused");

	is_int(stderr_bytes_during("<parley>\n<host name=\"a\">\n", &error), 0,
	       "libxml2 prints nothing for malformed XML");
	is_int(stderr_bytes_during("<parley>\n<host/>\n<storage durability=\"x\"/></parley>",
				   &error),
	       0, "nor for a schema error");
	free(error);
}

static void test_sections(void)
{
	char *error = NULL;
	struct pl_config *config;
	const char *xml = "<parley>\n"
			  "<host name=\"one.example\"/>\n"
			  "<storage path=\"/srv/p\" durability=\"none\"/>\n"
			  "<host name=\"two.example\"><certificate file=\"c.pem\" key=\"k.pem\"/></host>\n"
			  "<modules path=\"/opt/mods\">\n"
			  "<module name=\"alpha\" colour=\"red\">\n"
			  "  <item>\n    first\n  </item>\n"
			  "  <item>second</item>\n"
			  "</module>\n"
			  "<module name=\"beta\"/>\n"
			  "</modules>\n"
			  "</parley>\n";
	is_int(load(xml, &config, &error), 0, "a fuller configuration loads");
	if (!config)
		return;
	is_str(config->path, "test.xml", "it keeps its label");
	const struct pl_config_section *first = pl_config_next(config, "host", NULL);
	const struct pl_config_section *second = pl_config_next(config, "host", first);
	ok(first && second && !pl_config_next(config, "host", second), "two hosts, in order");
	is_str(first ? first->name : NULL, "one.example", "the first by name");
	ok(second && second->line == 4 && second->child_count == 1 &&
		   second->children[0].entry_count == 2 &&
		   strcmp(second->children[0].entries[1].key, "key") == 0,
	   "the second with its certificate");
	ok(pl_config_find(config, "host", "two.example") == second, "pl_config_find by name");
	ok(!pl_config_find(config, "host", "three.example"), "and NULL for another name");
	const struct pl_config_section *storage = pl_config_find(config, "storage", NULL);
	ok(storage && storage->entry_count == 2 && strcmp(storage->entries[1].key, "durability") == 0 &&
		   storage->entries[1].line == 3,
	   "attributes are entries in document order with the line");
	const struct pl_config_section *modules = pl_config_find(config, "modules", NULL);
	ok(modules && !modules->name && modules->entry_count == 1 &&
		   strcmp(modules->entries[0].value, "/opt/mods") == 0,
	   "<modules> is a section with its path");
	const struct pl_config_section *alpha = pl_config_find(config, "module", "alpha");
	ok(alpha && alpha->entry_count == 3, "a <module> is a top-level section of kind module");
	if (alpha && alpha->entry_count == 3) {
		is_str(alpha->entries[0].key, "colour", "attributes first");
		is_str(alpha->entries[1].value, "first", "element text without its layout");
		is_int(alpha->entries[2].line, 10, "and child elements keep their own line");
	}
	ok(pl_config_next(config, "module", alpha) == pl_config_find(config, "module", "beta"),
	   "modules in file order");
	ok(!pl_config_find(config, "c2s", NULL), "an absent section is NULL");
	pl_config_free(config);
	pl_config_free(NULL);
	free(error);
}

static void test_options(void)
{
	char *error = NULL;
	struct sample s;
	is_int(apply("", "", &s, &error), 0, "no options: defaults");
	ok(!s.flag && s.count == 10 && s.timeout_ms == 30000 && s.quota == 1048576 &&
		   strcmp(s.label, "none") == 0 && s.mode == 1 && s.tags.count == 0 &&
		   s.tags.items == NULL && !s.admin,
	   "every default is applied, empty ones zeroed");
	ok(s.peers.count == 1 && strcmp(s.peers.items[0], "localhost") == 0,
	   "a list default is its one item");
	pl_options_free(sample_options, &s);

	memset(&s, 0xa5, sizeof(s));
	is_int(pl_options_apply(sample_options, &s, NULL, "x.xml", "<x>", &error), 0,
	       "a NULL section means defaults only");
	ok(s.count == 10 && s.admin == NULL, "over whatever the struct held");
	pl_options_free(sample_options, &s);

	is_int(apply("flag=\"yes\" count=\"42\" timeout=\"5m\" quota=\"10MiB\" label=\"x y\" "
		     "mode=\"fast\" admin=\"Admin@LocalHost\"",
		     "<tag>a</tag><peer>p1</peer><tag>b</tag><peer>p2</peer>", &s, &error),
	       0, "every type parses");
	ok(s.flag && s.count == 42 && s.timeout_ms == 300000 && s.quota == 10485760 &&
		   strcmp(s.label, "x y") == 0 && s.mode == 0,
	   "to the right values");
	ok(s.tags.count == 2 && strcmp(s.tags.items[0], "a") == 0 &&
		   strcmp(s.tags.items[1], "b") == 0,
	   "a list collects every occurrence in order");
	ok(s.peers.count == 2 && strcmp(s.peers.items[0], "p1") == 0,
	   "and configured items replace the default");
	is_str(s.admin, "admin@localhost", "a JID is normalised");
	pl_options_free(sample_options, &s);
	ok(s.label == NULL && s.admin == NULL && s.tags.items == NULL && s.tags.count == 0,
	   "pl_options_free clears what it frees");

	is_int(apply("timeout=\"1500ms\" quota=\"1MB\"", "<count>+5</count><flag>on</flag>", &s,
		     &error),
	       0, "more units, and options as child elements");
	ok(s.timeout_ms == 1500 && s.quota == 1000000, "milliseconds and decimal megabytes");
	ok(s.count == 5 && s.flag, "child element values parse like attributes");
	pl_options_free(sample_options, &s);
	ok(apply("count=\"0\"", "", &s, &error) != 0, "zero is below this minimum");
	has_str(error, "0 is below the minimum 1", "saying so");
	pl_options_free(sample_options, &s);

	ok(apply("colour=\"red\"", "", &s, &error) != 0, "an unknown option is an error");
	has_str(error, "test.xml:4: <module name=\"sample\"> has no option 'colour' "
		       "(known: flag, count, timeout, quota, label, mode, tag, peer, admin)",
		"with the line and the known ones");
	pl_options_free(sample_options, &s);
	ok(apply("count=\"101\"", "", &s, &error) != 0, "above the maximum is an error");
	has_str(error, "test.xml:4: <module name=\"sample\"> count: 101 is above the maximum 100",
		"saying so");
	pl_options_free(sample_options, &s);
	ok(apply("quota=\"1KiB\"", "", &s, &error) != 0, "below the minimum is an error");
	has_str(error, "1KiB is below the minimum 64KiB", "in the option's units");
	pl_options_free(sample_options, &s);
	ok(apply("timeout=\"2h\"", "", &s, &error) != 0, "a duration above the maximum");
	has_str(error, "2h is above the maximum 1h", "in hours");
	pl_options_free(sample_options, &s);
	ok(apply("count=\"12\"", "\n<count>13</count>", &s, &error) != 0,
	   "a scalar given as attribute and element is an error");
	has_str(error, "test.xml:5: <module name=\"sample\"> count is given twice (first at line 4)",
		"saying where");
	pl_options_free(sample_options, &s);
	ok(apply("", "<label>a</label><label>b</label>", &s, &error) != 0,
	   "a string given twice is an error");
	pl_options_free(sample_options, &s);
	ok(apply("flag=\"perhaps\"", "", &s, &error) != 0, "a bad boolean is an error");
	has_str(error, "expected true or false", "saying what is expected");
	pl_options_free(sample_options, &s);
	ok(apply("mode=\"turbo\"", "", &s, &error) != 0, "a bad enum is an error");
	has_str(error, "mode: expected one of: fast, safe; got \"turbo\"", "listing the choices");
	pl_options_free(sample_options, &s);
	ok(apply("quota=\"99999999999999999999GiB\"", "", &s, &error) != 0,
	   "a number past 64 bits is an error");
	has_str(error, "too large", "saying so");
	pl_options_free(sample_options, &s);
	ok(apply("quota=\"17179869184GiB\"", "", &s, &error) != 0,
	   "a product past 64 bits is an error");
	pl_options_free(sample_options, &s);
	ok(apply("timeout=\"5 fortnights\"", "", &s, &error) != 0, "an unknown unit is an error");
	has_str(error, "expected a duration", "saying what is expected");
	pl_options_free(sample_options, &s);
	ok(apply("count=\"12abc\"", "", &s, &error) != 0, "trailing garbage is an error");
	pl_options_free(sample_options, &s);
	ok(apply("admin=\"a b\"", "", &s, &error) != 0, "a JID with a space is an error");
	has_str(error, "expected a JID", "saying so");
	pl_options_free(sample_options, &s);
	ok(apply("admin=\"\"", "", &s, &error) != 0, "an empty JID is an error");
	pl_options_free(sample_options, &s);

	pid_t child = fork();
	if (child == 0) {
		int devnull = open("/dev/null", 0);
		dup2(devnull, STDERR_FILENO);
		int64_t slot;
		pl_options_apply(bad_default_options, &slot, NULL, "x.xml", "<x>", NULL);
		_exit(0);
	}
	int status = 0;
	waitpid(child, &status, 0);
	ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
	   "a default that does not parse is a bug: pl_fatal");
	free(error);
}

static void test_parsers(void)
{
	int64_t number = 0;
	uint64_t size = 0;
	bool flag = false;
	char *error = NULL;
	ok(pl_parse_int("-5", &number, NULL) == 0 && number == -5, "negative integers");
	ok(pl_parse_int("+7", &number, NULL) == 0 && number == 7, "an explicit plus");
	ok(pl_parse_int("-9223372036854775808", &number, NULL) == 0 && number == INT64_MIN,
	   "INT64_MIN");
	ok(pl_parse_int("9223372036854775808", &number, &error) != 0, "int64 overflow detected");
	has_str(error, "too large", "saying so");
	free(error);
	error = NULL;
	ok(pl_parse_int("", &number, NULL) != 0 && pl_parse_int("-", &number, NULL) != 0 &&
		   pl_parse_int("1.5", &number, NULL) != 0,
	   "empty, bare sign and decimals are refused");
	ok(pl_parse_bool("on", &flag, NULL) == 0 && flag && pl_parse_bool("0", &flag, NULL) == 0 &&
		   !flag,
	   "booleans: on and 0");
	ok(pl_parse_size("2 GB", &size, NULL) == 0 && size == 2000000000ull, "decimal units");
	ok(pl_parse_size("64M", &size, NULL) == 0 && size == 64ull << 20, "M is MiB");
	ok(pl_parse_size("5k", &size, NULL) == 0 && size == 5120, "k is KiB");
	ok(pl_parse_size("1TiB", &size, NULL) == 0 && size == 1ull << 40, "TiB");
	ok(pl_parse_size("3TB", &size, NULL) == 0 && size == 3000000000000ull, "TB");
	ok(pl_parse_size("512", &size, NULL) == 0 && size == 512, "bare bytes");
	ok(pl_parse_size("-1", &size, NULL) != 0 && pl_parse_size("1 XB", &size, NULL) != 0,
	   "negative sizes and unknown units are refused");
	ok(pl_parse_duration_ms("90", &number, NULL) == 0 && number == 90000,
	   "a bare duration is seconds");
	ok(pl_parse_duration_ms("250ms", &number, NULL) == 0 && number == 250, "milliseconds");
	ok(pl_parse_duration_ms("1d", &number, NULL) == 0 && number == 86400000, "days");
	ok(pl_parse_duration_ms("2h", &number, NULL) == 0 && number == 7200000, "hours");
	ok(pl_parse_duration_ms("9999999999999999d", &number, &error) != 0,
	   "duration overflow detected");
	has_str(error, "too long", "saying so");
	free(error);
}

int main(void)
{
	test_files();
	test_refusals();
	test_sections();
	test_options();
	test_parsers();
	xmlCleanupParser();
	return done_testing();
}
