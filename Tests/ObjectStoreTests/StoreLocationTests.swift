import Foundation
import ObjectStore
import XCTest

final class StoreLocationTests: XCTestCase {
    func testParsesEachScheme() throws {
        XCTAssertEqual(try StoreLocation(parsing: "file:///srv/data").kind, .file(path: "/srv/data"))
        XCTAssertEqual(try StoreLocation(parsing: "file:///srv/data/").kind, .file(path: "/srv/data"))
        XCTAssertEqual(try StoreLocation(parsing: "file:///").kind, .file(path: "/"))
        XCTAssertEqual(try StoreLocation(parsing: "memory://").kind, .memory(name: ""))
        XCTAssertEqual(try StoreLocation(parsing: "memory://scratch").kind, .memory(name: "scratch"))
        XCTAssertEqual(try StoreLocation(parsing: "s3://bucket").kind, .s3(bucket: "bucket", prefix: ""))
        XCTAssertEqual(try StoreLocation(parsing: "s3://bucket/").kind, .s3(bucket: "bucket", prefix: ""))
        XCTAssertEqual(
            try StoreLocation(parsing: "s3://bucket/some/prefix").kind, .s3(bucket: "bucket", prefix: "some/prefix/"))
        XCTAssertEqual(
            try StoreLocation(parsing: "S3://bucket//some/prefix/").kind, .s3(bucket: "bucket", prefix: "some/prefix/"))
        XCTAssertEqual(
            try StoreLocation(parsing: "gs://team-data/alice/").kind, .gcs(bucket: "team-data", prefix: "alice/"))
    }

    func testPrefix() throws {
        XCTAssertEqual(try StoreLocation(parsing: "s3://b/x/y").prefix, "x/y/")
        XCTAssertEqual(try StoreLocation(parsing: "gs://b").prefix, "")
        XCTAssertEqual(try StoreLocation(parsing: "file:///tmp/x").prefix, "")
        XCTAssertEqual(try StoreLocation(parsing: "memory://m").prefix, "")
    }

    func testDescriptionIsCanonicalAndParsesBack() throws {
        let cases = [
            "file:///srv/data": "file:///srv/data/",
            "file:///": "file:///",
            "memory://": "memory://",
            "memory://x/": "memory://x",
            "s3://bucket": "s3://bucket/",
            "s3://bucket/a/b": "s3://bucket/a/b/",
            "gs://bucket/a/": "gs://bucket/a/",
        ]
        for (source, canonical) in cases {
            let location = try StoreLocation(parsing: source)
            XCTAssertEqual(location.description, canonical, source)
            XCTAssertEqual(try StoreLocation(parsing: canonical), location, source)
        }
    }

    func testErrorsReadAsOneLine() {
        expect(
            "ftp://x", .unknownScheme(scheme: "ftp", source: "ftp://x"),
            #"unknown source scheme "ftp" in "ftp://x" (expected file://, memory://, s3:// or gs://)"#)
        expect("file://rel", .relativePath("file://rel"), "file:// source needs an absolute path: file://rel")
        expect("s3://", .missingBucket(scheme: "s3", source: "s3://"), "s3:// source needs a bucket name: s3://")
        expect(
            "gs:///prefix", .missingBucket(scheme: "gs", source: "gs:///prefix"),
            "gs:// source needs a bucket name: gs:///prefix")
        expect(
            "/srv/data", .notAURL("/srv/data"),
            #"source "/srv/data" is not a URL (expected file://, memory://, s3:// or gs://)"#)
        expect(
            "memory://a/b", .invalidMemoryName("memory://a/b"),
            "memory:// source takes a name without slashes: memory://a/b")
    }

    func testMakeStore() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent(
            "bucketfs-location-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let local = try StoreLocation(parsing: "file://\(root)/").makeStore()
        XCTAssertTrue(local is LocalDirectoryObjectStore)
        XCTAssertEqual(local.description, "file://\(root)/")

        XCTAssertThrowsError(try StoreLocation(parsing: "file:///nonexistent-\(UUID().uuidString)").makeStore()) {
            guard case ObjectStoreError.noSuchBucket = $0 else { return XCTFail("got \($0)") }
        }

        // Memory stores are shared per name within the process.
        let name = "shared-\(UUID().uuidString)"
        let first = try StoreLocation(parsing: "memory://\(name)").makeStore()
        let second = try StoreLocation(parsing: "memory://\(name)/").makeStore()
        let other = try StoreLocation(parsing: "memory://other-\(UUID().uuidString)").makeStore()
        try first.put("k", data: Data("v".utf8))
        XCTAssertEqual(try second.get("k").body, Data("v".utf8))
        XCTAssertThrowsError(try other.head("k"))
        XCTAssertEqual(first.description, "memory://\(name)")

        // Without credentials (an empty environment), an S3 store refuses to start with a message that says why.
        XCTAssertThrowsError(
            try StoreLocation(parsing: "s3://bucket/p/").makeStore(
                s3: S3Configuration(
                    bucket: "ignored",
                    environment: [
                        "HOME": "/nonexistent",
                        "AWS_EC2_METADATA_DISABLED": "true",
                    ]))
        ) {
            guard case ObjectStoreError.unauthorized(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("AWS_ACCESS_KEY_ID"), detail)
        }
        // A GCS store makes no request until used; the URL's bucket wins over the configuration's.
        let gcs = try StoreLocation(parsing: "gs://bucket/p/").makeStore(
            s3: nil, gcs: GCSConfiguration(bucket: "ignored", endpointURL: "http://127.0.0.1:1", environment: [:]))
        XCTAssertTrue(gcs is GCSObjectStore)
        XCTAssertEqual(gcs.description, "gs://bucket/")
    }

    private func expect(
        _ source: String, _ error: StoreLocationError, _ message: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try StoreLocation(parsing: source), file: file, line: line) {
            XCTAssertEqual($0 as? StoreLocationError, error, file: file, line: line)
            XCTAssertEqual("\($0)", message, file: file, line: line)
        }
    }
}
