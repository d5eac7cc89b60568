import FileSystem
import Foundation
import Locking
import Logging
import ObjectStore
import Synchronization
import XCTest

/// flock/fcntl semantics through `FileSystem`, as the FUSE bridge calls it: POSIX detail within one mount, and
/// two filesystems over one store (two mounts) excluding each other through the object strategy.
final class LockTests: FileSystemTestCase {
    let root = FileSystemTestCase.root

    /// Two mounts of one memory store, each with its own lock manager on the object strategy.
    func makeMounts(ttl: Double = 60) throws -> (MemoryObjectStore, FileSystem, FileSystem) {
        let store = MemoryObjectStore()
        func mount() throws -> FileSystem {
            let options = FileSystemOptions(uid: 100, gid: 200, metadataTTL: ttl, negativeTTL: ttl,
                                            cacheDirectory: try makeCacheDirectory())
            let manager = LockManager(strategy: ObjectLockStrategy(store: store), leaseDuration: 30)
            return try FileSystem(store: store, options: options, logger: Logger(label: "bucketfs.tests"),
                                  lockManager: manager)
        }
        return (store, try mount(), try mount())
    }

    func posix(_ owner: UInt64, _ mode: LockMode, _ start: UInt64, _ end: UInt64, pid: UInt32 = 7) -> FileLock {
        FileLock(owner: owner, kind: .posix, mode: mode, start: start, end: end, pid: pid)
    }

    func flock(_ owner: UInt64, _ mode: LockMode) -> FileLock {
        FileLock(owner: owner, kind: .flock, mode: mode)
    }

    func ino(_ fs: FileSystem, _ name: String) throws -> UInt64 {
        try fs.lookup(parent: root, name: name).ino
    }

    // MARK: Within one mount

    func testPosixRangesConflictOnlyWhereTheyOverlap() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, posix(1, .exclusive, 100, 109), wait: false)
        XCTAssertNil(fs.testLock(f, posix(2, .exclusive, 0, 99)))
        XCTAssertNil(fs.testLock(f, posix(2, .exclusive, 110, .max)))
        XCTAssertEqual(fs.testLock(f, posix(2, .shared, 105, 105))?.start, 100)
        XCTAssertEqual(fs.testLock(f, posix(2, .shared, 105, 105))?.end, 109)
        // The owner itself never conflicts with its own locks.
        XCTAssertNil(fs.testLock(f, posix(1, .exclusive, 0, .max)))
        assertFails(.wouldBlock) { () throws(FSError) in try fs.setLockWaiting(f, posix(2, .shared, 109, 200), wait: false) }
        try fs.setLockWaiting(f, posix(2, .exclusive, 0, 99), wait: false)
    }

    func testSharedPosixLocksCoexistAndBlockWriters() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, posix(1, .shared, 0, .max), wait: false)
        try fs.setLockWaiting(f, posix(2, .shared, 0, .max), wait: false)
        assertFails(.wouldBlock) { () throws(FSError) in try fs.setLockWaiting(f, posix(3, .exclusive, 10, 20), wait: false) }
    }

    func testUnlockingTheMiddleSplitsALock() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, posix(1, .exclusive, 0, 99), wait: false)
        fs.unlock(f, owner: 1, kind: .posix, start: 40, end: 59)
        XCTAssertNil(fs.testLock(f, posix(2, .exclusive, 40, 59)))
        XCTAssertEqual(fs.testLock(f, posix(2, .exclusive, 0, 0))?.end, 39)
        XCTAssertEqual(fs.testLock(f, posix(2, .exclusive, 99, 99))?.start, 60)
    }

    func testAdjacentRangesOfOneOwnerMerge() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, posix(1, .exclusive, 0, 9), wait: false)
        try fs.setLockWaiting(f, posix(1, .exclusive, 10, 19), wait: false)
        let holder = fs.testLock(f, posix(2, .exclusive, 5, 5))
        XCTAssertEqual(holder.map { [$0.start, $0.end] }, [0, 19])
        // Downgrading part of it splits by mode.
        try fs.setLockWaiting(f, posix(1, .shared, 5, 9), wait: false)
        XCTAssertNil(fs.testLock(f, posix(2, .shared, 5, 9)))
        XCTAssertEqual(fs.testLock(f, posix(2, .shared, 5, 10))?.start, 10)
    }

    func testFlockAndPosixLocksAreIndependentAndFlockConverts() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, flock(1, .exclusive), wait: false)
        // A POSIX lock of another owner is another family: granted.
        try fs.setLockWaiting(f, posix(2, .exclusive, 0, .max), wait: false)
        assertFails(.wouldBlock) { () throws(FSError) in try fs.setLockWaiting(f, flock(3, .shared), wait: false) }
        try fs.setLockWaiting(f, flock(1, .shared), wait: false)    // convert
        try fs.setLockWaiting(f, flock(3, .shared), wait: false)
    }

    func testCloseEndsThePosixOwnerAndReleaseEndsTheDescription() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, posix(1, .exclusive, 0, 9), wait: false)
        try fs.setLockWaiting(f, FileLock(owner: 2, kind: .flock, mode: .exclusive, handle: 42), wait: false)
        try fs.setLockWaiting(f, FileLock(owner: 3, kind: .posix, mode: .exclusive, start: 50, end: 59, handle: 43), wait: false)
        fs.closeLockOwner(f, owner: 1)
        XCTAssertNil(fs.testLock(f, posix(9, .exclusive, 0, 9)))
        fs.releaseLocks(f, handle: 42, flockOwner: 2)
        XCTAssertNil(fs.testLock(f, flock(9, .exclusive)))
        XCTAssertNotNil(fs.testLock(f, posix(9, .exclusive, 50, 50)))
        fs.releaseLocks(f, handle: 43, flockOwner: nil)    // OFD lock: goes with its description
        XCTAssertNil(fs.testLock(f, posix(9, .exclusive, 50, 50)))
    }

    func testWaiterIsGrantedWhenTheHolderUnlocks() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, flock(1, .exclusive), wait: false)
        let answered = expectation(description: "granted")
        let answer = Mutex<FSError??>(nil)
        fs.setLock(f, flock(2, .exclusive), wait: true, interrupted: { false }) { error in
            answer.withLock { $0 = .some(error) }
            answered.fulfill()
        }
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertNil(answer.withLock { $0 }, "answered while the lock was held")
        fs.unlock(f, owner: 1, kind: .flock)
        wait(for: [answered], timeout: 5)
        XCTAssertEqual(answer.withLock { $0 }, .some(nil))
    }

    func testInterruptedWaiterGetsEINTR() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, flock(1, .exclusive), wait: false)
        let interrupted = Atomic<Bool>(false)
        let started = Date()
        let box = UncheckedBox(fs)
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) { interrupted.store(true, ordering: .relaxed) }
        assertFails(.interrupted) { () throws(FSError) in
            try box.value.setLockWaiting(f, flock(2, .exclusive), wait: true, interrupted: { interrupted.load(ordering: .relaxed) })
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 3)
    }

    // MARK: Across mounts

    func testTwoMountsExcludeEachOtherUntilTheLastLocalLockGoes() throws {
        let (store, a, b) = try makeMounts()
        try put(store, "f", "data")
        let fa = try ino(a, "f"), fb = try ino(b, "f")
        try a.setLockWaiting(fa, posix(1, .shared, 0, 9), wait: false)
        try a.setLockWaiting(fa, posix(2, .shared, 50, 59), wait: false)
        // B cannot get even a disjoint shared range: across mounts the whole file is held.
        assertFails(.wouldBlock) { () throws(FSError) in try b.setLockWaiting(fb, posix(3, .shared, 100, 109), wait: false) }
        a.unlock(fa, owner: 1, kind: .posix)
        assertFails(.wouldBlock) { () throws(FSError) in try b.setLockWaiting(fb, posix(3, .shared, 100, 109), wait: false) }
        a.unlock(fa, owner: 2, kind: .posix)
        try b.setLockWaiting(fb, posix(3, .shared, 100, 109), wait: false)
        XCTAssertEqual(b.heldLockLeases.map(\.resource), ["f"])
        XCTAssertEqual(a.heldLockLeases, [])
    }

    func testLockThenReadSeesTheOtherMountsWriteMadeUnderTheLock() throws {
        let (store, a, b) = try makeMounts()    // attributes trusted for 60 s: only the lock revalidates
        try put(store, "counter", "1")
        let fa = try ino(a, "counter"), fb = try ino(b, "counter")
        // B reads the old value (and caches it).
        let hb = try b.open(fb, flags: O_RDONLY).handle
        XCTAssertEqual(try readAll(b, fb, handle: hb), "1")
        // A: lock, write 22, unlock.
        let ha = try a.open(fa, flags: O_RDWR).handle
        try a.setLockWaiting(fa, flock(1, .exclusive), wait: false)
        try write(a, fa, handle: ha, at: 0, "22")
        try a.flush(fa, handle: ha)
        a.unlock(fa, owner: 1, kind: .flock)
        // B: lock, and the same handle now reads what A wrote.
        try b.setLockWaiting(fb, flock(2, .exclusive), wait: false)
        XCTAssertEqual(try b.getattr(fb).size, 2)
        XCTAssertEqual(try readAll(b, fb, handle: hb), "22")
        b.unlock(fb, owner: 2, kind: .flock)
        a.release(fa, handle: ha)
        b.release(fb, handle: hb)
    }

    func testLastUnlockUploadsPendingWritesBeforeTheLeaseGoes() throws {
        let (store, a, b) = try makeMounts()
        try put(store, "f", "old")
        let fa = try ino(a, "f"), fb = try ino(b, "f")
        let ha = try a.open(fa, flags: O_RDWR).handle
        try a.setLockWaiting(fa, posix(1, .exclusive, 0, .max), wait: false)
        try write(a, fa, handle: ha, at: 0, "new")
        XCTAssertEqual(try body(store, "f"), "old")    // not flushed yet
        a.unlock(fa, owner: 1, kind: .posix)
        XCTAssertEqual(try body(store, "f"), "new")
        try b.setLockWaiting(fb, posix(2, .exclusive, 0, .max), wait: false)
        a.release(fa, handle: ha)
    }

    func testBlockedWaiterInAnotherMountGetsTheLockWhenReleased() throws {
        let (store, a, b) = try makeMounts()
        try put(store, "f", "data")
        let fa = try ino(a, "f"), fb = try ino(b, "f")
        try a.setLockWaiting(fa, flock(1, .exclusive), wait: false)
        let answered = expectation(description: "granted in B")
        b.setLock(fb, flock(2, .exclusive), wait: true, interrupted: { false }) { error in
            XCTAssertNil(error)
            answered.fulfill()
        }
        Thread.sleep(forTimeInterval: 0.3)
        a.unlock(fa, owner: 1, kind: .flock)
        wait(for: [answered], timeout: 5)
        assertFails(.wouldBlock) { () throws(FSError) in try a.setLockWaiting(fa, flock(3, .shared), wait: false) }
    }

    func testDirectoriesAndTheRootCanBeLockedToo() throws {
        let (_, a, b) = try makeMounts()
        let dir = try a.mkdir(parent: root, name: "d", permissions: 0o755, caller: caller)
        try a.setLockWaiting(dir.ino, flock(1, .exclusive), wait: false)
        try a.setLockWaiting(root, flock(1, .exclusive), wait: false)
        let inB = try ino(b, "d")
        assertFails(.wouldBlock) { () throws(FSError) in try b.setLockWaiting(inB, flock(2, .exclusive), wait: false) }
        assertFails(.wouldBlock) { () throws(FSError) in try b.setLockWaiting(root, flock(2, .exclusive), wait: false) }
        XCTAssertEqual(a.heldLockLeases.map(\.resource).sorted(), [".", "d"])
    }
}

/// Hands a non-Sendable-checked reference to a closure in a test.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
