/* The raw test client (raw_client.h): a blocking socket (or TLS over it),
 * an expat parser that only finds element boundaries, and a queue of the
 * top-level elements received so far as their exact bytes. */
#include "raw_client.h"
#include "../tap.h"

#include <expat.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 5000

struct raw_client {
	int fd;
	SSL_CTX *tls_context;
	SSL *tls;
	XML_Parser parser;
	/* Everything received since the parser was (re)started: element
	 * boundaries are byte offsets into it. */
	char *received;
	size_t received_len, received_cap;
	int depth;
	long element_start;        /* offset of the current depth-2 element */
	long start_tag_end;        /* end of its start tag (for <x/>) */
	bool closed;
	char **queue;              /* owned strings, oldest first */
	size_t queue_len, queue_cap;
	char *jid;
	unsigned next_id;
	/* XEP-0388 for the SCRAM exchange in progress: the elements to put
	 * inside <authenticate/> (borrowed), or NULL for SASL1. */
	const char *sasl2_inline;
};

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void enqueue(struct raw_client *c, const char *data, size_t len)
{
	if (c->queue_len == c->queue_cap) {
		c->queue_cap = c->queue_cap ? c->queue_cap * 2 : 16;
		c->queue = realloc(c->queue, c->queue_cap * sizeof(*c->queue));
	}
	char *copy = malloc(len + 1);
	memcpy(copy, data, len);
	copy[len] = '\0';
	c->queue[c->queue_len++] = copy;
}

static void on_start(void *userdata, const XML_Char *name, const XML_Char **attributes)
{
	(void)name;
	(void)attributes;
	struct raw_client *c = userdata;
	long index = XML_GetCurrentByteIndex(c->parser);
	int count = XML_GetCurrentByteCount(c->parser);
	c->depth++;
	if (c->depth == 1) {
		/* The stream header is queued as an element of its own. */
		enqueue(c, c->received + index, (size_t)count);
	} else if (c->depth == 2) {
		c->element_start = index;
		c->start_tag_end = index + count;
	}
}

static void on_end(void *userdata, const XML_Char *name)
{
	(void)name;
	struct raw_client *c = userdata;
	long index = XML_GetCurrentByteIndex(c->parser);
	int count = XML_GetCurrentByteCount(c->parser);
	if (c->depth == 2) {
		/* An empty-element tag reports its end with no bytes of its own. */
		long end = count > 0 ? index + count : c->start_tag_end;
		enqueue(c, c->received + c->element_start, (size_t)(end - c->element_start));
	} else if (c->depth == 1) {
		enqueue(c, "</stream:stream>", 16);
		c->closed = true;
	}
	c->depth--;
}

static void restart_parser(struct raw_client *c)
{
	if (c->parser)
		XML_ParserReset(c->parser, NULL);
	else
		c->parser = XML_ParserCreate(NULL);
	XML_SetUserData(c->parser, c);
	XML_SetElementHandler(c->parser, on_start, on_end);
	c->received_len = 0;
	c->depth = 0;
}

struct raw_client *raw_client_connect(int port, bool tls)
{
	return raw_client_connect_sni(port, tls ? "localhost" : NULL);
}

struct raw_client *raw_client_connect_sni(int port, const char *sni)
{
	bool tls = sni != NULL;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in address = { .sin_family = AF_INET,
				       .sin_port = htons((uint16_t)port),
				       .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct raw_client *c = calloc(1, sizeof(*c));
	c->fd = fd;
	if (tls) {
		c->tls_context = SSL_CTX_new(TLS_client_method());
		c->tls = SSL_new(c->tls_context);
		SSL_set_fd(c->tls, fd);
		SSL_set_tlsext_host_name(c->tls, sni);
		if (SSL_connect(c->tls) != 1) {
			raw_client_free(c);
			return NULL;
		}
	}
	restart_parser(c);
	return c;
}

void raw_client_free(struct raw_client *c)
{
	if (!c)
		return;
	if (c->tls) {
		SSL_shutdown(c->tls);
		SSL_free(c->tls);
	}
	if (c->tls_context)
		SSL_CTX_free(c->tls_context);
	if (c->fd >= 0)
		close(c->fd);
	if (c->parser)
		XML_ParserFree(c->parser);
	raw_client_discard(c);
	free(c->queue);
	free(c->received);
	free(c->jid);
	free(c);
}

void raw_client_send(struct raw_client *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text = NULL;
	int len = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	size_t done = 0;
	while (done < (size_t)len) {
		ssize_t n = c->tls ? SSL_write(c->tls, text + done, len - (int)done)
				   : write(c->fd, text + done, (size_t)len - done);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	free(text);
}

/* Reads what is there (waiting up to wait_ms for the first byte) and
 * parses it. False when the connection is gone. */
static bool read_some(struct raw_client *c, int wait_ms)
{
	if (c->fd < 0)
		return false;
	if (!(c->tls && SSL_pending(c->tls) > 0)) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		if (poll(&p, 1, wait_ms) <= 0)
			return true;
	}
	char buffer[16384];
	ssize_t n = c->tls ? SSL_read(c->tls, buffer, sizeof(buffer))
			   : read(c->fd, buffer, sizeof(buffer));
	if (n <= 0) {
		close(c->fd);
		c->fd = -1;
		c->closed = true;
		return false;
	}
	if (c->received_len + (size_t)n + 1 > c->received_cap) {
		c->received_cap = (c->received_len + (size_t)n + 1) * 2;
		c->received = realloc(c->received, c->received_cap);
	}
	memcpy(c->received + c->received_len, buffer, (size_t)n);
	c->received_len += (size_t)n;
	if (XML_Parse(c->parser, buffer, (int)n, 0) == XML_STATUS_ERROR)
		diag("raw client: server sent bad XML: %s",
		     XML_ErrorString(XML_GetErrorCode(c->parser)));
	return true;
}

static ssize_t find_queued(struct raw_client *c, const char *needle)
{
	for (size_t i = 0; i < c->queue_len; i++)
		if (!needle || strstr(c->queue[i], needle))
			return (ssize_t)i;
	return -1;
}

bool raw_client_seen(struct raw_client *c, const char *needle, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		if (find_queued(c, needle) >= 0)
			return true;
		long long left = deadline - now_ms();
		if (left <= 0 || !read_some(c, (int)(left < 100 ? left : 100)))
			return find_queued(c, needle) >= 0;
	}
}

char *raw_client_wait(struct raw_client *c, const char *needle, int timeout_ms)
{
	if (!raw_client_seen(c, needle, timeout_ms))
		return NULL;
	size_t i = (size_t)find_queued(c, needle);
	char *found = c->queue[i];
	memmove(c->queue + i, c->queue + i + 1, (c->queue_len - i - 1) * sizeof(*c->queue));
	c->queue_len--;
	return found;
}

bool raw_client_sync(struct raw_client *c)
{
	/* Addressed to the server, which answers pings itself; the id is
	 * unique enough to be matched without its quotes. */
	char id[48], domain[256] = "localhost";
	snprintf(id, sizeof(id), "sync-%u-%p", ++c->next_id, (void *)c);
	/* The client's own server (a test may run hosts other than localhost,
	 * and must not ping a domain that would go out over federation). */
	const char *at = c->jid ? strchr(c->jid, '@') : NULL;
	if (at)
		snprintf(domain, sizeof(domain), "%.*s", (int)strcspn(at + 1, "/"), at + 1);
	raw_client_send(c, "<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>",
			id, domain);
	char *answer = raw_client_wait(c, id, DEFAULT_TIMEOUT_MS);
	free(answer);
	return answer != NULL;
}

int raw_client_discard(struct raw_client *c)
{
	int n = (int)c->queue_len;
	for (size_t i = 0; i < c->queue_len; i++)
		free(c->queue[i]);
	c->queue_len = 0;
	return n;
}

int raw_client_count(struct raw_client *c, const char *needle)
{
	int n = 0;
	for (size_t i = 0; i < c->queue_len; i++)
		if (strstr(c->queue[i], needle))
			n++;
	return n;
}

bool raw_client_closed(struct raw_client *c)
{
	return c->closed;
}

char *raw_client_open(struct raw_client *c, const char *domain)
{
	restart_parser(c);
	raw_client_send(c,
			"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
			"xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
			domain);
	char *header = raw_client_wait(c, "<stream:stream", DEFAULT_TIMEOUT_MS);
	free(header);
	return header ? raw_client_wait(c, "<stream:features", DEFAULT_TIMEOUT_MS) : NULL;
}

/* ---- SASL ------------------------------------------------------------------ */

static char *base64_encode(const unsigned char *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* Decodes into out (at least 3/4 of strlen(text)); returns the length or -1. */
static int base64_decode(const char *text, unsigned char *out)
{
	size_t len = strlen(text);
	int n = EVP_DecodeBlock(out, (const unsigned char *)text, (int)len);
	if (n < 0)
		return -1;
	while (len > 0 && text[len - 1] == '=') {
		len--;
		n--;
	}
	return n;
}

/* The text of <challenge>/<success> in a SASL element: between the first
 * '>' and the next '<' (empty for <success/>). */
static char *element_text(const char *element)
{
	const char *open = strchr(element, '>');
	if (!open || open[-1] == '/')
		return strdup("");
	const char *close = strchr(open + 1, '<');
	return strndup(open + 1, close ? (size_t)(close - open - 1) : 0);
}

static char *wait_sasl_answer(struct raw_client *c)
{
	long long deadline = now_ms() + DEFAULT_TIMEOUT_MS;
	while (now_ms() < deadline) {
		for (size_t i = 0; i < c->queue_len; i++) {
			const char *e = c->queue[i];
			if (strncmp(e, "<challenge", 10) == 0 || strncmp(e, "<success", 8) == 0 ||
			    strncmp(e, "<failure", 8) == 0 || strncmp(e, "</stream:stream", 15) == 0 ||
			    strncmp(e, "<stream:error", 13) == 0) {
				char *answer = raw_client_wait(c, e, 0);
				/* After <success/> the server's next bytes open a new
				 * stream (RFC 6120 6.4.6), even before ours does. */
				if (strncmp(answer, "<success", 8) == 0 && !c->sasl2_inline)
					restart_parser(c);
				return answer;
			}
		}
		if (!read_some(c, 100))
			break;
	}
	return NULL;
}

char *raw_client_auth_plain(struct raw_client *c, const char *authzid, const char *user,
			    const char *password)
{
	size_t a = authzid ? strlen(authzid) : 0, u = strlen(user), p = strlen(password);
	unsigned char *message = malloc(a + u + p + 2);
	memcpy(message, authzid ? authzid : "", a);
	message[a] = 0;
	memcpy(message + a + 1, user, u);
	message[a + 1 + u] = 0;
	memcpy(message + a + 2 + u, password, p);
	char *encoded = base64_encode(message, a + u + p + 2);
	free(message);
	raw_client_send(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
			encoded);
	free(encoded);
	return wait_sasl_answer(c);
}

/* RFC 5929 / RFC 9266 channel-binding data of this TLS connection. */
static int binding_data(struct raw_client *c, const char *type, unsigned char *out)
{
	if (strcmp(type, "tls-exporter") == 0) {
		static const char label[] = "EXPORTER-Channel-Binding";
		return SSL_export_keying_material(c->tls, out, 32, label, sizeof(label) - 1, NULL,
						  0, 0) == 1
			       ? 32
			       : -1;
	}
	X509 *certificate = SSL_get1_peer_certificate(c->tls);
	if (!certificate)
		return -1;
	/* RFC 5929 4.1: the certificate's signature hash, MD5 and SHA-1
	 * replaced by SHA-256. */
	int digest_nid = NID_sha256, public_key_nid;
	if (!OBJ_find_sigid_algs(X509_get_signature_nid(certificate), &digest_nid,
				 &public_key_nid) ||
	    digest_nid == NID_md5 || digest_nid == NID_sha1 || digest_nid == NID_undef)
		digest_nid = NID_sha256;
	unsigned int len = 0;
	int rc = X509_digest(certificate, EVP_get_digestbynid(digest_nid), out, &len);
	X509_free(certificate);
	return rc == 1 ? (int)len : -1;
}

static void xor_into(unsigned char *a, const unsigned char *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		a[i] ^= b[i];
}

char *raw_client_auth_scram(struct raw_client *c, const char *mechanism, const char *user,
			    const char *password, enum raw_scram_binding binding,
			    const char *binding_type)
{
	const EVP_MD *md = strncmp(mechanism, "SCRAM-SHA-256", 13) == 0 ? EVP_sha256() : EVP_sha1();
	size_t hash_len = (size_t)EVP_MD_get_size(md);
	unsigned char nonce_bytes[18];
	RAND_bytes(nonce_bytes, sizeof(nonce_bytes));
	char *client_nonce = base64_encode(nonce_bytes, sizeof(nonce_bytes));
	char gs2[96];
	if (binding == RAW_SCRAM_BIND || binding == RAW_SCRAM_BIND_WRONG)
		snprintf(gs2, sizeof(gs2), "p=%s,,", binding_type);
	else
		snprintf(gs2, sizeof(gs2), "%s,,", binding == RAW_SCRAM_CLAIM_SUPPORT ? "y" : "n");
	char first_bare[512];
	snprintf(first_bare, sizeof(first_bare), "n=%s,r=%s", user, client_nonce);
	char first[640];
	snprintf(first, sizeof(first), "%s%s", gs2, first_bare);
	char *encoded = base64_encode((const unsigned char *)first, strlen(first));
	if (c->sasl2_inline)
		raw_client_send(c, "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='%s'>"
				   "<initial-response>%s</initial-response>%s</authenticate>",
				mechanism, encoded, c->sasl2_inline);
	else
		raw_client_send(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='%s'>%s</auth>",
				mechanism, encoded);
	free(encoded);
	char *answer = wait_sasl_answer(c);
	if (!answer || strncmp(answer, "<challenge", 10) != 0) {
		free(client_nonce);
		return answer;
	}
	char *challenge_text = element_text(answer);
	free(answer);
	unsigned char server_first[1024] = { 0 };
	int server_first_len = strlen(challenge_text) * 3 / 4 < sizeof(server_first) - 1
				       ? base64_decode(challenge_text, server_first)
				       : -1;
	free(challenge_text);
	const char *nonce = strstr((char *)server_first, "r=");
	const char *salt_text = strstr((char *)server_first, ",s=");
	const char *iterations_text = strstr((char *)server_first, ",i=");
	if (server_first_len < 0 || !nonce || !salt_text || !iterations_text ||
	    strncmp(nonce + 2, client_nonce, strlen(client_nonce)) != 0) {
		free(client_nonce);
		return strdup("bad server-first-message");
	}
	free(client_nonce);
	char *full_nonce = strndup(nonce + 2, strcspn(nonce + 2, ","));
	char *salt_base64 = strndup(salt_text + 3, strcspn(salt_text + 3, ","));
	unsigned char salt[256];
	int salt_len = strlen(salt_base64) * 3 / 4 < sizeof(salt) ? base64_decode(salt_base64, salt)
								   : -1;
	free(salt_base64);
	int iterations = atoi(iterations_text + 3);

	unsigned char salted[EVP_MAX_MD_SIZE], client_key[EVP_MAX_MD_SIZE],
		stored_key[EVP_MAX_MD_SIZE], server_key[EVP_MAX_MD_SIZE],
		signature[EVP_MAX_MD_SIZE], server_signature[EVP_MAX_MD_SIZE];
	unsigned int len;
	PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, salt_len > 0 ? salt_len : 0,
			  iterations, md, (int)hash_len, salted);
	HMAC(md, salted, (int)hash_len, (const unsigned char *)"Client Key", 10, client_key, &len);
	EVP_Digest(client_key, hash_len, stored_key, &len, md, NULL);
	HMAC(md, salted, (int)hash_len, (const unsigned char *)"Server Key", 10, server_key, &len);

	/* c= is the gs2 header, followed by the binding data for "p=". */
	unsigned char binding_input[256];
	size_t binding_len = strlen(gs2);
	memcpy(binding_input, gs2, binding_len);
	if (binding == RAW_SCRAM_BIND || binding == RAW_SCRAM_BIND_WRONG) {
		int n = binding_data(c, binding_type, binding_input + binding_len);
		if (n > 0) {
			if (binding == RAW_SCRAM_BIND_WRONG)
				binding_input[binding_len] ^= 0x5a;
			binding_len += (size_t)n;
		}
	}
	char *channel = base64_encode(binding_input, binding_len);
	char final_without_proof[1024];
	snprintf(final_without_proof, sizeof(final_without_proof), "c=%s,r=%s", channel,
		 full_nonce);
	free(channel);
	free(full_nonce);
	char *auth_message = NULL;
	if (asprintf(&auth_message, "%s,%s,%s", first_bare, server_first, final_without_proof) < 0)
		return NULL;
	HMAC(md, stored_key, (int)hash_len, (unsigned char *)auth_message, strlen(auth_message),
	     signature, &len);
	HMAC(md, server_key, (int)hash_len, (unsigned char *)auth_message, strlen(auth_message),
	     server_signature, &len);
	free(auth_message);
	xor_into(client_key, signature, hash_len); /* now the proof */
	char *proof = base64_encode(client_key, hash_len);
	char final[1200];
	snprintf(final, sizeof(final), "%s,p=%s", final_without_proof, proof);
	free(proof);
	encoded = base64_encode((const unsigned char *)final, strlen(final));
	raw_client_send(c, "<response xmlns='%s'>%s</response>",
			c->sasl2_inline ? "urn:xmpp:sasl:2" : "urn:ietf:params:xml:ns:xmpp-sasl", encoded);
	free(encoded);
	answer = wait_sasl_answer(c);
	if (answer && strncmp(answer, "<success", 8) == 0) {
		/* SASL2 puts the server-final message in <additional-data/>. */
		const char *data = c->sasl2_inline ? strstr(answer, "<additional-data>") : answer;
		char *text = data ? element_text(data) : strdup("");
		unsigned char server_final[256] = { 0 };
		int n = strlen(text) * 3 / 4 < sizeof(server_final) - 1
				? base64_decode(text, server_final)
				: -1;
		free(text);
		char *expected_signature = base64_encode(server_signature, hash_len);
		bool verified = n > 2 && strncmp((char *)server_final, "v=", 2) == 0 &&
				strcmp((char *)server_final + 2, expected_signature) == 0;
		free(expected_signature);
		if (!verified) {
			free(answer);
			return strdup("bad server signature");
		}
	}
	return answer;
}

int raw_client_binding(struct raw_client *c, const char *type, unsigned char *out)
{
	return binding_data(c, type, out);
}

char *raw_client_auth_scram2(struct raw_client *c, const char *mechanism, const char *user,
			     const char *password, const char *inline_xml)
{
	c->sasl2_inline = inline_xml ? inline_xml : "";
	char *answer = raw_client_auth_scram(c, mechanism, user, password, RAW_SCRAM_NO_BINDING, NULL);
	c->sasl2_inline = NULL;
	return answer;
}

/* ---- the whole login --------------------------------------------------------- */

const char *raw_client_login(struct raw_client *c, const char *domain, const char *user,
			     const char *password, const char *resource)
{
	char *features = raw_client_open(c, domain);
	if (!features)
		return NULL;
	free(features);
	char *result = raw_client_auth_plain(c, NULL, user, password);
	bool success = result && strncmp(result, "<success", 8) == 0;
	free(result);
	if (!success)
		return NULL;
	features = raw_client_open(c, domain);
	if (!features)
		return NULL;
	free(features);
	if (resource)
		raw_client_send(c,
				"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
				"<resource>%s</resource></bind></iq>",
				resource);
	else
		raw_client_send(c, "<iq type='set' id='bind'><bind "
				   "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
	char *bound = raw_client_wait(c, "<jid>", DEFAULT_TIMEOUT_MS);
	if (!bound)
		return NULL;
	const char *start = strstr(bound, "<jid>") + 5;
	const char *end = strstr(start, "</jid>");
	free(c->jid);
	c->jid = end ? strndup(start, (size_t)(end - start)) : NULL;
	free(bound);
	return c->jid;
}

struct raw_client *raw_client_new_session(int tls_port, const char *user, const char *password,
					  const char *resource)
{
	struct raw_client *c = raw_client_connect(tls_port, true);
	if (c && !raw_client_login(c, "localhost", user, password, resource)) {
		raw_client_free(c);
		return NULL;
	}
	return c;
}

const char *raw_client_jid(const struct raw_client *c)
{
	return c->jid;
}
