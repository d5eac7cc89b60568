import FileSystem
import Foundation
import Glibc
import ObjectStore
import Synchronization
import TestSupport
import XCTest

/// Regressions found in review: each failed before its fix.
final class RegressionTests: FileSystemTestCase {
    // R1: rename of a new, not yet uploaded file over an existing object replaces it.
    func testRenameUnflushedFileOverExistingObject() throws {
        let store = MemoryObjectStore()
        try put(store, "final", "old")
        let fs = try makeFileSystem(store)
        _ = try fs.lookup(parent: Self.root, name: "final")
        let (tmp, h) = try fs.create(
            parent: Self.root, name: "tmp", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, tmp.ino, handle: h, at: 0, "new")
        try fs.rename(parent: Self.root, name: "tmp", newParent: Self.root, newName: "final", noReplace: false)
        var err: FSError?
        do { try fs.flush(tmp.ino, handle: h) } catch { err = error }
        fs.release(tmp.ino, handle: h)
        XCTAssertNil(err)
        XCTAssertEqual(try body(store, "final"), "new")
    }

    // R2: a failed flush must not clear dirty, or the final close reports success without uploading.
    func testFailedFlushThenCloseSucceedsWithoutUpload() throws {
        let base = MemoryObjectStore()
        let store = FailingStore(base)
        let fs = try makeFileSystem(store)
        let (f, h) = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, f.ino, handle: h, at: 0, "data")
        store.failsWrites = true
        assertFails(.io("")) { () throws(FSError) in try fs.flush(f.ino, handle: h) }
        store.failsWrites = false
        var err: FSError?
        do {
            try fs.fsync(f.ino, handle: h)
            try fs.flush(f.ino, handle: h)
        } catch { err = error }
        fs.release(f.ino, handle: h)
        // The failed upload left the file dirty: once the store is back, fsync uploads it.
        XCTAssertNil(err)
        XCTAssertEqual(try body(base, "f"), "data")
    }

    // R3: a staged file whose download failed must not bring the old content back after O_TRUNC.
    func testTruncateOverUnloadedStagedFileResurrectsOldContent() throws {
        let base = MemoryObjectStore()
        try put(base, "f", String(repeating: "X", count: 100))
        let store = DelayingStore(base)
        let fs = try makeFileSystem(store)
        let f = try fs.lookup(parent: Self.root, name: "f")
        let h1 = try fs.open(f.ino, flags: O_RDWR).handle
        store.failGets.withLock { $0 = 1 }
        assertFails(.io("")) { () throws(FSError) in try write(fs, f.ino, handle: h1, at: 5, "y") }
        let h2 = try fs.open(f.ino, flags: O_WRONLY | O_TRUNC).handle
        try write(fs, f.ino, handle: h2, at: 0, "hello")
        try fs.flush(f.ino, handle: h2)
        fs.release(f.ino, handle: h2)
        fs.release(f.ino, handle: h1)
        let stored = try body(base, "f")
        XCTAssertEqual(stored, "hello")
    }

    // R4: a flush while another flush's upload is in flight must wait for it.
    func testConcurrentFlushReturnsBeforeUpload() throws {
        let base = MemoryObjectStore()
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let (f, h) = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, f.ino, handle: h, at: 0, "data")
        store.hold("f")
        let h2 = try fs.open(f.ino, flags: O_RDONLY).handle
        let firstDone = DispatchSemaphore(value: 0)
        Thread {
            try? fs.flush(f.ino, handle: h)
            firstDone.signal()
        }.start()
        XCTAssertEqual(store.entered.wait(timeout: .now() + 10), .success, "the first upload is in flight")
        // close() of the other descriptor: it may return only once the content is in the store.
        let present = Mutex<Bool?>(nil)
        let secondDone = DispatchSemaphore(value: 0)
        Thread {
            try? fs.flush(f.ino, handle: h2)
            present.withLock { $0 = (try? base.head("f")) != nil }
            secondDone.signal()
        }.start()
        // A second flush that does not wait returns at once, while the upload is still held.
        let returnedEarly = secondDone.wait(timeout: .now() + 0.5) == .success
        store.release()
        XCTAssertEqual(firstDone.wait(timeout: .now() + 10), .success)
        if !returnedEarly { XCTAssertEqual(secondDone.wait(timeout: .now() + 10), .success) }
        XCTAssertEqual(present.withLock { $0 }, true, "close() returned 0 before the content reached the store")
        XCTAssertFalse(returnedEarly, "close() returned while the other flush's upload was in flight")
    }

    // R5: a write + fsync during the first upload of a new file must not fail with a stale condition.
    func testWriteAndFlushDuringUploadIsSpuriousStale() throws {
        let base = MemoryObjectStore()
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let (f, h) = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, f.ino, handle: h, at: 0, "data")
        store.hold("f")
        let first = Mutex<FSError?>(nil)
        let second = Mutex<FSError?>(nil)
        let firstDone = DispatchSemaphore(value: 0)
        let secondDone = DispatchSemaphore(value: 0)
        Thread {
            do { try fs.flush(f.ino, handle: h) } catch let e as FSError { first.withLock { $0 = e } } catch {}
            firstDone.signal()
        }.start()
        XCTAssertEqual(store.entered.wait(timeout: .now() + 10), .success, "the first upload is in flight")
        try write(fs, f.ino, handle: h, at: 4, "more")
        Thread {
            do { try fs.fsync(f.ino, handle: h) } catch let e as FSError { second.withLock { $0 = e } } catch {}
            secondDone.signal()
        }.start()
        // Let the fsync reach the store (or wait for the held upload) before the first upload goes on.
        _ = secondDone.wait(timeout: .now() + 0.5)
        store.release()
        XCTAssertEqual(firstDone.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(secondDone.wait(timeout: .now() + 10), .success)
        XCTAssertNil(first.withLock { $0 })
        XCTAssertNil(second.withLock { $0 })
        XCTAssertEqual(try body(base, "f"), "datamore")
    }

    // R6: writes after unlink must not keep the staged file alive.
    func testWriteAfterUnlinkLeaksStagedFile() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)
        let (f, h) = try fs.create(parent: Self.root, name: "tmp", permissions: 0o644, flags: O_RDWR, caller: caller)
        try write(fs, f.ino, handle: h, at: 0, "a")
        try fs.unlink(parent: Self.root, name: "tmp")
        try write(fs, f.ino, handle: h, at: 1, "b")
        try fs.flush(f.ino, handle: h)
        fs.release(f.ino, handle: h)
        fs.forget(f.ino, count: 1)
        let staged = try FileManager.default.contentsOfDirectory(atPath: fs.options.cacheDirectory + "/staging")
        XCTAssertEqual(staged, [])
    }

    // R7: a slow CreateMultipartUpload must not stall other operations.
    func testFlushDuringCreateMultipartStallsWholeFileSystem() throws {
        let base = MemoryObjectStore()
        try put(base, "other", "x")
        let store = CreateGateStore(base)
        let options = FileSystemOptions(
            prefix: "", uid: 1, gid: 1, metadataTTL: 0, negativeTTL: 0,
            cacheDirectory: try makeCacheDirectory(), multipartPartSize: 5 << 20)
        let fs = try FileSystem(store: store, options: options, logger: .init(label: "r7"))
        let (f, h) = try fs.create(parent: Self.root, name: "big", permissions: 0o644, flags: O_WRONLY, caller: caller)
        let part = [UInt8](repeating: 1, count: 5 << 20)
        let written = DispatchSemaphore(value: 0)
        let flushed = DispatchSemaphore(value: 0)
        Thread {
            part.withUnsafeBytes { _ = try? fs.write(f.ino, handle: h, offset: 0, data: $0) }
            written.signal()
            try? fs.flush(f.ino, handle: h)
            flushed.signal()
        }.start()
        XCTAssertEqual(store.entered.wait(timeout: .now() + 10), .success, "CreateMultipartUpload is in flight")
        // While it is held, another operation answers: it must not wait for the store's reply.
        let answered = DispatchSemaphore(value: 0)
        Thread {
            _ = try? fs.getattr(Self.root)
            answered.signal()
        }.start()
        let stalled = answered.wait(timeout: .now() + 10) == .timedOut
        store.release()
        XCTAssertFalse(stalled, "getattr waited for CreateMultipartUpload")
        XCTAssertEqual(written.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(flushed.wait(timeout: .now() + 10), .success)
        if stalled { _ = answered.wait(timeout: .now() + 10) }
        XCTAssertEqual(try base.head("big").size, UInt64(part.count))
    }
}

/// Holds the first CreateMultipartUpload at the store's door until `release()`; `entered` says it arrived.
private final class CreateGateStore: ForwardingObjectStore {
    let base: any ObjectStore
    let entered = DispatchSemaphore(value: 0)
    private let gate = DispatchSemaphore(value: 0)
    private let first = Mutex(true)

    init(_ base: any ObjectStore) { self.base = base }

    func release() { gate.signal() }

    func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        if first.withLock({ was in
            defer { was = false }
            return was
        }) {
            entered.signal()
            gate.wait()
        }
        return try base.createMultipartUpload(key, options: options)
    }
}
