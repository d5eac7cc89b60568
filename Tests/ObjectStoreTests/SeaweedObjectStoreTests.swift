import Foundation
import Glibc
import TestSupport
import XCTest

@testable import ObjectStore

/// The shared suite, and the S3-compatibility differences bucketfs copes with, on SeaweedFS.
final class SeaweedObjectStoreTests: XCTestCase {
    private static let server = SharedServer { try SeaweedServer() }

    override class func tearDown() {
        server.stop()
        super.tearDown()
    }

    private var server: SeaweedServer!
    private var bucket = ""

    override func setUpWithError() throws {
        server = try Self.server.get()
        bucket = "bucketfs-test-\(UUID().uuidString.prefix(8).lowercased())"
        try server.createBucket(bucket)
    }

    func testConformance() throws {
        let store = try server.makeStore(bucket: bucket)
        ObjectStoreConformance(
            keyPrefix: "conformance/", versionsAreContentHashes: true, markersKeepMetadata: false,
            makeStore: { store }
        ).run()
    }

    /// DeleteObjects split into requests of `deleteBatchSize` keys.
    func testDeleteObjectsInBatches() throws {
        try S3BatchDeleteCheck.run(try server.makeStore(bucket: bucket))
    }
}

/// Shared by the moto and SeaweedFS test cases.
enum S3BatchDeleteCheck {
    static func run(_ store: S3ObjectStore) throws {
        store.deleteBatchLimit.store(7, ordering: .relaxed)
        let keys = (0..<20).map { "batch/k\($0)" }
        for key in keys { try store.put(key, data: Data("x".utf8)) }
        let before = store.attemptCount
        let results = store.deleteObjects(keys + ["batch/missing"])
        XCTAssertEqual(store.attemptCount - before, 3, "21 keys in requests of 7")
        XCTAssertEqual(results.filter { if case .success = $0 { true } else { false } }.count, 21)
        XCTAssertEqual(try store.listAll(prefix: "batch/").objects.count, 0)
    }
}
