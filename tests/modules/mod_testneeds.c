/* Test-only module that requires another one, to prove that the loader
 * loads dependencies first (and unloads them last). */
#include "parley/module.h"

static const char *const testneeds_requires[] = { "testopts", NULL };

static int testneeds_load(struct pl_module *m, const void *conf, char **error)
{
	pl_module_log(m, 2, "loaded after its dependency");
	return 0;
}

PL_MODULE(testneeds, .version = "test", .requires = testneeds_requires,
	  .load = testneeds_load);
