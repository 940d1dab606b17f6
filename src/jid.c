/* JID parsing and normalisation (RFC 7622). The string is split at the
 * first '/' (resource) and then at the first '@' before it (localpart), so
 * "a/b@c" is the domain "a" with resource "b@c". Localparts go through
 * nodeprep and resources through resourceprep (libidn's stringprep, the
 * RFC 3920 profiles that Prosody also applies; RFC 7622's PRECIS classes
 * accept slightly fewer code points and map width, which stringprep
 * approximates). Domains are lowered and mapped with IDNA2008/UTS #46
 * (libidn2) and kept in their Unicode form, so that "EXAMPLE.com" and
 * "example.com" compare equal byte for byte. */
#include "jid.h"
#include "util.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

#define JID_PART_MAX 1023

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

static char *prep_with_profile(const char *text, const char *profile)
{
	if (!*text || strlen(text) > JID_PART_MAX * 4)
		return NULL;
	char *out = NULL;
	if (stringprep_profile(text, &out, profile, STRINGPREP_NO_UNASSIGNED) != STRINGPREP_OK) {
		free(out);
		return NULL;
	}
	/* libidn allocates with malloc; hand back a pl_ string for one free(). */
	return out;
}

char *pl_jid_prep_local(const char *local)
{
	if (!valid_utf8(local, strlen(local)))
		return NULL;
	char *out = prep_with_profile(local, "Nodeprep");
	if (out && (!*out || strlen(out) > JID_PART_MAX)) {
		free(out);
		return NULL;
	}
	return out;
}

char *pl_jid_prep_resource(const char *resource)
{
	if (!valid_utf8(resource, strlen(resource)))
		return NULL;
	char *out = prep_with_profile(resource, "Resourceprep");
	if (out && (!*out || strlen(out) > JID_PART_MAX)) {
		free(out);
		return NULL;
	}
	return out;
}

static bool ascii_only(const char *s)
{
	for (; *s; s++)
		if ((uint8_t)*s >= 0x80)
			return false;
	return true;
}

/* Host names in ASCII: letters, digits, '-', and '_' (seen in the wild
 * for internal services), labels of 1..63 bytes. */
static bool valid_ascii_domain(const char *d)
{
	size_t label = 0;
	for (const char *p = d;; p++) {
		if (*p == '.' || *p == '\0') {
			if (label == 0 || label > 63)
				return false;
			label = 0;
			if (*p == '\0')
				return true;
			continue;
		}
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
		label++;
	}
}

char *pl_jid_prep_domain(const char *domain)
{
	size_t len = strlen(domain);
	if (len == 0 || len > JID_PART_MAX || !valid_utf8(domain, len))
		return NULL;
	/* IP literals stay as written (IPv6 in brackets, RFC 7622 3.2). */
	if (domain[0] == '[') {
		if (domain[len - 1] != ']' || len < 3 || len > 64)
			return NULL;
		char inner[64];
		memcpy(inner, domain + 1, len - 2);
		inner[len - 2] = '\0';
		struct in6_addr a6;
		return inet_pton(AF_INET6, inner, &a6) == 1 ? pl_strdup(domain) : NULL;
	}
	struct in_addr a4;
	if (inet_pton(AF_INET, domain, &a4) == 1)
		return pl_strdup(domain);

	char *copy = pl_strdup(domain);
	/* A fully qualified "example.com." names the same host. */
	if (len > 1 && copy[len - 1] == '.')
		copy[--len] = '\0';
	if (ascii_only(copy) && !strstr(copy, "xn--")) {
		for (char *p = copy; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		if (!valid_ascii_domain(copy)) {
			free(copy);
			return NULL;
		}
		return copy;
	}
	char *ascii = NULL, *unicode = NULL;
	int rc = idn2_to_ascii_8z(copy, &ascii, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
	free(copy);
	if (rc != IDN2_OK) {
		free(ascii);
		return NULL;
	}
	rc = idn2_to_unicode_8z8z(ascii, &unicode, 0);
	bool ok = rc == IDN2_OK && valid_ascii_domain(ascii) && strlen(unicode) <= JID_PART_MAX;
	free(ascii);
	if (!ok) {
		free(unicode);
		return NULL;
	}
	return unicode;
}

static enum pl_jid_error classify_part(const char *raw, enum pl_jid_error bad)
{
	if (!*raw)
		return PL_JID_EMPTY;
	if (!valid_utf8(raw, strlen(raw)))
		return PL_JID_BAD_UTF8;
	if (strlen(raw) > JID_PART_MAX)
		return PL_JID_TOO_LONG;
	return bad;
}

enum pl_jid_error pl_jid_parse(const char *text, struct pl_jid *jid)
{
	memset(jid, 0, sizeof(*jid));
	if (!text || !*text)
		return PL_JID_EMPTY;
	size_t total = strlen(text);
	if (!valid_utf8(text, total))
		return PL_JID_BAD_UTF8;
	if (total > 3 * JID_PART_MAX + 2)
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
	enum pl_jid_error error = PL_JID_OK;
	char *local = NULL, *domain = NULL, *resource = NULL;
	if ((local_raw && !*local_raw) || !*domain_raw || (resource_raw && !*resource_raw)) {
		error = PL_JID_EMPTY;
		goto out;
	}
	if (local_raw && !(local = pl_jid_prep_local(local_raw))) {
		error = classify_part(local_raw, PL_JID_BAD_LOCALPART);
		goto out;
	}
	if (!(domain = pl_jid_prep_domain(domain_raw))) {
		error = classify_part(domain_raw, PL_JID_BAD_DOMAIN);
		goto out;
	}
	if (resource_raw && !(resource = pl_jid_prep_resource(resource_raw))) {
		error = classify_part(resource_raw, PL_JID_BAD_RESOURCE);
		goto out;
	}

	/* storage holds "local\0domain\0resource\0"; full and bare are their own strings. */
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
	case PL_JID_BAD_DOMAIN: return "the domain is not a valid host name";
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
