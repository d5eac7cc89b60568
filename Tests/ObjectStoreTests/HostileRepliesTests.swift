import Foundation
import Glibc
import Synchronization
import XCTest

@testable import ObjectStore

/// A tiny HTTP/1.1 server on loopback that answers every request with what `handler` says: the store's replies
/// crafted to be broken or hostile. Records each request line and its headers.
final class CannedHTTPServer: @unchecked Sendable {
    struct Seen: Sendable {
        var method: String
        var target: String
        var headers: [String: String]
    }

    typealias Handler = @Sendable (_ method: String, _ target: String) -> (Int, [(String, String)], Data)
    let port: Int
    private let fd: Int32
    private let handler: Handler
    private let seenRequests = Mutex<[Seen]>([])
    var requests: [Seen] { seenRequests.withLock { $0 } }
    var endpoint: String { "http://127.0.0.1:\(port)" }

    init(handler: @escaping Handler) throws {
        self.handler = handler
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private func serve() {
        while true {
            let client = accept(fd, nil, nil)
            guard client >= 0 else { return }
            Thread { [self] in answer(client) }.start()
        }
    }

    private func answer(_ client: Int32) {
        defer { close(client) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var data: [UInt8] = []
        while true {
            guard let end = find(data, [13, 10, 13, 10]) else {
                let n = read(client, &buffer, buffer.count)
                guard n > 0 else { return }
                data += buffer[0..<n]
                continue
            }
            let head = String(decoding: data[0..<end], as: UTF8.self).components(separatedBy: "\r\n")
            let parts = head[0].split(separator: " ")
            guard parts.count >= 2 else { return }
            var headers: [String: String] = [:]
            for line in head.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                    in: .whitespaces)
            }
            var bodyLength = Int(headers["content-length"] ?? "0") ?? 0
            data.removeFirst(end + 4)
            while data.count < bodyLength {
                let n = read(client, &buffer, buffer.count)
                guard n > 0 else { return }
                data += buffer[0..<n]
            }
            data.removeFirst(bodyLength)
            bodyLength = 0
            let seen = Seen(method: String(parts[0]), target: String(parts[1]), headers: headers)
            seenRequests.withLock { $0.append(seen) }
            let (status, replyHeaders, body) = handler(seen.method, seen.target)
            // A canned content-length (on HEAD) replaces the real one.
            let canned = replyHeaders.contains { $0.0 == "content-length" }
            var reply =
                "HTTP/1.1 \(status) Canned\r\n"
                + (canned ? "" : "content-length: \(seen.method == "HEAD" ? 0 : body.count)\r\n")
            for (name, value) in replyHeaders { reply += "\(name): \(value)\r\n" }
            reply += "\r\n"
            var bytes = Array(reply.utf8)
            if seen.method != "HEAD" { bytes += body }
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
                guard n > 0 else { return }
                offset += n
            }
        }
    }

    private func find(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where Array(haystack[i..<(i + needle.count)]) == needle {
            return i
        }
        return nil
    }
}

/// Malformed or hostile store replies: each is an error for that request (the caller answers EIO), never a
/// trap, a stack overflow, an endless loop, or a token sent somewhere else.
final class HostileRepliesTests: XCTestCase {
    private var servers: [CannedHTTPServer] = []

    override func tearDown() {
        servers.forEach { $0.stop() }
        servers = []
        super.tearDown()
    }

    private func server(_ handler: @escaping CannedHTTPServer.Handler) throws -> CannedHTTPServer {
        let server = try CannedHTTPServer(handler: handler)
        servers.append(server)
        return server
    }

    private func s3(_ server: CannedHTTPServer) throws -> S3ObjectStore {
        try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "b", region: "us-east-1", endpointURL: server.endpoint, pathStyle: true, accessKeyID: "AK",
                secretAccessKey: "SK", maxRetries: 0, environment: [:]))
    }

    private func gcs(_ server: CannedHTTPServer) throws -> GCSObjectStore {
        try GCSObjectStore(
            configuration: GCSConfiguration(
                bucket: "b", endpointURL: server.endpoint, maxRetries: 0, resumableThreshold: 1024,
                resumableChunkSize: 1024, environment: [:]))
    }

    private static func listXML(_ contents: String, token: String?) -> Data {
        Data(
            """
            <?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult><Name>b</Name><Prefix></Prefix><KeyCount>1</KeyCount>\(contents)\
            <IsTruncated>\(token == nil ? "false" : "true")</IsTruncated>\
            \(token.map { "<NextContinuationToken>\($0)</NextContinuationToken>" } ?? "")</ListBucketResult>
            """.utf8)
    }

    func testS3ContinuationTokenThatRepeatsEndsTheListing() throws {
        let server = try server { _, _ in
            (
                200, [("content-type", "application/xml")],
                Self.listXML("<Contents><Key>k</Key><Size>1</Size><ETag>\"e\"</ETag></Contents>", token: "again")
            )
        }
        XCTAssertThrowsError(try s3(server).listAll(prefix: "")) {
            XCTAssertTrue("\($0)".contains("repeated a continuation token"), "\($0)")
        }
        XCTAssertLessThanOrEqual(server.requests.count, 3)
    }

    /// A ranged GET of 1 MiB is received into a pooled buffer of that size: a server that ignores the range and
    /// sends the whole object (200) overflows it, and the body goes on in an ordinary buffer, every byte kept.
    func testS3RangeIgnoredWithALargerBodyIsReceivedWhole() throws {
        let whole = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 12) })
        let server = try server { _, _ in (200, [("etag", "\"e\"")], whole) }
        let got = try s3(server).get("k", range: 4096..<(4096 + (1 << 20)))
        XCTAssertEqual(got.body, whole[4096..<(4096 + (1 << 20))])
        XCTAssertEqual(server.requests.first?.headers["range"], "bytes=4096-1052671")
    }

    /// A Content-Length of 1.5 GiB on a small GET: not a buffer of that size from the pool (which takes 1 GiB at
    /// most), an ordinary body that ends short (curl reports the transfer cut).
    func testS3HugeContentLengthOnAGetIsNotPooled() throws {
        let server = try server { _, _ in (200, [("etag", "\"e\""), ("content-length", "1610612736")], Data("x".utf8)) }
        let store = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "b", region: "us-east-1", endpointURL: server.endpoint, pathStyle: true, accessKeyID: "AK",
                secretAccessKey: "SK", lowSpeedTime: 1, maxRetries: 0, environment: [:]))
        XCTAssertThrowsError(try store.get("k", range: nil))
    }

    func testS3SizeAboveInt64MaxIsAnError() throws {
        let server = try server { _, _ in
            (200, [], Self.listXML("<Contents><Key>huge</Key><Size>18446744073709551615</Size></Contents>", token: nil))
        }
        XCTAssertThrowsError(try s3(server).listAll(prefix: "")) {
            XCTAssertTrue("\($0)".contains("malformed Size"), "\($0)")
        }
    }

    func testS3HeadWithAHugeContentLengthIsAnError() throws {
        let server = try server { _, _ in
            (200, [("etag", "\"e\""), ("content-length", "18446744073709551615")], Data())
        }
        XCTAssertThrowsError(try s3(server).head("k")) {
            XCTAssertTrue("\($0)".contains("malformed Content-Length"), "\($0)")
        }
    }

    func testDeeplyNestedXMLIsRefusedWithoutRecursingThatDeep() {
        let depth = 200_000
        let xml = String(repeating: "<a>", count: depth) + String(repeating: "</a>", count: depth)
        XCTAssertNil(S3XML.parse(Data(xml.utf8)))
        let fine = String(repeating: "<a>", count: 20) + "x" + String(repeating: "</a>", count: 20)
        XCTAssertNotNil(S3XML.parse(Data(fine.utf8)))
    }

    func testGCSPageTokenThatRepeatsEndsTheListing() throws {
        let server = try server { _, _ in
            (
                200, [("content-type", "application/json")],
                Data(#"{"items":[{"name":"k","generation":"1","size":"1"}],"nextPageToken":"again"}"#.utf8)
            )
        }
        XCTAssertThrowsError(try gcs(server).listAll(prefix: "")) {
            XCTAssertTrue("\($0)".contains("repeated a continuation token"), "\($0)")
        }
    }

    func testGCSSizeAboveInt64MaxIsAnError() throws {
        let server = try server { _, _ in
            (200, [], Data(#"{"items":[{"name":"huge","generation":"1","size":"9223372036854775808"}]}"#.utf8))
        }
        XCTAssertThrowsError(try gcs(server).listAll(prefix: "")) {
            XCTAssertTrue("\($0)".contains("malformed size"), "\($0)")
        }
    }

    /// The session URL of a resumable upload comes from the server: one on another host never gets a request
    /// (every chunk would carry our bearer token).
    func testGCSResumableSessionOnAnotherHostIsRefused() throws {
        let elsewhere = try server { _, _ in (200, [], Data(#"{"name":"k","generation":"1","size":"4096"}"#.utf8)) }
        let server = try server { method, _ in
            method == "POST"
                ? (200, [("location", elsewhere.endpoint + "/upload/session/1")], Data()) : (404, [], Data())
        }
        XCTAssertThrowsError(try gcs(server).put("k", body: .data(Data(count: 4096)), options: PutOptions())) {
            XCTAssertTrue("\($0)".contains("another host"), "\($0)")
        }
        XCTAssertEqual(elsewhere.requests.count, 0)
        XCTAssertTrue(GCSObjectStore.sameOrigin("http://127.0.0.1:\(server.port)/upload?x=1", server.endpoint))
        XCTAssertFalse(GCSObjectStore.sameOrigin("https://127.0.0.1:\(server.port)/u", server.endpoint))
        XCTAssertFalse(GCSObjectStore.sameOrigin("http://u:p@127.0.0.1:\(server.port)/u", server.endpoint))
    }

    /// BadDigest to a part whose CRC-32C was sent with it: the bytes were damaged on the way, sending them again
    /// helps. To a completion (the checksums it lists do not match the parts stored) or a request without one, a
    /// retry gets the same answer: it is final.
    func testS3BadDigestIsRetriedOnlyForBytesSentWithTheirChecksum() throws {
        let badDigest = Data("<Error><Code>BadDigest</Code><Message>no match</Message></Error>".utf8)
        let server = try server { _, _ in (400, [("content-type", "application/xml")], badDigest) }
        let store = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "b", region: "us-east-1", endpointURL: server.endpoint, pathStyle: true, accessKeyID: "AK",
                secretAccessKey: "SK", maxRetries: 1, environment: [:]))
        XCTAssertThrowsError(
            try store.uploadPart(
                "k", uploadID: "u", number: 1, body: .data(Data("x".utf8)), crc32c: CRC32C.checksum(Data("x".utf8)))
        )
        XCTAssertEqual(server.requests.count, 2, "the part is sent again")
        XCTAssertThrowsError(
            try store.completeMultipartUpload(
                "k", uploadID: "u", parts: [CompletedPart(number: 1, etag: "e")], condition: .none))
        XCTAssertEqual(server.requests.count, 3, "the completion is sent once")
    }
}
