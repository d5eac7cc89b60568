import FileSystem
import Foundation
import Glibc
import Logging
import ObjectStore
import Synchronization
import TestSupport
import XCTest

/// The write path's cost and its crash safety together: a new file's staging sidecar is written when there is
/// something to lose (its first byte, a truncate up, a close that could not upload), not at `create`, which the
/// kernel runs under the directory's exclusive lock; a streamed upload sends what the staged file holds after
/// rewrites and truncates of bytes not sent yet.
final class WritePathTests: FileSystemTestCase {
    static let partSize = 1 << 20

    private func streaming(_ store: any ObjectStore) throws -> FileSystem {
        let options = FileSystemOptions(
            uid: 100, gid: 200, metadataTTL: 60, negativeTTL: 60, cacheDirectory: try makeCacheDirectory(),
            multipartPartSize: Self.partSize)
        return try FileSystem(store: store, options: options, logger: Logger(label: "test"))
    }

    private func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 131) >> 3) ^ seed }
    }

    private func put(_ fs: FileSystem, _ ino: UInt64, _ handle: UInt64, _ bytes: ArraySlice<UInt8>, at offset: Int)
        throws
    {
        _ = try Array(bytes).withUnsafeBytes { (buffer) throws(FSError) in
            try fs.write(ino, handle: handle, offset: UInt64(offset), data: buffer)
        }
    }

    func testRewritesAndTruncatesOfUnsentBytesUploadWhatTheFileHolds() throws {
        let store = CountingStore(MemoryObjectStore())
        let fs = try streaming(store)
        let part = Self.partSize
        var content = pattern(4 * part + 777, seed: 9)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "mixed", permissions: 0o644, flags: O_WRONLY, caller: caller)
        // Part 1: written, rewritten in its middle, finished; then in order.
        try put(fs, file.ino, handle, content[0..<5000], at: 0)
        let patch = pattern(300, seed: 0x5a)
        content.replaceSubrange(1000..<1300, with: patch)
        try put(fs, file.ino, handle, patch[...], at: 1000)
        try put(fs, file.ino, handle, content[5000..<part], at: 5000)
        try put(fs, file.ino, handle, content[part...], at: part)
        // A truncate inside the unsent tail, then writing on from there.
        _ = try fs.setattr(file.ino, AttributeChanges(size: UInt64(4 * part + 100)))
        content.removeLast(677)
        let tail = pattern(2 * part, seed: 0x33)
        try put(fs, file.ino, handle, tail[...], at: 4 * part + 100)
        content += tail
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(Array(try store.get("mixed").body), content)
        XCTAssertEqual(store.count(.put), 0, "the stream held: every byte went up as parts")
    }

    func testAFlushBeforeTheFirstPartIsAPutAndTheStreamGoesOn() throws {
        let store = CountingStore(MemoryObjectStore())
        let fs = try streaming(store)
        let content = pattern(Self.partSize + 10, seed: 1)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "late", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try put(fs, file.ino, handle, content[0..<1000], at: 0)
        try fs.flush(file.ino, handle: handle)  // a PUT of what is there: the stream has not started
        try put(fs, file.ino, handle, content[1000...], at: 1000)
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(Array(try store.get("late").body), content)
        XCTAssertEqual(store.count(.put), 1)
        XCTAssertEqual(store.count(.uploadPart), 2)
    }

    /// A part in flight holds no copy of its bytes: it goes up as a range of the staged file, which the HTTP client
    /// reads as it sends (4 writers × 4 parts of 8 MiB in memory were half the daemon's peak RSS).
    func testStreamedPartsGoUpAsRangesOfTheStagedFile() throws {
        let store = BodyRecordingStore(MemoryObjectStore())
        let fs = try streaming(store)
        let part = Self.partSize
        let content = pattern(3 * part + 500, seed: 4)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "ranged", permissions: 0o644, flags: O_WRONLY, caller: caller)
        for offset in stride(from: 0, to: content.count, by: 64 << 10) {
            try put(fs, file.ino, handle, content[offset..<min(content.count, offset + (64 << 10))], at: offset)
        }
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(Array(try store.get("ranged").body), content)
        let sent = store.parts.withLock { $0 }.sorted { $0.number < $1.number }
        XCTAssertEqual(sent.map(\.number), [1, 2, 3, 4])
        XCTAssertEqual(
            sent.map(\.range),
            [
                0..<UInt64(part), UInt64(part)..<UInt64(2 * part), UInt64(2 * part)..<UInt64(3 * part),
                UInt64(3 * part)..<UInt64(3 * part + 500),
            ])
        XCTAssertEqual(Set(sent.map(\.path)).count, 1, "all from the one staged file")
    }

    /// Streamed parts go unsigned, each with the CRC32C of its bytes (which the server checks): computed as the
    /// bytes arrive while the file is written in order, read back from the staged file after a write out of order.
    /// The memory store, as SeaweedFS, refuses a wrong one and a completion that lacks one.
    func testStreamedPartsCarryTheCRC32COfTheirBytes() throws {
        let part = Self.partSize
        for inOrder in [true, false] {
            let store = BodyRecordingStore(MemoryObjectStore())
            let fs = try streaming(store)
            var content = pattern(3 * part + 500, seed: inOrder ? 6 : 7)
            let (file, handle) = try fs.create(
                parent: Self.root, name: "crc", permissions: 0o644, flags: O_WRONLY, caller: caller)
            if inOrder {
                // Pieces that straddle part boundaries.
                for offset in stride(from: 0, to: content.count, by: 100_000) {
                    try put(fs, file.ino, handle, content[offset..<min(content.count, offset + 100_000)], at: offset)
                }
            } else {
                // A gap left and filled, and a rewrite of bytes not yet sent.
                try put(fs, file.ino, handle, content[0..<1000], at: 0)
                try put(fs, file.ino, handle, content[2000..<5000], at: 2000)
                try put(fs, file.ino, handle, content[1000..<2000], at: 1000)
                let patch = pattern(100, seed: 0x77)
                content.replaceSubrange(3000..<3100, with: patch)
                try put(fs, file.ino, handle, patch[...], at: 3000)
                try put(fs, file.ino, handle, content[5000...], at: 5000)
            }
            try fs.flush(file.ino, handle: handle)
            fs.release(file.ino, handle: handle)
            XCTAssertEqual(Array(try store.get("crc").body), content)
            let sent = store.parts.withLock { $0 }.sorted { $0.number < $1.number }
            XCTAssertEqual(sent.map(\.number), [1, 2, 3, 4])
            for piece in sent {
                let range = try XCTUnwrap(piece.range)
                XCTAssertEqual(
                    piece.crc32c, CRC32C.checksum(Data(content[Int(range.lowerBound)..<Int(range.upperBound)])),
                    "part \(piece.number), in order: \(inOrder)")
            }
        }
    }

    private func journaled(_ store: any ObjectStore) throws -> FileSystem {
        let cache = try makeCacheDirectory()
        let journal = try StagingJournal(
            directory: cache + "/staging", store: store.description, context: [:], logger: Logger(label: "test"))
        let options = FileSystemOptions(
            prefix: "", uid: 100, gid: 200, readOnly: false, metadataTTL: 60, negativeTTL: 60,
            cacheDirectory: cache)
        return try FileSystem(store: store, options: options, logger: Logger(label: "test"), stagingJournal: journal)
    }

    private func sidecars(_ fs: FileSystem) -> [String] {
        let staging = fs.options.cacheDirectory + "/staging"
        return ((try? FileManager.default.contentsOfDirectory(atPath: staging)) ?? []).filter {
            $0.hasSuffix(".journal")
        }
    }

    func testANewFilesSidecarIsWrittenByItsFirstWriteNotByCreate() throws {
        let store = MemoryObjectStore()
        let fs = try journaled(store)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "a.txt", permissions: 0o644, flags: O_WRONLY | O_CREAT, caller: caller)
        XCTAssertEqual(sidecars(fs), [], "nothing written yet: nothing a crash could lose")
        try write(fs, file.ino, handle: handle, at: 0, "precious")
        XCTAssertEqual(sidecars(fs).count, 1, "the written bytes survive a crash of the daemon")
        try write(fs, file.ino, handle: handle, at: 8, " bytes")
        XCTAssertEqual(sidecars(fs).count, 1)
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(sidecars(fs), [], "in the store: nothing left to recover")
        XCTAssertEqual(try body(store, "a.txt"), "precious bytes")
    }

    func testATruncateUpOfANewFileWritesItsSidecar() throws {
        let fs = try journaled(MemoryObjectStore())
        let (file, handle) = try fs.create(
            parent: Self.root, name: "sparse", permissions: 0o644, flags: O_WRONLY | O_CREAT, caller: caller)
        XCTAssertEqual(sidecars(fs), [])
        _ = try fs.setattr(file.ino, AttributeChanges(size: 4096))
        XCTAssertEqual(sidecars(fs).count, 1)
        fs.release(file.ino, handle: handle)
    }

    func testAnEmptyNewFileWhoseUploadFailedKeepsASidecar() throws {
        let store = FailingPutStore(MemoryObjectStore())
        let fs = try journaled(store)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "empty", permissions: 0o644, flags: O_WRONLY | O_CREAT, caller: caller)
        store.failing.store(true, ordering: .relaxed)
        assertFails(.io("")) { () throws(FSError) in try fs.flush(file.ino, handle: handle) }
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(sidecars(fs).count + recoveryFiles(fs).data.count, 1, "the failed close is remembered")
    }
}

/// Records how each part's body was given: the file and range for `.fileRange`, nil range otherwise.
private final class BodyRecordingStore: ForwardingObjectStore {
    struct Part: Sendable {
        var number: Int
        var path: String?
        var range: Range<UInt64>?
        var crc32c: UInt32?
    }
    let base: any ObjectStore
    let parts = Mutex<[Part]>([])

    init(_ base: any ObjectStore) { self.base = base }

    func uploadPart(_ key: String, uploadID: String, number: Int, body: PutBody, crc32c: UInt32?)
        throws(ObjectStoreError) -> String
    {
        let part: Part
        switch body {
        case .fileRange(let path, let offset, let length):
            part = Part(number: number, path: path, range: offset..<(offset + length), crc32c: crc32c)
        default:
            part = Part(number: number, crc32c: crc32c)
        }
        parts.withLock { $0.append(part) }
        return try base.uploadPart(key, uploadID: uploadID, number: number, body: body, crc32c: crc32c)
    }
}

/// Fails every PUT with a transient error while `failing` is set.
private final class FailingPutStore: ForwardingObjectStore {
    let base: any ObjectStore
    let failing = Atomic<Bool>(false)

    init(_ base: any ObjectStore) { self.base = base }

    func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        if failing.load(ordering: .relaxed) { throw .transport("injected: store unreachable") }
        return try base.put(key, body: body, options: options)
    }
}
