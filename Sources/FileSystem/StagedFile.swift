import Foundation
import Synchronization

/// A local file that holds a file's content while it is being written, until it is uploaded on close/fsync.
/// Shared by every open handle of the node, so that writes through one descriptor are seen through another.
final class StagedFile: Sendable {
    let path: String
    let fd: Int32
    /// Whether the object's existing content has been copied in. Held while downloading, so that a
    /// concurrent writer waits for the download instead of writing into a half-filled file.
    private let loaded: Mutex<Bool>
    /// The same, readable without waiting for a download in flight (`stat` asks under the state lock).
    private let loadedFlag: Atomic<Bool>
    /// Set by `markOutdated`, cleared by `forgetContent` only: a download finishing meanwhile does not undo it.
    private let outdated = Atomic<Bool>(false)
    /// A new file's sidecar (`StagingJournal`) waits for its first byte: see `FileSystem.journal`.
    private let journalDeferred = Atomic<Bool>(false)

    init(directory: String, loaded: Bool) throws(FSError) {
        var template = Array((directory + "/staged-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw FSError.io("cannot create staging file in \(directory): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        self.path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.loaded = Mutex(loaded)
        self.loadedFlag = Atomic(loaded)
    }

    /// Whether the file holds the whole content (nothing left to download).
    var isLoaded: Bool { loadedFlag.load(ordering: .acquiring) && !outdated.load(ordering: .acquiring) }

    /// 512-byte blocks the file takes on the local disk: holes (truncate up, a write past the end) take none.
    func allocatedBlocks() -> UInt64? {
        var status = stat()
        guard fstat(fd, &status) == 0 else { return nil }
        return UInt64(max(0, status.st_blocks))
    }

    /// Runs `load` once (until it succeeds) to fill the file with the object's current content.
    func prepare(_ load: (Int32) throws(FSError) -> Void) throws(FSError) {
        try loaded.withLock { (isLoaded: inout Bool) throws(FSError) in
            guard !isLoaded else { return }
            try load(fd)
            isLoaded = true
            loadedFlag.store(true, ordering: .releasing)
        }
    }

    /// The content no longer depends on the object's (O_TRUNC, truncate to 0): waits for a download in flight,
    /// then makes sure none starts later and writes over what comes next.
    func markLoaded() {
        loaded.withLock { isLoaded in
            isLoaded = true
            loadedFlag.store(true, ordering: .releasing)
        }
    }

    /// The node's version just moved past this copy's content, or to a version whose bytes may not be the copy's (a
    /// lock's revalidation, a rename's server-side copy; called under the state lock, so it cannot wait for a
    /// download): from now on the copy counts as not whole — never handed to the block cache as that version —
    /// until `forgetContent` empties it and a download fills it again.
    func markOutdated() { outdated.store(true, ordering: .releasing) }

    /// The object changed in the store and nothing here was written: empty the copy, so that the next read
    /// downloads the new content. `decide` (called holding the copy, so no `change` runs meanwhile; it may take the
    /// state lock: `loaded` → `state`) says whether the copy is still clean, and makes the new version visible;
    /// nil leaves the copy as it is.
    func forgetContent<T>(if decide: () -> T?) -> T? {
        loaded.withLock { isLoaded in
            guard let decided = decide() else { return nil }
            _ = ftruncate(fd, 0)
            isLoaded = false
            loadedFlag.store(false, ordering: .releasing)
            outdated.store(false, ordering: .releasing)
            return decided
        }
    }

    /// Runs `body` — a write into the copy and the node marked changed — with no `forgetContent` between the two,
    /// which would otherwise empty the copy under the write and let the next upload go without it. Nil, without
    /// running `body`, if the copy was emptied since `stage` filled it: the caller stages again. Order: `loaded` →
    /// `state` (and → a stream's condition).
    func change<T>(_ body: () throws(FSError) -> T) throws(FSError) -> T? {
        try loaded.withLock { (isLoaded: inout Bool) throws(FSError) -> T? in
            guard isLoaded else { return nil }
            return try body()
        }
    }

    /// The sidecar of this (still empty, new) file was left for the first write to make.
    func deferJournal() { journalDeferred.store(true, ordering: .releasing) }

    /// Whether a sidecar was deferred and is still to be written; true once (the caller writes it).
    func takeDeferredJournal() -> Bool {
        journalDeferred.load(ordering: .acquiring) && journalDeferred.exchange(false, ordering: .acquiringAndReleasing)
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw errno == ENOSPC
                    ? FSError.noSpace : FSError.io("staging write: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    func read(at offset: UInt64, count: Int) throws(FSError) -> Data {
        var data = Data(count: count)
        let n = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, count, off_t(offset)) }
        guard n >= 0 else { throw FSError.io("staging read: \(String(cString: strerror(errno)))") }
        data.count = n
        return data
    }

    func truncate(to size: UInt64) throws(FSError) {
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw FSError.io("staging truncate: \(String(cString: strerror(errno)))")
        }
    }

    /// Closes and deletes the file; `handOver` may take it first (moving it away, then returning true).
    func discard(handOver: (String) -> Bool = { _ in false }) {
        close(fd)
        if !handOver(path) { unlink(path) }
    }
}
