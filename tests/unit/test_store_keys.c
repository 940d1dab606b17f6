/* Store key encoding: composite keys read back as written, byte order of
 * big-endian integers is numeric order (which is what makes archive and
 * queue scans come out in sequence), the NUL separator keeps one user's
 * keys apart from a longer name's, and a key that does not fit is flagged
 * instead of silently cut. */
#include "store/store.h"
#include "util.h"
#include "../tap.h"

#include <string.h>

static struct pl_store_key u64_key(uint64_t v)
{
	struct pl_store_key k;
	pl_store_key_init(&k);
	pl_store_key_u64(&k, v);
	return k;
}

static void test_round_trip(void)
{
	struct pl_store_key k;
	pl_store_key_init(&k);
	ok(k.len == 0 && !k.overflow, "a new key is empty");
	pl_store_key_str(&k, "alice@localhost");
	pl_store_key_u64(&k, 0x0102030405060708ull);
	pl_store_key_str(&k, "");
	pl_store_key_u64(&k, UINT64_MAX);
	is_int(k.len, 16 + 8 + 1 + 8, "string + NUL + 8 bytes + empty string + 8 bytes");
	ok(!k.overflow, "no overflow");

	const char *s;
	size_t s_len, at = 0, used;
	uint64_t v;
	used = pl_store_key_read_str(k.data + at, k.len - at, &s, &s_len);
	is_int(used, 16, "the string part is read back with its separator");
	ok(s_len == 15 && memcmp(s, "alice@localhost", 15) == 0, "the string is intact");
	at += used;
	used = pl_store_key_read_u64(k.data + at, k.len - at, &v);
	is_int(used, 8, "the integer is 8 bytes");
	ok(v == 0x0102030405060708ull, "the integer is intact");
	ok(k.data[16] == 1 && k.data[23] == 8, "integers are big-endian");
	at += used;
	used = pl_store_key_read_str(k.data + at, k.len - at, &s, &s_len);
	ok(used == 1 && s_len == 0, "an empty string is just its separator");
	at += used;
	used = pl_store_key_read_u64(k.data + at, k.len - at, &v);
	ok(used == 8 && v == UINT64_MAX, "UINT64_MAX reads back");
	is_int(at + used, k.len, "the whole key was consumed");

	const uint64_t samples[] = { 0, 1, 255, 256, 65535, 65536, 1ull << 32, (1ull << 32) + 1,
				     (1ull << 63) - 1, 1ull << 63, UINT64_MAX - 1, UINT64_MAX };
	bool all_back = true;
	for (size_t i = 0; i < PL_ARRAY_LEN(samples); i++) {
		struct pl_store_key one = u64_key(samples[i]);
		all_back = all_back && one.len == 8 &&
			   pl_store_key_read_u64(one.data, one.len, &v) == 8 && v == samples[i];
	}
	ok(all_back, "every sample u64 reads back unchanged");

	pl_store_key_init(&k);
	pl_store_key_u32(&k, 7);
	ok(k.len == 4 && k.data[0] == 0 && k.data[3] == 7, "u32 is 4 bytes big-endian");
	pl_store_key_init(&k);
	pl_store_key_u32(&k, 0xdeadbeef);
	ok(k.data[0] == 0xde && k.data[1] == 0xad && k.data[2] == 0xbe && k.data[3] == 0xef,
	   "u32 0xdeadbeef byte by byte");
}

static void test_order(void)
{
	const uint64_t ordered[] = { 0, 1, 255, 256, 65535, 1ull << 32, (1ull << 63) - 1, 1ull << 63,
				     UINT64_MAX };
	bool sorted = true;
	for (size_t i = 0; i + 1 < PL_ARRAY_LEN(ordered); i++) {
		struct pl_store_key a = u64_key(ordered[i]), b = u64_key(ordered[i + 1]);
		if (memcmp(a.data, b.data, 8) >= 0)
			sorted = false;
	}
	ok(sorted, "memcmp order of big-endian u64 keys is numeric order (1, 255, 256, 2^32, 2^63)");

	/* A little-endian encoding would put 256 before 1: check we are not that. */
	struct pl_store_key one = u64_key(1), big = u64_key(256);
	ok(memcmp(one.data, big.data, 8) < 0, "1 sorts before 256");

	bool u32_sorted = true;
	const uint32_t ordered32[] = { 0, 1, 255, 256, 65536, UINT32_MAX };
	for (size_t i = 0; i + 1 < PL_ARRAY_LEN(ordered32); i++) {
		struct pl_store_key a, b;
		pl_store_key_init(&a);
		pl_store_key_init(&b);
		pl_store_key_u32(&a, ordered32[i]);
		pl_store_key_u32(&b, ordered32[i + 1]);
		if (memcmp(a.data, b.data, 4) >= 0)
			u32_sorted = false;
	}
	ok(u32_sorted, "memcmp order of big-endian u32 keys is numeric order");

	struct pl_store_key a, b;
	pl_store_key_init(&a);
	pl_store_key_init(&b);
	pl_store_key_str(&a, "bob");
	pl_store_key_u64(&a, UINT64_MAX);
	pl_store_key_str(&b, "bobby");
	pl_store_key_u64(&b, 0);
	ok(memcmp(a.data, b.data, a.len < b.len ? a.len : b.len) < 0,
	   "the NUL separator keeps all of bob's keys before bobby's");
	struct pl_store_key prefix;
	pl_store_key_init(&prefix);
	pl_store_key_str(&prefix, "bob");
	ok(memcmp(b.data, prefix.data, prefix.len) != 0,
	   "bob's prefix (with its NUL) does not match bobby's keys");
}

static void test_overflow(void)
{
	struct pl_store_key k;
	char text[sizeof(k.data) + 8];
	memset(text, 'x', sizeof(text));

	text[sizeof(k.data) - 1] = '\0';
	pl_store_key_init(&k);
	pl_store_key_str(&k, text);
	ok(!k.overflow && k.len == sizeof(k.data), "a string filling the buffer exactly fits");
	pl_store_key_u32(&k, 1);
	ok(k.overflow, "one more part overflows");
	is_int(k.len, sizeof(k.data), "and the length is not advanced");

	text[sizeof(k.data) - 1] = 'x';
	text[sizeof(k.data)] = '\0';
	pl_store_key_init(&k);
	pl_store_key_str(&k, text);
	ok(k.overflow, "a string one byte too long sets the overflow flag");
	pl_store_key_u64(&k, 1);
	ok(k.overflow, "and it stays set");

	pl_store_key_init(&k);
	memset(text, 'y', sizeof(k.data) - 8);
	text[sizeof(k.data) - 9] = '\0';
	pl_store_key_str(&k, text);
	pl_store_key_u64(&k, 42);
	ok(!k.overflow && k.len == sizeof(k.data), "string + u64 filling the buffer fits");
	pl_store_key_init(&k);
	ok(k.len == 0 && !k.overflow, "init clears the overflow flag");
}

static void test_malformed(void)
{
	const char *s = NULL;
	size_t s_len = 0;
	uint64_t v = 0;
	uint8_t no_nul[3] = { 'a', 'b', 'c' };
	is_int(pl_store_key_read_str(no_nul, 3, &s, &s_len), 0, "a string without NUL is malformed");
	is_int(pl_store_key_read_str(no_nul, 0, &s, &s_len), 0, "an empty input has no string");
	is_int(pl_store_key_read_u64(no_nul, 3, &v), 0, "a short integer is malformed");
	is_int(pl_store_key_read_u64(no_nul, 0, &v), 0, "an empty input has no integer");
	uint8_t nul_late[4] = { 'a', 'b', 'c', 0 };
	is_int(pl_store_key_read_str(nul_late, 3, &s, &s_len), 0,
	       "the NUL past the given length is not read");
	uint8_t exact[8] = { 0, 0, 0, 0, 0, 0, 1, 0 };
	ok(pl_store_key_read_u64(exact, 8, &v) == 8 && v == 256, "exactly 8 bytes is enough");
}

int main(void)
{
	test_round_trip();
	test_order();
	test_overflow();
	test_malformed();
	return done_testing();
}
