/* JID parsing and normalisation (RFC 7622). The string is split at the
 * first '/' (resource) and then at the first '@' before it (localpart), so
 * "a/b@c" is the domain "a" with resource "b@c". Localparts go through
 * nodeprep and resources through resourceprep: libidn's stringprep, the
 * RFC 3920 profiles that Prosody also applies, so accounts and rosters
 * carry over. RFC 7622's PRECIS profiles differ in a few places that the
 * unit tests pin down (nodeprep folds "ß" to "ss" and "ς" to "σ", and its
 * NFKC turns "Ⅳ" into "iv" where PRECIS refuses it; symbols such as "♚"
 * pass in a localpart). Domains are mapped with IDNA2008 and UTS #46
 * (libidn2, nontransitional, so "ß" stays) and kept as lower-case
 * U-labels, because RFC 7622 compares domainparts in Unicode form: then
 * "EXAMPLE.com", "xn--bcher-kva.example" and "Bücher.example" each have one
 * byte-for-byte normal form that routing tables can hash. */
#include "jid.h"
#include "util.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

#define JID_PART_MAX 1023
#define DNS_LABEL_MAX 63
/* Preparation can shrink a part (NFKC, characters mapped to nothing) but
 * never below a quarter of its UTF-8 length, so anything longer than this
 * is too long before spending time on it. */
#define JID_RAW_PART_MAX (4 * JID_PART_MAX)
/* UTS #46 nontransitional processing keeps "ß" and ZWJ/ZWNJ as IDNA2008
 * wants, where transitional mode would rewrite "faß.de" to "fass.de". */
#define IDNA_FLAGS (IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT)

static bool valid_utf8(const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t i = 0;
	while (i < len) {
		uint8_t c = p[i];
		size_t n;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		for (size_t k = 1; k <= n; k++) {
			if (i + k >= len || (p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		/* Overlong forms, surrogates and code points past U+10FFFF. */
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		i += n + 1;
	}
	return true;
}

/* Runs one stringprep profile over a localpart or resource and applies the
 * length rules to the result. On success *out is a malloc'd string. */
static enum pl_jid_error prep_with_profile(const char *raw, const char *profile, int flags,
					   enum pl_jid_error refused, char **out)
{
	*out = NULL;
	size_t len = strlen(raw);
	if (len == 0)
		return PL_JID_EMPTY;
	if (!valid_utf8(raw, len))
		return PL_JID_BAD_UTF8;
	if (len > JID_RAW_PART_MAX)
		return PL_JID_TOO_LONG;
	char *prepared = NULL;
	if (stringprep_profile(raw, &prepared, profile, flags) != STRINGPREP_OK) {
		free(prepared);
		return refused;
	}
	/* A part made only of characters mapped to nothing (U+00AD, U+200B...)
	 * is as empty as "@example.com". */
	enum pl_jid_error error = PL_JID_OK;
	size_t prepared_len = strlen(prepared);
	if (prepared_len == 0)
		error = PL_JID_EMPTY;
	else if (prepared_len > JID_PART_MAX)
		error = PL_JID_TOO_LONG;
	if (error != PL_JID_OK) {
		free(prepared);
		return error;
	}
	*out = prepared;
	return PL_JID_OK;
}

/* Printable ASCII is what almost every JID is made of, and there both
 * profiles reduce to a few rules (RFC 3920 appendices A and B over RFC 3454
 * tables B.1, B.2, C.1.1, C.2.1): NFKC and the bidi rules change nothing,
 * nodeprep folds A-Z to lower case and prohibits space and "&'/:<>@,
 * resourceprep keeps everything but controls. Routing parses a JID for
 * every stanza it delivers, so this skips libidn's UCS-4 round trip;
 * anything else (controls, non-ASCII) takes the full profile. */
static bool prep_ascii(const char *raw, bool nodeprep, char **out)
{
	size_t len = 0;
	for (const char *p = raw; *p; p++, len++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c > 0x7e)
			return false;
		if (nodeprep && (c == ' ' || strchr("\"&'/:<>@", c)))
			return false;
	}
	if (len == 0 || len > JID_PART_MAX)
		return false; /* the full path reports these */
	char *copy = pl_strdup(raw);
	if (nodeprep)
		for (char *p = copy; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
	*out = copy;
	return true;
}

/* Localparts name accounts, so unassigned code points (Unicode 3.2 tables)
 * are refused as RFC 3454 asks for stored strings. */
static enum pl_jid_error prep_local(const char *raw, char **out)
{
	if (prep_ascii(raw, true, out))
		return PL_JID_OK;
	return prep_with_profile(raw, "Nodeprep", STRINGPREP_NO_UNASSIGNED,
				 PL_JID_BAD_LOCALPART, out);
}

/* Resources double as MUC nicknames, where emoji and other characters
 * newer than Unicode 3.2 are common; refusing them would bounce ordinary
 * messages, and Prosody (non-strict by default) accepts them. The
 * prohibited tables (controls, non-characters, bidi rules) still apply. */
static enum pl_jid_error prep_resource(const char *raw, char **out)
{
	if (prep_ascii(raw, false, out))
		return PL_JID_OK;
	return prep_with_profile(raw, "Resourceprep", 0, PL_JID_BAD_RESOURCE, out);
}

/* Host-name labels in ASCII, with the same rules libidn2 applies to the
 * ASCII labels of a Unicode domain, so both paths agree: letters, digits,
 * '-' and '_' (used by some internal services), 1..63 bytes, no hyphen at
 * either end, and no "--" in the third and fourth places: that is reserved
 * for A-labels, which only libidn2's output may hold (after it checked
 * them). Expects lower case. */
static bool valid_ascii_domain(const char *domain, bool a_labels_checked)
{
	const char *label = domain;
	for (const char *p = domain;; p++) {
		if (*p == '.' || *p == '\0') {
			size_t len = (size_t)(p - label);
			if (len == 0 || len > DNS_LABEL_MAX || label[0] == '-' || p[-1] == '-' ||
			    (len >= 4 && label[2] == '-' && label[3] == '-' &&
			     !(a_labels_checked && label[0] == 'x' && label[1] == 'n')))
				return false;
			if (*p == '\0')
				return true;
			label = p + 1;
			continue;
		}
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
	}
}

static bool ascii_only(const char *s)
{
	for (; *s; s++)
		if ((uint8_t)*s >= 0x80)
			return false;
	return true;
}

static bool has_a_label(const char *domain)
{
	const char *label = domain;
	while (label) {
		if (strncmp(label, "xn--", 4) == 0)
			return true;
		label = strchr(label, '.');
		if (label)
			label++;
	}
	return false;
}

/* RFC 7622 3.2 allows an IPv6 literal in brackets or a dotted IPv4
 * address; both are kept exactly as written. *is_literal tells the caller
 * not to treat the text as a host name. */
static enum pl_jid_error prep_ip_literal(const char *raw, size_t len, bool *is_literal, char **out)
{
	*is_literal = false;
	if (raw[0] == '[') {
		*is_literal = true;
		char inner[INET6_ADDRSTRLEN + 16];
		if (len < 3 || raw[len - 1] != ']' || len - 2 >= sizeof(inner))
			return PL_JID_BAD_DOMAIN;
		memcpy(inner, raw + 1, len - 2);
		inner[len - 2] = '\0';
		struct in6_addr address6;
		if (inet_pton(AF_INET6, inner, &address6) != 1)
			return PL_JID_BAD_DOMAIN;
		*out = pl_strdup(raw);
		return PL_JID_OK;
	}
	struct in_addr address4;
	if (inet_pton(AF_INET, raw, &address4) == 1) {
		*is_literal = true;
		*out = pl_strdup(raw);
		return PL_JID_OK;
	}
	return PL_JID_OK;
}

/* Unicode domains: UTS #46 mapping (lower case, full-width forms, the
 * ideographic full stop as a dot) and IDNA2008 validation by libidn2 on
 * the way to A-labels, then back to U-labels for the stored form. */
static enum pl_jid_error prep_idn_domain(const char *domain, char **out)
{
	char *ascii = NULL;
	if (idn2_to_ascii_8z(domain, &ascii, IDNA_FLAGS) != IDN2_OK) {
		free(ascii);
		return PL_JID_BAD_DOMAIN;
	}
	/* A trailing U+3002 (or similar) became a '.' only now. */
	size_t ascii_len = strlen(ascii);
	if (ascii_len > 0 && ascii[ascii_len - 1] == '.')
		ascii[--ascii_len] = '\0';
	if (ascii_len == 0) {
		free(ascii);
		return PL_JID_EMPTY;
	}
	if (!valid_ascii_domain(ascii, true)) {
		free(ascii);
		return PL_JID_BAD_DOMAIN;
	}
	/* libidn2 passes some A-labels through unchecked ("xn--exg" is U+205F,
	 * a space), so the U-labels must map back to the very same A-labels;
	 * that also makes the stored form prepare to itself. */
	char *unicode = NULL, *round_trip = NULL;
	bool valid = idn2_to_unicode_8z8z(ascii, &unicode, 0) == IDN2_OK &&
		     idn2_to_ascii_8z(unicode, &round_trip, IDNA_FLAGS) == IDN2_OK &&
		     strcmp(round_trip, ascii) == 0;
	free(round_trip);
	free(ascii);
	if (!valid) {
		free(unicode);
		return PL_JID_BAD_DOMAIN;
	}
	if (strlen(unicode) > JID_PART_MAX) {
		free(unicode);
		return PL_JID_TOO_LONG;
	}
	*out = unicode;
	return PL_JID_OK;
}

static enum pl_jid_error prep_domain(const char *raw, char **out)
{
	*out = NULL;
	size_t len = strlen(raw);
	if (len == 0)
		return PL_JID_EMPTY;
	if (!valid_utf8(raw, len))
		return PL_JID_BAD_UTF8;
	if (len > JID_RAW_PART_MAX)
		return PL_JID_TOO_LONG;
	bool is_literal;
	enum pl_jid_error error = prep_ip_literal(raw, len, &is_literal, out);
	if (is_literal)
		return error;

	char *copy = pl_strdup(raw);
	/* A fully qualified "example.com." names the same host (RFC 7622 3.2). */
	if (copy[len - 1] == '.')
		copy[--len] = '\0';
	if (len == 0) {
		free(copy);
		return PL_JID_EMPTY;
	}
	for (char *p = copy; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	/* The common case, plain ASCII host names, needs no libidn2 call. */
	if (ascii_only(copy) && !has_a_label(copy)) {
		if (!valid_ascii_domain(copy, false))
			error = PL_JID_BAD_DOMAIN;
		else if (len > JID_PART_MAX)
			error = PL_JID_TOO_LONG;
		if (error != PL_JID_OK) {
			free(copy);
			return error;
		}
		*out = copy;
		return PL_JID_OK;
	}
	error = prep_idn_domain(copy, out);
	free(copy);
	return error;
}

char *pl_jid_prep_local(const char *local)
{
	char *out;
	return prep_local(local, &out) == PL_JID_OK ? out : NULL;
}

char *pl_jid_prep_resource(const char *resource)
{
	char *out;
	return prep_resource(resource, &out) == PL_JID_OK ? out : NULL;
}

char *pl_jid_prep_domain(const char *domain)
{
	char *out;
	return prep_domain(domain, &out) == PL_JID_OK ? out : NULL;
}

enum pl_jid_error pl_jid_parse(const char *text, struct pl_jid *jid)
{
	memset(jid, 0, sizeof(*jid));
	if (!text || !*text)
		return PL_JID_EMPTY;
	size_t total = strlen(text);
	if (!valid_utf8(text, total))
		return PL_JID_BAD_UTF8;
	if (total > 3 * JID_RAW_PART_MAX + 2)
		return PL_JID_TOO_LONG;

	char *work = pl_strdup(text);
	char *resource_raw = NULL, *local_raw = NULL, *domain_raw = work;
	char *slash = strchr(work, '/');
	if (slash) {
		*slash = '\0';
		resource_raw = slash + 1;
	}
	char *at = strchr(work, '@');
	if (at) {
		*at = '\0';
		local_raw = work;
		domain_raw = at + 1;
	}
	char *local = NULL, *domain = NULL, *resource = NULL;
	/* Parts are checked left to right so the error names the first bad one. */
	enum pl_jid_error error = PL_JID_OK;
	if (local_raw)
		error = prep_local(local_raw, &local);
	if (error == PL_JID_OK)
		error = prep_domain(domain_raw, &domain);
	if (error == PL_JID_OK && resource_raw)
		error = prep_resource(resource_raw, &resource);
	if (error != PL_JID_OK)
		goto out;

	/* storage holds "local\0domain\0resource\0"; full and bare are their
	 * own strings so callers can hand them around without slicing. */
	size_t local_len = local ? strlen(local) : 0, domain_len = strlen(domain),
	       resource_len = resource ? strlen(resource) : 0;
	jid->storage = pl_malloc(local_len + domain_len + resource_len + 3);
	char *p = jid->storage;
	if (local) {
		memcpy(p, local, local_len + 1);
		jid->local = p;
		p += local_len + 1;
	}
	memcpy(p, domain, domain_len + 1);
	jid->domain = p;
	p += domain_len + 1;
	if (resource) {
		memcpy(p, resource, resource_len + 1);
		jid->resource = p;
	}
	jid->bare = local ? pl_asprintf("%s@%s", local, domain) : pl_strdup(domain);
	jid->full = resource ? pl_asprintf("%s/%s", jid->bare, resource) : pl_strdup(jid->bare);
out:
	free(local);
	free(domain);
	free(resource);
	free(work);
	return error;
}

void pl_jid_free(struct pl_jid *jid)
{
	if (!jid)
		return;
	free(jid->storage);
	free(jid->full);
	free(jid->bare);
	memset(jid, 0, sizeof(*jid));
}

const char *pl_jid_strerror(enum pl_jid_error error)
{
	switch (error) {
	case PL_JID_OK: return "valid";
	case PL_JID_EMPTY: return "empty JID or empty part";
	case PL_JID_TOO_LONG: return "a part is longer than 1023 bytes";
	case PL_JID_BAD_LOCALPART: return "the localpart has forbidden characters";
	case PL_JID_BAD_DOMAIN: return "the domain is not a valid host name or IP address";
	case PL_JID_BAD_RESOURCE: return "the resource has forbidden characters";
	case PL_JID_BAD_UTF8: return "not valid UTF-8";
	}
	return "invalid JID";
}

char *pl_jid_normalize_bare(const char *text)
{
	struct pl_jid jid;
	if (pl_jid_parse(text, &jid) != PL_JID_OK)
		return NULL;
	char *bare = pl_strdup(jid.bare);
	pl_jid_free(&jid);
	return bare;
}
