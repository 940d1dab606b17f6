/* Server-side TLS: one SSL_CTX per virtual host (its certificate), chosen
 * by SNI, TLS 1.2 minimum with forward-secret AEAD ciphers only, ALPN for
 * direct TLS (XEP-0368: "xmpp-client", "xmpp-server") and HTTPS
 * ("http/1.1"), and
 * SSL_MODE_RELEASE_BUFFERS so an idle TLS session keeps no 34 KiB of
 * buffers. Also the channel-binding data SCRAM-PLUS needs. Network thread
 * only. */
#ifndef PL_NET_TLS_H
#define PL_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

/* Builds the contexts of every host in pl_server.hosts. 0 or -errno with
 * *error naming the host and file. */
int pl_tls_init(char **error);
void pl_tls_shutdown(void);

enum pl_tls_alpn {
	PL_TLS_ALPN_NONE,        /* STARTTLS: no ALPN expected */
	PL_TLS_ALPN_XMPP_CLIENT, /* direct TLS on the c2s port */
	PL_TLS_ALPN_XMPP_SERVER, /* direct TLS on the s2s port */
	PL_TLS_ALPN_HTTP,        /* HTTPS (BOSH, WebSocket): "http/1.1" */
};

/* A new server-side SSL for an accepted connection, starting on the first
 * host's context; SNI switches it. NULL if TLS was not initialised. */
SSL *pl_tls_new_server(enum pl_tls_alpn alpn);

/* Server-to-server TLS. pl_tls_client_init (after pl_tls_init) loads
 * the trust store (the system's and ca_file, may be NULL) into every
 * context and makes one client context per host, with the host's
 * certificate as the client certificate. 0 or -errno with *error. */
int pl_tls_client_init(const char *ca_file, char **error);
/* A client SSL from `local_domain`'s context (the first host's if it is
 * not a host), SNI `remote_domain`, ALPN xmpp-server when direct. */
SSL *pl_tls_new_client(const char *local_domain, const char *remote_domain, bool direct);
/* A server SSL that asks the client for a certificate without failing
 * the handshake on a bad one (judged later by pl_tls_peer_verified). */
void pl_tls_request_peer_certificate(SSL *ssl);
/* After the handshake: does the peer's certificate chain to a trusted
 * root and name `domain` (RFC 6125 DNS-ID)? *why says why not, or
 * "valid" (a static string). */
bool pl_tls_peer_verified(SSL *ssl, const char *domain, const char **why);

/* The host name the client asked for with SNI, or NULL. */
const char *pl_tls_server_name(SSL *ssl);

/* Channel-binding data (RFC 5929, RFC 9266) for `type`:
 * "tls-exporter" (TLS 1.3 only) or "tls-server-end-point". Returns 0 and
 * fills out (up to *out_len bytes, updated), or -ENOTSUP. */
int pl_tls_channel_binding(SSL *ssl, const char *type, uint8_t *out, size_t *out_len);

#endif
