import Foundation
import XCTest

@testable import ObjectStore

/// AWS Signature Version 4, checked against the values AWS publishes: the signing-key example of the SigV4
/// documentation, the "get-vanilla" cases of the SigV4 test suite, and the S3 "GET Object" header-auth example.
final class SigV4SignerTests: XCTestCase {
    private let suiteSigner = SigV4Signer(
        accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        sessionToken: nil, region: "us-east-1", service: "service")
    private let suiteDate = Date(timeIntervalSince1970: 1_440_938_160)  // 2015-08-30T12:36:00Z

    func testSigningKeyExample() {
        let signer = SigV4Signer(
            accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            sessionToken: nil, region: "us-east-1", service: "iam")
        let key = signer.signingKey(date: Date(timeIntervalSince1970: 1_329_264_000))  // 2012-02-15
        XCTAssertEqual(Hashing.hex(key), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d")
    }

    /// The last key made is kept: another day, region, service or secret is never signed with it.
    func testSigningKeysAreRemadeForAnotherScope() {
        let day = Date(timeIntervalSince1970: 1_329_264_000)  // 2012-02-15
        let iam = SigV4Signer(
            accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            sessionToken: nil, region: "us-east-1", service: "iam")
        let expected = "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        XCTAssertEqual(Hashing.hex(iam.signingKey(date: day)), expected)
        var other = iam
        other.service = "s3"
        XCTAssertNotEqual(Hashing.hex(other.signingKey(date: day)), expected)
        other = iam
        other.region = "eu-west-1"
        XCTAssertNotEqual(Hashing.hex(other.signingKey(date: day)), expected)
        other = iam
        other.secretAccessKey = "another"
        XCTAssertNotEqual(Hashing.hex(other.signingKey(date: day)), expected)
        XCTAssertNotEqual(Hashing.hex(iam.signingKey(date: day + 86_400)), expected)
        XCTAssertEqual(Hashing.hex(iam.signingKey(date: day + 3_600)), expected, "the same day")
    }

    func testGetVanilla() {
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]
        let canonical = suiteSigner.canonicalRequest(
            method: "GET", path: "/", query: [], headers: headers,
            payloadHash: SigV4Signer.emptyPayloadHash)
        XCTAssertEqual(
            canonical.request,
            """
            GET
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """)
        XCTAssertEqual(
            suiteSigner.stringToSign(canonicalRequest: canonical.request, date: suiteDate),
            """
            AWS4-HMAC-SHA256
            20150830T123600Z
            20150830/us-east-1/service/aws4_request
            bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63
            """)
        XCTAssertEqual(
            suiteSigner.authorizationHeader(
                method: "GET", path: "/", query: [], headers: headers,
                payloadHash: SigV4Signer.emptyPayloadHash, date: suiteDate),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                + "SignedHeaders=host;x-amz-date, "
                + "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        )
    }

    func testGetVanillaQueryOrderKeyCase() {
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]
        let query = [("Param2", "value2"), ("Param1", "value1")]
        XCTAssertEqual(SigV4Signer.canonicalQueryString(query), "Param1=value1&Param2=value2")
        let authorization = suiteSigner.authorizationHeader(
            method: "GET", path: "/", query: query, headers: headers,
            payloadHash: SigV4Signer.emptyPayloadHash, date: suiteDate)
        XCTAssertTrue(
            authorization.hasSuffix("Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
            authorization)
    }

    /// The S3 documentation's header-based example: the first 10 bytes of examplebucket/test.txt.
    func testS3GetObjectExample() {
        let signer = SigV4Signer(
            accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            sessionToken: nil, region: "us-east-1", service: "s3")
        let date = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z
        let request = [("host", "examplebucket.s3.amazonaws.com"), ("range", "bytes=0-9")]
        let added = signer.signingHeaders(
            method: "GET", path: "/test.txt", query: [], headers: request,
            payloadHash: SigV4Signer.emptyPayloadHash, date: date)
        let byName = Dictionary(added, uniquingKeysWith: { first, _ in first })
        XCTAssertEqual(byName["x-amz-date"], "20130524T000000Z")
        XCTAssertEqual(byName["x-amz-content-sha256"], SigV4Signer.emptyPayloadHash)
        XCTAssertNil(byName["x-amz-security-token"])
        XCTAssertEqual(
            byName["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")

        let canonical = signer.canonicalRequest(
            method: "GET", path: "/test.txt", query: [],
            headers: request + added.filter { $0.0 != "authorization" },
            payloadHash: SigV4Signer.emptyPayloadHash)
        XCTAssertEqual(
            signer.stringToSign(canonicalRequest: canonical.request, date: date),
            """
            AWS4-HMAC-SHA256
            20130524T000000Z
            20130524/us-east-1/s3/aws4_request
            7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972
            """)
    }

    func testSessionTokenIsSentAndSigned() {
        var signer = suiteSigner
        signer.sessionToken = "token/with+chars="
        let added = signer.signingHeaders(
            method: "GET", path: "/", query: [], headers: [("host", "example.amazonaws.com")],
            payloadHash: SigV4Signer.emptyPayloadHash, date: suiteDate)
        let byName = Dictionary(added, uniquingKeysWith: { first, _ in first })
        XCTAssertEqual(byName["x-amz-security-token"], "token/with+chars=")
        XCTAssertTrue(
            byName["authorization"]?.contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,") ?? false,
            byName["authorization"] ?? "")
    }

    /// The dates are formatted by hand: they match ISO 8601 basic format in UTC across the calendar.
    func testDatesAreBasicISO8601InUTC() {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        var generator = SystemRandomNumberGenerator()
        for seconds in [0, 951_782_400, 1_796_169_600, 4_102_444_799]
            + (0..<200).map({ _ in
                Int.random(in: 0..<4_102_444_800, using: &generator)
            })
        {
            let date = Date(timeIntervalSince1970: TimeInterval(seconds))
            formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
            XCTAssertEqual(SigV4Signer.amzDate(date), formatter.string(from: date))
            formatter.dateFormat = "yyyyMMdd"
            XCTAssertEqual(SigV4Signer.dateStamp(date), formatter.string(from: date))
        }
    }

    func testURIEncoding() {
        XCTAssertEqual(SigV4Signer.uriEncode("dir/a b+c~d_e-f.g%h", keepSlash: true), "dir/a%20b%2Bc~d_e-f.g%25h")
        XCTAssertEqual(SigV4Signer.uriEncode("a/b", keepSlash: false), "a%2Fb")
        XCTAssertEqual(SigV4Signer.uriEncode("é*", keepSlash: true), "%C3%A9%2A")
        XCTAssertEqual(
            SigV4Signer.canonicalQueryString([("prefix", "a b/"), ("uploads", ""), ("delimiter", "/")]),
            "delimiter=%2F&prefix=a%20b%2F&uploads=")
    }

    func testHeaderValuesAreTrimmedAndNamesSorted() {
        let canonical = suiteSigner.canonicalRequest(
            method: "PUT", path: "/k", query: [],
            headers: [("X-Amz-Meta-B", "  two   words "), ("Content-Type", "text/plain")],
            payloadHash: "UNSIGNED-PAYLOAD")
        XCTAssertEqual(canonical.signedHeaders, "content-type;x-amz-meta-b")
        XCTAssertTrue(
            canonical.request.contains("content-type:text/plain\nx-amz-meta-b:two words\n"), canonical.request)
    }

    /// Values already normal are kept as they are; any other is trimmed and its runs of spaces collapsed, as
    /// before the fast path (tabs and non-ASCII spaces at either end included).
    func testHeaderValueNormalisationMatchesTheGeneralRule() {
        func general(_ value: String) -> String {
            value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
                .trimmingCharacters(in: .whitespaces)
        }
        let values = [
            "", " ", "a", "a b", "a  b", " a", "a ", "\ta b", "a b\t", "a\u{00A0}", "\u{3000}a", "é", "a\tb",
            "text/plain; charset=utf-8", "bytes=0-1023", "\"etag-1\"", "~!@#$%^&*()_+{}|:<>?", "a\nb", "a  ",
        ]
        for value in values {
            XCTAssertEqual(SigV4Signer.normalizeHeaderValue(value), general(value), "\(value.debugDescription)")
        }
    }

    func testDigests() {
        XCTAssertEqual(Hashing.hex(Hashing.sha256(Data())), SigV4Signer.emptyPayloadHash)
        XCTAssertEqual(Hashing.hex(Hashing.md5(Data("hello".utf8))), "5d41402abc4b2a76b9719d911017c592")
    }
}
