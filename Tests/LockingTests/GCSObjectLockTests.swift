import Foundation
import TestSupport
import XCTest

@testable import Locking
@testable import ObjectStore

/// The object strategy over GCS (fake-gcs-server on loopback; one server for the class, a bucket per test). Lock
/// objects are written with `ifGenerationMatch` in multipart uploads, the one place the emulator honours it.
final class GCSObjectLockTests: LockingStrategyTestCase {
    private static let server = SharedServer { try FakeGCSServer() }

    override class func tearDown() {
        server.stop()
        super.tearDown()
    }

    override func setUpWithError() throws {
        let server = try Self.server.get()
        let bucket = "bucketfs-locks-\(UUID().uuidString.prefix(8).lowercased())"
        try server.createBucket(bucket)
        let clock = TestClock()
        suite = LockingSuite(clock: clock) {
            ObjectLockStrategy(store: try server.makeStore(bucket: bucket), prefix: "mnt/", clock: clock.read)
        }
    }

    // MARK: GCS specifics

    /// Two clients (two daemons) on the same bucket: the second is refused while the first holds the lock, and
    /// the lock object is a JSON document another GCS client can read.
    func testTwoClientsExcludeEachOther() throws {
        let server = try Self.server.get()
        let bucket = "bucketfs-two-\(UUID().uuidString.prefix(8).lowercased())"
        try server.createBucket(bucket)
        let first = ObjectLockStrategy(store: try server.makeStore(bucket: bucket), prefix: "data/")
        let second = ObjectLockStrategy(store: try server.makeStore(bucket: bucket), prefix: "data/")
        XCTAssertFalse(first.bestEffort, "GCS has conditional writes")
        let lease = try XCTUnwrap(try first.tryAcquire("report.csv", owner: suite.owner("host-a"), lease: 30))
        XCTAssertNil(try second.tryAcquire("report.csv", owner: suite.owner("host-b"), lease: 30))
        let raw = try HTTPClient(options: HTTPClient.Options()).perform(
            HTTPRequest(
                method: "GET",
                url: server.endpoint + "/storage/v1/b/\(bucket)/o/data%2F.bucketfs%2Flocks%2Freport.csv.lock?alt=media")
        )
        let record = try LockRecord.decode(raw.body)
        XCTAssertEqual(record.token, lease.token)
        try first.release(lease)
        XCTAssertEqual(
            try second.tryAcquire("report.csv", owner: suite.owner("host-b"), lease: 30)?.token, lease.token + 1)
    }
}
