/* JID parsing and normalisation against RFC 7622's examples (section
 * 3.5), its invalid cases, length limits, UTF-8 and the normal forms that
 * routing depends on. */
#include "jid.h"
#include "../tap.h"

#include <stdlib.h>
#include <string.h>

static void valid(const char *text, const char *full, const char *bare)
{
	struct pl_jid jid;
	enum pl_jid_error e = pl_jid_parse(text, &jid);
	if (!ok(e == PL_JID_OK, "valid: %s", text)) {
		diag("error: %s", pl_jid_strerror(e));
		return;
	}
	is_str(jid.full, full, "  full form of %s", text);
	is_str(jid.bare, bare, "  bare form of %s", text);
	pl_jid_free(&jid);
}

static void invalid(const char *text, enum pl_jid_error expected, const char *why)
{
	struct pl_jid jid;
	enum pl_jid_error e = pl_jid_parse(text, &jid);
	is_int(e, expected, "invalid (%s)", why);
	ok(jid.full == NULL && jid.storage == NULL, "  nothing allocated for an invalid JID");
	pl_jid_free(&jid);
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

int main(void)
{
	/* RFC 7622 section 3.5.1: valid examples. */
	valid("juliet@example.com", "juliet@example.com", "juliet@example.com");
	valid("juliet@example.com/foo", "juliet@example.com/foo", "juliet@example.com");
	valid("juliet@example.com/foo bar", "juliet@example.com/foo bar", "juliet@example.com");
	valid("juliet@example.com/foo@bar", "juliet@example.com/foo@bar", "juliet@example.com");
	valid("foo\\20bar@example.com", "foo\\20bar@example.com", "foo\\20bar@example.com");
	valid("fussball@example.com", "fussball@example.com", "fussball@example.com");
	valid("fu\xc3\x9f" "ball@example.com", "fussball@example.com", "fussball@example.com");
	valid("\xcf\x80@example.com", "\xcf\x80@example.com", "\xcf\x80@example.com");
	valid("\xce\xa3@example.com/foo", "\xcf\x83@example.com/foo", "\xcf\x83@example.com");
	valid("king@example.com/\xe2\x99\x9a", "king@example.com/\xe2\x99\x9a", "king@example.com");
	valid("example.com", "example.com", "example.com");
	valid("example.com/foobar", "example.com/foobar", "example.com");
	valid("a.example.com/b@example.net", "a.example.com/b@example.net", "a.example.com");

	/* Normalisation. */
	valid("Juliet@EXAMPLE.Com/Balcony", "juliet@example.com/Balcony", "juliet@example.com");
	valid("juliet@example.com.", "juliet@example.com", "juliet@example.com");
	valid("user@127.0.0.1/r", "user@127.0.0.1/r", "user@127.0.0.1");
	valid("user@[::1]", "user@[::1]", "user@[::1]");
	valid("user@B\xc3\xbc" "cher.example", "user@b\xc3\xbc" "cher.example", "user@b\xc3\xbc" "cher.example");
	valid("user@xn--bcher-kva.example", "user@b\xc3\xbc" "cher.example", "user@b\xc3\xbc" "cher.example");

	/* RFC 7622 section 3.5.2: invalid examples, and more. */
	invalid("\"juliet\"@example.com", PL_JID_BAD_LOCALPART, "quotes in the localpart");
	invalid("foo bar@example.com", PL_JID_BAD_LOCALPART, "space in the localpart");
	invalid("juliet@@example.com", PL_JID_BAD_DOMAIN, "two @");
	invalid("@example.com", PL_JID_EMPTY, "empty localpart");
	invalid("user@", PL_JID_EMPTY, "empty domain");
	invalid("example.com/", PL_JID_EMPTY, "empty resource");
	invalid("user@example.com/", PL_JID_EMPTY, "empty resource after a bare JID");
	invalid("", PL_JID_EMPTY, "empty string");
	invalid("user@exa mple.com", PL_JID_BAD_DOMAIN, "space in the domain");
	invalid("user@example..com", PL_JID_BAD_DOMAIN, "empty label");
	invalid("user@[::1", PL_JID_BAD_DOMAIN, "unclosed IPv6 literal");
	invalid("us\x01er@example.com", PL_JID_BAD_LOCALPART, "control character");
	invalid("user@example.com/\x7f", PL_JID_BAD_RESOURCE, "DEL in the resource");
	invalid("user\xff@example.com", PL_JID_BAD_UTF8, "invalid UTF-8");
	invalid("user\xc0\xaf@example.com", PL_JID_BAD_UTF8, "overlong UTF-8");
	invalid("user\xed\xa0\x80@example.com", PL_JID_BAD_UTF8, "UTF-8 surrogate");
	invalid("us<er@example.com", PL_JID_BAD_LOCALPART, "'<' in the localpart");

	/* Length limits: 1023 bytes per part. */
	char *local1023 = repeat('a', 1023), *local1024 = repeat('a', 1024);
	char *text = malloc(2200);
	snprintf(text, 2200, "%s@example.com", local1023);
	struct pl_jid jid;
	is_int(pl_jid_parse(text, &jid), PL_JID_OK, "a 1023-byte localpart is valid");
	pl_jid_free(&jid);
	snprintf(text, 2200, "%s@example.com", local1024);
	is_int(pl_jid_parse(text, &jid), PL_JID_TOO_LONG, "a 1024-byte localpart is too long");
	snprintf(text, 2200, "user@example.com/%s", local1023);
	is_int(pl_jid_parse(text, &jid), PL_JID_OK, "a 1023-byte resource is valid");
	pl_jid_free(&jid);
	snprintf(text, 2200, "user@example.com/%s", local1024);
	is_int(pl_jid_parse(text, &jid), PL_JID_TOO_LONG, "a 1024-byte resource is too long");
	free(local1023);
	free(local1024);
	char *label = repeat('a', 64);
	snprintf(text, 2200, "user@%s.example", label);
	is_int(pl_jid_parse(text, &jid), PL_JID_BAD_DOMAIN, "a 64-byte domain label is refused");
	free(label);
	free(text);

	/* Parts. */
	ok(pl_jid_parse("a/b@c", &jid) == PL_JID_OK && jid.local == NULL &&
		   strcmp(jid.domain, "a") == 0 && strcmp(jid.resource, "b@c") == 0,
	   "the resource starts at the first '/', even before an '@'");
	pl_jid_free(&jid);
	pl_jid_free(&jid);
	ok(1, "pl_jid_free twice is safe");

	char *bare = pl_jid_normalize_bare("Romeo@Example.NET/orchard");
	is_str(bare, "romeo@example.net", "pl_jid_normalize_bare");
	free(bare);
	ok(pl_jid_normalize_bare("@bad") == NULL, "pl_jid_normalize_bare of an invalid JID is NULL");
	char *domain = pl_jid_prep_domain("LOCALHOST");
	is_str(domain, "localhost", "pl_jid_prep_domain lowers case");
	free(domain);
	return done_testing();
}
