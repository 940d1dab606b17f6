/* The self-signed certificate Parley makes on first start when a host has
 * no <certificate> configured, so that STARTTLS works out of the box (as
 * the embedded default promises). Not for production: clients will ask
 * the user to trust it. */
#ifndef PL_NET_TLS_CERT_H
#define PL_NET_TLS_CERT_H

/* Makes `dir` (mode 0700) if needed and returns in *cert_path and
 * *key_path (caller frees) the files dir/<hostname>.crt and .key.
 * An existing pair is reused when the certificate parses, has not expired
 * and matches the key. Anything else there (missing, garbage, expired,
 * mismatched after a crash between the two renames) is replaced by a new
 * pair, with a warning: the directory belongs to Parley, an admin's own
 * certificates are configured with <certificate>, never put here.
 * A new pair is an EC P-256 key (mode 0600) and a 10-year X509v3
 * certificate, CN=hostname, subjectAltName DNS:hostname and
 * DNS:*.hostname (IP:address for an IP literal), SHA-256, random 128-bit
 * serial, both written to .tmp, fsynced and renamed into place.
 * Returns 0, or -errno with *error (caller frees): -EINVAL for a hostname
 * that cannot name a file or a certificate, -EIO for OpenSSL failures. */
int pl_tls_ensure_self_signed(const char *dir, const char *hostname, char **cert_path,
			      char **key_path, char **error);

#endif
