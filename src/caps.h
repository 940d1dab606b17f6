/* XEP-0115 entity capabilities hashes (see caps.c). */
#ifndef PL_CAPS_H
#define PL_CAPS_H

#include "xml/xnode.h"

/* The SHA-1 "ver" of a disco#info <query/> (caller frees). */
char *pl_caps_hash(const struct pl_xnode *query);

#endif
