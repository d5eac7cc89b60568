#ifndef BUCKETFS_COPENSSL_SHIM_H
#define BUCKETFS_COPENSSL_SHIM_H
// HMAC-SHA256 and SHA-256 for AWS SigV4, MD5 for Content-MD5 checks, RSA (RS256) for GCS service accounts.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/md5.h>
#include <openssl/pem.h>
#include <openssl/err.h>
#endif
