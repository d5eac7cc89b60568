import Foundation
import Glibc
import Synchronization

/// AWS Signature Version 4 for header-based authentication.
///
/// The caller gives the already-encoded request path (S3 encodes each key segment once and keeps `/`; other
/// services would encode twice — S3 is the exception AWS documents) and the raw query parameters; the signer
/// encodes the query itself, so the URL it returns in `queryString` and the signed canonical form cannot disagree.
struct SigV4Signer: Sendable {
    var accessKeyID: String
    var secretAccessKey: String
    var sessionToken: String?
    var region: String
    var service: String

    /// Hash of an empty body, the value of `x-amz-content-sha256` for requests without one.
    static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// The value of `x-amz-content-sha256` for a body whose hash is not signed (the rest of the request is).
    static let unsignedPayload = "UNSIGNED-PAYLOAD"

    /// The headers to add to a request: `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token` when there is a
    /// session token, and `authorization`. `headers` must already contain `host` and every header that will be sent
    /// (all of them are signed).
    func signingHeaders(
        method: String, path: String, query: [(String, String)], headers: [(String, String)],
        payloadHash: String, date: Date
    ) -> [(String, String)] {
        var added: [(String, String)] = [
            ("x-amz-date", Self.amzDate(date)),
            ("x-amz-content-sha256", payloadHash),
        ]
        if let sessionToken, !sessionToken.isEmpty { added.append(("x-amz-security-token", sessionToken)) }
        let authorization = authorizationHeader(
            method: method, path: path, query: query, headers: headers + added,
            payloadHash: payloadHash, date: date)
        return added + [("authorization", authorization)]
    }

    /// The `Authorization` value signing exactly `headers` (which must include `x-amz-date` or be signed for `date`).
    func authorizationHeader(
        method: String, path: String, query: [(String, String)], headers: [(String, String)],
        payloadHash: String, date: Date
    ) -> String {
        let canonical = canonicalRequest(
            method: method, path: path, query: query, headers: headers, payloadHash: payloadHash)
        let toSign = stringToSign(canonicalRequest: canonical.request, date: date)
        let signature = Hashing.hex(Hashing.hmacSHA256(key: signingKey(date: date), toSign))
        return
            "AWS4-HMAC-SHA256 Credential=\(accessKeyID)/\(scope(date)), "
            + "SignedHeaders=\(canonical.signedHeaders), Signature=\(signature)"
    }

    func canonicalRequest(
        method: String, path: String, query: [(String, String)], headers: [(String, String)],
        payloadHash: String
    ) -> (request: String, signedHeaders: String) {
        // Lower-case names; values trimmed with inner runs of spaces collapsed; repeated names joined by commas.
        var merged: [String: String] = [:]
        for (name, value) in headers {
            let key = name.lowercased()
            let clean = Self.normalizeHeaderValue(value)
            merged[key] = merged[key].map { "\($0),\(clean)" } ?? clean
        }
        let names = merged.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(merged[$0]!)\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let request = [
            method, path.isEmpty ? "/" : path, Self.canonicalQueryString(query),
            canonicalHeaders, signedHeaders, payloadHash,
        ].joined(separator: "\n")
        return (request, signedHeaders)
    }

    func stringToSign(canonicalRequest: String, date: Date) -> String {
        let hashed = Hashing.hex(Hashing.sha256(Data(canonicalRequest.utf8)))
        return "AWS4-HMAC-SHA256\n\(Self.amzDate(date))\n\(scope(date))\n\(hashed)"
    }

    /// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
    func signingKey(date: Date) -> [UInt8] {
        let stamp = Self.dateStamp(date)
        let scope = [secretAccessKey, stamp, region, service]
        if let cached = Self.lastSigningKey.withLock({ $0 }), cached.scope == scope { return cached.key }
        let dateKey = Hashing.hmacSHA256(key: Array("AWS4\(secretAccessKey)".utf8), stamp)
        let regionKey = Hashing.hmacSHA256(key: dateKey, region)
        let serviceKey = Hashing.hmacSHA256(key: regionKey, service)
        let key = Hashing.hmacSHA256(key: serviceKey, "aws4_request")
        Self.lastSigningKey.withLock { $0 = (scope, key) }
        return key
    }

    /// The last signing key made, with what it was made of: it changes once a day, and making it is 4 of the 5
    /// HMACs a request costs (OpenSSL 3's one-shot HMAC is not cheap: ~6 % of the daemon's CPU per DELETE).
    private static let lastSigningKey = Mutex<(scope: [String], key: [UInt8])?>(nil)

    func scope(_ date: Date) -> String {
        "\(Self.dateStamp(date))/\(region)/\(service)/aws4_request"
    }

    // MARK: Encoding

    /// Parameters sorted by encoded name, then encoded value; both encoded strictly (space `%20`, `/` `%2F`).
    static func canonicalQueryString(_ query: [(String, String)]) -> String {
        var encoded: [(name: String, value: String)] = []
        for (name, value) in query {
            encoded.append((uriEncode(name, keepSlash: false), uriEncode(value, keepSlash: false)))
        }
        encoded.sort { (a, b) -> Bool in a.name == b.name ? a.value < b.value : a.name < b.name }
        return encoded.map { (pair) -> String in pair.name + "=" + pair.value }.joined(separator: "&")
    }

    /// AWS URI encoding: every byte except `A-Z a-z 0-9 - _ . ~` (and `/` when `keepSlash`) as `%XY`, upper-case hex.
    static func uriEncode(_ value: String, keepSlash: Bool) -> String {
        let hexDigits = Array("0123456789ABCDEF".utf8)
        var out = [UInt8]()
        out.reserveCapacity(value.utf8.count)
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                UInt8(ascii: "."), UInt8(ascii: "~"):
                out.append(byte)
            case UInt8(ascii: "/") where keepSlash:
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0f)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func normalizeHeaderValue(_ value: String) -> String {
        // Nearly every value is printable ASCII with single inner spaces, already normal: kept as it is (the
        // general path, through Foundation's `trimmingCharacters`, was ~5 % of the daemon's CPU per DELETE).
        var previous = UInt8(ascii: " ")  // a leading space is not normal
        var normal = true
        for byte in value.utf8 {
            if byte == UInt8(ascii: " ") ? previous == byte : (byte < 0x21 || byte > 0x7E) {
                normal = false
                break
            }
            previous = byte
        }
        if normal && previous != UInt8(ascii: " ") { return value }
        return value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            .trimmingCharacters(in: .whitespaces)
    }

    // MARK: Dates (UTC, formatted by hand: DateFormatter is neither cheap nor Sendable)

    static func amzDate(_ date: Date) -> String {
        let t = utc(date)
        var out: [UInt8] = []
        out.reserveCapacity(16)
        digits(Int(t.tm_year) + 1900, 4, into: &out)
        digits(Int(t.tm_mon) + 1, 2, into: &out)
        digits(Int(t.tm_mday), 2, into: &out)
        out.append(UInt8(ascii: "T"))
        digits(Int(t.tm_hour), 2, into: &out)
        digits(Int(t.tm_min), 2, into: &out)
        digits(Int(t.tm_sec), 2, into: &out)
        out.append(UInt8(ascii: "Z"))
        return String(decoding: out, as: UTF8.self)
    }

    static func dateStamp(_ date: Date) -> String {
        let t = utc(date)
        var out: [UInt8] = []
        out.reserveCapacity(8)
        digits(Int(t.tm_year) + 1900, 4, into: &out)
        digits(Int(t.tm_mon) + 1, 2, into: &out)
        digits(Int(t.tm_mday), 2, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `value` as `width` decimal digits, zero-padded (String(format:) cost ~9 % of the daemon's CPU per HEAD).
    private static func digits(_ value: Int, _ width: Int, into out: inout [UInt8]) {
        var divisor = 1
        for _ in 1..<width { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8((rest / divisor) % 10))
            rest %= divisor
            divisor /= 10
        }
    }

    private static func utc(_ date: Date) -> tm {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var result = tm()
        gmtime_r(&seconds, &result)
        return result
    }
}
