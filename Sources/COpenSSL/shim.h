#ifndef BUCKETFS_COPENSSL_SHIM_H
#define BUCKETFS_COPENSSL_SHIM_H
// HMAC-SHA256 and SHA-256 for AWS SigV4, MD5 for Content-MD5 checks, RSA (RS256) for GCS service accounts.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/md5.h>
#include <openssl/pem.h>
#include <openssl/err.h>
// TLS for rediss:// (RedisClient): a client over memory BIOs, with certificate and host verification.
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

// SSL_set_tlsext_host_name is a macro over SSL_ctrl, which Swift cannot import.
static inline int bucketfs_ssl_set_server_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}
#endif
