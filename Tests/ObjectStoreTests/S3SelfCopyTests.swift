import Foundation
import XCTest

@testable import ObjectStore

/// A copy of an object onto itself (new metadata: chmod, touch) conditional on its version: S3 asks the version with
/// a HEAD first, and the COPY must name it (`x-amz-copy-source-if-match`), or another writer's bytes stored between
/// the two are copied under the caller's metadata and taken for the version it knew.
final class S3SelfCopyTests: XCTestCase {
    func testASelfCopyNamesTheVersionItWasAskedFor() throws {
        let server = try CannedHTTPServer { method, _ in
            if method == "HEAD" {
                return (
                    200,
                    [
                        ("etag", "\"v1\""), ("content-length", "5"), ("content-type", "text/plain"),
                        ("last-modified", "Wed, 02 Dec 2026 07:00:00 GMT"),
                    ], Data()
                )
            }
            let result = "<CopyObjectResult><ETag>\"v2\"</ETag><LastModified>2026-12-02T07:00:01.000Z</LastModified>"
            return (200, [], Data((result + "</CopyObjectResult>").utf8))
        }
        defer { server.stop() }
        let store = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "b", region: "us-east-1", endpointURL: server.endpoint, pathStyle: true, accessKeyID: "AK",
                secretAccessKey: "SK", maxRetries: 0, environment: [:]))
        let info = try store.copy(from: "k", to: "k", metadata: ["mode": "33188"], condition: .ifVersionMatches("v1"))
        XCTAssertEqual(info.version, "v2")
        let copy = try XCTUnwrap(server.requests.last { $0.method == "PUT" })
        XCTAssertEqual(copy.headers["x-amz-copy-source-if-match"], "\"v1\"", "the COPY is pinned to the version asked")
    }
}
