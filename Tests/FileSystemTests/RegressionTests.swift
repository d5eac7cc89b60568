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
        let (tmp, h) = try fs.create(parent: Self.root, name: "tmp", permissions: 0o644, flags: O_WRONLY, caller: caller)
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
        do { try fs.fsync(f.ino, handle: h); try fs.flush(f.ino, handle: h) } catch { err = error }
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
        let store = DelayingStore(base)
        let fs = try makeFileSystem(store)
        let (f, h) = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, f.ino, handle: h, at: 0, "data")
        store.putDelays.withLock { $0 = [1.0] }
        let h2 = try fs.open(f.ino, flags: O_RDONLY).handle
        let t = Thread { try? fs.flush(f.ino, handle: h) }
        t.start()
        usleep(200_000)
        try fs.flush(f.ino, handle: h2)   // close() of the other descriptor
        let present = (try? base.head("f")) != nil
        usleep(1_200_000)
        XCTAssertTrue(present, "close() returned 0 before the content reached the store")
    }

    // R5: a write + fsync during the first upload of a new file must not fail with a stale condition.
    func testWriteAndFlushDuringUploadIsSpuriousStale() throws {
        let base = MemoryObjectStore()
        let store = DelayingStore(base)
        let fs = try makeFileSystem(store)
        let (f, h) = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, f.ino, handle: h, at: 0, "data")
        store.putDelays.withLock { $0 = [1.0] }
        let first = Mutex<FSError?>(nil)
        let t = Thread { do { try fs.flush(f.ino, handle: h) } catch let e as FSError { first.withLock { $0 = e } } catch {} }
        t.start()
        usleep(200_000)
        try write(fs, f.ino, handle: h, at: 4, "more")
        var second: FSError?
        do { try fs.fsync(f.ino, handle: h) } catch { second = error }
        usleep(1_200_000)
        XCTAssertNil(first.withLock { $0 }); XCTAssertNil(second)
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
        let store = DelayingStore(base)
        let options = FileSystemOptions(prefix: "", uid: 1, gid: 1, metadataTTL: 0, negativeTTL: 0,
                                        cacheDirectory: try makeCacheDirectory(), multipartPartSize: 5 << 20)
        let fs = try FileSystem(store: store, options: options, logger: .init(label: "r7"))
        let (f, h) = try fs.create(parent: Self.root, name: "big", permissions: 0o644, flags: O_WRONLY, caller: caller)
        store.createDelay.withLock { $0 = 3.0 }
        let part = [UInt8](repeating: 1, count: 5 << 20)
        let w = Thread { part.withUnsafeBytes { _ = try? fs.write(f.ino, handle: h, offset: 0, data: $0) } }
        w.start()
        usleep(300_000)
        let fl = Thread { try? fs.flush(f.ino, handle: h) }
        fl.start()
        usleep(300_000)
        let start = Date()
        _ = try? fs.getattr(Self.root)
        let waited = Date().timeIntervalSince(start)
        XCTAssertLessThan(waited, 0.5)
        sleep(4)
    }
}
