import FileSystem
import Foundation
import Locking
import Logging
import ObjectStore
import Synchronization
import TestSupport
import XCTest

/// flock/fcntl semantics through `FileSystem`, as the FUSE bridge calls it: POSIX detail within one mount, and
/// two filesystems over one store (two mounts) excluding each other through the object strategy.
final class LockTests: FileSystemTestCase {
    let root = FileSystemTestCase.root

    /// Two mounts of one memory store, each with its own lock manager on the object strategy.
    func makeMounts(ttl: Double = 60) throws -> (MemoryObjectStore, FileSystem, FileSystem) {
        let store = MemoryObjectStore()
        func mount() throws -> FileSystem {
            let options = FileSystemOptions(
                uid: 100, gid: 200, metadataTTL: ttl, negativeTTL: ttl,
                cacheDirectory: try makeCacheDirectory())
            let manager = LockManager(strategy: ObjectLockStrategy(store: store), leaseDuration: 30)
            return try FileSystem(
                store: store, options: options, logger: Logger(label: "bucketfs.tests"),
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
        assertFails(.wouldBlock) { () throws(FSError) in
            try fs.setLockWaiting(f, posix(2, .shared, 109, 200), wait: false)
        }
        try fs.setLockWaiting(f, posix(2, .exclusive, 0, 99), wait: false)
    }

    func testSharedPosixLocksCoexistAndBlockWriters() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, posix(1, .shared, 0, .max), wait: false)
        try fs.setLockWaiting(f, posix(2, .shared, 0, .max), wait: false)
        assertFails(.wouldBlock) { () throws(FSError) in
            try fs.setLockWaiting(f, posix(3, .exclusive, 10, 20), wait: false)
        }
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
        try fs.setLockWaiting(f, flock(1, .shared), wait: false)  // convert
        try fs.setLockWaiting(f, flock(3, .shared), wait: false)
    }

    func testCloseEndsThePosixOwnerAndReleaseEndsTheDescription() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, posix(1, .exclusive, 0, 9), wait: false)
        try fs.setLockWaiting(f, FileLock(owner: 2, kind: .flock, mode: .exclusive, handle: 42), wait: false)
        try fs.setLockWaiting(
            f, FileLock(owner: 3, kind: .posix, mode: .exclusive, start: 50, end: 59, handle: 43), wait: false)
        fs.closeLockOwner(f, owner: 1)
        XCTAssertNil(fs.testLock(f, posix(9, .exclusive, 0, 9)))
        fs.releaseLocks(f, handle: 42, flockOwner: 2)
        XCTAssertNil(fs.testLock(f, flock(9, .exclusive)))
        XCTAssertNotNil(fs.testLock(f, posix(9, .exclusive, 50, 50)))
        fs.releaseLocks(f, handle: 43, flockOwner: nil)  // OFD lock: goes with its description
        XCTAssertNil(fs.testLock(f, posix(9, .exclusive, 50, 50)))
    }

    func testWaiterIsGrantedWhenTheHolderUnlocks() throws {
        let (store, fs, _) = try makeMounts()
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, flock(1, .exclusive), wait: false)
        let answered = expectation(description: "granted")
        let answer = Mutex<FSError??>(nil)
        // The waiter thread asks `interrupted` each time it looks at the waiter: after three looks it has had
        // its chances to be (wrongly) granted.
        let looked = DispatchSemaphore(value: 0)
        fs.setLock(
            f, flock(2, .exclusive), wait: true,
            interrupted: {
                looked.signal()
                return false
            }
        ) { error in
            answer.withLock { $0 = .some(error) }
            answered.fulfill()
        }
        for _ in 0..<3 { XCTAssertEqual(looked.wait(timeout: .now() + 10), .success, "the waiter is served") }
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
            try box.value.setLockWaiting(
                f, flock(2, .exclusive), wait: true, interrupted: { interrupted.load(ordering: .relaxed) })
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 3)
    }

    // MARK: Across mounts

    func testSharedLocksCoexistAcrossMountsAndExclusiveWaitsForAll() throws {
        let (store, a, b) = try makeMounts()
        try put(store, "f", "data")
        let fa = try ino(a, "f")
        let fb = try ino(b, "f")
        try a.setLockWaiting(fa, posix(1, .shared, 0, 9), wait: false)
        try a.setLockWaiting(fa, posix(2, .shared, 50, 59), wait: false)
        // Shared on both mounts: the lease is shared.
        try b.setLockWaiting(fb, posix(3, .shared, 100, 109), wait: false)
        XCTAssertEqual(a.heldLockLeases.map(\.mode), [.shared])
        XCTAssertEqual(b.heldLockLeases.map(\.mode), [.shared])
        // An exclusive lock on either mount waits for the other mount's sharers — even on a disjoint range:
        // across mounts the whole file is one lease.
        assertFails(.wouldBlock) { () throws(FSError) in
            try b.setLockWaiting(fb, posix(4, .exclusive, 200, 209), wait: false)
        }
        // F_GETLK on A sees B's shared lock when asking for a write lock (pid 0, the whole file).
        let remote = a.testLockAcrossMounts(fa, posix(9, .exclusive, 300, 300))
        XCTAssertEqual(remote.map { [$0.pid, UInt32($0.start)] }, [0, 0])
        XCTAssertEqual(remote?.mode, .shared)
        XCTAssertEqual(remote?.end, .max)
        XCTAssertNil(a.testLockAcrossMounts(fa, posix(9, .shared, 300, 300)), "readers do not conflict")
        b.unlock(fb, owner: 3, kind: .posix)
        XCTAssertEqual(b.heldLockLeases, [])
        XCTAssertNil(a.testLockAcrossMounts(fa, posix(9, .exclusive, 300, 300)))
        // A upgrades in place: its shared locks stay, and B is now kept out entirely.
        try a.setLockWaiting(fa, posix(4, .exclusive, 200, 209), wait: false)
        XCTAssertEqual(a.heldLockLeases.map(\.mode), [.exclusive])
        assertFails(.wouldBlock) { () throws(FSError) in
            try b.setLockWaiting(fb, posix(3, .shared, 100, 109), wait: false)
        }
        XCTAssertEqual(b.testLockAcrossMounts(fb, posix(9, .shared, 0, 0))?.mode, .exclusive)
        // The exclusive lock goes: the lease goes back to shared, and B's readers get in.
        a.unlock(fa, owner: 4, kind: .posix)
        XCTAssertEqual(a.heldLockLeases.map(\.mode), [.shared])
        try b.setLockWaiting(fb, posix(3, .shared, 100, 109), wait: false)
        a.unlock(fa, owner: 1, kind: .posix)
        a.unlock(fa, owner: 2, kind: .posix)
        b.unlock(fb, owner: 3, kind: .posix)
        try b.setLockWaiting(fb, posix(5, .exclusive, 0, .max), wait: false)
        XCTAssertEqual(b.heldLockLeases.map(\.resource), ["f"])
        XCTAssertEqual(a.heldLockLeases, [])
    }

    func testAnUpgradeWaitingForTheOtherMountsReaderIsGrantedWhenItLeaves() throws {
        let (store, a, b) = try makeMounts()
        try put(store, "f", "data")
        let fa = try ino(a, "f")
        let fb = try ino(b, "f")
        try a.setLockWaiting(fa, flock(1, .shared), wait: false)
        try b.setLockWaiting(fb, flock(2, .shared), wait: false)
        let answered = expectation(description: "upgrade granted")
        a.setLock(fa, flock(1, .exclusive), wait: true, interrupted: { false }) { error in
            XCTAssertNil(error)
            answered.fulfill()
        }
        b.unlock(fb, owner: 2, kind: .flock)
        wait(for: [answered], timeout: 10)
        XCTAssertEqual(a.heldLockLeases.map(\.mode), [.exclusive])
        assertFails(.wouldBlock) { () throws(FSError) in try b.setLockWaiting(fb, flock(2, .shared), wait: false) }
    }

    /// Issue 12: a mount whose lease renewal hangs must not grant new locks under that lease once it can no
    /// longer prove it holds it (before the fix: granted, the coordinator compared tokens only).
    func testNoNewLockUnderALeaseWhoseRenewalHangs() throws {
        let store = MemoryObjectStore()
        let stalling = StallingStrategy(ObjectLockStrategy(store: store))
        let manager = LockManager(strategy: stalling, leaseDuration: 1)
        let options = FileSystemOptions(
            uid: 100, gid: 200, metadataTTL: 60, negativeTTL: 60,
            cacheDirectory: try makeCacheDirectory())
        let fs = try FileSystem(
            store: store, options: options, logger: Logger(label: "bucketfs.tests"),
            lockManager: manager)
        defer { stalling.resume() }
        try put(store, "f", "data")
        let f = try ino(fs, "f")
        try fs.setLockWaiting(f, flock(1, .shared), wait: false)
        let lease = try XCTUnwrap(fs.heldLockLeases.first)
        stalling.stall()  // renewals hang, the store refuses new leases
        let deadline = Date().addingTimeInterval(5)
        while manager.validLease(for: "f") != nil && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        XCTAssertLessThan(Date(), lease.expires.addingTimeInterval(0.5))
        XCTAssertThrowsError(
            try fs.setLockWaiting(f, flock(2, .shared), wait: false),
            "a second reader was granted under a lease nobody could renew")
        // Reported lost once it runs out, while the renewal still hangs.
        while manager.metrics.lost == 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        XCTAssertEqual(manager.metrics.lost, 1)
        XCTAssertThrowsError(try fs.setLockWaiting(f, flock(3, .exclusive), wait: false))
    }

    func testLockThenReadSeesTheOtherMountsWriteMadeUnderTheLock() throws {
        let (store, a, b) = try makeMounts()  // attributes trusted for 60 s: only the lock revalidates
        try put(store, "counter", "1")
        let fa = try ino(a, "counter")
        let fb = try ino(b, "counter")
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

    /// CI, stop 20 (stress-ng's fcntl stressor: ftruncate EINVAL): a lock granted while the file was being
    /// unlinked revalidated it and emptied the clean copy that the unlinked file's open descriptors read from;
    /// the next read or truncate then asked the store for an object with no name.
    func testLockRevalidationKeepsTheCopyOfAFileUnlinkedMeanwhile() throws {
        let store = MemoryObjectStore()
        let holding = HoldingStore(store)
        let options = FileSystemOptions(uid: 100, gid: 200, cacheDirectory: try makeCacheDirectory())
        let manager = LockManager(strategy: ObjectLockStrategy(store: store), leaseDuration: 30)
        let fs = try FileSystem(
            store: holding, options: options, logger: Logger(label: "bucketfs.tests"), lockManager: manager)
        try put(store, "f", "old")
        let f = try ino(fs, "f")
        let h = try fs.open(f, flags: O_RDWR).handle
        try write(fs, f, handle: h, at: 0, "mine")
        try fs.flush(f, handle: h)  // uploaded: the staged copy is clean
        try put(store, "f", "theirs")  // another mount's write: the lock sees a new version
        holding.holdHeadReply("f")
        let locked = DispatchSemaphore(value: 0)
        let request = flock(1, .exclusive)
        DispatchQueue.global().async {
            try? fs.setLockWaiting(f, request, wait: false)
            locked.signal()
        }
        holding.entered.wait()  // the lock's HEAD is answered, not yet heard
        try fs.unlink(parent: root, name: "f")
        holding.release()
        locked.wait()
        XCTAssertEqual(try readAll(fs, f, handle: h), "mine")
        try fs.setattr(f, AttributeChanges(size: 8))
        XCTAssertEqual(try fs.getattr(f).size, 8)
        fs.unlock(f, owner: 1, kind: .flock)
        fs.release(f, handle: h)
    }

    /// A lock's revalidation empties a clean copy of an old version; a write through a descriptor opened before
    /// lands on the new version (staged again), and its upload keeps the other mount's bytes around it.
    func testAWriteAfterALockEmptiedTheCleanCopyLandsOnTheNewVersion() throws {
        let (store, a, _) = try makeMounts()
        try put(store, "f", "old")
        let f = try ino(a, "f")
        let h = try a.open(f, flags: O_RDWR).handle
        try write(a, f, handle: h, at: 0, "mine")
        try a.flush(f, handle: h)  // uploaded: the staged copy is clean
        try put(store, "f", "theirs!")  // another mount's write, seen by the lock
        try a.setLockWaiting(f, flock(1, .exclusive), wait: false)
        try write(a, f, handle: h, at: 0, "M")
        try a.flush(f, handle: h)
        XCTAssertEqual(String(decoding: try store.get("f", range: nil).body, as: UTF8.self), "Mheirs!")
        a.unlock(f, owner: 1, kind: .flock)
        a.release(f, handle: h)
    }

    func testLastUnlockUploadsPendingWritesBeforeTheLeaseGoes() throws {
        let (store, a, b) = try makeMounts()
        try put(store, "f", "old")
        let fa = try ino(a, "f")
        let fb = try ino(b, "f")
        let ha = try a.open(fa, flags: O_RDWR).handle
        try a.setLockWaiting(fa, posix(1, .exclusive, 0, .max), wait: false)
        try write(a, fa, handle: ha, at: 0, "new")
        XCTAssertEqual(try body(store, "f"), "old")  // not flushed yet
        a.unlock(fa, owner: 1, kind: .posix)
        XCTAssertEqual(try body(store, "f"), "new")
        try b.setLockWaiting(fb, posix(2, .exclusive, 0, .max), wait: false)
        a.release(fa, handle: ha)
    }

    func testBlockedWaiterInAnotherMountGetsTheLockWhenReleased() throws {
        let (store, a, b) = try makeMounts()
        try put(store, "f", "data")
        let fa = try ino(a, "f")
        let fb = try ino(b, "f")
        try a.setLockWaiting(fa, flock(1, .exclusive), wait: false)
        let answered = expectation(description: "granted in B")
        let looked = DispatchSemaphore(value: 0)
        b.setLock(
            fb, flock(2, .exclusive), wait: true,
            interrupted: {
                looked.signal()
                return false
            }
        ) { error in
            XCTAssertNil(error)
            answered.fulfill()
        }
        // Waiting in B (its waiter served twice) before A lets go.
        for _ in 0..<2 { XCTAssertEqual(looked.wait(timeout: .now() + 10), .success, "the waiter is served") }
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

/// A strategy whose renewals hang and whose acquisitions fail while `stall()`ed: a store out of reach.
final class StallingStrategy: LockStrategy {
    let base: any LockStrategy
    var name: String { base.name }
    private let stalled = Atomic<Bool>(false)
    private let gate = DispatchSemaphore(value: 0)

    init(_ base: any LockStrategy) { self.base = base }

    func stall() { stalled.store(true, ordering: .relaxed) }

    func resume() {
        stalled.store(false, ordering: .relaxed)
        for _ in 0..<64 { gate.signal() }
    }

    func tryAcquire(_ resource: String, owner: LockOwner, lease: Double, mode: LeaseMode) throws(LockError) -> Lease? {
        if stalled.load(ordering: .relaxed) { throw .unavailable("stalled") }
        return try base.tryAcquire(resource, owner: owner, lease: lease, mode: mode)
    }

    func convert(_ lease: Lease, to mode: LeaseMode) throws(LockError) -> Lease? { try base.convert(lease, to: mode) }

    func renew(_ lease: Lease) throws(LockError) -> Lease {
        if stalled.load(ordering: .relaxed) { gate.wait() }
        return try base.renew(lease)
    }

    func release(_ lease: Lease) throws(LockError) { try base.release(lease) }
    func holders() throws(LockError) -> [LockRecord] { try base.holders() }
}

/// Hands a non-Sendable-checked reference to a closure in a test.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
