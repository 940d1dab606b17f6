/* The first-start self-signed certificate: made in a fresh directory with
 * the right modes and names, reused (same serial) on the next start, and
 * replaced when the certificate is garbage or no longer matches its key.
 * Hostnames that could escape the directory are refused. */
#include "net/tls_cert.h"
#include "util.h"
#include "../tap.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static X509 *load_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	return cert;
}

static int file_mode(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* "DNS:a,DNS:b" from the certificate's subjectAltName. */
static char *alt_names(X509 *cert)
{
	struct pl_buf text = { 0 };
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
		if (name->type == GEN_DNS)
			pl_buf_printf(&text, "%sDNS:%.*s", text.len ? "," : "",
				      ASN1_STRING_length(name->d.dNSName),
				      (const char *)ASN1_STRING_get0_data(name->d.dNSName));
		else if (name->type == GEN_IPADD)
			pl_buf_printf(&text, "%sIP(%d bytes)", text.len ? "," : "",
				      ASN1_STRING_length(name->d.iPAddress));
	}
	GENERAL_NAMES_free(names);
	return text.data ? pl_buf_take(&text) : pl_strdup("");
}

static void write_file(const char *path, const char *contents)
{
	FILE *f = fopen(path, "w");
	fputs(contents, f);
	fclose(f);
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path);
}

int main(void)
{
	char top[] = "/tmp/parley-test-tls-cert-XXXXXX";
	if (!mkdtemp(top)) {
		ok(0, "mkdtemp");
		return done_testing();
	}
	char *dir = pl_asprintf("%s/var/certs", top);
	char *cert_path = NULL, *key_path = NULL, *error = NULL;

	/* First start: everything is made. */
	is_int(pl_tls_ensure_self_signed(dir, "parley.example", &cert_path, &key_path, &error), 0,
	       "a certificate is made");
	if (error)
		diag("%s", error);
	char *expected_cert = pl_asprintf("%s/parley.example.crt", dir);
	char *expected_key = pl_asprintf("%s/parley.example.key", dir);
	is_str(cert_path, expected_cert, "certificate path");
	is_str(key_path, expected_key, "key path");
	is_int(file_mode(dir), 0700, "the directory is made with mode 0700");
	is_int(file_mode(key_path), 0600, "the key has mode 0600");
	ok(access(cert_path, R_OK) == 0, "the certificate exists");
	char *tmp = pl_asprintf("%s.tmp", cert_path);
	ok(access(tmp, F_OK) != 0, "no .tmp is left behind");
	free(tmp);

	X509 *cert = load_cert(cert_path);
	ok(cert != NULL, "the certificate loads with PEM_read_X509");
	char *names = alt_names(cert);
	is_str(names, "DNS:parley.example,DNS:*.parley.example", "subjectAltName has the host and its wildcard");
	free(names);
	is_int(X509_check_host(cert, "parley.example", 0, 0, NULL), 1, "valid for the host");
	is_int(X509_check_host(cert, "muc.parley.example", 0, 0, NULL), 1, "and its subdomains");
	is_int(X509_check_host(cert, "other.example", 0, 0, NULL), 0, "not for another host");
	char cn[256] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
	is_str(cn, "parley.example", "CN is the host");
	is_int(X509_get_version(cert), X509_VERSION_3, "X509v3");
	is_int(X509_get_signature_nid(cert), NID_ecdsa_with_SHA256, "signed with ECDSA SHA-256");
	EVP_PKEY *public_key = X509_get0_pubkey(cert);
	ok(public_key && EVP_PKEY_is_a(public_key, "EC") && EVP_PKEY_get_bits(public_key) == 256,
	   "an EC P-256 key");
	int days = 0, seconds = 0;
	ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(cert), X509_get0_notAfter(cert));
	ok(days >= 3650 && days <= 3653, "valid for ten years (%d days)", days);
	const ASN1_INTEGER *serial = X509_get0_serialNumber(cert);
	BIGNUM *serial_bn = ASN1_INTEGER_to_BN(serial, NULL);
	ok(BN_num_bits(serial_bn) > 64 && BN_num_bits(serial_bn) <= 128 && !BN_is_negative(serial_bn),
	   "a positive random serial of up to 128 bits");
	BN_free(serial_bn);
	ok(X509_verify(cert, public_key) == 1, "self-signed");

	/* Second start: the same certificate. */
	char *cert_path2 = NULL, *key_path2 = NULL;
	is_int(pl_tls_ensure_self_signed(dir, "parley.example", &cert_path2, &key_path2, &error), 0,
	       "second call succeeds");
	X509 *cert2 = load_cert(cert_path2);
	ok(cert2 && ASN1_INTEGER_cmp(X509_get0_serialNumber(cert2), serial) == 0,
	   "the existing certificate is reused (same serial)");
	X509_free(cert2);
	free(cert_path2);
	free(key_path2);

	/* Garbage in the certificate: replaced by a new pair. */
	write_file(cert_path, "this is not a certificate\n");
	is_int(pl_tls_ensure_self_signed(dir, "parley.example", &cert_path2, &key_path2, &error), 0,
	       "garbage certificate: succeeds");
	cert2 = load_cert(cert_path2);
	ok(cert2 && ASN1_INTEGER_cmp(X509_get0_serialNumber(cert2), serial) != 0,
	   "garbage certificate: regenerated");
	is_int(file_mode(key_path2), 0600, "the new key has mode 0600");
	free(cert_path2);
	free(key_path2);

	/* A key that does not match (as after a crash between the renames). */
	char *other_dir = pl_asprintf("%s/other", top);
	char *other_cert = NULL, *other_key = NULL;
	pl_tls_ensure_self_signed(other_dir, "parley.example", &other_cert, &other_key, &error);
	rename(other_key, key_path);
	is_int(pl_tls_ensure_self_signed(dir, "parley.example", &cert_path2, &key_path2, &error), 0,
	       "mismatched key: succeeds");
	X509 *cert3 = load_cert(cert_path2);
	ok(cert3 && cert2 && ASN1_INTEGER_cmp(X509_get0_serialNumber(cert3),
					      X509_get0_serialNumber(cert2)) != 0,
	   "mismatched key: regenerated");
	X509_free(cert3);
	X509_free(cert2);
	free(cert_path2);
	free(key_path2);
	free(other_cert);
	free(other_key);
	free(other_dir);

	/* A missing key alone also means a new pair. */
	unlink(key_path);
	is_int(pl_tls_ensure_self_signed(dir, "parley.example", &cert_path2, &key_path2, &error), 0,
	       "missing key: succeeds");
	ok(access(key_path2, R_OK) == 0, "missing key: made again");
	free(cert_path2);
	free(key_path2);

	/* An IP literal gets an IP subjectAltName. */
	is_int(pl_tls_ensure_self_signed(dir, "127.0.0.1", &cert_path2, &key_path2, &error), 0,
	       "an IP literal host");
	cert2 = load_cert(cert_path2);
	names = cert2 ? alt_names(cert2) : NULL;
	is_str(names, "IP(4 bytes)", "with an IP subjectAltName");
	is_int(cert2 ? X509_check_ip_asc(cert2, "127.0.0.1", 0) : 0, 1, "valid for the address");
	free(names);
	X509_free(cert2);
	free(cert_path2);
	free(key_path2);

	/* A bracketed IPv6 literal, as JIDs write it. */
	is_int(pl_tls_ensure_self_signed(dir, "[::1]", &cert_path2, &key_path2, &error), 0,
	       "an IPv6 literal host");
	cert2 = load_cert(cert_path2);
	names = cert2 ? alt_names(cert2) : NULL;
	is_str(names, "IP(16 bytes)", "with an IPv6 subjectAltName");
	is_int(cert2 ? X509_check_ip_asc(cert2, "::1", 0) : 0, 1, "valid for the address");
	free(names);
	X509_free(cert2);
	free(cert_path2);
	free(key_path2);

	/* Longer than a commonName may be: the name lives in the SAN alone. */
	const char *long_host = "a-rather-long-host-name-that-goes-past-sixty-four.characters.example";
	is_int(pl_tls_ensure_self_signed(dir, long_host, &cert_path2, &key_path2, &error), 0,
	       "a host name over 64 characters");
	cert2 = load_cert(cert_path2);
	is_int(cert2 ? X509_check_host(cert2, long_host, 0, 0, NULL) : 0, 1,
	       "valid for the long name");
	X509_free(cert2);
	free(cert_path2);
	free(key_path2);

	/* A Unicode host: CN in UTF-8, subjectAltName as A-labels. */
	is_int(pl_tls_ensure_self_signed(dir, "b\xC3\xBC" "cher.example", &cert_path2, &key_path2,
					 &error), 0, "a Unicode host");
	cert2 = load_cert(cert_path2);
	names = cert2 ? alt_names(cert2) : NULL;
	is_str(names, "DNS:xn--bcher-kva.example,DNS:*.xn--bcher-kva.example",
	       "subjectAltName as A-labels");
	free(names);
	X509_free(cert2);
	free(cert_path2);
	free(key_path2);

	/* Names that would leave the directory. */
	cert_path2 = key_path2 = NULL;
	is_int(pl_tls_ensure_self_signed(dir, "../escape", &cert_path2, &key_path2, &error), -EINVAL,
	       "a hostname with a slash is refused");
	has_str(error, "../escape", "the error names it");
	is_int(pl_tls_ensure_self_signed(dir, "", &cert_path2, &key_path2, &error), -EINVAL,
	       "an empty hostname is refused");
	ok(cert_path2 == NULL && key_path2 == NULL, "no paths on failure");

	/* A directory that cannot be made. */
	char *blocked = pl_asprintf("%s/file", top);
	write_file(blocked, "x");
	char *below = pl_asprintf("%s/certs", blocked);
	ok(pl_tls_ensure_self_signed(below, "parley.example", &cert_path2, &key_path2, &error) < 0,
	   "an impossible directory fails");
	has_str(error, below, "the error names the directory");
	free(below);
	free(blocked);

	free(error);
	X509_free(cert);
	free(expected_cert);
	free(expected_key);
	free(cert_path);
	free(key_path);
	free(dir);
	nftw(top, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return done_testing();
}
