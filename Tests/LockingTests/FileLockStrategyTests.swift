import Foundation
import Glibc
import TestSupport
import XCTest

@testable import Locking

final class FileLockStrategyTests: LockingStrategyTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("bucketfs-locks-\(UUID().uuidString)").path
        let directory = self.directory
        let clock = TestClock()
        suite = LockingSuite(leasesExpire: false, listsEverySharer: false, clock: clock) {
            try FileLockStrategy(directory: directory, clock: clock.read)
        }
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
        super.tearDown()
    }

    // MARK: File specifics

    /// flock locks belong to the open file description: another descriptor in this very process is refused.
    func testAnotherDescriptorInThisProcessIsExcluded() throws {
        let strategy = try FileLockStrategy(directory: directory)
        let lease = try XCTUnwrap(try strategy.tryAcquire("a/b", owner: suite.owner("a"), lease: 5))
        let path = strategy.lockPath("a/b")
        XCTAssertEqual(path, "\(directory)/a%2Fb.lock")
        let fd = open(path, O_RDONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), -1)
        XCTAssertEqual(errno, EWOULDBLOCK)
        try strategy.release(lease)
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), 0, "free after release")
        XCTAssertNil(
            try strategy.tryAcquire("a/b", owner: suite.owner("b"), lease: 5),
            "and our raw flock now excludes the strategy")
        _ = flock(fd, LOCK_UN)
    }

    /// `/proc/locks` is read to its end: with 400 other flocks on the host (about 20 KiB of it) the holder of
    /// ours is still found wherever its line falls.
    func testHoldersAreFoundPastTheFirstPageOfProcLocks() throws {
        let strategy = try FileLockStrategy(directory: directory)
        var others: [Int32] = []
        defer { others.forEach { close($0) } }
        func lockOthers(_ range: Range<Int>) {
            for i in range {
                let fd = open("\(directory)/other-\(i)", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
                if fd >= 0, flock(fd, LOCK_EX) == 0 { others.append(fd) }
            }
        }
        lockOthers(0..<200)
        let lease = try XCTUnwrap(try strategy.tryAcquire("deep", owner: suite.owner("a"), lease: 5))
        lockOthers(200..<400)
        XCTAssertEqual(others.count, 400)
        let table = try String(contentsOfFile: "/proc/locks", encoding: .utf8)  // (Foundation's short read)
        XCTAssertLessThan(table.utf8.count, 400 * 40, "this test needs /proc/locks to pass one page")
        XCTAssertEqual(try strategy.holders(of: "deep").count, 1)
        try strategy.release(lease)
    }

    /// The token lives in the lock file: a new process (a new strategy) continues the count.
    func testTokenSurvivesInTheLockFile() throws {
        let first = try FileLockStrategy(directory: directory)
        var last: UInt64 = 0
        for _ in 0..<3 {
            let lease = try XCTUnwrap(try first.tryAcquire("counter", owner: suite.owner("a"), lease: 5))
            XCTAssertEqual(lease.token, last + 1)
            last = lease.token
            try first.release(lease)
        }
        let later = try FileLockStrategy(directory: directory)
        XCTAssertEqual(try later.tryAcquire("counter", owner: suite.owner("b"), lease: 5)?.token, last + 1)
        let record = try LockRecord.decode(Data(contentsOf: URL(fileURLWithPath: later.lockPath("counter"))))
        XCTAssertEqual(record.token, last + 1)
    }

    func testFileNamesAreFlat() {
        XCTAssertEqual(FileLockStrategy.fileName(for: "plain-name_1.txt"), "plain-name_1.txt.lock")
        XCTAssertEqual(FileLockStrategy.fileName(for: "../x y"), "..%2Fx%20y.lock")
        XCTAssertEqual(FileLockStrategy.fileName(for: "é"), "%C3%A9.lock")
        let long = FileLockStrategy.fileName(for: String(repeating: "/", count: 300))
        XCTAssertLessThan(long.utf8.count, 255)
        XCTAssertNotEqual(long, FileLockStrategy.fileName(for: String(repeating: "/", count: 301)))
    }
}
