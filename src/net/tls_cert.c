/* Self-signed certificates for hosts without a configured one: made once
 * into the storage directory and reused on every later start, so clients
 * that pinned the certificate after the first trust prompt keep trusting
 * it. Files are written to .tmp, synced and renamed, so a crash leaves
 * either the old pair or the new one, and a torn pair (key renamed, cert
 * not) fails the key match on the next start and is made again. Runs at
 * start-up on the main thread only. */
#include "net/tls_cert.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idn2.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define VALIDITY_DAYS 3652 /* ten years, leap days included */
#define SERIAL_BYTES 16

/* The last OpenSSL error as text, and the queue cleared so it cannot be
 * blamed on a later, unrelated failure. */
static const char *openssl_error(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "unknown OpenSSL error");
	ERR_clear_error();
	return buf;
}

/* The hostname becomes a file name, so no path separators or hidden or
 * relative names; and it must be a name a certificate can carry. */
static bool hostname_acceptable(const char *hostname)
{
	if (!hostname || hostname[0] == '\0' || hostname[0] == '.' || strlen(hostname) > 253)
		return false;
	for (const char *p = hostname; *p; p++)
		if (*p == '/' || *p == '\\' || (unsigned char)*p < 0x21 || *p == 0x7f)
			return false;
	return true;
}

/* Checks that an existing pair is usable as it is. */
static bool pair_usable(const char *cert_path, const char *key_path, char **why)
{
	FILE *f = fopen(cert_path, "r");
	if (!f) {
		*why = pl_asprintf("%s: %s", cert_path, strerror(errno));
		return false;
	}
	X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!cert) {
		ERR_clear_error();
		*why = pl_asprintf("%s is not a PEM certificate", cert_path);
		return false;
	}
	bool usable = false;
	EVP_PKEY *key = NULL;
	f = fopen(key_path, "r");
	if (!f) {
		*why = pl_asprintf("%s: %s", key_path, strerror(errno));
		goto out;
	}
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!key) {
		*why = pl_asprintf("%s is not a PEM private key", key_path);
		goto out;
	}
	if (X509_check_private_key(cert, key) != 1) {
		*why = pl_asprintf("%s does not match %s", cert_path, key_path);
		goto out;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
		*why = pl_asprintf("%s has expired", cert_path);
		goto out;
	}
	usable = true;
out:
	ERR_clear_error();
	EVP_PKEY_free(key);
	X509_free(cert);
	return usable;
}

static int add_general_name(GENERAL_NAMES *names, int type, const void *data, size_t len)
{
	GENERAL_NAME *name = GENERAL_NAME_new();
	ASN1_OCTET_STRING *value = type == GEN_IPADD ? ASN1_OCTET_STRING_new()
						     : ASN1_IA5STRING_new();
	if (!name || !value || !ASN1_STRING_set(value, data, (int)len)) {
		GENERAL_NAME_free(name);
		ASN1_STRING_free(value);
		return -1;
	}
	GENERAL_NAME_set0_value(name, type, value);
	if (!sk_GENERAL_NAME_push(names, name)) {
		GENERAL_NAME_free(name);
		return -1;
	}
	return 0;
}

/* subjectAltName built with the API, not a config string, so a name can
 * never inject another entry. IP literals get an IP entry only. */
static int add_subject_alt_name(X509 *cert, const char *dns_name)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	if (!names)
		return -1;
	unsigned char address[16];
	int rc = 0;
	/* JIDs write IPv6 literals in brackets (RFC 7622 section 3.2). */
	size_t name_len = strlen(dns_name);
	char *unbracketed = name_len > 2 && dns_name[0] == '[' && dns_name[name_len - 1] == ']'
				    ? pl_strndup(dns_name + 1, name_len - 2) : NULL;
	if (inet_pton(AF_INET, dns_name, address) == 1) {
		rc = add_general_name(names, GEN_IPADD, address, 4);
	} else if (inet_pton(AF_INET6, unbracketed ? unbracketed : dns_name, address) == 1) {
		rc = add_general_name(names, GEN_IPADD, address, 16);
	} else {
		char *wildcard = pl_asprintf("*.%s", dns_name);
		rc = add_general_name(names, GEN_DNS, dns_name, strlen(dns_name));
		if (rc == 0)
			rc = add_general_name(names, GEN_DNS, wildcard, strlen(wildcard));
		free(wildcard);
	}
	if (rc == 0 && X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, 0) != 1)
		rc = -1;
	free(unbracketed);
	GENERAL_NAMES_free(names);
	return rc;
}

static int add_extension(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	if (!ext)
		return -1;
	int rc = X509_add_ext(cert, ext, -1) == 1 ? 0 : -1;
	X509_EXTENSION_free(ext);
	return rc;
}

static int set_random_serial(X509 *cert)
{
	unsigned char bytes[SERIAL_BYTES];
	pl_random_bytes(bytes, sizeof(bytes));
	/* RFC 5280 wants a positive serial: clear the sign bit, and make sure
	 * it is not zero. */
	bytes[0] = (unsigned char)((bytes[0] & 0x7f) | 0x01);
	BIGNUM *bn = BN_bin2bn(bytes, sizeof(bytes), NULL);
	int rc = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) ? 0 : -1;
	BN_free(bn);
	return rc;
}

/* X.509 caps a commonName at 64 characters; longer names live in the
 * subjectAltName alone (which is what clients match anyway) and the
 * subject, which must not be empty, says what the certificate is. */
static int add_subject_name(X509_NAME *name, const char *hostname)
{
	if (strlen(hostname) <= 64)
		return X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
						  (const unsigned char *)hostname, -1, -1, 0) == 1 ? 0 : -1;
	return X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
					  (const unsigned char *)"Parley self-signed", -1, -1, 0) == 1
		       ? 0 : -1;
}

static X509 *make_certificate(EVP_PKEY *key, const char *hostname, const char *dns_name)
{
	X509 *cert = X509_new();
	if (!cert)
		return NULL;
	X509_NAME *name = X509_get_subject_name(cert);
	X509V3_CTX ctx;
	bool built = X509_set_version(cert, X509_VERSION_3) == 1 &&
		     set_random_serial(cert) == 0 &&
		     /* An hour back, for clients whose clock runs a little behind. */
		     X509_gmtime_adj(X509_getm_notBefore(cert), -3600) &&
		     X509_time_adj_ex(X509_getm_notAfter(cert), VALIDITY_DAYS, 0, NULL) &&
		     add_subject_name(name, hostname) == 0 &&
		     X509_set_issuer_name(cert, name) == 1 &&
		     X509_set_pubkey(cert, key) == 1;
	if (built) {
		X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
		/* clientAuth too: s2s connections present the same certificate. */
		built = add_extension(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
			add_extension(cert, &ctx, NID_key_usage, "critical,digitalSignature") == 0 &&
			add_extension(cert, &ctx, NID_ext_key_usage, "serverAuth,clientAuth") == 0 &&
			add_extension(cert, &ctx, NID_subject_key_identifier, "hash") == 0 &&
			add_subject_alt_name(cert, dns_name) == 0 &&
			X509_sign(cert, key, EVP_sha256()) > 0;
	}
	if (!built) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

/* Writes a memory BIO's contents to path.tmp with `mode`, synced; the
 * caller renames. */
static int write_tmp_file(const char *tmp_path, BIO *contents, mode_t mode, char **error)
{
	char *data;
	long len = BIO_get_mem_data(contents, &data);
	int fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return pl_error(error, -errno, "cannot create %s: %s", tmp_path, strerror(errno));
	/* A stale .tmp from a crash may have had other permissions. */
	int rc = fchmod(fd, mode) == 0 ? 0 : -errno;
	for (long done = 0; rc == 0 && done < len;) {
		ssize_t n = write(fd, data + done, (size_t)(len - done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			rc = n < 0 ? -errno : -EIO;
		else
			done += n;
	}
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc) {
		unlink(tmp_path);
		return pl_error(error, rc, "cannot write %s: %s", tmp_path, strerror(-rc));
	}
	return 0;
}

static void sync_directory(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

static int generate_pair(const char *dir, const char *hostname, const char *cert_path,
			 const char *key_path, char **error)
{
	char ssl_error[256];
	char *dns_name = NULL;
	bool ascii = true;
	for (const char *p = hostname; *p; p++)
		if ((unsigned char)*p >= 0x80)
			ascii = false;
	/* A subjectAltName dNSName is ASCII: Unicode hosts go in as A-labels. */
	if (ascii) {
		dns_name = pl_strdup(hostname);
	} else {
		char *converted = NULL;
		int idn_rc = idn2_to_ascii_8z(hostname, &converted, IDN2_NONTRANSITIONAL);
		if (idn_rc != IDN2_OK) {
			free(converted);
			return pl_error(error, -EINVAL, "cannot make a certificate for \"%s\": %s",
					hostname, idn2_strerror(idn_rc));
		}
		dns_name = pl_strdup(converted);
		free(converted);
	}

	int rc = 0;
	char *key_tmp = pl_asprintf("%s.tmp", key_path);
	char *cert_tmp = pl_asprintf("%s.tmp", cert_path);
	X509 *cert = NULL;
	BIO *key_pem = NULL, *cert_pem = NULL;
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key) {
		rc = pl_error(error, -EIO, "cannot generate a key for %s: %s", hostname,
			      openssl_error(ssl_error, sizeof(ssl_error)));
		goto out;
	}
	cert = make_certificate(key, hostname, dns_name);
	if (!cert) {
		rc = pl_error(error, -EIO, "cannot make a certificate for %s: %s", hostname,
			      openssl_error(ssl_error, sizeof(ssl_error)));
		goto out;
	}
	key_pem = BIO_new(BIO_s_mem());
	cert_pem = BIO_new(BIO_s_mem());
	if (!key_pem || !cert_pem ||
	    PEM_write_bio_PrivateKey(key_pem, key, NULL, NULL, 0, NULL, NULL) != 1 ||
	    PEM_write_bio_X509(cert_pem, cert) != 1) {
		rc = pl_error(error, -EIO, "cannot encode the certificate of %s: %s", hostname,
			      openssl_error(ssl_error, sizeof(ssl_error)));
		goto out;
	}
	/* Key before certificate: a crash between the renames leaves a new key
	 * and an old certificate, which do not match, so the next start makes
	 * the pair again rather than serving a certificate without its key. */
	rc = write_tmp_file(key_tmp, key_pem, 0600, error);
	if (rc == 0)
		rc = write_tmp_file(cert_tmp, cert_pem, 0644, error);
	if (rc == 0 && rename(key_tmp, key_path) != 0)
		rc = pl_error(error, -errno, "cannot rename %s: %s", key_tmp, strerror(errno));
	if (rc == 0 && rename(cert_tmp, cert_path) != 0)
		rc = pl_error(error, -errno, "cannot rename %s: %s", cert_tmp, strerror(errno));
	if (rc == 0) {
		sync_directory(dir);
		pl_log(PL_LOG_INFO, "tls", "generated a self-signed certificate for %s at %s",
		       hostname, cert_path);
	} else {
		unlink(key_tmp);
		unlink(cert_tmp);
	}
out:
	BIO_free(key_pem);
	BIO_free(cert_pem);
	X509_free(cert);
	EVP_PKEY_free(key);
	free(key_tmp);
	free(cert_tmp);
	free(dns_name);
	return rc;
}

int pl_tls_ensure_self_signed(const char *dir, const char *hostname, char **cert_path,
			      char **key_path, char **error)
{
	if (!dir || !hostname_acceptable(hostname))
		return pl_error(error, -EINVAL, "\"%s\" cannot name a self-signed certificate",
				hostname ? hostname : "(null)");
	int rc = pl_mkdir_p(dir);
	if (rc)
		return pl_error(error, rc, "cannot create %s: %s", dir, strerror(-rc));

	char *cert_file = pl_asprintf("%s/%s.crt", dir, hostname);
	char *key_file = pl_asprintf("%s/%s.key", dir, hostname);
	char *why = NULL;
	bool cert_there = access(cert_file, F_OK) == 0, key_there = access(key_file, F_OK) == 0;
	if (!(cert_there || key_there) || !pair_usable(cert_file, key_file, &why)) {
		if (why)
			pl_log(PL_LOG_WARN, "tls", "replacing the self-signed certificate of %s: %s",
			       hostname, why);
		free(why);
		rc = generate_pair(dir, hostname, cert_file, key_file, error);
		if (rc) {
			free(cert_file);
			free(key_file);
			return rc;
		}
	}
	*cert_path = cert_file;
	*key_path = key_file;
	return 0;
}
