/* Composite store keys: strings end with a NUL separator and integers are
 * big-endian, so that LMDB's byte order is the order we mean (a user's
 * keys together, sequence numbers ascending). */
#include "store/store.h"

#include <string.h>

void pl_store_key_init(struct pl_store_key *k)
{
	k->len = 0;
	k->overflow = false;
}

static void append(struct pl_store_key *k, const void *data, size_t len)
{
	if (k->overflow || k->len + len > sizeof(k->data)) {
		k->overflow = true;
		return;
	}
	memcpy(k->data + k->len, data, len);
	k->len += len;
}

void pl_store_key_str(struct pl_store_key *k, const char *s)
{
	append(k, s, strlen(s) + 1);
}

void pl_store_key_u64(struct pl_store_key *k, uint64_t v)
{
	uint8_t be[8];
	for (int i = 7; i >= 0; i--, v >>= 8)
		be[i] = (uint8_t)v;
	append(k, be, 8);
}

void pl_store_key_u32(struct pl_store_key *k, uint32_t v)
{
	uint8_t be[4];
	for (int i = 3; i >= 0; i--, v >>= 8)
		be[i] = (uint8_t)v;
	append(k, be, 4);
}

size_t pl_store_key_read_str(const uint8_t *p, size_t len, const char **s, size_t *s_len)
{
	if (len == 0)
		return 0;
	const uint8_t *nul = memchr(p, 0, len);
	if (!nul)
		return 0;
	*s = (const char *)p;
	*s_len = (size_t)(nul - p);
	return *s_len + 1;
}

size_t pl_store_key_read_u64(const uint8_t *p, size_t len, uint64_t *v)
{
	if (len < 8)
		return 0;
	uint64_t value = 0;
	for (int i = 0; i < 8; i++)
		value = (value << 8) | p[i];
	*v = value;
	return 8;
}
