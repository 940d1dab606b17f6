/* JID parsing and normalisation: RFC 7622's examples (section 3.5), its
 * invalid cases, the length limits, UTF-8, the domain forms (IDNA2008,
 * IP literals, trailing dot) and the normal forms that routing hashes.
 * Where libidn's stringprep (RFC 3920 nodeprep/resourceprep, as Prosody
 * uses) gives another answer than RFC 7622's PRECIS profiles, the test
 * asserts what the server really does and says "deviation" in its name. */
#include "jid.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

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
	memset(&jid, 0xa5, sizeof(jid));
	enum pl_jid_error e = pl_jid_parse(text, &jid);
	is_int(e, expected, "invalid (%s): %s", why, pl_jid_strerror(e));
	ok(!jid.full && !jid.bare && !jid.storage && !jid.local && !jid.domain && !jid.resource,
	   "  the struct is left empty");
	pl_jid_free(&jid);
}

/* Parses text and checks its three parts (NULL = absent). */
static void parts(const char *text, const char *local, const char *domain, const char *resource)
{
	struct pl_jid jid;
	enum pl_jid_error e = pl_jid_parse(text, &jid);
	if (!ok(e == PL_JID_OK, "parts of %s", text)) {
		diag("error: %s", pl_jid_strerror(e));
		return;
	}
	is_str(jid.local, local, "  localpart");
	is_str(jid.domain, domain, "  domainpart");
	is_str(jid.resource, resource, "  resourcepart");
	pl_jid_free(&jid);
}

static char *repeat(const char *unit, size_t count)
{
	size_t unit_len = strlen(unit);
	char *s = malloc(unit_len * count + 1);
	for (size_t i = 0; i < count; i++)
		memcpy(s + i * unit_len, unit, unit_len);
	s[unit_len * count] = '\0';
	return s;
}

static enum pl_jid_error parse_format(const char *before, const char *part, const char *after)
{
	size_t size = strlen(before) + strlen(part) + strlen(after) + 1;
	char *text = malloc(size);
	snprintf(text, size, "%s%s%s", before, part, after);
	struct pl_jid jid;
	enum pl_jid_error e = pl_jid_parse(text, &jid);
	pl_jid_free(&jid);
	free(text);
	return e;
}

static void rfc7622_valid(void)
{
	/* RFC 7622 section 3.5.1, in its order. */
	valid("juliet@example.com", "juliet@example.com", "juliet@example.com");
	valid("juliet@example.com/foo", "juliet@example.com/foo", "juliet@example.com");
	valid("juliet@example.com/foo bar", "juliet@example.com/foo bar", "juliet@example.com");
	valid("juliet@example.com/foo@bar", "juliet@example.com/foo@bar", "juliet@example.com");
	valid("foo\\20bar@example.com", "foo\\20bar@example.com", "foo\\20bar@example.com");
	valid("fussball@example.com", "fussball@example.com", "fussball@example.com");
	/* Deviation: PRECIS keeps "fußball" distinct; nodeprep's case folding
	 * maps ß to "ss", so both name the same account (as on Prosody). */
	valid("fu\xc3\x9f" "ball@example.com", "fussball@example.com", "fussball@example.com");
	valid("\xcf\x80@example.com", "\xcf\x80@example.com", "\xcf\x80@example.com");
	valid("\xce\xa3@example.com/foo", "\xcf\x83@example.com/foo", "\xcf\x83@example.com");
	valid("\xcf\x83@example.com/foo", "\xcf\x83@example.com/foo", "\xcf\x83@example.com");
	/* Deviation: PRECIS keeps final sigma; nodeprep folds it to σ. */
	valid("\xcf\x82@example.com/foo", "\xcf\x83@example.com/foo", "\xcf\x83@example.com");
	valid("king@example.com/\xe2\x99\x9a", "king@example.com/\xe2\x99\x9a", "king@example.com");
	valid("example.com", "example.com", "example.com");
	valid("example.com/foobar", "example.com/foobar", "example.com");
	valid("a.example.com/b@example.net", "a.example.com/b@example.net", "a.example.com");
}

static void rfc7622_invalid(void)
{
	/* RFC 7622 section 3.5.2, and the cases the brief adds. */
	invalid("\"juliet\"@example.com", PL_JID_BAD_LOCALPART, "quotation marks in the localpart");
	invalid("foo bar@example.com", PL_JID_BAD_LOCALPART, "space in the localpart");
	invalid("@example.com/", PL_JID_EMPTY, "empty localpart and resource");
	invalid("juliet@", PL_JID_EMPTY, "empty domainpart");
	invalid("/foobar", PL_JID_EMPTY, "empty domainpart before a resource");
	invalid("juliet@@example.com", PL_JID_BAD_DOMAIN, "two '@'");
	invalid("@example.com", PL_JID_EMPTY, "empty localpart");
	invalid("user@", PL_JID_EMPTY, "empty domain");
	invalid("example.com/", PL_JID_EMPTY, "empty resource");
	invalid("user@example.com/", PL_JID_EMPTY, "empty resource after a bare JID");
	invalid("", PL_JID_EMPTY, "empty string");

	/* Deviations where RFC 7622 says invalid but stringprep accepts:
	 * U+2163 ROMAN NUMERAL FOUR has a compatibility decomposition, which
	 * PRECIS IdentifierClass refuses; nodeprep's NFKC makes it "iv". */
	valid("henry\xe2\x85\xa3@example.com", "henryiv@example.com", "henryiv@example.com");
	/* U+265A is a symbol, outside IdentifierClass; nodeprep allows it. */
	valid("\xe2\x99\x9a@example.com", "\xe2\x99\x9a@example.com", "\xe2\x99\x9a@example.com");
	/* RFC 7622 lists a leading space in the resource as invalid, but its
	 * own OpaqueString profile allows spaces (a known flaw of that table);
	 * resourceprep accepts it, like most servers. */
	valid("juliet@example.com/ foo", "juliet@example.com/ foo", "juliet@example.com");
}

static void normalisation(void)
{
	valid("Juliet@EXAMPLE.Com/Balcony", "juliet@example.com/Balcony", "juliet@example.com");
	valid("JULIET@example.com", "juliet@example.com", "juliet@example.com");
	valid("juliet@example.com/BALCONY", "juliet@example.com/BALCONY", "juliet@example.com");
	valid("juliet@example.com.", "juliet@example.com", "juliet@example.com");
	valid("example.com./r", "example.com/r", "example.com");
	valid("user@127.0.0.1/r", "user@127.0.0.1/r", "user@127.0.0.1");
	valid("user@[::1]", "user@[::1]", "user@[::1]");
	valid("user@[2001:db8::1]/r", "user@[2001:db8::1]/r", "user@[2001:db8::1]");
	/* The domain is kept in U-label form, lower case. */
	valid("user@B\xc3\xbc" "cher.example", "user@b\xc3\xbc" "cher.example",
	      "user@b\xc3\xbc" "cher.example");
	valid("user@xn--bcher-kva.example", "user@b\xc3\xbc" "cher.example",
	      "user@b\xc3\xbc" "cher.example");
	valid("user@XN--BCHER-KVA.EXAMPLE.", "user@b\xc3\xbc" "cher.example",
	      "user@b\xc3\xbc" "cher.example");
	/* UTS #46: full-width letters and the ideographic full stop map. */
	valid("user@\xef\xbc\xa5xample\xe3\x80\x82" "com", "user@example.com", "user@example.com");
	/* Nontransitional IDNA2008: ß in a domain stays ß. */
	valid("user@fa\xc3\x9f.de", "user@fa\xc3\x9f.de", "user@fa\xc3\x9f.de");
	/* Nodeprep maps soft hyphen to nothing and NFKC-normalises. */
	valid("ju\xc2\xadliet@example.com", "juliet@example.com", "juliet@example.com");
	valid("a\xcc\x81@example.com", "\xc3\xa1@example.com", "\xc3\xa1@example.com");
	/* Resources keep case and take characters newer than Unicode 3.2,
	 * such as emoji in MUC nicknames. */
	valid("room@muc.example/\xf0\x9f\x93\xb1 Phone", "room@muc.example/\xf0\x9f\x93\xb1 Phone",
	      "room@muc.example");
	valid("user@_xmpp.example", "user@_xmpp.example", "user@_xmpp.example");
}

static void bad_domains(void)
{
	invalid("user@exa mple.com", PL_JID_BAD_DOMAIN, "space in the domain");
	invalid("user@example..com", PL_JID_BAD_DOMAIN, "empty label");
	invalid("user@.example.com", PL_JID_BAD_DOMAIN, "leading dot");
	invalid("user@example.com..", PL_JID_BAD_DOMAIN, "two trailing dots");
	invalid("user@.", PL_JID_EMPTY, "a domain that is only the trailing dot");
	invalid("user@-example.com", PL_JID_BAD_DOMAIN, "label starting with a hyphen");
	invalid("user@example-.com", PL_JID_BAD_DOMAIN, "label ending with a hyphen");
	invalid("user@ab--cd.example", PL_JID_BAD_DOMAIN, "'--' in places 3-4 of an LDH label");
	invalid("user@xn--a.example", PL_JID_BAD_DOMAIN, "A-label that does not decode");
	invalid("user@xn--exg.example", PL_JID_BAD_DOMAIN, "A-label of a space");
	invalid("user@xn--ls8h.example", PL_JID_BAD_DOMAIN, "A-label of an emoji");
	invalid("user@\xe2\x98\x83.net", PL_JID_BAD_DOMAIN, "symbol (U+2603) in a domain");
	invalid("user@[::1", PL_JID_BAD_DOMAIN, "unclosed IPv6 literal");
	invalid("user@[::g]", PL_JID_BAD_DOMAIN, "not an IPv6 address");
	invalid("user@[127.0.0.1]", PL_JID_BAD_DOMAIN, "IPv4 in brackets");
	invalid("user@exa!mple.com", PL_JID_BAD_DOMAIN, "'!' in the domain");
	invalid("user@example.com\x01", PL_JID_BAD_DOMAIN, "control character in the domain");
}

static void bad_characters(void)
{
	invalid("us\x01" "er@example.com", PL_JID_BAD_LOCALPART, "control character");
	invalid("us\ter@example.com", PL_JID_BAD_LOCALPART, "tab in the localpart");
	invalid("user@example.com/\x7f", PL_JID_BAD_RESOURCE, "DEL in the resource");
	invalid("user@example.com/a\nb", PL_JID_BAD_RESOURCE, "newline in the resource");
	invalid("user@example.com/\xef\xbf\xbe", PL_JID_BAD_RESOURCE, "non-character U+FFFE");
	invalid("us<er@example.com", PL_JID_BAD_LOCALPART, "'<' in the localpart");
	invalid("us&er@example.com", PL_JID_BAD_LOCALPART, "'&' in the localpart");
	invalid("us:er@example.com", PL_JID_BAD_LOCALPART, "':' in the localpart");
	invalid("us'er@example.com", PL_JID_BAD_LOCALPART, "apostrophe in the localpart");
	invalid("\xc2\xad@example.com", PL_JID_EMPTY, "localpart mapped to nothing");
	invalid("user@example.com/\xe2\x80\x8b", PL_JID_EMPTY, "resource mapped to nothing");
	invalid("user\xff@example.com", PL_JID_BAD_UTF8, "invalid UTF-8");
	invalid("user@example.com/\x80", PL_JID_BAD_UTF8, "lone continuation byte");
	invalid("user\xc3@example.com", PL_JID_BAD_UTF8, "truncated sequence");
	invalid("user\xc0\xaf@example.com", PL_JID_BAD_UTF8, "overlong UTF-8");
	invalid("user\xed\xa0\x80@example.com", PL_JID_BAD_UTF8, "UTF-8 surrogate");
	invalid("user\xf4\x90\x80\x80@example.com", PL_JID_BAD_UTF8, "past U+10FFFF");
}

static void length_limits(void)
{
	char *a1023 = repeat("a", 1023), *a1024 = repeat("a", 1024);
	is_int(parse_format("", a1023, "@example.com"), PL_JID_OK, "a 1023-byte localpart is valid");
	is_int(parse_format("", a1024, "@example.com"), PL_JID_TOO_LONG,
	       "a 1024-byte localpart is too long");
	is_int(parse_format("user@example.com/", a1023, ""), PL_JID_OK,
	       "a 1023-byte resource is valid");
	is_int(parse_format("user@example.com/", a1024, ""), PL_JID_TOO_LONG,
	       "a 1024-byte resource is too long");
	/* The limit applies after preparation: soft hyphens vanish, and
	 * U+0149 (2 bytes) becomes U+02BC "n" (3 bytes). */
	char *shy = repeat("\xc2\xad", 100);
	char *text = malloc(4000);
	snprintf(text, 4000, "%s%s", a1023, shy);
	is_int(parse_format("", text, "@example.com"), PL_JID_OK,
	       "a localpart over 1023 bytes that prepares to 1023 is valid");
	snprintf(text, 4000, "%.1021s\xc5\x89", a1023);
	is_int(parse_format("", text, "@example.com"), PL_JID_TOO_LONG,
	       "a 1023-byte localpart that prepares to 1024 is too long");
	snprintf(text, 4000, "%.1020s\xc5\x89", a1023);
	is_int(parse_format("", text, "@example.com"), PL_JID_OK,
	       "a 1022-byte localpart that prepares to 1023 is valid");

	/* Domains: 63-byte labels, up to 1023 bytes in all. */
	char *label63 = repeat("b", 63), *label64 = repeat("b", 64);
	is_int(parse_format("user@", label63, ".example"), PL_JID_OK, "a 63-byte label is valid");
	is_int(parse_format("user@", label64, ".example"), PL_JID_BAD_DOMAIN,
	       "a 64-byte label is refused");
	/* 255 labels "c." make 510 bytes; 511 of them minus the last dot, 1021. */
	char *domain1021 = repeat("c.", 511);
	domain1021[1021] = '\0';
	is_int(parse_format("user@", domain1021, ""), PL_JID_OK, "a 1021-byte domain is valid");
	is_int(parse_format("user@", domain1021, ".d"), PL_JID_OK, "a 1023-byte domain is valid");
	is_int(parse_format("user@", domain1021, ".de"), PL_JID_TOO_LONG,
	       "a 1024-byte domain is too long");
	is_int(parse_format("user@", domain1021, ".d."), PL_JID_OK,
	       "a 1023-byte domain with its trailing dot is valid");
	char *huge = repeat("a", 20000);
	is_int(parse_format("", huge, "@example.com"), PL_JID_TOO_LONG,
	       "a 20000-byte JID is too long");
	free(a1023);
	free(a1024);
	free(shy);
	free(text);
	free(label63);
	free(label64);
	free(domain1021);
	free(huge);
}

static void structure(void)
{
	/* RFC 7622 3.1: the resource starts at the first '/', the localpart
	 * ends at the first '@' before it. */
	parts("a/b@c", NULL, "a", "b@c");
	parts("a@b/c@d/e", "a", "b", "c@d/e");
	parts("juliet@example.com/foo/bar", "juliet", "example.com", "foo/bar");
	parts("example.com", NULL, "example.com", NULL);
	parts("juliet@example.com", "juliet", "example.com", NULL);
	parts("Juliet@Example.com/Balcony", "juliet", "example.com", "Balcony");
	invalid("a@b@c", PL_JID_BAD_DOMAIN, "'@' in the domain");
}

static void helpers(void)
{
	struct pl_jid jid;
	memset(&jid, 0, sizeof(jid));
	pl_jid_free(&jid);
	ok(jid.full == NULL, "pl_jid_free on a zeroed struct is safe");
	ok(pl_jid_parse("a@b/c", &jid) == PL_JID_OK, "parse for the free test");
	pl_jid_free(&jid);
	ok(!jid.full && !jid.bare && !jid.storage && !jid.local && !jid.domain && !jid.resource,
	   "pl_jid_free zeroes the struct");
	pl_jid_free(&jid);
	ok(1, "pl_jid_free twice is safe");
	is_int(pl_jid_parse(NULL, &jid), PL_JID_EMPTY, "NULL text is empty");

	char *bare = pl_jid_normalize_bare("Romeo@Example.NET/orchard");
	is_str(bare, "romeo@example.net", "pl_jid_normalize_bare");
	free(bare);
	ok(pl_jid_normalize_bare("@bad") == NULL, "pl_jid_normalize_bare of an invalid JID is NULL");

	char *s = pl_jid_prep_domain("LOCALHOST.");
	is_str(s, "localhost", "pl_jid_prep_domain lowers case and drops the trailing dot");
	free(s);
	ok(pl_jid_prep_domain("") == NULL, "pl_jid_prep_domain of nothing is NULL");
	s = pl_jid_prep_local("Juliet");
	is_str(s, "juliet", "pl_jid_prep_local folds case");
	free(s);
	ok(pl_jid_prep_local("ju liet") == NULL, "pl_jid_prep_local refuses a space");
	ok(pl_jid_prep_local("") == NULL, "pl_jid_prep_local refuses an empty part");
	s = pl_jid_prep_resource("Balcony Door");
	is_str(s, "Balcony Door", "pl_jid_prep_resource keeps case and spaces");
	free(s);
	ok(pl_jid_prep_resource("a\x01") == NULL, "pl_jid_prep_resource refuses controls");

	for (int e = PL_JID_OK; e <= PL_JID_BAD_UTF8; e++)
		ok(pl_jid_strerror((enum pl_jid_error)e) != NULL &&
			   strcmp(pl_jid_strerror((enum pl_jid_error)e), "invalid JID") != 0,
		   "error %d has its own message", e);
}

/* The ASCII fast path agrees with libidn's profiles on every printable
 * and control character, alone and inside a longer part. */
static void ascii_fast_path_matches_stringprep(void)
{
	int local_mismatches = 0, resource_mismatches = 0;
	for (int c = 1; c < 0x80; c++) {
		char raw[8];
		snprintf(raw, sizeof(raw), "a%cB", c);
		const char *profiles[] = { "Nodeprep", "Resourceprep" };
		for (int k = 0; k < 2; k++) {
			char *expected = NULL;
			int flags = k == 0 ? STRINGPREP_NO_UNASSIGNED : 0;
			if (stringprep_profile(raw, &expected, profiles[k], flags) != STRINGPREP_OK) {
				free(expected);
				expected = NULL;
			}
			char *got = k == 0 ? pl_jid_prep_local(raw) : pl_jid_prep_resource(raw);
			bool same = (!got && !expected) || (got && expected && strcmp(got, expected) == 0);
			if (!same && k == 0)
				local_mismatches++;
			else if (!same)
				resource_mismatches++;
			free(got);
			free(expected);
		}
	}
	ok(local_mismatches == 0, "localparts of ASCII characters prepare as nodeprep does (%d differ)",
	   local_mismatches);
	ok(resource_mismatches == 0,
	   "resources of ASCII characters prepare as resourceprep does (%d differ)", resource_mismatches);
}

int main(void)
{
	ascii_fast_path_matches_stringprep();
	rfc7622_valid();
	rfc7622_invalid();
	normalisation();
	bad_domains();
	bad_characters();
	length_limits();
	structure();
	helpers();
	return done_testing();
}
