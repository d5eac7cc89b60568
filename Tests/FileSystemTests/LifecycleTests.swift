import Foundation
import Glibc
import ObjectStore
import Synchronization
import TestSupport
import XCTest

@testable import FileSystem

/// The file lifecycle (`ContentState`): its transitions, and every operation that meets an upload in flight
/// (held at the store's door by `HoldingStore`) waiting for it instead of racing it.
final class LifecycleTests: FileSystemTestCase {
    // MARK: The state machine, state × event

    func testTransitionTable() {
        typealias Event = (String, (inout ContentState) -> Void)
        let events: [Event] = [
            ("write", { $0.contentChanged() }),
            ("begin", { _ = $0.beginUpload() }),
            ("stored", { $0.uploadStored() }),
            ("unreachable", { $0.uploadFailed(conflict: false) }),
            ("conflict", { $0.uploadFailed(conflict: true) }),
            ("detach", { $0.detach() }),
            ("abandon", { $0.abandon() }),
        ]
        let states: [ContentState] = [
            .clean, .pending, .uploading(rewritten: false), .uploading(rewritten: true),
            .inRecovery, .detached,
        ]
        // Expected state after each event, per starting state, in the order of `events`.
        let expected: [ContentState: [ContentState]] = [
            .clean: [.pending, .clean, .clean, .clean, .clean, .detached, .clean],
            .pending: [.pending, .uploading(rewritten: false), .pending, .pending, .pending, .detached, .inRecovery],
            .uploading(rewritten: false): [
                .uploading(rewritten: true), .uploading(rewritten: false), .clean,
                .pending, .inRecovery, .detached, .uploading(rewritten: false),
            ],
            .uploading(rewritten: true): [
                .uploading(rewritten: true), .uploading(rewritten: true), .pending,
                .pending, .inRecovery, .detached, .uploading(rewritten: true),
            ],
            .inRecovery: [.pending, .inRecovery, .inRecovery, .inRecovery, .inRecovery, .detached, .inRecovery],
            .detached: [.detached, .detached, .detached, .detached, .detached, .detached, .detached],
        ]
        for state in states {
            for (index, (name, event)) in events.enumerated() {
                var value = state
                event(&value)
                XCTAssertEqual(value, expected[state]![index], "\(state) --\(name)-->")
            }
        }
    }

    // MARK: Operations meeting an upload in flight

    /// Creates `f` with `text`, then starts its upload (a flush) on another thread, held in the store.
    private func uploadInFlight(_ store: HoldingStore, _ fs: FileSystem, text: String = "hello world")
        throws -> (ino: UInt64, handle: UInt64, flushed: DispatchGroup, result: Locked<FSError?>)
    {
        let (file, handle) = try fs.create(
            parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY,
            caller: caller)
        try write(fs, file.ino, handle: handle, at: 0, text)
        store.hold("f")
        let flushed = DispatchGroup()
        let result = Locked<FSError?>(nil)
        DispatchQueue.global().async(group: flushed) {
            do throws(FSError) { try fs.flush(file.ino, handle: handle) } catch {
                let e = error
                result.update { $0 = e }
            }
        }
        XCTAssertEqual(store.entered.wait(timeout: .now() + 10), .success)
        return (file.ino, handle, flushed, result)
    }

    /// Runs `body` on another thread, releases the held upload once `body` has started, and waits for both.
    private func whileHeld(
        _ store: HoldingStore,
        _ flight: (
            ino: UInt64, handle: UInt64, flushed: DispatchGroup,
            result: Locked<FSError?>
        ),
        _ body: @escaping @Sendable () throws(FSError) -> Void
    ) -> FSError? {
        let done = DispatchGroup()
        let started = DispatchSemaphore(value: 0)
        let failure = Locked<FSError?>(nil)
        DispatchQueue.global().async(group: done) {
            started.signal()
            do throws(FSError) { try body() } catch {
                let e = error
                failure.update { $0 = e }
            }
        }
        started.wait()
        store.release()
        XCTAssertEqual(flight.flushed.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        XCTAssertNil(flight.result.value, "the upload itself must succeed")
        return failure.value
    }

    func testUnlinkDuringUploadLeavesNothingBehind() throws {
        let base = MemoryObjectStore()
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let flight = try uploadInFlight(store, fs)
        XCTAssertNil(whileHeld(store, flight) { () throws(FSError) in try fs.unlink(parent: Self.root, name: "f") })
        fs.release(flight.ino, handle: flight.handle)
        XCTAssertEqual(try keys(base), [], "an upload in flight must not re-create an unlinked file")
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "f") }
    }

    func testRenameDuringUploadMovesTheUploadedContent() throws {
        let base = MemoryObjectStore()
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let flight = try uploadInFlight(store, fs)
        XCTAssertNil(
            whileHeld(store, flight) { () throws(FSError) in
                try fs.rename(parent: Self.root, name: "f", newParent: Self.root, newName: "g", noReplace: false)
            })
        try write(fs, flight.ino, handle: flight.handle, at: 11, "!")
        try fs.flush(flight.ino, handle: flight.handle)
        fs.release(flight.ino, handle: flight.handle)
        XCTAssertEqual(try keys(base), ["g"])
        XCTAssertEqual(try body(base, "g"), "hello world!")
        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "g").ino, flight.ino)
    }

    func testChmodDuringUploadReachesTheStore() throws {
        let base = MemoryObjectStore()
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let flight = try uploadInFlight(store, fs)
        XCTAssertNil(
            whileHeld(store, flight) { () throws(FSError) in
                _ = try fs.setattr(flight.ino, AttributeChanges(permissions: 0o600))
            })
        fs.release(flight.ino, handle: flight.handle)
        XCTAssertEqual(try base.head("f").metadata?["mode"], String(UInt32(S_IFREG) | 0o600))
        XCTAssertEqual(try body(base, "f"), "hello world")
    }

    func testTruncateDuringUploadIsUploadedNext() throws {
        let base = MemoryObjectStore()
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let flight = try uploadInFlight(store, fs)
        XCTAssertNil(
            whileHeld(store, flight) { () throws(FSError) in
                _ = try fs.setattr(flight.ino, AttributeChanges(size: 5))
            })
        try fs.flush(flight.ino, handle: flight.handle)
        fs.release(flight.ino, handle: flight.handle)
        XCTAssertEqual(try body(base, "f"), "hello")
    }

    // MARK: Without a race

    /// git: create with O_EXCL, write, chmod by path while open, close. One PUT, with the new mode, no ESTALE.
    func testChmodOfAPendingFileRidesWithTheUpload() throws {
        let base = MemoryObjectStore()
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "config.lock", permissions: 0o644,
            flags: O_WRONLY | O_EXCL, caller: caller)
        try write(fs, file.ino, handle: handle, at: 0, "[core]\n")
        store.reset()
        _ = try fs.setattr(file.ino, AttributeChanges(permissions: 0o664))
        XCTAssertEqual(store.total, 0, "a chmod of a file not uploaded yet must not upload it")
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        try fs.rename(parent: Self.root, name: "config.lock", newParent: Self.root, newName: "config", noReplace: false)
        XCTAssertEqual(store.count(.put), 1)
        XCTAssertEqual(try base.head("config").metadata?["mode"], String(UInt32(S_IFREG) | 0o664))
        XCTAssertEqual(try body(base, "config"), "[core]\n")
    }

    /// `: > f` on a store that is down: the close reports it (the new empty file is uploaded at its flush).
    func testEmptyNewFileWhoseUploadFailsIsReportedAtClose() throws {
        let store = FailingStore(MemoryObjectStore())
        let fs = try makeFileSystem(store)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "empty", permissions: 0o644, flags: O_WRONLY,
            caller: caller)
        store.failsWrites = true
        assertFails(.io("")) { () throws(FSError) in try fs.flush(file.ino, handle: handle) }
        fs.release(file.ino, handle: handle)
        XCTAssertFalse(recoveryFiles(fs).data.isEmpty, "the content is kept")
    }

    func testUnlinkedOpenFileHasNoLinksAndKeepsItsContent() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "kept")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")
        let opened = try fs.open(file.ino, flags: O_RDONLY)
        try fs.unlink(parent: Self.root, name: "f")
        XCTAssertEqual(try fs.getattr(file.ino).linkCount, 0)
        XCTAssertEqual(try readAll(fs, file.ino, handle: opened.handle), "kept")
        fs.release(file.ino, handle: opened.handle)
        XCTAssertEqual(try keys(store), [])
    }

    /// truncate(2) by name downloads the object into a new staged copy; the last descriptor closing meanwhile must
    /// not drop that copy under it (it wrote into a closed descriptor: EIO, or another file's once the number is
    /// reused), and the truncated content is uploaded.
    func testATruncateByNameOutlivesTheLastCloseDuringItsDownload() throws {
        let base = MemoryObjectStore()
        let content = String(repeating: "a", count: 100_000)
        try put(base, "f", content)
        let store = GetGateStore(base)
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")
        let reader = try fs.open(file.ino, flags: O_RDONLY)
        store.holdNextGet()
        let failure = Locked<FSError?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            do throws(FSError) {
                _ = try fs.setattr(file.ino, AttributeChanges(size: 50_000))
            } catch { failure.update { $0 = error } }
            done.signal()
        }.start()
        store.entered.wait()
        fs.release(file.ino, handle: reader.handle)
        store.release()
        done.wait()
        XCTAssertNil(failure.value)
        let stored = try base.get("f").body
        XCTAssertEqual(stored.count, 50_000)
        XCTAssertTrue(stored == Data(content.utf8.prefix(50_000)), "the object's first 50,000 bytes")
    }

    /// unlink of a file still open downloads a copy for its descriptors; their last close meanwhile must not drop
    /// that copy under the download (the unlink failed with EIO).
    func testAnUnlinkOutlivesTheLastCloseDuringItsDownload() throws {
        let base = MemoryObjectStore()
        try put(base, "f", String(repeating: "a", count: 100_000))
        let store = GetGateStore(base)
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")
        let reader = try fs.open(file.ino, flags: O_RDONLY)
        store.holdNextGet()
        let failure = Locked<FSError?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            do throws(FSError) {
                try fs.unlink(parent: Self.root, name: "f")
            } catch { failure.update { $0 = error } }
            done.signal()
        }.start()
        store.entered.wait()
        fs.release(file.ino, handle: reader.handle)
        store.release()
        done.wait()
        XCTAssertNil(failure.value)
        XCTAssertEqual(try keys(base), [])
        let staging = try FileManager.default.contentsOfDirectory(atPath: fs.options.cacheDirectory + "/staging")
        XCTAssertEqual(staging.filter { $0.hasPrefix("staged-") }, [], "the copy went with the unlink")
    }

    /// A chmod while the content downloads into the staged copy (truncate(2) here) moves the node to the version of
    /// its metadata copy (a new one on GCS, local, memory), whose bytes are those downloaded: the download goes on
    /// from that version and leaves the node at it. Before, a chmod before the GET's answer failed the download
    /// with ESTALE (another version than the one at open), one after it was undone (the node set back to the version
    /// downloaded), so the next upload, conditional on it, failed with ESTALE.
    func testAChmodDuringADownloadLeavesTheNodeAtTheVersionOfItsCopy() throws {
        for heldReply in [false, true] {
            let base = MemoryObjectStore()
            try put(base, "f", "hello world")
            let store = GetGateStore(base)
            let fs = try makeFileSystem(store)
            let file = try fs.lookup(parent: Self.root, name: "f")
            let handle = try fs.open(file.ino, flags: O_RDWR).handle
            store.holdNextGet(reply: heldReply)
            let failure = Locked<FSError?>(nil)
            let done = DispatchSemaphore(value: 0)
            Thread {
                do throws(FSError) {
                    _ = try fs.setattr(file.ino, AttributeChanges(size: 5))
                } catch { failure.update { $0 = error } }
                done.signal()
            }.start()
            store.entered.wait()
            _ = try fs.setattr(file.ino, AttributeChanges(permissions: 0o600))
            store.release()
            done.wait()
            XCTAssertNil(failure.value, "the truncate (the GET's reply held: \(heldReply))")
            XCTAssertNoThrow(try fs.flush(file.ino, handle: handle), "the upload (the GET's reply held: \(heldReply))")
            fs.release(file.ino, handle: handle)
            XCTAssertEqual(try body(base, "f"), "hello")
            XCTAssertEqual(try base.head("f").metadata?["mode"], String(UInt32(S_IFREG) | 0o600))
        }
    }

    /// A copy marked outdated (a rename's copy or a lock's revalidation moved the version) while its download runs
    /// stays so when the download ends: it is never taken as whole, so never cached as the new version; emptied for
    /// the new version, it is whole again once filled.
    func testACopyMarkedOutdatedDuringItsDownloadStaysOutdated() throws {
        let directory = try makeCacheDirectory()
        let staged = try StagedFile(directory: directory, loaded: false)
        defer { staged.discard() }
        try staged.prepare { _ throws(FSError) in staged.markOutdated() }
        XCTAssertFalse(staged.isLoaded, "outdated during the download")
        _ = staged.forgetContent { () }
        try staged.prepare { _ throws(FSError) in }
        XCTAssertTrue(staged.isLoaded, "filled again after it was emptied")
    }

    /// Session 9's review: a lock's revalidation checked the copy clean, then emptied it; a write that had staged
    /// the copy before the check put its bytes in between, and the next upload went without them. The emptying
    /// now decides holding the copy, so it waits for a write in flight and sees it marked.
    func testEmptyingACleanCopyWaitsForAWriteInFlightAndKeepsIt() throws {
        let directory = try makeCacheDirectory()
        let staged = try StagedFile(directory: directory, loaded: true)
        defer { staged.discard() }
        let marked = Atomic<Bool>(false)  // the node's `contentChanged`, as `write` does it after the bytes
        let bytesIn = DispatchSemaphore(value: 0)
        let finishWrite = DispatchSemaphore(value: 0)
        let writeDone = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? staged.change { () throws(FSError) in
                var failure: FSError?
                Array("mine".utf8).withUnsafeBytes { bytes in
                    do throws(FSError) { try staged.write(bytes, at: 0) } catch { failure = error }
                }
                if let failure { throw failure }
                bytesIn.signal()
                finishWrite.wait()
                marked.store(true, ordering: .releasing)
            }
            writeDone.signal()
        }
        bytesIn.wait()
        let emptied = Mutex<Bool?>(nil)
        let decided = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            let outcome = staged.forgetContent { marked.load(ordering: .acquiring) ? nil : () }
            emptied.withLock { $0 = outcome != nil }
            decided.signal()
        }
        // Not a speed check: the emptying must not decide at all while the write is between its bytes and its mark.
        let early = decided.wait(timeout: .now() + .milliseconds(300))
        XCTAssertEqual(early, .timedOut, "decided under a write")
        finishWrite.signal()
        writeDone.wait()
        if early == .timedOut { decided.wait() }
        XCTAssertEqual(emptied.withLock { $0 }, false, "a copy with a write on it is not clean")
        XCTAssertEqual(String(decoding: try staged.read(at: 0, count: 16), as: UTF8.self), "mine")
        XCTAssertTrue(staged.isLoaded)
    }

    /// A write that staged the copy before a revalidation emptied it does not write into the empty file (whose
    /// next read would download the new version over it): `change` refuses, and the caller stages again.
    func testAChangeToACopyEmptiedSinceItWasStagedIsRefused() throws {
        let directory = try makeCacheDirectory()
        let staged = try StagedFile(directory: directory, loaded: true)
        defer { staged.discard() }
        XCTAssertNotNil(staged.forgetContent { () })
        var ran = false
        XCTAssertNil(try staged.change { () throws(FSError) in ran = true })
        XCTAssertFalse(ran)
        try staged.prepare { _ throws(FSError) in }  // staged again
        XCTAssertNotNil(try staged.change { () throws(FSError) in ran = true })
        XCTAssertTrue(ran)
    }
}

/// Holds the next GET at the store's door until `release()` (with `reply`: once the store has answered it, so the
/// caller has not heard yet); `entered` says it arrived.
private final class GetGateStore: ForwardingObjectStore {
    let base: any ObjectStore
    let entered = DispatchSemaphore(value: 0)
    private let gate = DispatchSemaphore(value: 0)
    /// nil: not armed; else whether the reply is held (true) or the request (false).
    private let armed = Mutex<Bool?>(nil)

    init(_ base: any ObjectStore) { self.base = base }

    func holdNextGet(reply: Bool = false) { armed.withLock { $0 = reply } }
    func release() { gate.signal() }

    func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        let held = armed.withLock { armed in
            defer { armed = nil }
            return armed
        }
        if held == false {
            entered.signal()
            gate.wait()
        }
        let data = try base.get(key, range: range)
        if held == true {
            entered.signal()
            gate.wait()
        }
        return data
    }
}
