/* HTTP file upload (XEP-0363, modules/mod_upload.c) end to end: the
 * service in disco, slot requests and their refusals (too large with
 * <file-too-large/>, over quota, a refused content type, a file name
 * that climbs directories), PUT and GET of the same bytes and type with
 * ETag, Content-Disposition, caching and CORS headers, Range and
 * If-None-Match, a PUT of the wrong size, unknown slots and forged
 * tokens, an interrupted upload resumed with HEAD and Content-Range,
 * the same bytes uploaded twice stored once and announced by hash,
 * parleyctl upload list/delete, and a 200 MB upload over TLS whose RSS
 * and throughput are printed as diagnostics. A second server with short
 * timeouts checks that slots and files expire and the sweep removes them. */
#include "harness.h"
#include "http_client.h"
#include "raw_client.h"
#include "../tap.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#define WAIT 5000

static int http_port, https_port;
static struct ph_server *current;

static char *iq(struct raw_client *c, const char *type, const char *to, const char *payload)
{
	static int n;
	char id[24], needle[40];
	snprintf(id, sizeof(id), "u%d", ++n);
	raw_client_send(c, "<iq type='%s' id='%s' to='%s'>%s</iq>", type, id, to, payload);
	snprintf(needle, sizeof(needle), "id='%s'", id);
	char *answer = raw_client_wait(c, needle, WAIT);
	if (!answer) {
		snprintf(needle, sizeof(needle), "id=\"%s\"", id);
		answer = raw_client_wait(c, needle, 100);
	}
	return answer;
}

static char *request_slot(struct raw_client *c, const char *name, unsigned long long size,
			  const char *type, const char *extra)
{
	char payload[1024];
	char type_attr[200] = "";
	if (type)
		snprintf(type_attr, sizeof(type_attr), " content-type='%s'", type);
	snprintf(payload, sizeof(payload),
		 "<request xmlns='urn:xmpp:http:upload:0' filename='%s' size='%llu'%s>%s</request>",
		 name, size, type_attr, extra ? extra : "");
	return iq(c, "get", "upload.localhost", payload);
}

/* The path of the put or get URL in a slot answer (caller frees). */
static char *url_path(const char *slot, const char *which)
{
	if (!slot)
		return NULL;
	char tag[16];
	snprintf(tag, sizeof(tag), "<%s ", which);
	const char *p = strstr(slot, tag);
	p = p ? strstr(p, "url=") : NULL;
	if (!p)
		return NULL;
	char quote = p[4];
	const char *start = strstr(p + 5, "/upload/");
	const char *end = strchr(p + 5, quote);
	if (!start || !end || start > end)
		return NULL;
	return strndup(start, (size_t)(end - start));
}

static struct http_response put(const char *path, const char *type, const void *body, size_t len,
				const char *extra)
{
	struct http_client *c = http_client_connect(http_port, false);
	char type_header[200] = "";
	if (type)
		snprintf(type_header, sizeof(type_header), "Content-Type: %s\r\n", type);
	http_client_sendf(c, "PUT %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n%s%s\r\n",
			  path, len, type_header, extra ? extra : "");
	http_client_send(c, body, len);
	struct http_response r = http_client_read(c, WAIT);
	http_client_free(c);
	return r;
}

static struct http_response request(const char *method, const char *path, const char *extra)
{
	struct http_client *c = http_client_connect(http_port, false);
	http_client_sendf(c, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", method, path,
			  extra ? extra : "");
	struct http_response r = http_client_read(c, WAIT);
	http_client_free(c);
	return r;
}

static void header_is(const struct http_response *r, const char *name, const char *expected,
		      const char *what)
{
	char *value = http_response_header(r, name);
	is_str(value, expected, "%s", what);
	free(value);
}

static int count_files(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static char blobs_dir[400];

static bool blobs_empty(void *arg)
{
	(void)arg;
	return count_files(blobs_dir) == 0;
}

static int status_of(const char *method, const char *path)
{
	struct http_response r = request(method, path, NULL);
	int status = r.status;
	http_response_free(&r);
	return status;
}

static const char *expect_path;
static int expect_status;

static bool head_status_is(void *arg)
{
	(void)arg;
	return status_of("HEAD", expect_path) == expect_status;
}

static bool get_status_is(void *arg)
{
	(void)arg;
	return status_of("GET", expect_path) == expect_status;
}

static char *upload_config(struct ph_server *s, const char *module_attrs)
{
	char http[300], module[900];
	snprintf(http, sizeof(http),
		 "<http address=\"127.0.0.1\" port=\"%d\" tls-port=\"%d\" cors-origins=\"*\"/>",
		 http_port, https_port);
	char *config = ph_standard_config(s, NULL, http);
	snprintf(module, sizeof(module),
		 "<module name=\"version\"/>\n    <module name=\"upload\" base-url=\"http://127.0.0.1:%d/\" %s>"
		 "<allowed-type>image/*</allowed-type><allowed-type>text/plain</allowed-type>"
		 "<allowed-type>application/octet-stream</allowed-type></module>",
		 http_port, module_attrs);
	char *patched = ph_replace(config, "<module name=\"version\"/>", module);
	free(config);
	return patched;
}

static void sha256_b64(const void *data, size_t len, char *out)
{
	unsigned char digest[32];
	unsigned n = 0;
	EVP_Digest(data, len, digest, &n, EVP_sha256(), NULL);
	EVP_EncodeBlock((unsigned char *)out, digest, 32);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A 200 MB PUT over TLS in 256 KiB writes, sampling the daemon's RSS. */
static void big_upload(struct ph_server *s, struct raw_client *alice)
{
	const unsigned long long size = 200ULL * 1000 * 1000;
	char *slot = request_slot(alice, "big.bin", size, "application/octet-stream", NULL);
	char *put_path = url_path(slot, "put"), *get_path = url_path(slot, "get");
	free(slot);
	if (!ok(put_path && get_path, "a slot for 200 MB")) {
		free(put_path);
		free(get_path);
		return;
	}
	long before = ph_rss_kib(s->pid), peak = before;
	struct http_client *c = http_client_connect(https_port, true);
	http_client_sendf(c, "PUT %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %llu\r\n"
			  "Content-Type: application/octet-stream\r\n\r\n", put_path, size);
	const size_t chunk = 256 * 1024;
	unsigned char *buf = malloc(chunk);
	double start = now_s();
	unsigned long long sent = 0;
	unsigned k = 0;
	bool good = true;
	while (sent < size && good) {
		size_t n = size - sent < chunk ? (size_t)(size - sent) : chunk;
		for (size_t i = 0; i < n; i += 4) {
			unsigned v = (unsigned)((sent + i) / 4) * 2654435761u;
			memcpy(buf + i, &v, n - i < 4 ? n - i : 4);
		}
		good = http_client_send(c, buf, n);
		sent += n;
		if (++k % 40 == 0) {
			long rss = ph_rss_kib(s->pid);
			if (rss > peak)
				peak = rss;
		}
	}
	struct http_response r = http_client_read(c, 120000);
	double seconds = now_s() - start;
	long after = ph_rss_kib(s->pid);
	if (after > peak)
		peak = after;
	is_int(r.status, 201, "the 200 MB PUT over TLS is stored");
	http_response_free(&r);
	http_client_free(c);
	diag("200 MB upload over loopback TLS: %.1f MB/s (%.2f s); parleyd RSS %ld KiB before, "
	     "peak %ld KiB during, %ld KiB after", (double)size / 1e6 / seconds, seconds, before,
	     peak, after);
	ok(peak - before < 64 * 1024, "the daemon's RSS stays flat during the upload (+%ld KiB)",
	   peak - before);
	r = request("GET", get_path, "Range: bytes=-8\r\n");
	is_int(r.status, 206, "the end of the big file reads back");
	unsigned char tail[8];
	for (unsigned long long i = size - 8; i < size; i += 4) {
		unsigned v = (unsigned)(i / 4) * 2654435761u;
		memcpy(tail + (i - (size - 8)), &v, 4);
	}
	ok(r.body_len == 8 && memcmp(r.body, tail, 8) == 0, "with the bytes that were sent");
	header_is(&r, "Content-Range", "bytes 199999992-199999999/200000000", "and its Content-Range");
	http_response_free(&r);
	free(buf);
	free(put_path);
	free(get_path);
}

static void main_server(void)
{
	struct ph_server s;
	current = &s;
	/* Under AddressSanitizer freed memory waits in a quarantine (256 MB
	 * by default) before reuse, which would show as RSS growth with every
	 * buffer the upload passes through; a small one keeps the RSS check
	 * about the daemon's own memory. No effect without ASan. */
	const char *asan = getenv("ASAN_OPTIONS");
	char asan_options[512];
	snprintf(asan_options, sizeof(asan_options), "%s%squarantine_size_mb=16", asan ? asan : "",
		 asan && *asan ? ":" : "");
	setenv("ASAN_OPTIONS", asan_options, 1);
	ph_server_init(&s, NULL);
	char *config = upload_config(&s, "max-file-size=\"250MiB\" quota=\"450MiB\"");
	ph_server_write_config(&s, config);
	free(config);
	snprintf(blobs_dir, sizeof(blobs_dir), "%s/upload/blobs", s.storage_path);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts with mod_upload and <http>"))
		return;
	ph_add_user(&s, "alice");
	ph_add_user(&s, "bob");
	ph_add_user(&s, "carol");
	struct raw_client *alice = raw_client_new_session(s.c2s_tls_port, "alice", "alice-secret", "a");
	struct raw_client *bob = raw_client_new_session(s.c2s_tls_port, "bob", "bob-secret", "b");
	struct raw_client *carol = raw_client_new_session(s.c2s_tls_port, "carol", "carol-secret", "c");
	if (!ok(alice && bob && carol, "three clients log in"))
		goto out;

	/* Discovery */
	char *answer = iq(alice, "get", "localhost",
			  "<query xmlns='http://jabber.org/protocol/disco#items'/>");
	has_str(answer, "upload.localhost", "the server's disco#items lists upload.localhost");
	free(answer);
	answer = iq(alice, "get", "upload.localhost",
		    "<query xmlns='http://jabber.org/protocol/disco#info'/>");
	has_str(answer, "category='store'", "the service is a store");
	has_str(answer, "type='file'", "of files");
	has_str(answer, "var='urn:xmpp:http:upload:0'", "with the upload feature");
	has_str(answer, "var='urn:parley:http:upload:resume:0'", "and the resume extension");
	has_str(answer, "<value>262144000</value>", "and max-file-size in its form");
	free(answer);

	/* Slot, PUT, GET */
	const char text[] = "hello, upload\n";
	answer = request_slot(alice, "hello.txt", sizeof(text) - 1, "text/plain", NULL);
	has_str(answer, "<slot xmlns='urn:xmpp:http:upload:0'>", "a slot is granted");
	char *put_path = url_path(answer, "put"), *get_path = url_path(answer, "get");
	free(answer);
	ok(put_path && get_path && strcmp(put_path, get_path) != 0,
	   "with a PUT URL and a different GET URL");
	if (!put_path || !get_path)
		goto out;
	is_int(status_of("GET", get_path), 404, "nothing to GET before the upload");
	struct http_response r = put(put_path, "text/plain", text, sizeof(text) - 1, NULL);
	is_int(r.status, 201, "PUT answers 201 Created");
	http_response_free(&r);
	r = request("GET", get_path, "Origin: https://web.example\r\n");
	is_int(r.status, 200, "GET answers 200");
	ok(r.body_len == sizeof(text) - 1 && memcmp(r.body, text, r.body_len) == 0,
	   "with the same bytes");
	header_is(&r, "Content-Type", "text/plain", "and the same Content-Type");
	header_is(&r, "Access-Control-Allow-Origin", "https://web.example", "CORS on GET");
	header_is(&r, "Accept-Ranges", "bytes", "ranges are accepted");
	header_is(&r, "Cache-Control", "public, max-age=31536000, immutable", "caching allowed");
	header_is(&r, "Content-Disposition",
		  "attachment; filename=\"hello.txt\"; filename*=UTF-8''hello.txt",
		  "Content-Disposition names the file");
	char *etag = http_response_header(&r, "ETag");
	ok(etag && strlen(etag) == 66, "an ETag (the content hash)");
	http_response_free(&r);
	char extra[200];
	snprintf(extra, sizeof(extra), "If-None-Match: %s\r\n", etag ? etag : "\"x\"");
	r = request("GET", get_path, extra);
	is_int(r.status, 304, "If-None-Match with the ETag: 304");
	http_response_free(&r);
	free(etag);
	r = request("GET", get_path, "Range: bytes=7-12\r\n");
	is_int(r.status, 206, "a Range GET answers 206");
	is_str(r.body, "upload", "with the bytes asked for");
	header_is(&r, "Content-Range", "bytes 7-12/14", "and Content-Range");
	http_response_free(&r);
	r = request("GET", get_path, "Range: bytes=100-\r\n");
	is_int(r.status, 416, "a range past the end: 416");
	header_is(&r, "Content-Range", "bytes */14", "with the size");
	http_response_free(&r);
	r = put(put_path, "text/plain", text, sizeof(text) - 1, "Origin: https://web.example\r\n");
	is_int(r.status, 201, "a repeated PUT of a complete slot is harmless");
	header_is(&r, "Access-Control-Allow-Origin", "https://web.example", "CORS on PUT");
	http_response_free(&r);
	r = request("OPTIONS", put_path,
		    "Origin: https://web.example\r\nAccess-Control-Request-Method: PUT\r\n");
	is_int(r.status, 204, "a CORS preflight on the PUT URL");
	char *methods = http_response_header(&r, "Access-Control-Allow-Methods");
	has_str(methods, "PUT", "allows PUT");
	free(methods);
	http_response_free(&r);

	/* Refusals */
	answer = request_slot(alice, "huge.bin", 300ULL << 20, "application/octet-stream", NULL);
	has_str(answer, "<not-acceptable", "too large: not-acceptable");
	has_str(answer, "<file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>262144000</max-file-size>",
		"with file-too-large and max-file-size");
	free(answer);
	answer = request_slot(carol, "a.bin", 240ULL << 20, "application/octet-stream", NULL);
	has_str(answer, "<slot", "carol gets a slot of 240 MiB");
	free(answer);
	answer = request_slot(carol, "b.bin", 240ULL << 20, "application/octet-stream", NULL);
	has_str(answer, "<resource-constraint", "a second one is over her quota: resource-constraint");
	free(answer);
	/* Two requests in one burst: the second counts the first, which is
	 * not yet committed when it is checked. */
	raw_client_send(bob, "<iq type='get' id='burst1' to='upload.localhost'><request "
			     "xmlns='urn:xmpp:http:upload:0' filename='x.bin' size='251658240' content-type='image/png'/></iq>"
			     "<iq type='get' id='burst2' to='upload.localhost'><request "
			     "xmlns='urn:xmpp:http:upload:0' filename='y.bin' size='251658240' content-type='image/png'/></iq>");
	char *first = raw_client_wait(bob, "burst1", WAIT), *second = raw_client_wait(bob, "burst2", WAIT);
	has_str(first, "<slot", "a burst of two slot requests: the first is granted");
	has_str(second, "<resource-constraint", "the second is over quota although the first is not yet committed");
	free(first);
	free(second);
	answer = request_slot(alice, "page.html", 10, "text/html", NULL);
	has_str(answer, "<not-acceptable", "a content type not allowed: not-acceptable");
	free(answer);
	answer = request_slot(alice, "../../etc/passwd", 10, "text/plain", NULL);
	has_str(answer, "<bad-request", "a file name with a path: bad-request");
	ok(!strstr(answer ? answer : "", "<slot"), "and no slot");
	free(answer);
	answer = request_slot(alice, "..", 10, "text/plain", NULL);
	has_str(answer, "<bad-request", "the name \"..\": bad-request");
	free(answer);

	/* Wrong size, wrong type, unknown slots, forged tokens */
	answer = request_slot(bob, "ten.txt", 10, "text/plain", NULL);
	char *put10 = url_path(answer, "put"), *get10 = url_path(answer, "get");
	free(answer);
	r = put(put10, "text/plain", "0123456789AB", 12, NULL);
	is_int(r.status, 400, "a PUT of 12 bytes to a 10-byte slot: 400");
	http_response_free(&r);
	r = put(put10, "text/plain", "01234567", 8, NULL);
	is_int(r.status, 400, "a PUT of 8 bytes: 400");
	http_response_free(&r);
	r = put(put10, "image/png", "0123456789", 10, NULL);
	is_int(r.status, 400, "a PUT with another Content-Type: 400");
	http_response_free(&r);
	is_int(status_of("GET", get10), 404, "nothing was stored");
	char forged[200];
	snprintf(forged, sizeof(forged), "%s", put10);
	forged[strlen("/upload/") + 33] ^= 1; /* one character of the token */
	r = put(forged, "text/plain", "0123456789", 10, NULL);
	is_int(r.status, 404, "a PUT with a forged token: 404");
	http_response_free(&r);
	is_int(status_of("GET", put10), 405, "the PUT URL does not serve the file");
	r = put("/upload/00000000000000000000000000000000/00000000000000000000000000000000/x",
		"text/plain", "0123456789", 10, NULL);
	is_int(r.status, 404, "a PUT to an unknown slot: 404");
	http_response_free(&r);
	is_int(status_of("GET", "/upload/nothing"), 404, "a GET of a malformed path: 404");
	free(put10);
	free(get10);

	/* Interrupted upload, resumed */
	const size_t mib = 1 << 20;
	char *data = malloc(mib);
	for (size_t i = 0; i < mib; i++)
		data[i] = (char)(i * 7 + i / 251);
	answer = request_slot(bob, "resume.bin", mib, "application/octet-stream", NULL);
	char *put_r = url_path(answer, "put"), *get_r = url_path(answer, "get");
	free(answer);
	struct http_client *c = http_client_connect(http_port, false);
	http_client_sendf(c, "PUT %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n"
			  "Content-Type: application/octet-stream\r\n\r\n", put_r, mib);
	http_client_send(c, data, 300000);
	http_client_free(c);
	ok(ph_wait_log(&s, "interrupted at", WAIT), "the cut-off PUT is noticed");
	r = request("HEAD", put_r, NULL);
	is_int(r.status, 204, "HEAD on the PUT URL answers");
	char *offset = http_response_header(&r, "Upload-Offset");
	size_t have = offset ? strtoul(offset, NULL, 10) : 0;
	ok(have > 0 && have <= 300000, "and reports the bytes received (%zu)", have);
	free(offset);
	header_is(&r, "Upload-Length", "1048576", "and the size expected");
	http_response_free(&r);
	snprintf(extra, sizeof(extra), "Content-Range: bytes %zu-%zu/%zu\r\n", have + 1, mib - 1, mib);
	r = put(put_r, "application/octet-stream", data + have + 1, mib - have - 1, extra);
	is_int(r.status, 416, "resuming at the wrong offset: 416");
	http_response_free(&r);
	snprintf(extra, sizeof(extra), "Content-Range: bytes %zu-%zu/%zu\r\n", have, mib - 1, mib);
	r = put(put_r, "application/octet-stream", data + have, mib - have, extra);
	is_int(r.status, 201, "the rest with Content-Range completes the upload");
	http_response_free(&r);
	r = request("GET", get_r, NULL);
	ok(r.status == 200 && r.body_len == mib && memcmp(r.body, data, mib) == 0,
	   "the resumed file reads back whole and right");
	http_response_free(&r);
	c = http_client_connect(https_port, true);
	http_client_sendf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", get_r);
	r = http_client_read(c, WAIT);
	ok(r.status == 200 && r.body_len == mib && memcmp(r.body, data, mib) == 0,
	   "and over TLS");
	http_response_free(&r);
	http_client_free(c);

	/* The same bytes twice, stored once */
	int blobs_before = count_files(blobs_dir);
	answer = request_slot(alice, "copy.bin", mib, "application/octet-stream", NULL);
	char *put_c = url_path(answer, "put"), *get_c = url_path(answer, "get");
	free(answer);
	r = put(put_c, "application/octet-stream", data, mib, NULL);
	is_int(r.status, 201, "the same bytes uploaded again by another user");
	http_response_free(&r);
	is_int(count_files(blobs_dir), blobs_before, "store no new file");
	r = request("GET", get_c, NULL);
	ok(r.status == 200 && r.body_len == mib && memcmp(r.body, data, mib) == 0,
	   "and read back under the new URL");
	http_response_free(&r);
	char hash[64], element[200];
	sha256_b64(data, mib, hash);
	snprintf(element, sizeof(element), "<hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>%s</hash>",
		 hash);
	answer = request_slot(carol, "known.bin", mib, "application/octet-stream", element);
	has_str(answer, "<stored xmlns='urn:parley:http:upload:dedup:0'/>",
		"a slot request with the hash of a stored file is complete at once");
	char *get_h = url_path(answer, "get");
	free(answer);
	r = request("GET", get_h, NULL);
	ok(r.status == 200 && r.body_len == mib && memcmp(r.body, data, mib) == 0,
	   "its GET URL serves the file without an upload");
	http_response_free(&r);

	/* parleyctl upload */
	char *out = NULL;
	const char *list_args[] = { "upload", "list", "bob@localhost", NULL };
	is_int(ph_ctl(&s, list_args, NULL, &out, NULL), 0, "parleyctl upload list bob@localhost");
	has_str(out, "resume.bin", "lists bob's file");
	ok(out && !strstr(out, "hello.txt"), "and not alice's");
	char slot_id[33] = "";
	const char *line = out ? strstr(out, "resume.bin") : NULL;
	while (line && line > out && line[-1] != '\n')
		line--;
	if (line)
		snprintf(slot_id, sizeof(slot_id), "%.32s", line);
	free(out);
	const char *delete_args[] = { "upload", "delete", slot_id, NULL };
	is_int(ph_ctl(&s, delete_args, NULL, NULL, NULL), 0, "parleyctl upload delete SLOT");
	is_int(status_of("GET", get_r), 404, "the deleted slot's URL is gone");
	r = request("GET", get_c, NULL);
	is_int(r.status, 200, "the other references still serve the shared bytes");
	http_response_free(&r);
	const char *bad_args[] = { "upload", "delete", "0123", NULL };
	ok(ph_ctl(&s, bad_args, NULL, NULL, NULL) != 0, "deleting an unknown slot fails");
	is_int(count_files(blobs_dir), blobs_before, "the shared blob stays while referenced");
	/* Delete the last two references: the blob goes. */
	out = NULL;
	const char *all_args[] = { "upload", "list", NULL };
	ph_ctl(&s, all_args, NULL, &out, NULL);
	for (const char *name = "copy.bin"; name; name = strcmp(name, "copy.bin") == 0 ? "known.bin" : NULL) {
		line = out ? strstr(out, name) : NULL;
		while (line && line > out && line[-1] != '\n')
			line--;
		if (line)
			snprintf(slot_id, sizeof(slot_id), "%.32s", line);
		ph_ctl(&s, delete_args, NULL, NULL, NULL);
	}
	free(out);
	is_int(count_files(blobs_dir), blobs_before - 1, "the blob is deleted with its last reference");

	big_upload(&s, alice);
	free(get_h);
	free(put_c);
	free(get_c);
	free(put_r);
	free(get_r);
	free(data);
	free(put_path);
	free(get_path);
out:
	if (alice)
		raw_client_free(alice);
	if (bob)
		raw_client_free(bob);
	if (carol)
		raw_client_free(carol);
	is_int(ph_server_stop(&s), 0, "parleyd stops cleanly");
	ph_server_cleanup(&s);
}

static void expiry_server(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	char *config = upload_config(&s, "slot-timeout=\"1s\" expire-after=\"2s\" sweep-interval=\"1s\"");
	ph_server_write_config(&s, config);
	free(config);
	snprintf(blobs_dir, sizeof(blobs_dir), "%s/upload/blobs", s.storage_path);
	if (!ok(ph_server_start(&s, NULL) == 0, "a server with short upload timeouts starts"))
		return;
	ph_add_user(&s, "dave");
	struct raw_client *dave = raw_client_new_session(s.c2s_tls_port, "dave", "dave-secret", "d");
	char *answer = request_slot(dave, "late.txt", 4, "text/plain", NULL);
	char *put_late = url_path(answer, "put");
	free(answer);
	answer = request_slot(dave, "soon.txt", 4, "text/plain", NULL);
	char *put_soon = url_path(answer, "put"), *get_soon = url_path(answer, "get");
	free(answer);
	struct http_response r = put(put_soon, "text/plain", "soon", 4, NULL);
	is_int(r.status, 201, "a file is uploaded in time");
	http_response_free(&r);
	ok(count_files(blobs_dir) == 1, "and stored");
	expect_path = put_late;
	expect_status = 410;
	ok(ph_wait_for(head_status_is, NULL, 10000), "a slot not used within slot-timeout expires");
	r = put(put_late, "text/plain", "late", 4, NULL);
	ok(r.status == 410 || r.status == 404, "a PUT to the expired slot is refused (%d)", r.status);
	http_response_free(&r);
	expect_path = get_soon;
	expect_status = 404;
	ok(ph_wait_for(get_status_is, NULL, 15000), "the file is gone after expire-after");
	ok(ph_wait_for(blobs_empty, NULL, 5000), "the sweep removed it from disk");
	ok(ph_wait_log(&s, "expired", 100), "and logged it");
	/* Files no slot accounts for (as a crash could leave) are swept too. */
	char stray[600];
	snprintf(stray, sizeof(stray), "%s/%s", blobs_dir,
		 "00000000000000000000000000000000000000000000000000000000000000ff");
	FILE *f = fopen(stray, "w");
	if (f) {
		fputs("stray", f);
		fclose(f);
	}
	snprintf(stray, sizeof(stray), "%s/upload/partial/0123456789abcdef0123456789abcdef",
		 s.storage_path);
	f = fopen(stray, "w");
	if (f) {
		fputs("stray", f);
		fclose(f);
	}
	ok(ph_wait_for(blobs_empty, NULL, 5000) && ph_wait_log(&s, "stray files", 5000),
	   "a stray blob is swept");
	snprintf(blobs_dir, sizeof(blobs_dir), "%s/upload/partial", s.storage_path);
	ok(ph_wait_for(blobs_empty, NULL, 5000), "and a stray partial file");
	free(put_late);
	free(put_soon);
	free(get_soon);
	if (dave)
		raw_client_free(dave);
	is_int(ph_server_stop(&s), 0, "parleyd stops cleanly");
	ph_server_cleanup(&s);
}

int main(void)
{
	http_port = ph_free_port();
	do
		https_port = ph_free_port();
	while (https_port == http_port);
	main_server();
	expiry_server();
	return done_testing();
}
