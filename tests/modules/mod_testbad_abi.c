/* Test-only module built for another ABI: the loader must refuse it with a
 * message that says to rebuild. */
#include "parley/module.h"

__attribute__((visibility("default"))) const struct pl_module_def pl_module_def = {
	.abi = PL_MODULE_ABI + 41,
	.name = "testbad_abi",
};
