/* TLS contexts per host and the handshake-time callbacks (SNI, ALPN).
 * Certificates are loaded once at start; a host's context is looked up by
 * the SNI name, falling back to the first host so that clients without SNI
 * still get a certificate. */
#include "net/tls.h"
#include "log.h"
#include "server.h"
#include "util.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct host_context {
	char *name;    /* owned copy of the host name */
	SSL_CTX *ctx;  /* owned */
};

static struct host_context *contexts;
static size_t context_count;
/* Client contexts of server-to-server streams, one per host (its
 * certificate is our client certificate for SASL EXTERNAL), made by
 * pl_tls_client_init. */
static struct host_context *client_contexts;
static size_t client_context_count;
/* Which ALPN protocol a new SSL expects, stored per SSL. */
static int alpn_index = -1;

static const char *const alpn_names[] = { NULL, "xmpp-client", "xmpp-server", "http/1.1" };

static void ssl_error_text(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "unknown TLS error");
	ERR_clear_error();
}

static int on_server_name(SSL *ssl, int *alert, void *arg)
{
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!name)
		return SSL_TLSEXT_ERR_NOACK;
	for (size_t i = 0; i < context_count; i++) {
		if (strcasecmp(contexts[i].name, name) == 0) {
			SSL_set_SSL_CTX(ssl, contexts[i].ctx);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	/* Unknown names keep the default certificate; the stream's "to" check
	 * answers host-unknown later with a proper stream error. */
	return SSL_TLSEXT_ERR_NOACK;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *out_len,
		   const unsigned char *in, unsigned int in_len, void *arg)
{
	int wanted = (int)(intptr_t)SSL_get_ex_data(ssl, alpn_index);
	if (wanted <= PL_TLS_ALPN_NONE || wanted >= (int)PL_ARRAY_LEN(alpn_names))
		return SSL_TLSEXT_ERR_NOACK;
	const char *name = alpn_names[wanted];
	size_t name_len = strlen(name);
	for (unsigned int i = 0; i < in_len;) {
		unsigned int len = in[i];
		if (i + 1 + len > in_len)
			break;
		if (len == name_len && memcmp(in + i + 1, name, len) == 0) {
			*out = in + i + 1;
			*out_len = (unsigned char)len;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + len;
	}
	/* XEP-0368 clients may omit ALPN; a mismatch is not fatal either. */
	return SSL_TLSEXT_ERR_NOACK;
}

static SSL_CTX *make_context(const struct pl_host *host, char **error)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char reason[256];
	if (!ctx) {
		ssl_error_text(reason, sizeof(reason));
		pl_error(error, -ENOMEM, "TLS context for %s: %s", host->name, reason);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20");
	SSL_CTX_set_tlsext_servername_callback(ctx, on_server_name);
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
	if (SSL_CTX_use_certificate_chain_file(ctx, host->certificate) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, host->private_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ssl_error_text(reason, sizeof(reason));
		pl_error(error, -EINVAL, "host %s: cannot use certificate %s with key %s: %s",
			 host->name, host->certificate, host->private_key, reason);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

int pl_tls_init(char **error)
{
	if (alpn_index < 0)
		alpn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	contexts = pl_calloc(pl_server.host_count, sizeof(*contexts));
	for (size_t i = 0; i < pl_server.host_count; i++) {
		SSL_CTX *ctx = make_context(&pl_server.hosts[i], error);
		if (!ctx) {
			pl_tls_shutdown();
			return -EINVAL;
		}
		contexts[context_count].name = pl_strdup(pl_server.hosts[i].name);
		contexts[context_count].ctx = ctx;
		context_count++;
	}
	return 0;
}

/* Certificates are judged after the handshake (pl_tls_peer_verified),
 * by the policy of the remote domain: a self-signed peer may still
 * authenticate with dialback, so the handshake itself never fails on
 * them. OpenSSL keeps the first verification error for
 * SSL_get_verify_result. */
static int accept_any_certificate(int preverified, X509_STORE_CTX *store)
{
	(void)preverified;
	(void)store;
	return 1;
}

void pl_tls_request_peer_certificate(SSL *ssl)
{
	SSL_set_verify(ssl, SSL_VERIFY_PEER, accept_any_certificate);
}

static int load_trust(SSL_CTX *ctx, const char *ca_file, char **error)
{
	char reason[256];
	if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ssl_error_text(reason, sizeof(reason));
		pl_log(PL_LOG_WARN, "tls", "cannot load the system trust store: %s", reason);
	}
	if (ca_file && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		ssl_error_text(reason, sizeof(reason));
		return pl_error(error, -EINVAL, "cannot load CA file %s: %s", ca_file, reason);
	}
	return 0;
}

int pl_tls_client_init(const char *ca_file, char **error)
{
	for (size_t i = 0; i < context_count; i++) {
		int rc = load_trust(contexts[i].ctx, ca_file, error);
		if (rc)
			return rc;
	}
	client_contexts = pl_calloc(pl_server.host_count, sizeof(*client_contexts));
	for (size_t i = 0; i < pl_server.host_count; i++) {
		const struct pl_host *host = &pl_server.hosts[i];
		SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
		char reason[256];
		if (!ctx) {
			ssl_error_text(reason, sizeof(reason));
			return pl_error(error, -ENOMEM, "TLS client context for %s: %s", host->name,
					reason);
		}
		client_contexts[client_context_count].name = pl_strdup(host->name);
		client_contexts[client_context_count].ctx = ctx;
		client_context_count++;
		SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
		SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
		SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
		SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20");
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_certificate);
		if (SSL_CTX_use_certificate_chain_file(ctx, host->certificate) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, host->private_key, SSL_FILETYPE_PEM) != 1) {
			ssl_error_text(reason, sizeof(reason));
			return pl_error(error, -EINVAL, "host %s: client certificate %s: %s",
					host->name, host->certificate, reason);
		}
		int rc = load_trust(ctx, ca_file, error);
		if (rc)
			return rc;
	}
	return 0;
}

SSL *pl_tls_new_client(const char *local_domain, const char *remote_domain, bool direct)
{
	if (client_context_count == 0)
		return NULL;
	SSL_CTX *ctx = client_contexts[0].ctx;
	for (size_t i = 0; i < client_context_count; i++)
		if (strcmp(client_contexts[i].name, local_domain) == 0)
			ctx = client_contexts[i].ctx;
	SSL *ssl = SSL_new(ctx);
	if (!ssl)
		return NULL;
	SSL_set_tlsext_host_name(ssl, remote_domain);
	if (direct) {
		static const unsigned char alpn[] = "\x0bxmpp-server";
		SSL_set_alpn_protos(ssl, alpn, sizeof(alpn) - 1);
	}
	return ssl;
}

/* id-on-dnsSRV "_xmpp-server.<domain>" (RFC 4985) or id-on-xmppAddr
 * "<domain>" among the subjectAltNames. */
static bool names_domain_otherwise(X509 *cert, const char *domain)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	bool found = false;
	char *srv_id = pl_asprintf("_xmpp-server.%s", domain);
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && !found; i++) {
		const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
		if (name->type != GEN_OTHERNAME)
			continue;
		int nid = OBJ_obj2nid(name->d.otherName->type_id);
		const ASN1_TYPE *value = name->d.otherName->value;
		char oid[64];
		OBJ_obj2txt(oid, sizeof(oid), name->d.otherName->type_id, 1);
		bool xmpp_addr = strcmp(oid, "1.3.6.1.5.5.7.8.5") == 0;
		bool dns_srv = nid == NID_SRVName || strcmp(oid, "1.3.6.1.5.5.7.8.7") == 0;
		const ASN1_STRING *text = NULL;
		if (xmpp_addr && value->type == V_ASN1_UTF8STRING)
			text = value->value.utf8string;
		else if (dns_srv && value->type == V_ASN1_IA5STRING)
			text = value->value.ia5string;
		if (!text)
			continue;
		const char *expected = xmpp_addr ? domain : srv_id;
		size_t len = (size_t)ASN1_STRING_length(text);
		found = len == strlen(expected) &&
			strncasecmp((const char *)ASN1_STRING_get0_data(text), expected, len) == 0;
	}
	free(srv_id);
	GENERAL_NAMES_free(names);
	return found;
}

bool pl_tls_peer_verified(SSL *ssl, const char *domain, const char **why)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	if (!cert) {
		*why = "no certificate";
		return false;
	}
	long result = SSL_get_verify_result(ssl);
	if (result != X509_V_OK) {
		*why = X509_verify_cert_error_string(result);
		return false;
	}
	/* RFC 6125 6.4: a DNS-ID (or, without any subjectAltName, the CN)
	 * matching the domain; a wildcard only as the whole left-most label.
	 * Else an SRV-ID or an XmppAddr naming it (RFC 6120 13.7.1.2). */
	if (X509_check_host(cert, domain, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) != 1 &&
	    !names_domain_otherwise(cert, domain)) {
		*why = "the certificate does not name the domain";
		return false;
	}
	*why = "valid";
	return true;
}

void pl_tls_shutdown(void)
{
	for (size_t i = 0; i < client_context_count; i++) {
		SSL_CTX_free(client_contexts[i].ctx);
		free(client_contexts[i].name);
	}
	free(client_contexts);
	client_contexts = NULL;
	client_context_count = 0;
	for (size_t i = 0; i < context_count; i++) {
		SSL_CTX_free(contexts[i].ctx);
		free(contexts[i].name);
	}
	free(contexts);
	contexts = NULL;
	context_count = 0;
}

SSL *pl_tls_new_server(enum pl_tls_alpn alpn)
{
	if (context_count == 0)
		return NULL;
	SSL *ssl = SSL_new(contexts[0].ctx);
	if (ssl)
		SSL_set_ex_data(ssl, alpn_index, (void *)(intptr_t)alpn);
	/* A server on the s2s direct TLS port wants the peer's certificate. */
	if (ssl && alpn == PL_TLS_ALPN_XMPP_SERVER)
		pl_tls_request_peer_certificate(ssl);
	return ssl;
}

const char *pl_tls_server_name(SSL *ssl)
{
	return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
}

int pl_tls_channel_binding(SSL *ssl, const char *type, uint8_t *out, size_t *out_len)
{
	if (strcmp(type, "tls-exporter") == 0) {
		/* RFC 9266: defined for TLS 1.3 only (1.2 lacks the extended
		 * master secret guarantee by default). */
		if (SSL_version(ssl) != TLS1_3_VERSION || *out_len < 32)
			return -ENOTSUP;
		static const char label[] = "EXPORTER-Channel-Binding";
		if (SSL_export_keying_material(ssl, out, 32, label, sizeof(label) - 1, NULL, 0,
					       0) != 1)
			return -ENOTSUP;
		*out_len = 32;
		return 0;
	}
	if (strcmp(type, "tls-server-end-point") == 0) {
		X509 *cert = SSL_get_certificate(ssl);
		if (!cert)
			return -ENOTSUP;
		/* RFC 5929 4.1: the certificate's signature hash, with MD5
		 * and SHA-1 upgraded to SHA-256. */
		int digest_nid = NID_undef;
		if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &digest_nid, NULL))
			return -ENOTSUP;
		const EVP_MD *md = (digest_nid == NID_md5 || digest_nid == NID_sha1 ||
				    digest_nid == NID_undef)
					   ? EVP_sha256()
					   : EVP_get_digestbynid(digest_nid);
		unsigned int len = 0;
		uint8_t digest[EVP_MAX_MD_SIZE];
		if (!md || X509_digest(cert, md, digest, &len) != 1 || len > *out_len)
			return -ENOTSUP;
		memcpy(out, digest, len);
		*out_len = len;
		return 0;
	}
	return -ENOTSUP;
}
