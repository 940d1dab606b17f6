/* HTTP file upload (XEP-0363 v1.1, urn:xmpp:http:upload:0): a service
 * JID upload.<host> per host hands out slots to the host's accounts, and
 * the HTTP listener takes the bytes (PUT) and serves them (GET, HEAD,
 * Range) under /upload/<slot>/<token>/<name>.
 *
 * The slot id is 128 random bits; the token is an HMAC of it with a key
 * kept in the store (one token for PUT, another for GET), so the HTTP
 * side trusts nothing but the store: a URL is checked by recomputing its
 * token and reading the slot's record. A PUT streams to a partial file
 * on disk chunk by chunk, hashing as it goes, with the exact size the
 * slot promised. The finished file is named by its SHA-256 (blobs/<hex>):
 * a second upload of the same bytes keeps the blob already there and
 * only adds a reference (counted in memory, rebuilt from the slots at
 * start); the blob goes with its last slot. A slot request carrying an
 * XEP-0300 sha-256 hash of a stored blob of that size is complete at
 * once. Parley extension (advertised in disco): a PUT cut off midway
 * leaves its partial file, HEAD on the PUT URL says how much arrived
 * (Upload-Offset), and a PUT with Content-Range continues from there.
 *
 * A background sweep removes files older than expire-after, slots never
 * uploaded within slot-timeout, and files no slot accounts for. `parleyctl upload list [JID]` and
 * `parleyctl upload delete SLOT` administer them. */
#include "ctl/ctl.h"
#include "hooks.h"
#include "config.h"
#include "http.h"
#include "iq_storage.h"
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "scram.h"
#include "server.h"
#include "store/store.h"
#include "util.h"
#include "xml/stream.h"

#include <event2/event.h>
#include <openssl/evp.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NS_UPLOAD "urn:xmpp:http:upload:0"
#define NS_HASHES "urn:xmpp:hashes:2"
#define NS_RESUME "urn:parley:http:upload:resume:0"
#define NS_DEDUP "urn:parley:http:upload:dedup:0"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_RECORD "urn:parley:upload:record"
#define URL_PREFIX "/upload/"
#define SLOT_HEX 32
#define TOKEN_HEX 32
#define CHUNK (64 * 1024)

struct upload_conf {
	char *subdomain;
	char *base_url;
	char *directory;
	uint64_t max_file_size;
	uint64_t quota;
	struct pl_string_list allowed_types;
	int64_t slot_timeout_ms;
	int64_t expire_after_ms;
	int64_t sweep_interval_ms;
};

static const struct pl_option upload_options[] = {
	{ "subdomain", PL_OPT_STRING, "upload", 0, 0, NULL, offsetof(struct upload_conf, subdomain),
	  "the service is <subdomain>.<host>" },
	{ "base-url", PL_OPT_STRING, NULL, 0, 0, NULL, offsetof(struct upload_conf, base_url),
	  "public URL of the HTTP listener (default: from <http> and the host name)" },
	{ "directory", PL_OPT_STRING, NULL, 0, 0, NULL, offsetof(struct upload_conf, directory),
	  "where files are kept (default: <storage>/upload)" },
	{ "max-file-size", PL_OPT_SIZE, "100MiB", 1, (int64_t)1 << 40, NULL,
	  offsetof(struct upload_conf, max_file_size), "largest file" },
	{ "quota", PL_OPT_SIZE, "1GiB", 1, (int64_t)1 << 50, NULL,
	  offsetof(struct upload_conf, quota), "bytes of live files per account" },
	{ "allowed-type", PL_OPT_LIST, NULL, 0, 0, NULL,
	  offsetof(struct upload_conf, allowed_types),
	  "content types accepted (\"image/*\" patterns); none given: any" },
	{ "slot-timeout", PL_OPT_DURATION, "1h", 1000, 86400000LL * 7, NULL,
	  offsetof(struct upload_conf, slot_timeout_ms), "a slot not uploaded by then is void" },
	{ "expire-after", PL_OPT_DURATION, "30d", 0, 86400000LL * 3650, NULL,
	  offsetof(struct upload_conf, expire_after_ms), "files are deleted at this age; 0: never" },
	{ "sweep-interval", PL_OPT_DURATION, "1h", 1000, 86400000, NULL,
	  offsetof(struct upload_conf, sweep_interval_ms), "how often expired files are removed" },
	{ NULL }
};

/* A slot as stored in upload.slots (key: the slot id). */
struct slot {
	char id[SLOT_HEX + 1];
	char *owner, *name, *type; /* owned; type may be NULL */
	uint64_t size;
	int64_t created_ms, done_ms;
	bool done;
	char sha[65];              /* hex, when done */
};

struct service {
	char *domain, *host;       /* owned */
	bool registered;
	struct service *next;
};

/* Reference counts of blobs: how many done slots name each. */
struct blob {
	char sha[65];
	uint64_t refs;
	struct blob *next;
};
#define BLOB_BUCKETS 256

/* A PUT in progress. */
struct put {
	struct pl_http_request *request; /* NULL once the connection went */
	struct slot slot;
	int fd;
	uint64_t start, received;  /* bytes before this request, and in it */
	uint64_t expected;         /* of this request's body */
	EVP_MD_CTX *hash;
	bool discard;              /* the slot is complete already */
	bool committing;           /* waiting for the store */
	struct put *next;
};

static struct upload_conf conf;
static struct pl_module *self;
static struct pl_store_space *slots_space, *users_space, *meta_space;
static struct service *services;
static struct blob *blobs[BLOB_BUCKETS];
static struct put *uploads;   /* in progress, to refuse a second PUT on a slot */
static uint8_t hmac_key[32];
static char *directory;
static struct event *sweep_timer;

/* ---- helpers -------------------------------------------------------------------- */

static void to_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static bool is_hex(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* kind is "put" or "get": the two URLs of a slot have different tokens,
 * so the GET URL a client shares does not let anyone write. */
static void token_of(const char *slot_id, const char *kind, char out[TOKEN_HEX + 1])
{
	char data[64];
	int n = snprintf(data, sizeof(data), "%s:%s", kind, slot_id);
	uint8_t mac[PL_SCRAM_MAX_DIGEST];
	pl_scram_hmac(PL_SCRAM_SHA256, hmac_key, sizeof(hmac_key), data, (size_t)n, mac);
	to_hex(mac, TOKEN_HEX / 2, out);
}

/* Constant-time, so that timing does not reveal a token's prefix. */
static bool token_ok(const char *slot_id, const char *kind, const char *given, size_t len)
{
	char expected[TOKEN_HEX + 1];
	token_of(slot_id, kind, expected);
	if (len != TOKEN_HEX)
		return false;
	unsigned diff = 0;
	for (size_t i = 0; i < TOKEN_HEX; i++)
		diff |= (unsigned)(expected[i] ^ given[i]);
	return diff == 0;
}

static char *blob_path(const char *sha)
{
	return pl_asprintf("%s/blobs/%s", directory, sha);
}

static char *partial_path(const char *slot_id)
{
	return pl_asprintf("%s/partial/%s", directory, slot_id);
}

static struct blob **blob_find(const char *sha)
{
	struct blob **b = &blobs[pl_hash_string(sha) % BLOB_BUCKETS];
	while (*b && strcmp((*b)->sha, sha) != 0)
		b = &(*b)->next;
	return b;
}

static uint64_t blob_refs(const char *sha)
{
	struct blob *b = *blob_find(sha);
	return b ? b->refs : 0;
}

static void blob_ref(const char *sha)
{
	struct blob **b = blob_find(sha);
	if (!*b) {
		*b = pl_calloc(1, sizeof(**b));
		snprintf((*b)->sha, sizeof((*b)->sha), "%s", sha);
	}
	(*b)->refs++;
}

/* Drops a reference; the file goes with the last. */
static void blob_unref(const char *sha)
{
	struct blob **b = blob_find(sha);
	if (!*b)
		return;
	if (--(*b)->refs > 0)
		return;
	struct blob *gone = *b;
	*b = gone->next;
	free(gone);
	char *path = blob_path(sha);
	if (unlink(path) != 0 && errno != ENOENT)
		pl_module_log(self, 1, "cannot remove %s: %s", path, strerror(errno));
	else
		pl_module_log(self, 2, "blob %s removed with its last reference", sha);
	free(path);
}

static void slot_clear(struct slot *s)
{
	free(s->owner);
	free(s->name);
	free(s->type);
	memset(s, 0, sizeof(*s));
}

static bool slot_parse(const char *id, size_t id_len, const void *value, size_t len,
		       struct slot *out)
{
	memset(out, 0, sizeof(*out));
	if (id_len != SLOT_HEX)
		return false;
	struct pl_xnode *n = pl_xml_parse_element(value, len, NS_RECORD);
	const char *owner = n ? pl_xnode_attr(n, "owner") : NULL;
	const char *name = n ? pl_xnode_attr(n, "name") : NULL;
	const char *size = n ? pl_xnode_attr(n, "size") : NULL;
	if (!owner || !name || !size) {
		pl_xnode_unref(&n);
		return false;
	}
	memcpy(out->id, id, SLOT_HEX);
	out->owner = pl_strdup(owner);
	out->name = pl_strdup(name);
	const char *type = pl_xnode_attr(n, "type");
	out->type = type ? pl_strdup(type) : NULL;
	out->size = strtoull(size, NULL, 10);
	const char *v = pl_xnode_attr(n, "created");
	out->created_ms = v ? strtoll(v, NULL, 10) : 0;
	v = pl_xnode_attr(n, "done");
	out->done_ms = v ? strtoll(v, NULL, 10) : 0;
	v = pl_xnode_attr(n, "sha256");
	if (v && strlen(v) == 64 && is_hex(v, 64)) {
		out->done = true;
		memcpy(out->sha, v, 65);
	}
	pl_xnode_unref(&n);
	return true;
}

/* Reads a slot by id; false when absent or unreadable. */
static bool slot_load(const char *id, size_t id_len, struct slot *out)
{
	memset(out, 0, sizeof(*out));
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (!read)
		return false;
	const void *value;
	size_t len;
	bool found = pl_store_get(read, slots_space, id, id_len, &value, &len) == 0 &&
		     slot_parse(id, id_len, value, len, out);
	pl_store_read_end(read);
	return found;
}

static void users_key(struct pl_store_key *k, const char *owner, const char *id)
{
	pl_store_key_init(k);
	pl_store_key_str(k, owner);
	pl_store_key_str(k, id);
}

static void slot_put(struct pl_store_write *w, const struct slot *s)
{
	struct pl_xnode *n = pl_xnode_new("slot", NS_RECORD);
	char number[32];
	pl_xnode_set_attr(n, "owner", s->owner);
	pl_xnode_set_attr(n, "name", s->name);
	if (s->type)
		pl_xnode_set_attr(n, "type", s->type);
	snprintf(number, sizeof(number), "%" PRIu64, s->size);
	pl_xnode_set_attr(n, "size", number);
	snprintf(number, sizeof(number), "%" PRId64, s->created_ms);
	pl_xnode_set_attr(n, "created", number);
	if (s->done) {
		snprintf(number, sizeof(number), "%" PRId64, s->done_ms);
		pl_xnode_set_attr(n, "done", number);
		pl_xnode_set_attr(n, "sha256", s->sha);
	}
	char *xml = pl_xnode_to_string(n, NULL);
	pl_store_put(w, slots_space, s->id, SLOT_HEX, xml, strlen(xml));
	struct pl_store_key k;
	users_key(&k, s->owner, s->id);
	pl_store_put(w, users_space, k.data, k.len, "", 0);
	free(xml);
	pl_xnode_unref(&n);
}

static struct put *put_of(const char *id)
{
	for (struct put *p = uploads; p; p = p->next)
		if (strcmp(p->slot.id, id) == 0)
			return p;
	return NULL;
}

/* Removes a slot: its records, its partial file, its blob reference. */
static void slot_delete(struct pl_store_write *w, const struct slot *s)
{
	pl_store_del(w, slots_space, s->id, SLOT_HEX);
	struct pl_store_key k;
	users_key(&k, s->owner, s->id);
	pl_store_del(w, users_space, k.data, k.len);
	if (s->done) {
		blob_unref(s->sha);
	} else if (!put_of(s->id)) {
		char *path = partial_path(s->id);
		unlink(path);
		free(path);
	}
}

static void on_stored(void *arg, int status)
{
	char *what = arg;
	if (status)
		pl_module_log(self, 0, "cannot store %s: %s", what, strerror(-status));
	free(what);
}

/* ---- XMPP side: the service ------------------------------------------------------- */

static void send_error(const struct pl_xnode *iq, enum pl_stanza_error condition,
		       const char *text, struct pl_xnode *app_error)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	pl_xnode_set_attr(reply, "type", "error");
	struct pl_xnode *error = pl_xnode_add_element(reply, "error", NULL);
	pl_xnode_set_attr(error, "type", pl_stanza_error_type(condition));
	pl_xnode_add_element(error, pl_stanza_error_name(condition), PL_NS_STANZAS);
	if (text)
		pl_xnode_add_text(pl_xnode_add_element(error, "text", PL_NS_STANZAS), text,
				  strlen(text));
	if (app_error)
		pl_xnode_add_child(error, app_error); /* takes the caller's reference */
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
}

static char *base_url_of(const char *host)
{
	if (conf.base_url)
		return pl_strdup(conf.base_url);
	const struct pl_http_conf *http = pl_http_config();
	if (http->tls_port)
		return pl_asprintf("https://%s:%" PRId64, host, http->tls_port);
	return pl_asprintf("http://%s:%" PRId64, host, http->port);
}

/* Percent-encodes a file name for a URL path segment (RFC 3986 unreserved
 * characters stay). */
static void url_encode(struct pl_buf *out, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p))
			pl_buf_append(out, p, 1);
		else
			pl_buf_printf(out, "%%%02X", *p);
	}
}

static char *slot_url(const struct slot *s, const char *host, const char *kind)
{
	char token[TOKEN_HEX + 1];
	token_of(s->id, kind, token);
	struct pl_buf out = { 0 };
	char *base = base_url_of(host);
	size_t n = strlen(base);
	while (n && base[n - 1] == '/')
		base[--n] = '\0';
	pl_buf_printf(&out, "%s" URL_PREFIX "%s/%s/", base, s->id, token);
	url_encode(&out, s->name);
	free(base);
	return pl_buf_take(&out);
}

/* A file name is shown and offered for download, never used as a path
 * here (files are named by slot id and hash); still, names that try to
 * climb directories or hide control characters are refused, so no
 * client downstream is tricked either. */
static bool filename_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 255 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return false;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '\\')
			return false;
	return true;
}

static bool type_ok(const char *type)
{
	if (type && (strlen(type) > 255 || strpbrk(type, "\r\n\"")))
		return false;
	if (!conf.allowed_types.count)
		return true;
	if (!type)
		return false;
	size_t type_len = strcspn(type, ";");
	while (type_len && type[type_len - 1] == ' ')
		type_len--;
	for (size_t i = 0; i < conf.allowed_types.count; i++) {
		const char *pattern = conf.allowed_types.items[i];
		size_t n = strlen(pattern);
		if (n >= 2 && strcmp(pattern + n - 2, "/*") == 0) {
			if (type_len > n - 1 && strncasecmp(type, pattern, n - 1) == 0)
				return true;
		} else if (n == type_len && strncasecmp(type, pattern, n) == 0) {
			return true;
		}
	}
	return false;
}

/* The answer to a slot request waits for the slot to be durable. Until
 * then its size counts here, so a burst of requests cannot slip past
 * the quota before the first is committed. */
struct slot_reply {
	struct pl_xnode *iq;
	struct slot slot;
	char *host;
	struct slot_reply *next;
};
static struct slot_reply *uncommitted;

struct usage_scan {
	struct pl_store_read *read;
	uint64_t bytes;
};

static int add_usage(void *arg, const void *key, size_t key_len, const void *value,
		     size_t value_len)
{
	struct usage_scan *u = arg;
	const char *owner, *id;
	size_t owner_len, id_len;
	size_t used = pl_store_key_read_str(key, key_len, &owner, &owner_len);
	if (!used || !pl_store_key_read_str((const uint8_t *)key + used, key_len - used, &id, &id_len))
		return 0;
	const void *v;
	size_t len;
	struct slot s;
	if (pl_store_get(u->read, slots_space, id, id_len, &v, &len) == 0 &&
	    slot_parse(id, id_len, v, len, &s)) {
		u->bytes += s.size;
		slot_clear(&s);
	}
	(void)value;
	(void)value_len;
	return 0;
}

static uint64_t usage_of(const char *owner)
{
	struct usage_scan u = { pl_store_read_begin(pl_server.store), 0 };
	if (!u.read)
		return 0;
	struct pl_store_key prefix;
	pl_store_key_init(&prefix);
	pl_store_key_str(&prefix, owner);
	pl_store_scan(u.read, users_space, prefix.data, prefix.len, NULL, 0, add_usage, &u);
	pl_store_read_end(u.read);
	for (struct slot_reply *sr = uncommitted; sr; sr = sr->next)
		if (strcmp(sr->slot.owner, owner) == 0)
			u.bytes += sr->slot.size;
	return u.bytes;
}

static void on_slot_stored(void *arg, int status)
{
	struct slot_reply *sr = arg;
	for (struct slot_reply **p = &uncommitted; *p; p = &(*p)->next) {
		if (*p == sr) {
			*p = sr->next;
			break;
		}
	}
	if (status) {
		pl_module_log(self, 0, "cannot store slot %s: %s", sr->slot.id, strerror(-status));
		send_error(sr->iq, PL_ERR_INTERNAL_SERVER_ERROR, NULL, NULL);
	} else {
		struct pl_xnode *reply = pl_iq_result(sr->iq);
		struct pl_xnode *slot = pl_xnode_add_element(reply, "slot", NS_UPLOAD);
		char *put = slot_url(&sr->slot, sr->host, "put");
		char *get = slot_url(&sr->slot, sr->host, "get");
		pl_xnode_set_attr(pl_xnode_add_element(slot, "put", NULL), "url", put);
		pl_xnode_set_attr(pl_xnode_add_element(slot, "get", NULL), "url", get);
		if (sr->slot.done)
			pl_xnode_add_element(slot, "stored", NS_DEDUP);
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
		free(put);
		free(get);
	}
	pl_xnode_unref(&sr->iq);
	slot_clear(&sr->slot);
	free(sr->host);
	free(sr);
}

/* The sha-256 of an XEP-0300 <hash/> in the request, as hex; false if none. */
static bool request_hash(const struct pl_xnode *request, char out[65])
{
	for (struct pl_xnode *h = pl_xnode_first_element(request); h; h = pl_xnode_next_element(h)) {
		const char *algo = pl_xnode_attr(h, "algo");
		if (strcmp(h->name, "hash") != 0 || !h->ns || strcmp(h->ns, NS_HASHES) != 0 || !algo ||
		    strcmp(algo, "sha-256") != 0)
			continue;
		char *text = pl_xnode_text(h);
		uint8_t *raw = NULL;
		size_t raw_len = 0;
		bool good = pl_base64_decode(text, strlen(text), &raw, &raw_len) == 0 && raw_len == 32;
		if (good)
			to_hex(raw, 32, out);
		free(raw);
		free(text);
		if (good)
			return true;
	}
	return false;
}

static void slot_request(struct service *sv, struct pl_xnode *iq, const struct pl_xnode *request,
			 struct pl_session *origin)
{
	const char *name = pl_xnode_attr(request, "filename");
	const char *size_text = pl_xnode_attr(request, "size");
	const char *type = pl_xnode_attr(request, "content-type");
	if (!origin || strcmp(origin->host, sv->host) != 0) {
		send_error(iq, PL_ERR_NOT_ALLOWED, "Only accounts of this host may upload", NULL);
		return;
	}
	char *end = NULL;
	unsigned long long size = size_text ? strtoull(size_text, &end, 10) : 0;
	if (!name || !size_text || !*size_text || *end || size_text[0] == '-' || size == 0) {
		send_error(iq, PL_ERR_BAD_REQUEST, "A filename and a positive size are needed", NULL);
		return;
	}
	if (!filename_ok(name)) {
		pl_module_log(self, 1, "%s asked for a slot with a bad file name", origin->bare_jid);
		send_error(iq, PL_ERR_BAD_REQUEST, "The file name must be a plain name", NULL);
		return;
	}
	if (size > conf.max_file_size) {
		pl_module_log(self, 2, "%s: file of %llu bytes too large", origin->bare_jid, size);
		char text[100], max[32];
		snprintf(text, sizeof(text), "File too large. The maximum file size is %" PRIu64 " bytes",
			 conf.max_file_size);
		snprintf(max, sizeof(max), "%" PRIu64, conf.max_file_size);
		struct pl_xnode *app = pl_xnode_new("file-too-large", NS_UPLOAD);
		struct pl_xnode *m = pl_xnode_add_element(app, "max-file-size", NULL);
		pl_xnode_add_text(m, max, strlen(max));
		send_error(iq, PL_ERR_NOT_ACCEPTABLE, text, app); /* takes app */
		return;
	}
	if (!type_ok(type)) {
		pl_module_log(self, 2, "%s: content type %s refused", origin->bare_jid,
			      type ? type : "(none)");
		send_error(iq, PL_ERR_NOT_ACCEPTABLE, "This content type is not accepted", NULL);
		return;
	}
	uint64_t used = usage_of(origin->bare_jid);
	if (used + size > conf.quota) {
		pl_module_log(self, 2, "%s: over quota (%" PRIu64 " + %llu > %" PRIu64 ")",
			      origin->bare_jid, used, size, conf.quota);
		send_error(iq, PL_ERR_RESOURCE_CONSTRAINT, "Upload quota exceeded", NULL);
		return;
	}
	struct slot_reply *sr = pl_calloc(1, sizeof(*sr));
	uint8_t id[SLOT_HEX / 2];
	pl_random_bytes(id, sizeof(id));
	to_hex(id, sizeof(id), sr->slot.id);
	sr->slot.owner = pl_strdup(origin->bare_jid);
	sr->slot.name = pl_strdup(name);
	sr->slot.type = type ? pl_strdup(type) : NULL;
	sr->slot.size = size;
	sr->slot.created_ms = pl_now_ms();
	char sha[65];
	if (request_hash(request, sha) && blob_refs(sha) > 0) {
		char *path = blob_path(sha);
		struct stat st;
		if (stat(path, &st) == 0 && (uint64_t)st.st_size == size) {
			/* De-duplication: the bytes are here already. */
			sr->slot.done = true;
			sr->slot.done_ms = sr->slot.created_ms;
			memcpy(sr->slot.sha, sha, sizeof(sha));
			blob_ref(sha);
			pl_module_log(self, 2, "slot %s for %s: blob %s already stored", sr->slot.id,
				      origin->bare_jid, sha);
		}
		free(path);
	}
	sr->iq = pl_xnode_ref(iq);
	sr->host = pl_strdup(sv->host);
	sr->next = uncommitted;
	uncommitted = sr;
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	slot_put(w, &sr->slot);
	pl_module_log(self, 3, "slot %s for %s (%llu bytes)", sr->slot.id, origin->bare_jid, size);
	pl_store_write_submit(w, on_slot_stored, sr);
}

static void disco_info(struct pl_xnode *iq)
{
	struct pl_xnode *reply = pl_iq_result(iq);
	struct pl_xnode *q = pl_xnode_add_element(reply, "query", NS_DISCO_INFO);
	struct pl_xnode *id = pl_xnode_add_element(q, "identity", NULL);
	pl_xnode_set_attr(id, "category", "store");
	pl_xnode_set_attr(id, "type", "file");
	pl_xnode_set_attr(id, "name", "HTTP File Upload");
	static const char *const features[] = { NS_DISCO_INFO, NS_UPLOAD, NS_RESUME, NS_DEDUP,
						NS_HASHES, "urn:xmpp:hash-function-text-names:sha-256" };
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		pl_xnode_set_attr(pl_xnode_add_element(q, "feature", NULL), "var", features[i]);
	struct pl_xnode *x = pl_xnode_add_element(q, "x", "jabber:x:data");
	pl_xnode_set_attr(x, "type", "result");
	struct pl_xnode *f = pl_xnode_add_element(x, "field", NULL);
	pl_xnode_set_attr(f, "var", "FORM_TYPE");
	pl_xnode_set_attr(f, "type", "hidden");
	pl_xnode_add_text(pl_xnode_add_element(f, "value", NULL), NS_UPLOAD, strlen(NS_UPLOAD));
	f = pl_xnode_add_element(x, "field", NULL);
	pl_xnode_set_attr(f, "var", "max-file-size");
	char max[32];
	snprintf(max, sizeof(max), "%" PRIu64, conf.max_file_size);
	pl_xnode_add_text(pl_xnode_add_element(f, "value", NULL), max, strlen(max));
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
}

static void route_to_service(void *context, struct pl_xnode *stanza, struct pl_session *origin,
			     const struct pl_jid *to)
{
	struct service *sv = context;
	const char *type = pl_xnode_attr(stanza, "type");
	if (strcmp(stanza->name, "iq") != 0 || !type)
		return; /* messages and presence to the service mean nothing */
	if (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)
		return;
	struct pl_xnode *payload = pl_xnode_first_element(stanza);
	if (to->local || to->resource || !payload) {
		send_error(stanza, PL_ERR_SERVICE_UNAVAILABLE, NULL, NULL);
		return;
	}
	bool get = strcmp(type, "get") == 0;
	const char *ns = payload->ns;
	const char *name = payload->name;
	if (get && strcmp(name, "query") == 0 && ns && strcmp(ns, NS_DISCO_INFO) == 0) {
		if (pl_xnode_attr(payload, "node"))
			send_error(stanza, PL_ERR_ITEM_NOT_FOUND, NULL, NULL);
		else
			disco_info(stanza);
	} else if (get && strcmp(name, "query") == 0 && ns && strcmp(ns, NS_DISCO_ITEMS) == 0) {
		struct pl_xnode *reply = pl_iq_result(stanza);
		pl_xnode_add_element(reply, "query", NS_DISCO_ITEMS);
		pl_route(reply, NULL);
		pl_xnode_unref(&reply);
	} else if (get && strcmp(name, "request") == 0 && ns && strcmp(ns, NS_UPLOAD) == 0) {
		slot_request(sv, stanza, payload, origin);
	} else {
		send_error(stanza, PL_ERR_FEATURE_NOT_IMPLEMENTED, NULL, NULL);
	}
}

static int on_disco_items(struct pl_event *event, void *userdata)
{
	struct pl_disco_items *items = event->data;
	for (struct service *sv = services; sv; sv = sv->next) {
		if (!items->host || strcmp(sv->host, items->host) != 0)
			continue;
		struct pl_xnode *item = pl_xnode_add_element(items->query, "item", NULL);
		pl_xnode_set_attr(item, "jid", sv->domain);
		pl_xnode_set_attr(item, "name", "HTTP File Upload");
	}
	(void)userdata;
	return PL_CONTINUE;
}

/* ---- HTTP side ------------------------------------------------------------------- */

/* Splits /upload/<slot>/<token>/<name>; false if it is not that shape. */
static bool parse_path(const char *path, char id[SLOT_HEX + 1], const char **token)
{
	if (strncmp(path, URL_PREFIX, strlen(URL_PREFIX)) != 0)
		return false;
	const char *p = path + strlen(URL_PREFIX);
	const char *slash = strchr(p, '/');
	if (!slash || slash - p != SLOT_HEX || !is_hex(p, SLOT_HEX))
		return false;
	memcpy(id, p, SLOT_HEX);
	id[SLOT_HEX] = '\0';
	*token = slash + 1;
	const char *end = strchr(*token, '/');
	return end && end - *token == TOKEN_HEX;
}

static void put_free(struct put *p)
{
	for (struct put **pp = &uploads; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	if (p->fd >= 0)
		close(p->fd);
	if (p->hash)
		EVP_MD_CTX_free(p->hash);
	slot_clear(&p->slot);
	free(p);
}

static bool slot_expired(const struct slot *s, int64_t now)
{
	if (!s->done)
		return now - s->created_ms > conf.slot_timeout_ms;
	return conf.expire_after_ms > 0 && now - s->done_ms >= conf.expire_after_ms;
}

/* Feeds the first n bytes of a partial file to the hash (a resumed
 * upload: the hash covers the whole file). */
static bool hash_prefix(struct put *p, uint64_t n)
{
	char *buf = pl_malloc(CHUNK);
	uint64_t done = 0;
	while (done < n) {
		size_t want = n - done < CHUNK ? (size_t)(n - done) : CHUNK;
		ssize_t got = pread(p->fd, buf, want, (off_t)done);
		if (got <= 0)
			break;
		EVP_DigestUpdate(p->hash, buf, (size_t)got);
		done += (uint64_t)got;
	}
	free(buf);
	return done == n;
}

/* "bytes START-END/TOTAL" (RFC 9110 14.4). */
static bool parse_content_range(const char *v, uint64_t *start, uint64_t *end, uint64_t *total)
{
	unsigned long long a, b, c;
	int used = 0;
	if (sscanf(v, "bytes %llu-%llu/%llu%n", &a, &b, &c, &used) != 3 || v[used] != '\0' ||
	    a > b || b >= c)
		return false;
	*start = a;
	*end = b;
	*total = c;
	return true;
}

static void add_offset_header(struct pl_http_request *r, uint64_t offset, uint64_t size)
{
	char number[32];
	snprintf(number, sizeof(number), "%" PRIu64, offset);
	pl_http_add_header(r, "Upload-Offset", number);
	snprintf(number, sizeof(number), "%" PRIu64, size);
	pl_http_add_header(r, "Upload-Length", number);
}

static int put_headers(struct pl_http_request *r, void *userdata)
{
	char id[SLOT_HEX + 1];
	const char *token;
	const char *peer = pl_http_peer_address(r);
	if (!parse_path(pl_http_path(r), id, &token) || !token_ok(id, "put", token, TOKEN_HEX)) {
		pl_module_log(self, 2, "%s: PUT %s: no such slot", peer, pl_http_path(r));
		return 404;
	}
	struct slot s;
	if (!slot_load(id, SLOT_HEX, &s)) {
		pl_module_log(self, 2, "%s: PUT to unknown slot %s", peer, id);
		return 404;
	}
	struct put *p = pl_calloc(1, sizeof(*p));
	p->slot = s;
	p->fd = -1;
	int status = 0;
	const char *length = pl_http_header(r, "Content-Length");
	const char *range = pl_http_header(r, "Content-Range");
	const char *type = pl_http_header(r, "Content-Type");
	char *end = NULL;
	unsigned long long n = length ? strtoull(length, &end, 10) : 0;
	uint64_t start = 0, last = 0, total = 0;
	if (slot_expired(&s, pl_now_ms())) {
		pl_module_log(self, 2, "%s: PUT to expired slot %s", peer, id);
		status = 410;
	} else if (put_of(id)) {
		pl_module_log(self, 2, "%s: PUT to slot %s while another is running", peer, id);
		status = 409;
	} else if (!length || !*length || *end || pl_http_header(r, "Transfer-Encoding")) {
		status = 411;
	} else if (s.type && (!type || strcasecmp(type, s.type) != 0)) {
		pl_module_log(self, 2, "%s: PUT to slot %s with Content-Type %s, not %s", peer, id,
			      type ? type : "(none)", s.type);
		status = 400;
	} else if (range && !parse_content_range(range, &start, &last, &total)) {
		status = 400;
	} else if (range ? (total != s.size || last != total - 1 || n != last - start + 1)
			 : n != s.size) {
		pl_module_log(self, 2, "%s: PUT of %llu bytes to slot %s of %" PRIu64 " bytes", peer, n,
			      id, s.size);
		status = 400;
	}
	if (status) {
		put_free(p);
		return status;
	}
	p->expected = n;
	if (!p->slot.type && type && type_ok(type))
		p->slot.type = pl_strdup(type); /* the slot named none: keep the PUT's */
	if (s.done) {
		/* Complete already (de-duplicated, or a retried PUT): the body
		 * is not stored again. */
		p->discard = true;
	} else {
		char *path = partial_path(id);
		p->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (range ? 0 : O_TRUNC), 0600);
		struct stat st;
		if (p->fd < 0 || fstat(p->fd, &st) != 0) {
			pl_module_log(self, 0, "cannot open %s: %s", path, strerror(errno));
			free(path);
			put_free(p);
			return 500;
		}
		free(path);
		if (range && (uint64_t)st.st_size != start) {
			pl_module_log(self, 2, "%s: resume of slot %s at %" PRIu64 ", have %jd", peer,
				      id, start, (intmax_t)st.st_size);
			add_offset_header(r, (uint64_t)st.st_size, s.size);
			put_free(p);
			return 416;
		}
		p->start = start;
		p->hash = EVP_MD_CTX_new();
		EVP_DigestInit_ex(p->hash, EVP_sha256(), NULL);
		/* Reopen for reading the prefix; the write fd is O_WRONLY. */
		if (start) {
			int wfd = p->fd;
			char *again = partial_path(id);
			p->fd = open(again, O_RDONLY | O_CLOEXEC);
			free(again);
			bool good = p->fd >= 0 && hash_prefix(p, start);
			if (p->fd >= 0)
				close(p->fd);
			p->fd = wfd;
			if (!good) {
				put_free(p);
				return 500;
			}
			pl_module_log(self, 2, "%s: upload of slot %s resumes at %" PRIu64, peer, id,
				      start);
		}
		if (lseek(p->fd, (off_t)start, SEEK_SET) < 0) {
			put_free(p);
			return 500;
		}
	}
	p->request = r;
	p->next = uploads;
	uploads = p;
	pl_http_set_data(r, p);
	(void)userdata;
	return 0;
}

static int put_body(struct pl_http_request *r, const char *data, size_t len, void *userdata)
{
	struct put *p = pl_http_get_data(r);
	p->received += len;
	if (p->received > p->expected)
		return 400;
	if (p->discard)
		return 0;
	EVP_DigestUpdate(p->hash, data, len);
	while (len) {
		ssize_t n = write(p->fd, data, len);
		if (n < 0) {
			pl_module_log(self, 0, "writing slot %s: %s", p->slot.id, strerror(errno));
			return 500;
		}
		data += n;
		len -= (size_t)n;
	}
	(void)userdata;
	return 0;
}

static void on_put_stored(void *arg, int status)
{
	struct put *p = arg;
	if (p->request) {
		if (status)
			pl_http_respond(p->request, 500, NULL, NULL, 0);
		else
			pl_http_respond(p->request, 201, NULL, NULL, 0);
	}
	put_free(p);
}

static void put_complete(struct pl_http_request *r, void *userdata)
{
	struct put *p = pl_http_get_data(r);
	if (p->discard || p->received != p->expected) {
		int status = p->discard ? 201 : 400;
		p->request = NULL;
		put_free(p);
		pl_http_respond(r, status, NULL, NULL, 0);
		return;
	}
	struct slot still;
	if (!slot_load(p->slot.id, SLOT_HEX, &still)) {
		/* Deleted (parleyctl, expiry) while the bytes came in. */
		pl_module_log(self, 2, "slot %s was deleted during its upload", p->slot.id);
		char *partial = partial_path(p->slot.id);
		unlink(partial);
		free(partial);
		p->request = NULL;
		put_free(p);
		pl_http_respond(r, 410, NULL, NULL, 0);
		return;
	}
	slot_clear(&still);
	uint8_t digest[32];
	unsigned digest_len = 0;
	EVP_DigestFinal_ex(p->hash, digest, &digest_len);
	to_hex(digest, 32, p->slot.sha);
	char *partial = partial_path(p->slot.id);
	char *blob = blob_path(p->slot.sha);
	bool failed = fdatasync(p->fd) != 0;
	close(p->fd);
	p->fd = -1;
	struct stat st;
	if (!failed && (blob_refs(p->slot.sha) > 0 || stat(blob, &st) == 0)) {
		/* The same bytes are stored already: keep one copy. */
		unlink(partial);
		pl_module_log(self, 2, "slot %s: same bytes as blob %s, stored once", p->slot.id,
			      p->slot.sha);
	} else if (failed || rename(partial, blob) != 0) {
		pl_module_log(self, 0, "cannot keep %s: %s", blob, strerror(errno));
		free(partial);
		free(blob);
		p->request = NULL;
		put_free(p);
		pl_http_respond(r, 500, NULL, NULL, 0);
		return;
	}
	free(partial);
	free(blob);
	blob_ref(p->slot.sha);
	p->slot.done = true;
	p->slot.done_ms = pl_now_ms();
	pl_module_log(self, 2, "slot %s of %s: %" PRIu64 " bytes uploaded", p->slot.id,
		      p->slot.owner, p->slot.size);
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	slot_put(w, &p->slot);
	p->committing = true;
	pl_store_write_submit(w, on_put_stored, p);
	(void)userdata;
}

static void put_abort(struct pl_http_request *r, void *userdata)
{
	struct put *p = pl_http_get_data(r);
	if (!p)
		return;
	if (p->committing) {
		p->request = NULL; /* the store completion frees it */
		return;
	}
	if (!p->discard)
		pl_module_log(self, 2, "upload of slot %s interrupted at %" PRIu64 " of %" PRIu64
			      " bytes", p->slot.id, p->start + p->received, p->slot.size);
	put_free(p);
	(void)userdata;
}

/* Content-Disposition (RFC 6266): media that browsers show safely are
 * inline, anything else an attachment, so an uploaded HTML page never
 * runs as the server's own. */
static char *disposition_of(const struct slot *s)
{
	const char *type = s->type ? s->type : "";
	bool inline_ok = strncasecmp(type, "image/", 6) == 0 && strncasecmp(type, "image/svg", 9) != 0;
	inline_ok = inline_ok || strncasecmp(type, "audio/", 6) == 0 ||
		    strncasecmp(type, "video/", 6) == 0;
	struct pl_buf out = { 0 };
	pl_buf_puts(&out, inline_ok ? "inline; filename=\"" : "attachment; filename=\"");
	for (const unsigned char *p = (const unsigned char *)s->name; *p; p++)
		pl_buf_append(&out, (*p < 0x80 && *p != '"' && *p != '\\') ? (const char *)p : "_", 1);
	pl_buf_puts(&out, "\"; filename*=UTF-8''");
	url_encode(&out, s->name);
	return pl_buf_take(&out);
}

/* One "bytes=..." range of a file of `size` bytes; 0 when satisfiable,
 * -1 when malformed (ignored: the whole file), -2 when unsatisfiable. */
static int parse_range(const char *v, uint64_t size, uint64_t *from, uint64_t *to)
{
	if (strncmp(v, "bytes=", 6) != 0 || strchr(v, ','))
		return -1;
	v += 6;
	unsigned long long a, b;
	int used = 0;
	if (sscanf(v, "-%llu%n", &a, &used) == 1 && v[used] == '\0') {
		if (a == 0)
			return -2;
		*from = a >= size ? 0 : size - a;
		*to = size - 1;
		return 0;
	}
	if (sscanf(v, "%llu-%n", &a, &used) == 1 && v[used] == '\0') {
		b = size - 1;
	} else if (sscanf(v, "%llu-%llu%n", &a, &b, &used) != 2 || v[used] != '\0' || b < a) {
		return -1;
	}
	if (a >= size)
		return -2;
	*from = a;
	*to = b >= size ? size - 1 : b;
	return 0;
}

static void get_complete(struct pl_http_request *r, void *userdata)
{
	char id[SLOT_HEX + 1];
	const char *token;
	bool head = strcmp(pl_http_method(r), "HEAD") == 0;
	if (!parse_path(pl_http_path(r), id, &token)) {
		pl_http_respond(r, 404, NULL, NULL, 0);
		return;
	}
	bool put_url = token_ok(id, "put", token, TOKEN_HEX);
	struct slot s;
	if ((!put_url && !token_ok(id, "get", token, TOKEN_HEX)) || !slot_load(id, SLOT_HEX, &s)) {
		pl_module_log(self, 2, "%s: %s %s: no such file", pl_http_peer_address(r),
			      pl_http_method(r), pl_http_path(r));
		pl_http_respond(r, 404, NULL, NULL, 0);
		return;
	}
	if (slot_expired(&s, pl_now_ms())) {
		slot_clear(&s);
		pl_http_respond(r, 410, NULL, NULL, 0);
		return;
	}
	if (put_url) {
		/* The resume extension: HEAD on the PUT URL tells how many
		 * bytes arrived. */
		if (!head) {
			slot_clear(&s);
			pl_http_respond(r, 405, NULL, NULL, 0);
			return;
		}
		uint64_t have = s.size;
		if (!s.done) {
			struct put *running = put_of(id);
			char *path = partial_path(id);
			struct stat st;
			have = running ? running->start + running->received
				       : stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
			free(path);
		}
		add_offset_header(r, have, s.size);
		pl_http_add_header(r, "Cache-Control", "no-store");
		slot_clear(&s);
		pl_http_respond(r, 204, NULL, NULL, 0);
		return;
	}
	if (!s.done) {
		slot_clear(&s);
		pl_http_respond(r, 404, NULL, NULL, 0);
		return;
	}
	char *path = blob_path(s.sha);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		pl_module_log(self, 0, "slot %s: blob %s missing", id, s.sha);
		if (fd >= 0)
			close(fd);
		slot_clear(&s);
		pl_http_respond(r, 404, NULL, NULL, 0);
		return;
	}
	uint64_t size = (uint64_t)st.st_size;
	char etag[70], value[100];
	snprintf(etag, sizeof(etag), "\"%s\"", s.sha);
	pl_http_add_header(r, "ETag", etag);
	pl_http_add_header(r, "Accept-Ranges", "bytes");
	/* The bytes behind a URL never change: caches may keep them. */
	pl_http_add_header(r, "Cache-Control", "public, max-age=31536000, immutable");
	time_t at = (time_t)(s.done_ms / 1000);
	struct tm tm;
	gmtime_r(&at, &tm);
	strftime(value, sizeof(value), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	pl_http_add_header(r, "Last-Modified", value);
	char *disposition = disposition_of(&s);
	pl_http_add_header(r, "Content-Disposition", disposition);
	free(disposition);
	pl_http_add_header(r, "X-Content-Type-Options", "nosniff");
	pl_http_add_header(r, "Content-Security-Policy", "default-src 'none'; sandbox");
	const char *type = s.type ? s.type : "application/octet-stream";
	const char *match = pl_http_header(r, "If-None-Match");
	if (match && (strstr(match, etag) || strcmp(match, "*") == 0)) {
		close(fd);
		slot_clear(&s);
		pl_http_respond(r, 304, NULL, NULL, 0);
		return;
	}
	const char *range = pl_http_header(r, "Range");
	const char *if_range = pl_http_header(r, "If-Range");
	uint64_t from = 0, to = size ? size - 1 : 0;
	int rc = range && (!if_range || strcmp(if_range, etag) == 0) && size
			 ? parse_range(range, size, &from, &to)
			 : -1;
	if (rc == -2) {
		snprintf(value, sizeof(value), "bytes */%" PRIu64, size);
		pl_http_add_header(r, "Content-Range", value);
		close(fd);
		slot_clear(&s);
		pl_http_respond(r, 416, NULL, NULL, 0);
		return;
	}
	int status = 200;
	if (rc == 0) {
		status = 206;
		snprintf(value, sizeof(value), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, from, to, size);
		pl_http_add_header(r, "Content-Range", value);
	} else {
		from = 0;
		to = size - 1;
	}
	uint64_t len = size ? to - from + 1 : 0;
	char *type_copy = pl_strdup(type);
	slot_clear(&s);
	pl_http_respond_file(r, status, type_copy, fd, from, len);
	free(type_copy);
	(void)userdata;
}

static const struct pl_http_handler put_handler = {
	.on_headers = put_headers,
	.on_body = put_body,
	.on_complete = put_complete,
	.on_abort = put_abort,
	.max_body = (uint64_t)1 << 50, /* the slot's size is checked in put_headers */
	.cors = true,
};

static const struct pl_http_handler get_handler = {
	.on_complete = get_complete,
	.cors = true,
};

/* ---- expiry ---------------------------------------------------------------------- */

struct sweep {
	int64_t now;
	struct slot *expired;
	size_t count, cap;
	const char *owner;       /* list: only this account's (NULL: all) */
	struct pl_buf *listing;  /* list: output lines */
};

static int sweep_one(void *arg, const void *key, size_t key_len, const void *value,
		     size_t value_len)
{
	struct sweep *sw = arg;
	struct slot s;
	if (!slot_parse(key, key_len, value, value_len, &s))
		return 0;
	if (sw->listing) {
		if (!sw->owner || strcmp(sw->owner, s.owner) == 0)
			pl_buf_printf(sw->listing, "%s %s %" PRIu64 " %s %s %s\n", s.id, s.owner,
				      s.size, s.done ? "stored" : "pending",
				      s.type ? s.type : "-", s.name);
		slot_clear(&s);
		return 0;
	}
	/* A pending slot gets the timeout and a grace of the same again, so
	 * an upload still running or about to resume is not pulled away. */
	bool expired = s.done ? slot_expired(&s, sw->now)
			      : sw->now - s.created_ms > 2 * conf.slot_timeout_ms && !put_of(s.id);
	if (!expired) {
		slot_clear(&s);
		return 0;
	}
	pl_grow((void **)&sw->expired, &sw->cap, sw->count + 1, sizeof(*sw->expired));
	sw->expired[sw->count++] = s;
	return 0;
}

static bool slot_exists(const char *id)
{
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	const void *value;
	size_t len;
	bool found = read && pl_store_get(read, slots_space, id, SLOT_HEX, &value, &len) == 0;
	if (read)
		pl_store_read_end(read);
	return found;
}

/* Files no slot accounts for: a crash between a file's rename and its
 * slot's commit, or a slot deleted while the daemon was down. A blob
 * with no reference is never in use (references are taken in the same
 * step as the rename), nor is a partial file without its slot. */
static void sweep_orphans(const char *sub)
{
	char *path = pl_asprintf("%s/%s", directory, sub);
	DIR *d = opendir(path);
	struct dirent *e;
	size_t removed = 0;
	while (d && (e = readdir(d))) {
		const char *name = e->d_name;
		bool blob = strcmp(sub, "blobs") == 0;
		size_t n = strlen(name);
		if (name[0] == '.')
			continue;
		bool orphan = blob ? n != 64 || !is_hex(name, n) || blob_refs(name) == 0
				   : n != SLOT_HEX || !is_hex(name, n) ||
					     (!put_of(name) && !slot_exists(name));
		if (!orphan)
			continue;
		char *file = pl_asprintf("%s/%s", path, name);
		if (unlink(file) == 0)
			removed++;
		free(file);
	}
	if (d)
		closedir(d);
	if (removed)
		pl_module_log(self, 1, "removed %zu stray files from %s", removed, path);
	free(path);
}

static void sweep_now(void)
{
	sweep_orphans("blobs");
	sweep_orphans("partial");
	struct sweep sw = { .now = pl_now_ms() };
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (!read)
		return;
	pl_store_scan(read, slots_space, NULL, 0, NULL, 0, sweep_one, &sw);
	pl_store_read_end(read);
	if (!sw.count) {
		free(sw.expired);
		return;
	}
	struct pl_store_write *w = pl_store_write_begin(pl_server.store);
	for (size_t i = 0; i < sw.count; i++) {
		slot_delete(w, &sw.expired[i]);
		slot_clear(&sw.expired[i]);
	}
	pl_module_log(self, 2, "expired %zu upload slots", sw.count);
	pl_store_write_submit(w, on_stored, pl_strdup("expired slots"));
	free(sw.expired);
}

static void on_sweep_timer(evutil_socket_t fd, short what, void *arg)
{
	sweep_now();
	(void)fd;
	(void)what;
	(void)arg;
}

/* ---- parleyctl upload ------------------------------------------------------------ */

static int on_ctl_upload(struct pl_event *event, void *userdata)
{
	struct pl_ctl_command *command = event->data;
	const char *sub = command->count >= 2 ? command->fields[1] : "";
	if (strcmp(sub, "list") == 0 && command->count <= 3) {
		char *owner = NULL;
		if (command->count == 3) {
			owner = pl_jid_normalize_bare(command->fields[2]);
			if (!owner || !strchr(owner, '@')) {
				free(owner);
				command->usage = pl_strdup("usage: upload list [JID]");
				return PL_HANDLED;
			}
		}
		struct pl_buf listing = { 0 };
		struct sweep sw = { .owner = owner, .listing = &listing };
		struct pl_store_read *read = pl_store_read_begin(pl_server.store);
		if (read) {
			pl_store_scan(read, slots_space, NULL, 0, NULL, 0, sweep_one, &sw);
			pl_store_read_end(read);
		}
		pl_buf_puts(&listing, "");
		pl_ctl_command_done(command->request, 0, listing.data ? listing.data : "");
		pl_buf_free(&listing);
		free(owner);
		return PL_HANDLED;
	}
	if (strcmp(sub, "delete") == 0 && command->count == 3) {
		const char *id = command->fields[2];
		struct slot s;
		if (strlen(id) != SLOT_HEX || !slot_load(id, SLOT_HEX, &s)) {
			pl_ctl_command_done(command->request, -ENOENT, NULL);
			return PL_HANDLED;
		}
		struct pl_store_write *w = pl_store_write_begin(pl_server.store);
		slot_delete(w, &s);
		pl_module_log(self, 2, "slot %s of %s deleted (parleyctl)", s.id, s.owner);
		slot_clear(&s);
		pl_store_write_submit(w, pl_ctl_command_done_status, command->request);
		return PL_HANDLED;
	}
	command->usage = pl_strdup("usage: upload list [JID] | upload delete SLOT");
	(void)userdata;
	return PL_HANDLED;
}

/* ---- load, unload ---------------------------------------------------------------- */

static int count_blob(void *arg, const void *key, size_t key_len, const void *value,
		      size_t value_len)
{
	struct slot s;
	if (slot_parse(key, key_len, value, value_len, &s)) {
		if (s.done)
			blob_ref(s.sha);
		slot_clear(&s);
	}
	(void)arg;
	return 0;
}

/* The URL key, and the blob reference counts rebuilt from the slots. */
static void load_state(void)
{
	pl_store_secret(meta_space, "hmac-key", hmac_key, sizeof(hmac_key));
	struct pl_store_read *read = pl_store_read_begin(pl_server.store);
	if (read) {
		pl_store_scan(read, slots_space, NULL, 0, NULL, 0, count_blob, NULL);
		pl_store_read_end(read);
	}
}

static void upload_unload(struct pl_module *m);

static int load_service(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct upload_conf *)conf_ptr;
	self = m;
	if (!conf.subdomain || !*conf.subdomain || strchr(conf.subdomain, '@') ||
	    strchr(conf.subdomain, '/'))
		return pl_error(error, -EINVAL, "subdomain must be a DNS label such as \"upload\"");
	directory = conf.directory ? pl_strdup(conf.directory)
				   : pl_asprintf("%s/upload", pl_server.core.storage_path);
	char *blobs_dir = pl_asprintf("%s/blobs", directory);
	char *partial_dir = pl_asprintf("%s/partial", directory);
	int rc = pl_mkdir_p(blobs_dir);
	if (rc == 0)
		rc = pl_mkdir_p(partial_dir);
	free(blobs_dir);
	free(partial_dir);
	if (rc)
		return pl_error(error, -EIO, "cannot create the directories under %s", directory);
	slots_space = pl_store_open(m, "slots");
	users_space = pl_store_open(m, "users");
	meta_space = pl_store_open(m, "meta");
	if (!slots_space || !users_space || !meta_space)
		return pl_error(error, -EIO, "cannot open the upload store spaces");
	load_state();
	for (size_t i = 0; i < pl_server.host_count; i++) {
		char *raw = pl_asprintf("%s.%s", conf.subdomain, pl_server.hosts[i].name);
		char *domain = pl_jid_prep_domain(raw);
		free(raw);
		if (!domain)
			return pl_error(error, -EINVAL, "subdomain \"%s\" makes no valid domain",
					conf.subdomain);
		struct service *sv = pl_calloc(1, sizeof(*sv));
		sv->domain = domain;
		sv->host = pl_strdup(pl_server.hosts[i].name);
		sv->next = services;
		services = sv;
		if (pl_router_add_domain(domain, route_to_service, sv) != 0)
			return pl_error(error, -EEXIST, "the domain %s is already served", domain);
		sv->registered = true;
		pl_module_log(m, 2, "upload service %s for %s", domain, sv->host);
	}
	/* The HTTP listener starts after the modules load: ask the
	 * configuration whether there will be one. */
	if (!conf.base_url && !pl_config_find(pl_server.config, "http", NULL))
		pl_module_log(m, 1, "no <http> listener and no base-url: slot URLs lead nowhere");
	if (pl_http_route(m, "PUT", URL_PREFIX "*", &put_handler, NULL) != 0 ||
	    pl_http_route(m, "GET", URL_PREFIX "*", &get_handler, NULL) != 0)
		return pl_error(error, -EEXIST, "the HTTP path " URL_PREFIX " is taken");
	pl_hook(m, "disco/items", on_disco_items, NULL, 0);
	pl_hook(m, "ctl/upload", on_ctl_upload, NULL, 0);
	sweep_timer = event_new(pl_server.base, -1, EV_PERSIST, on_sweep_timer, NULL);
	struct timeval tv = { conf.sweep_interval_ms / 1000, (conf.sweep_interval_ms % 1000) * 1000 };
	event_add(sweep_timer, &tv);
	return 0;
}

/* The core does not unload a module whose load failed: undo here. */
static int upload_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	int rc = load_service(m, conf_ptr, error);
	if (rc)
		upload_unload(m);
	return rc;
}

static void upload_unload(struct pl_module *m)
{
	if (sweep_timer) {
		event_free(sweep_timer);
		sweep_timer = NULL;
	}
	while (uploads) {
		uploads->request = NULL;
		put_free(uploads);
	}
	for (size_t b = 0; b < BLOB_BUCKETS; b++) {
		while (blobs[b]) {
			struct blob *gone = blobs[b];
			blobs[b] = gone->next;
			free(gone);
		}
	}
	while (services) {
		struct service *sv = services;
		services = sv->next;
		if (sv->registered)
			pl_router_remove_domain(sv->domain);
		free(sv->domain);
		free(sv->host);
		free(sv);
	}
	free(directory);
	directory = NULL;
	(void)m;
}

PL_MODULE(upload, .version = "0.1", .options = upload_options,
	  .conf_size = sizeof(struct upload_conf), .load = upload_load, .unload = upload_unload);
