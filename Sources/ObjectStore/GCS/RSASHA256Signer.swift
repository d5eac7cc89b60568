import COpenSSL
import Foundation

/// RS256 (RSASSA-PKCS1-v1_5 over SHA-256) signatures with a PEM private key, through OpenSSL's EVP API.
/// Used to sign the JWT a service account exchanges for an OAuth2 access token.
///
/// The key is parsed once; each signature uses its own digest context, so one signer may sign from several threads.
final class RSASHA256Signer: @unchecked Sendable {
    private let key: OpaquePointer

    /// `pem` is a PKCS#8 (`BEGIN PRIVATE KEY`, as in service-account files) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) key.
    init(pem: String) throws(ObjectStoreError) {
        let bytes = Array(pem.utf8)
        let parsed: OpaquePointer? = bytes.withUnsafeBytes { raw -> OpaquePointer? in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
        guard let parsed else {
            throw .unauthorized("the private key is not a readable PEM key (\(Self.openSSLError()))")
        }
        guard EVP_PKEY_get_base_id(parsed) == EVP_PKEY_RSA else {
            EVP_PKEY_free(parsed)
            throw .unauthorized("the private key is not an RSA key")
        }
        key = parsed
    }

    deinit {
        EVP_PKEY_free(key)
    }

    func sign(_ message: Data) throws(ObjectStoreError) -> Data {
        guard let context = EVP_MD_CTX_new() else { throw .other("OpenSSL: cannot allocate a digest context") }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestSignInit(context, nil, EVP_sha256(), nil, key) == 1 else {
            throw .other("OpenSSL: EVP_DigestSignInit failed (\(Self.openSSLError()))")
        }
        var length = 0
        let message = Array(message)
        guard EVP_DigestSign(context, nil, &length, message, message.count) == 1 else {
            throw .other("OpenSSL: EVP_DigestSign failed (\(Self.openSSLError()))")
        }
        var signature = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(context, &signature, &length, message, message.count) == 1 else {
            throw .other("OpenSSL: EVP_DigestSign failed (\(Self.openSSLError()))")
        }
        return Data(signature.prefix(length))
    }

    private static func openSSLError() -> String {
        let code = ERR_get_error()
        guard code != 0 else { return "no detail" }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(cString: buffer)
    }
}
