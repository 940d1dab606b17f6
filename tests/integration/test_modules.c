/* The module loader with a real parleyd and the test-only modules in
 * tests/modules: typed options reach the module, every kind of bad option
 * and every load failure stops start-up with a message naming the module
 * and the line, and dependencies load first. */
#include "harness.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *module_config(const struct ph_server *s, const char *modules_xml)
{
	const char *format =
		"<parley>\n"
		"  <log level=\"debug\"/>\n"
		"  <storage path=\"%s\" durability=\"none\"/>\n"
		"  <control socket=\"%s\"/>\n"
		"  <host name=\"localhost\"/>\n"
		"  <c2s port=\"0\" tls-port=\"0\"/>\n"
		"  <modules path=\"%s/tests/modules/.libs\">\n"
		"%s"
		"  </modules>\n"
		"</parley>\n";
	size_t n = strlen(format) + strlen(s->storage_path) + strlen(s->socket_path) +
		   strlen(ph_builddir()) + strlen(modules_xml) + 1;
	char *text = malloc(n);
	snprintf(text, n, format, s->storage_path, s->socket_path, ph_builddir(), modules_xml);
	return text;
}

/* Starts parleyd on the given <module> lines; returns its exit status if
 * it refused to start (stderr in *err), or 0 after a clean run and stop
 * (log in *err). */
static int run_with(const char *modules_xml, char **err)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = module_config(&s, modules_xml);
	ph_server_write_config(&s, config);
	free(config);
	int status;
	if (ph_server_start(&s, NULL) == 0) {
		status = ph_server_stop(&s);
		*err = ph_server_log(&s);
	} else {
		*err = ph_server_log(&s);
		status = -1;
	}
	ph_server_cleanup(&s);
	return status;
}

int main(void)
{
	char *log = NULL;
	int status = run_with("    <module name=\"testopts\" count=\"42\" interval=\"90s\"\n"
			      "            quota=\"2MiB\" mode=\"fast\" label=\"hello\">\n"
			      "      <tag>a</tag>\n      <tag>b</tag>\n"
			      "    </module>\n", &log);
	is_int(status, 0, "a module with valid options of every type loads and unloads");
	has_str(log, "count=42 interval=90000ms quota=2097152 mode=fast tags=2 label=hello",
		"the module received its typed options");
	free(log);

	status = run_with("    <module name=\"testopts\"/>\n", &log);
	has_str(log, "count=10 interval=300000ms quota=1048576 mode=safe tags=0 label=(none)",
		"absent options take their defaults");
	free(log);

	status = run_with("    <module name=\"testopts\" colour=\"red\"/>\n", &log);
	ok(status != 0, "an unknown module option stops start-up");
	has_str(log, "has no option 'colour'", "the error names the unknown option");
	has_str(log, "parley.xml:8", "and its line");
	has_str(log, "known: flag, count", "and lists the known options");
	free(log);

	status = run_with("    <module name=\"testopts\" count=\"500\"/>\n", &log);
	ok(status != 0, "an out-of-range option stops start-up");
	has_str(log, "count", "the error names the option");
	has_str(log, "100", "and the limit");
	free(log);

	status = run_with("    <module name=\"testopts\" flag=\"perhaps\"/>\n", &log);
	ok(status != 0, "an ill-typed boolean stops start-up");
	has_str(log, "flag", "the error names the option");
	free(log);

	status = run_with("    <module name=\"testopts\" mode=\"fast\" count=\"60\"/>\n", &log);
	ok(status != 0, "a failing cross-option check stops start-up");
	has_str(log, "mode fast allows at most 50", "the module's reason is shown");
	free(log);

	status = run_with("    <module name=\"testopts\" fail-load=\"yes\"/>\n", &log);
	ok(status != 0, "a module whose load fails stops start-up");
	has_str(log, "module 'testopts' failed to load: told to fail", "with the module's reason");
	free(log);

	status = run_with("    <module name=\"testbad_abi\"/>\n", &log);
	ok(status != 0, "a module built for another ABI is refused");
	has_str(log, "ABI", "the error talks about the ABI");
	free(log);

	status = run_with("    <module name=\"nosuchthing\"/>\n", &log);
	ok(status != 0, "a missing module stops start-up");
	has_str(log, "module 'nosuchthing'", "the error names the module");
	free(log);

	status = run_with("    <module name=\"testneeds\"/>\n", &log);
	is_int(status, 0, "a module with a dependency loads");
	char *dependency = strstr(log, "loaded testopts");
	char *dependent = strstr(log, "loaded testneeds");
	ok(dependency && dependent && dependency < dependent,
	   "its dependency (not listed in the config) loaded first");
	char *unload_dependent = strstr(log, "unloaded testneeds");
	char *unload_dependency = strstr(log, "unloaded testopts");
	ok(unload_dependent && unload_dependency && unload_dependent < unload_dependency,
	   "and unloads last");
	free(log);
	return done_testing();
}
