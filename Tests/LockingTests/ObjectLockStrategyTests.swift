import Foundation
import ObjectStore
import TestSupport
import XCTest

@testable import Locking

/// The object strategy over the in-memory store.
final class MemoryObjectLockTests: LockingStrategyTestCase {
    private var store: MemoryObjectStore!

    override func setUp() {
        let store = MemoryObjectStore()
        self.store = store
        let clock = TestClock()
        suite = LockingSuite(clock: clock) { ObjectLockStrategy(store: store, prefix: "mnt/", clock: clock.read) }
    }

    // MARK: Object specifics

    /// Release overwrites the lock object with a released record that keeps the token, so tokens never go back.
    func testReleaseKeepsTheTokenInTheObject() throws {
        let strategy = ObjectLockStrategy(store: store, prefix: "mnt/")
        XCTAssertEqual(strategy.key(for: "dir/file"), "mnt/.bucketfs/locks/dir/file.lock")
        let lease = try XCTUnwrap(try strategy.tryAcquire("dir/file", owner: suite.owner("a"), lease: 30))
        let held = try LockRecord.decode(store.get("mnt/.bucketfs/locks/dir/file.lock").body)
        XCTAssertEqual(held, lease.record)
        XCTAssertEqual(try store.head("mnt/.bucketfs/locks/dir/file.lock").contentType, "application/json")
        try strategy.release(lease)
        let released = try LockRecord.decode(store.get("mnt/.bucketfs/locks/dir/file.lock").body)
        XCTAssertEqual(released.released, true)
        XCTAssertEqual(released.token, lease.token)
        XCTAssertLessThanOrEqual(released.expires, Date())
        XCTAssertEqual(try strategy.holders(), [])
        XCTAssertEqual(try strategy.tryAcquire("dir/file", owner: suite.owner("b"), lease: 30)?.token, lease.token + 1)
    }

    /// Store round trips per acquire+release: 2 when uncontended, also when re-acquiring (the released record's
    /// version is remembered); a record someone else wrote since costs one read more, and the token still grows.
    func testAcquireAndReleaseCostTwoRoundTrips() throws {
        let counting = CountingStore(store)
        let strategy = ObjectLockStrategy(store: counting)
        var tokens: [UInt64] = []
        for _ in 0..<3 {
            counting.reset()
            let lease = try XCTUnwrap(try strategy.tryAcquire("f", owner: suite.owner("a"), lease: 30))
            try strategy.release(lease)
            XCTAssertEqual(counting.total, 2)
            tokens.append(lease.token)
        }
        // Another owner (another mount) takes and releases it: our remembered version is stale now.
        let other = ObjectLockStrategy(store: store)
        try other.release(try XCTUnwrap(try other.tryAcquire("f", owner: suite.owner("b"), lease: 30)))
        counting.reset()
        let lease = try XCTUnwrap(try strategy.tryAcquire("f", owner: suite.owner("a"), lease: 30))
        XCTAssertEqual(counting.total, 3)  // refused conditional PUT, GET, conditional PUT
        XCTAssertEqual(tokens + [lease.token], [1, 2, 3, 5])
    }

    /// A waiter on another mount whose release feed saw the object released takes it with one conditional PUT
    /// (no create attempt, no read); a stale sighting costs the usual read and still grants the next token.
    func testAcquireAfterTheFeedSawTheReleaseIsOnePut() throws {
        let holder = ObjectLockStrategy(store: store)
        let counting = CountingStore(store)
        let waiter = ObjectLockStrategy(store: counting)
        let first = try XCTUnwrap(try holder.tryAcquire("f", owner: suite.owner("a"), lease: 30))
        let feed = waiter.makeReleaseFeed()
        XCTAssertEqual(feed.waitForReleases(of: ["f"], timeout: 0.01), [])
        try holder.release(first)
        XCTAssertEqual(feed.waitForReleases(of: ["f"], timeout: 0.01), ["f"])
        counting.reset()
        let second = try XCTUnwrap(try waiter.tryAcquire("f", owner: suite.owner("b"), lease: 30))
        XCTAssertEqual(counting.count(.put), 1)
        XCTAssertEqual(counting.total, 1)
        XCTAssertEqual(second.token, first.token + 1)
        // Seen free, then taken and released by the holder again before the waiter asks: refused PUT, GET, PUT.
        try waiter.release(second)
        XCTAssertEqual(feed.waitForReleases(of: ["f"], timeout: 0.01), ["f"])
        try holder.release(try XCTUnwrap(try holder.tryAcquire("f", owner: suite.owner("a"), lease: 30)))
        counting.reset()
        let third = try XCTUnwrap(try waiter.tryAcquire("f", owner: suite.owner("b"), lease: 30))
        XCTAssertEqual(counting.total, 3)
        XCTAssertEqual(third.token, second.token + 2)
    }

    /// Someone rewrote our lock object (by hand, or a takeover we did not see): renew and release report it lost.
    func testForeignWriteMeansLost() throws {
        let strategy = ObjectLockStrategy(store: store)
        let lease = try XCTUnwrap(try strategy.tryAcquire("r", owner: suite.owner("a"), lease: 30))
        var record = lease.record
        record.owner = "intruder"
        try store.put(strategy.key(for: "r"), data: record.encoded())
        XCTAssertThrowsError(try strategy.renew(lease)) { XCTAssertEqual($0 as? LockError, .lost("r")) }
        XCTAssertThrowsError(try strategy.release(lease)) { XCTAssertEqual($0 as? LockError, .lost("r")) }
    }

    /// The best-effort mode (no conditional writes) passes the sequential checks; races are its documented weakness.
    func testBestEffortMode() throws {
        let store = self.store!
        let clock = TestClock()
        let bestEffort = LockingSuite(clock: clock) {
            ObjectLockStrategy(store: store, prefix: "be/", bestEffort: true, clock: clock.read)
        }
        XCTAssertTrue(ObjectLockStrategy(store: store, bestEffort: true).bestEffort)
        XCTAssertFalse(ObjectLockStrategy(store: store).bestEffort, "the memory store has conditional writes")
        try bestEffort.exclusionAndTokens()
        try bestEffort.expiryTakeover()
        try bestEffort.renewExtends()
        try bestEffort.holdersListing()
    }

    /// A store that stops taking writes (as an unreachable one would): taking, renewing and releasing a lock are
    /// `.unavailable`, not `.lost` or a refusal, and the lease is still ours once the store is back.
    func testStoreFailuresAreUnavailable() throws {
        let failing = FailingStore(store)
        let strategy = ObjectLockStrategy(store: failing, prefix: "mnt/")
        let lease = try XCTUnwrap(try strategy.tryAcquire("held", owner: suite.owner("a"), lease: 30))
        failing.failsWrites = true
        func assertUnavailable(_ body: () throws -> Void, _ what: String) {
            XCTAssertThrowsError(try body(), what) {
                XCTAssertEqual($0 as? LockError, .unavailable("transport error: down"), what)
            }
        }
        assertUnavailable({ _ = try strategy.tryAcquire("other", owner: suite.owner("a"), lease: 30) }, "acquire")
        assertUnavailable({ _ = try strategy.renew(lease) }, "renew")
        assertUnavailable({ try strategy.release(lease) }, "release")
        XCTAssertEqual(try strategy.holders().map(\.owner), [lease.record.owner], "reads still work")
        failing.failsWrites = false
        let renewed = try strategy.renew(lease)
        try strategy.release(renewed)
        XCTAssertEqual(try strategy.holders(), [])
        // A key the store cannot name is the caller's error, not the store's.
        let local = try ObjectLockStrategy(store: LocalDirectoryObjectStore(root: NSTemporaryDirectory()), prefix: "")
        XCTAssertThrowsError(try local.tryAcquire("x\u{0}y", owner: suite.owner("a"), lease: 1)) {
            guard case LockError.invalid = $0 else { return XCTFail("got \($0)") }
        }
    }
}

/// The object strategy over a local directory (each client opens its own store on the same root).
final class LocalDirectoryObjectLockTests: LockingStrategyTestCase {
    private var root = ""

    override func setUpWithError() throws {
        root =
            FileManager.default.temporaryDirectory.appendingPathComponent("bucketfs-objlocks-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let root = self.root
        let clock = TestClock()
        suite = LockingSuite(clock: clock) {
            ObjectLockStrategy(store: try LocalDirectoryObjectStore(root: root), prefix: "mnt/", clock: clock.read)
        }
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
        super.tearDown()
    }

}

/// The object strategy over S3 (moto on loopback; one server for the class, a bucket per test).
final class S3ObjectLockTests: LockingStrategyTestCase {
    private static let moto = SharedServer { try MotoServer() }

    override class func tearDown() {
        moto.stop()
        super.tearDown()
    }

    override func setUpWithError() throws {
        let moto = try Self.moto.get()
        let bucket = "bucketfs-locks-\(UUID().uuidString.prefix(8).lowercased())"
        try moto.createBucket(bucket)
        let clock = TestClock()
        suite = LockingSuite(clock: clock) {
            ObjectLockStrategy(store: try moto.makeStore(bucket: bucket), prefix: "mnt/", clock: clock.read)
        }
    }

}

extension MemoryObjectLockTests {
    /// A damaged lock object is reported, not silently taken over (its token would be a guess).
    func testDamagedLockObjectIsInvalid() throws {
        let strategy = ObjectLockStrategy(store: store)
        try store.put(strategy.key(for: "bad"), data: Data("not json".utf8))
        XCTAssertThrowsError(try strategy.tryAcquire("bad", owner: suite.owner("a"), lease: 1)) {
            guard case LockError.invalid(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains(".bucketfs/locks/bad.lock"), detail)
        }
        XCTAssertEqual(try strategy.holders(), [])
    }

    /// A shut-down manager grants nothing more (nothing would renew it).
    func testShutDownManagerRefuses() throws {
        let manager = LockManager(strategy: ObjectLockStrategy(store: store), owner: suite.owner("m"), leaseDuration: 5)
        let lease = try XCTUnwrap(try manager.tryAcquire("r"))
        manager.shutdown()
        XCTAssertTrue(manager.held.isEmpty, "released on shutdown")
        XCTAssertEqual(manager.metrics.released, 1)
        XCTAssertNotNil(try ObjectLockStrategy(store: store).tryAcquire("r", owner: suite.owner("b"), lease: 1))
        XCTAssertThrowsError(try manager.tryAcquire("other")) {
            guard case LockError.unavailable = $0 else { return XCTFail("got \($0)") }
        }
        _ = lease
    }
}
