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

struct host_context {
	char *name;    /* owned copy of the host name */
	SSL_CTX *ctx;  /* owned */
};

static struct host_context *contexts;
static size_t context_count;
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

void pl_tls_shutdown(void)
{
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
