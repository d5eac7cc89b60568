import COpenSSL
import Foundation
import Glibc

/// SHA-256, HMAC-SHA256 and MD5 over OpenSSL's EVP API, for request signing and upload checks.
enum Hashing {
    static func sha256(_ data: Data) -> [UInt8] {
        digest(EVP_sha256(), data)
    }

    static func md5(_ data: Data) -> [UInt8] {
        digest(EVP_md5(), data)
    }

    static func hmacSHA256(key: [UInt8], _ message: Data) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        key.withUnsafeBufferPointer { keyBytes in
            message.withUnsafeBytes { bytes in
                _ = HMAC(
                    EVP_sha256(), keyBytes.baseAddress, Int32(keyBytes.count),
                    bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count, &output, &length)
            }
        }
        return Array(output.prefix(Int(length)))
    }

    static func hmacSHA256(key: [UInt8], _ message: String) -> [UInt8] {
        hmacSHA256(key: key, Data(message.utf8))
    }

    /// Digest of a file's bytes (or of `length` bytes from `offset`), read in 1 MiB chunks so large bodies never sit
    /// in memory; also returns the length hashed, which is what the upload then sends.
    static func fileDigest(
        path: String, md5 wantMD5: Bool = false, offset: UInt64 = 0, length: UInt64? = nil
    ) throws(ObjectStoreError) -> (digest: [UInt8], length: UInt64) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw .invalidRequest("cannot read body file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        guard let context = EVP_MD_CTX_new() else { throw .other("OpenSSL: cannot allocate a digest context") }
        defer { EVP_MD_CTX_free(context) }
        EVP_DigestInit_ex(context, wantMD5 ? EVP_md5() : EVP_sha256(), nil)
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var total: UInt64 = 0
        while length.map({ total < $0 }) ?? true {
            let wanted = length.map { Int(min(UInt64(chunk), $0 - total)) } ?? chunk
            let count = pread(fd, buffer, wanted, off_t(offset + total))
            if count < 0 {
                if errno == EINTR { continue }
                throw .invalidRequest("cannot read body file \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 {
                if length != nil { throw .invalidRequest("body file \(path) is shorter than the range to send") }
                break
            }
            EVP_DigestUpdate(context, buffer, count)
            total += UInt64(count)
        }
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &output, &length)
        return (Array(output.prefix(Int(length))), total)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var result = [UInt8]()
        result.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            result.append(digits[Int(byte >> 4)])
            result.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: result, as: UTF8.self)
    }

    private static func digest(_ type: OpaquePointer?, _ data: Data) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        data.withUnsafeBytes { bytes in
            _ = EVP_Digest(bytes.baseAddress, bytes.count, &output, &length, type, nil)
        }
        return Array(output.prefix(Int(length)))
    }
}
