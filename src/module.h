/* The module loader: dlopens modules/<dir>/mod_<name>.so, checks the ABI
 * and the name, loads what each `requires` first, parses the module's
 * options from its <module> section, runs check() then load(); at shutdown
 * unloads in reverse order. Any failure stops start-up with a message that
 * names the module. */
#ifndef PL_MODULE_LOADER_H
#define PL_MODULE_LOADER_H

#include "config.h"
#include "parley/module.h"

/* Loads every <module> of config from dir. 0 or -errno with *error; on
 * error the modules loaded so far are unloaded again. */
int pl_modules_load_all(const struct pl_config *config, const char *dir, char **error);
/* For --check-config: opens each module and validates its options
 * without loading it. */
int pl_modules_check_all(const struct pl_config *config, const char *dir, char **error);
void pl_modules_unload_all(void);
size_t pl_modules_count(void);
const char *pl_modules_name_at(size_t index);

#endif
