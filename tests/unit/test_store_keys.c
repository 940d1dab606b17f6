/* Store key encoding: round trips, byte order equal to numeric order for
 * big-endian integers, and the overflow flag. */
#include "store/store.h"
#include "util.h"
#include "../tap.h"

#include <string.h>

int main(void)
{
	struct pl_store_key k;
	pl_store_key_init(&k);
	pl_store_key_str(&k, "alice@localhost");
	pl_store_key_u64(&k, 0x0102030405060708ull);
	is_int(k.len, 16 + 8, "string + NUL + 8 bytes");
	const char *s;
	size_t s_len;
	size_t used = pl_store_key_read_str(k.data, k.len, &s, &s_len);
	is_int(used, 16, "the string part is read back with its separator");
	ok(s_len == 15 && memcmp(s, "alice@localhost", 15) == 0, "the string is intact");
	uint64_t v;
	is_int(pl_store_key_read_u64(k.data + used, k.len - used, &v), 8, "the integer is 8 bytes");
	ok(v == 0x0102030405060708ull, "the integer is intact");
	ok(k.data[16] == 1 && k.data[23] == 8, "integers are big-endian");

	const uint64_t ordered[] = { 0, 1, 255, 256, 65535, 1ull << 32, (1ull << 63) - 1, 1ull << 63,
				     UINT64_MAX };
	bool sorted = true;
	for (size_t i = 0; i + 1 < PL_ARRAY_LEN(ordered); i++) {
		struct pl_store_key a, b;
		pl_store_key_init(&a);
		pl_store_key_init(&b);
		pl_store_key_u64(&a, ordered[i]);
		pl_store_key_u64(&b, ordered[i + 1]);
		if (memcmp(a.data, b.data, 8) >= 0)
			sorted = false;
	}
	ok(sorted, "byte order of big-endian u64 keys is numeric order");

	struct pl_store_key a, b;
	pl_store_key_init(&a);
	pl_store_key_init(&b);
	pl_store_key_str(&a, "bob");
	pl_store_key_u64(&a, 999);
	pl_store_key_str(&b, "bobby");
	pl_store_key_u64(&b, 1);
	ok(memcmp(a.data, b.data, a.len < b.len ? a.len : b.len) < 0,
	   "the NUL separator keeps one user's keys before a longer name's");

	pl_store_key_init(&k);
	pl_store_key_u32(&k, 7);
	ok(k.len == 4 && k.data[3] == 7 && k.data[0] == 0, "u32 is 4 bytes big-endian");

	char big[2000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	pl_store_key_init(&k);
	pl_store_key_str(&k, big);
	ok(k.overflow, "a key that does not fit sets the overflow flag");
	pl_store_key_u64(&k, 1);
	ok(k.overflow, "and it stays set");

	uint8_t no_nul[3] = { 'a', 'b', 'c' };
	is_int(pl_store_key_read_str(no_nul, 3, &s, &s_len), 0, "a string without NUL is malformed");
	is_int(pl_store_key_read_u64(no_nul, 3, &v), 0, "a short integer is malformed");
	return done_testing();
}
