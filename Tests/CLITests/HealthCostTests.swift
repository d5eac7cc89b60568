import FileSystem
import Foundation
import Locking
import Logging
import ObjectStore
import Records
import TestSupport
import XCTest

@testable import BucketfsCLI

/// `.bucketfs/health.json` is rendered whenever it is stat'ed: with the object lock strategy and other mounts'
/// locks in the bucket, it used to cost a LIST of the locks and a GET per lock object each time.
final class HealthCostTests: XCTestCase {
    private var cache = ""

    override func setUpWithError() throws {
        cache = FileManager.default.temporaryDirectory.appendingPathComponent("bucketfs-hc-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: cache)
        super.tearDown()
    }

    func testStatOfHealthCostsNoRequestWithinItsTTL() throws {
        let counting = CountingStore(MemoryObjectStore())
        let location = try StoreLocation(parsing: "memory://")
        let locking = try LockSetup(configuration: Configuration(), location: location, store: counting)
        // Five locks other mounts hold, as lock objects in the bucket.
        let other = ObjectLockStrategy(store: counting)
        for n in 0..<5 {
            XCTAssertNotNil(try other.tryAcquire("file\(n)", owner: .current(), lease: 60))
        }
        let records = RecordStores(store: counting, mountPrefix: "")
        let clock = ManualClock()
        let health = MountHealth(
            meter: MeteredStore(counting), records: records.backend, locking: locking,
            ttl: 5, now: clock.now)
        let settings = ControlDirectory.Settings(health: health.document)
        let fileSystem = MountTree(
            files: try FileSystem(
                store: counting, options: FileSystemOptions(cacheDirectory: cache), logger: Logger(label: "test")),
            control: settings)
        let control = try fileSystem.lookup(parent: 1, name: ".bucketfs")
        counting.reset()

        let first = try fileSystem.lookup(parent: control.ino, name: "health.json")
        let probe = counting.total
        XCTAssertEqual(counting.count(.get), 0, "no lock object is read")
        XCTAssertLessThanOrEqual(probe, 2, "a LIST of the store, a ping of the records")
        for _ in 0..<10 { _ = try fileSystem.getattr(first.ino) }
        XCTAssertEqual(counting.total, probe, "stats within the TTL cost no request")
        clock.advance(6)
        _ = try fileSystem.getattr(first.ino)
        XCTAssertEqual(counting.total, 2 * probe, "after the TTL the probe runs again, once")
        let document = try JSONDecoder().decode(JSONValue.self, from: health.document())
        guard case .object(let fields) = document, case .object(let lock)? = fields["lock_strategy"] else {
            return XCTFail("no lock_strategy in \(document)")
        }
        XCTAssertEqual(fields["status"], .string("healthy"))
        XCTAssertEqual(lock["strategy"], .string("object"))
        XCTAssertEqual(lock["reachable"], .bool(true))
    }

    /// A store that stops answering turns the document unhealthy once the cached probe expires.
    func testUnreachableStoreIsReportedAfterTheTTL() throws {
        let root = cache + "/store"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let store = try LocalDirectoryObjectStore(root: root)
        let locking = try LockSetup(
            configuration: Configuration(), location: StoreLocation(parsing: "file://\(root)/"),
            store: store)
        let clock = ManualClock()
        let records = RecordStores(store: store, mountPrefix: "").backend
        let health = MountHealth(meter: MeteredStore(store), records: records, locking: locking, ttl: 5, now: clock.now)
        XCTAssertTrue(status(health.document()) == "healthy")
        try FileManager.default.removeItem(atPath: root)
        XCTAssertTrue(status(health.document()) == "healthy", "cached within the TTL")
        clock.advance(6)
        XCTAssertEqual(status(health.document()), "unhealthy")
    }

    private func status(_ data: Data) -> String? {
        guard case .object(let fields)? = try? JSONDecoder().decode(JSONValue.self, from: data),
            case .string(let status)? = fields["status"]
        else { return nil }
        return status
    }
}

/// A clock the test moves by hand.
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current = Date(timeIntervalSince1970: 1_800_000_000)

    var now: @Sendable () -> Date { { [self] in lock.withLock { current } } }

    func advance(_ seconds: Double) { lock.withLock { current += seconds } }
}
