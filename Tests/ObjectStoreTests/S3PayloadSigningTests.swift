import Foundation
import XCTest

@testable import ObjectStore

/// What `x-amz-content-sha256` each kind of body is sent with: a streamed part (a range of the staged file) goes
/// UNSIGNED-PAYLOAD, with the rest of the request signed; a body in memory or a whole file keeps its SHA-256.
final class S3PayloadSigningTests: XCTestCase {
    private var server: CannedHTTPServer?

    override func tearDown() {
        server?.stop()
        super.tearDown()
    }

    private func store() throws -> (S3ObjectStore, CannedHTTPServer) {
        let server = try CannedHTTPServer { _, _ in (200, [("etag", "\"e\"")], Data()) }
        self.server = server
        let store = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "b", region: "us-east-1", endpointURL: server.endpoint, pathStyle: true, accessKeyID: "AK",
                secretAccessKey: "SK", maxRetries: 0, environment: [:]))
        return (store, server)
    }

    private func bodyFile(_ bytes: Data) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sign-\(UUID().uuidString)").path
        try bytes.write(to: URL(fileURLWithPath: path))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testAPartFromAFileRangeGoesUnsignedAndTheRequestStaysSigned() throws {
        let (store, server) = try store()
        let bytes = Data((0..<10_000).map { UInt8(truncatingIfNeeded: $0) })
        let path = try bodyFile(bytes)
        _ = try store.uploadPart("k", uploadID: "u", number: 1, body: .fileRange(path: path, offset: 100, length: 900))
        let seen = try XCTUnwrap(server.requests.last)
        XCTAssertEqual(seen.headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD")
        XCTAssertEqual(seen.headers["content-length"], "900")
        let authorization = try XCTUnwrap(seen.headers["authorization"])
        XCTAssertTrue(authorization.hasPrefix("AWS4-HMAC-SHA256 "), authorization)
        XCTAssertTrue(authorization.contains("x-amz-content-sha256"), "the marker itself is signed: \(authorization)")
    }

    func testBodiesInMemoryAndWholeFilesKeepTheirSignedHash() throws {
        let (store, server) = try store()
        let bytes = Data("signed bytes".utf8)
        let hash = Hashing.hex(Hashing.sha256(bytes))
        _ = try store.uploadPart("k", uploadID: "u", number: 1, body: .data(bytes))
        XCTAssertEqual(server.requests.last?.headers["x-amz-content-sha256"], hash)
        _ = try store.put("k", body: .file(path: try bodyFile(bytes)), options: PutOptions())
        XCTAssertEqual(server.requests.last?.headers["x-amz-content-sha256"], hash)
    }

    /// An upload whose parts carry checksums declares the algorithm at creation (AWS takes part checksums only
    /// then), and each part sends its CRC32C: what the server checks instead of the payload hash.
    func testAChecksummedUploadDeclaresCRC32CAndEachPartSendsIt() throws {
        let (store, server) = try store()
        _ = try? store.createMultipartUpload("k", options: PutOptions(partChecksums: true))
        let create = try XCTUnwrap(server.requests.last)
        XCTAssertEqual(create.headers["x-amz-checksum-algorithm"], "CRC32C")
        let bytes = Data("123456789".utf8)
        let path = try bodyFile(bytes)
        _ = try store.uploadPart(
            "k", uploadID: "u", number: 1, body: .fileRange(path: path, offset: 0, length: 9), crc32c: 0xE306_9283)
        let part = try XCTUnwrap(server.requests.last)
        XCTAssertEqual(part.headers["x-amz-checksum-crc32c"], "4waSgw==")
        XCTAssertEqual(part.headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD")
        _ = try store.uploadPart("k", uploadID: "u", number: 2, body: .fileRange(path: path, offset: 0, length: 9))
        XCTAssertNil(server.requests.last?.headers["x-amz-checksum-crc32c"], "none given, none sent")
        _ = try? store.createMultipartUpload("k", options: PutOptions())
        XCTAssertNil(server.requests.last?.headers["x-amz-checksum-algorithm"])
    }
}
