import COpenSSL
import Glibc

/// TLS (OpenSSL) over a `RedisSocket`, for `rediss://`. OpenSSL reads and writes memory BIOs and this type
/// moves their bytes through the socket, so the socket's timeouts and `MSG_NOSIGNAL` apply to TLS as well.
///
/// The server's certificate must chain to the configured CA file (else the system store) and name the host
/// connected to (DNS name, or IP address when the host is one); otherwise the handshake fails with one line.
final class RedisTLSStream: RedisStream {
    private let socket: RedisSocket
    private let context: OpaquePointer
    private let ssl: OpaquePointer
    /// Network → OpenSSL, and OpenSSL → network; owned by `ssl`.
    private let incoming: OpaquePointer
    private let outgoing: OpaquePointer
    /// Which CAs were trusted, for the refusal message.
    private let trusted: String

    init(socket: RedisSocket, host: String, settings: RedisEndpoint.TLS) throws(RedisError) {
        ERR_clear_error()
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            throw .unavailable("cannot create a TLS context: \(Self.opensslText())")
        }
        guard let ssl = SSL_new(context), let incoming = BIO_new(BIO_s_mem()), let outgoing = BIO_new(BIO_s_mem())
        else {
            SSL_CTX_free(context)
            throw .unavailable("cannot create a TLS session: \(Self.opensslText())")
        }
        SSL_set_bio(ssl, incoming, outgoing)
        self.socket = socket
        self.context = context
        self.ssl = ssl
        self.incoming = incoming
        self.outgoing = outgoing
        trusted = settings.caFile.map { "CA file \($0)" } ?? "the system's CA store"
        try configure(host: host, settings: settings)
        try handshake()
    }

    deinit {
        SSL_free(ssl)
        SSL_CTX_free(context)
    }

    /// Settings errors are `.invalid`: no retry makes a missing CA file readable.
    private func configure(host: String, settings: RedisEndpoint.TLS) throws(RedisError) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, nil)
        if let ca = settings.caFile {
            guard SSL_CTX_load_verify_locations(context, ca, nil) == 1 else {
                throw .invalid("cannot read the Redis CA file \(ca): \(Self.opensslText())")
            }
        } else {
            guard SSL_CTX_set_default_verify_paths(context) == 1 else {
                throw .invalid("cannot load the system's CA certificates: \(Self.opensslText())")
            }
        }
        if let cert = settings.certFile, let key = settings.keyFile {
            guard SSL_use_certificate_chain_file(ssl, cert) == 1 else {
                throw .invalid("cannot read the Redis client certificate \(cert): \(Self.opensslText())")
            }
            guard SSL_use_PrivateKey_file(ssl, key, SSL_FILETYPE_PEM) == 1, SSL_check_private_key(ssl) == 1 else {
                throw .invalid("cannot use the Redis client key \(key): \(Self.opensslText())")
            }
        }
        var address = in6_addr()
        let isAddress = inet_pton(AF_INET, host, &address) == 1 || inet_pton(AF_INET6, host, &address) == 1
        if isAddress {
            guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 else {
                throw .invalid("cannot verify an IP address certificate: \(Self.opensslText())")
            }
        } else {
            guard SSL_set1_host(ssl, host) == 1, bucketfs_ssl_set_server_name(ssl, host) == 1 else {
                throw .invalid("cannot set the TLS host name: \(Self.opensslText())")
            }
        }
        SSL_set_connect_state(ssl)
    }

    private func handshake() throws(RedisError) {
        while true {
            ERR_clear_error()
            let result = SSL_do_handshake(ssl)
            try flush()
            if result == 1 { return }
            let failure = SSL_get_error(ssl, result)
            guard failure == SSL_ERROR_WANT_READ else {
                let verified = SSL_get_verify_result(ssl)
                if verified != Int(X509_V_OK) {
                    // The one line a user sees when the CA or the host name is wrong.
                    let reason = String(cString: X509_verify_cert_error_string(verified))
                    throw .invalid("TLS: the server's certificate was refused: \(reason) (trusting \(trusted))")
                }
                throw .unavailable("TLS handshake failed: \(Self.opensslText())")
            }
            do {
                try fill()
            } catch {
                throw .unavailable("TLS handshake failed: \(error.description)")
            }
        }
    }

    func write(_ bytes: [UInt8]) throws(RedisError) {
        guard !bytes.isEmpty else { return }
        ERR_clear_error()
        // Into a memory BIO a write is whole or fails.
        let written = bytes.withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) }
        guard written == Int32(bytes.count) else { throw .unavailable("TLS: \(Self.opensslText())") }
        try flush()
    }

    func read() throws(RedisError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            ERR_clear_error()
            let count = buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if count > 0 { return Array(buffer[..<Int(count)]) }
            switch SSL_get_error(ssl, count) {
            case SSL_ERROR_WANT_READ:
                try flush()
                try fill()
            case SSL_ERROR_ZERO_RETURN:
                throw .unavailable("the server closed the TLS connection")
            default:
                throw .unavailable("TLS: \(Self.opensslText())")
            }
        }
    }

    /// Sends what OpenSSL has written.
    private func flush() throws(RedisError) {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while BIO_ctrl_pending(outgoing) > 0 {
            let count = buffer.withUnsafeMutableBytes { BIO_read(outgoing, $0.baseAddress, Int32($0.count)) }
            guard count > 0 else { return }
            try socket.write(Array(buffer[..<Int(count)]))
        }
    }

    /// Hands OpenSSL what the server sent.
    private func fill() throws(RedisError) {
        let bytes = try socket.read()
        _ = bytes.withUnsafeBytes { BIO_write(incoming, $0.baseAddress, Int32($0.count)) }
    }

    /// OpenSSL's queued error, as one line.
    private static func opensslText() -> String {
        let code = ERR_get_error()
        guard code != 0 else { return "connection error" }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
