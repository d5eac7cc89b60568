import FileSystem
import Foundation
import Glibc
import Logging
import ObjectStore
import TestSupport
import XCTest

/// Sequential writes streamed as multipart uploads, and read-ahead for sequential reads.
final class StreamingAndReadAheadTests: FileSystemTestCase {
    static let partSize = 1 << 20

    func makeStreamingFileSystem(_ store: any ObjectStore) throws -> FileSystem {
        let options = FileSystemOptions(
            uid: 100, gid: 200, metadataTTL: 60, negativeTTL: 60,
            cacheDirectory: try makeCacheDirectory(), multipartPartSize: Self.partSize)
        return try FileSystem(store: store, options: options, logger: Logger(label: "bucketfs.tests"))
    }

    func bytes(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31) ^ seed }
    }

    func write(_ fs: FileSystem, _ ino: UInt64, _ handle: UInt64, _ data: [UInt8], at offset: UInt64) throws {
        _ = try data.withUnsafeBytes { (buffer) throws(FSError) in
            try fs.write(ino, handle: handle, offset: offset, data: buffer)
        }
    }

    func testSequentialWriteStreamsPartsBeforeClose() throws {
        let store = CountingStore(MemoryObjectStore())
        let fs = try makeStreamingFileSystem(store)
        let created = try fs.create(parent: Self.root, name: "big", permissions: 0o600, flags: O_WRONLY, caller: caller)
        let content = bytes(3 * Self.partSize + 12345, seed: 7)
        for offset in stride(from: 0, to: content.count, by: 128 << 10) {
            let chunk = Array(content[offset..<min(content.count, offset + (128 << 10))])
            try write(fs, created.attributes.ino, created.handle, chunk, at: UInt64(offset))
        }
        // Before close: an upload is in progress and its full parts are already sent.
        XCTAssertEqual(try store.listMultipartUploads(prefix: "").map(\.key), ["big"])
        // The three full parts go up on worker threads while the file is still open.
        let deadline = Date().addingTimeInterval(10)
        while store.count(.uploadPart) < 3 && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(store.count(.uploadPart), 3)
        XCTAssertThrowsError(try store.head("big"))

        try fs.flush(created.attributes.ino, handle: created.handle)
        fs.release(created.attributes.ino, handle: created.handle)
        XCTAssertEqual(Array(try store.get("big").body), content)
        XCTAssertEqual(store.count(.uploadPart), 4, "three full parts and the rest")
        XCTAssertEqual(store.count(.put), 0, "no second upload of the whole file")
        XCTAssertEqual(try store.listMultipartUploads(prefix: ""), [])
        XCTAssertEqual(try store.head("big").metadata?["mode"], String(0o100600))
    }

    func testSmallFileIsOnePut() throws {
        let store = CountingStore(MemoryObjectStore())
        let fs = try makeStreamingFileSystem(store)
        let created = try fs.create(
            parent: Self.root, name: "small", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, created.attributes.ino, created.handle, bytes(1000, seed: 1), at: 0)
        try fs.flush(created.attributes.ino, handle: created.handle)
        XCTAssertEqual(store.count(.put), 1)
        XCTAssertEqual(store.count(.createMultipartUpload), 0)
        XCTAssertEqual(try store.get("small").body.count, 1000)
    }

    func testRewriteBehindTheStreamFallsBackToOneUploadOfTheWholeFile() throws {
        let store = CountingStore(MemoryObjectStore())
        let fs = try makeStreamingFileSystem(store)
        let created = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        var content = bytes(2 * Self.partSize + 10, seed: 3)
        try write(fs, created.attributes.ino, created.handle, content, at: 0)
        XCTAssertEqual(try store.listMultipartUploads(prefix: "").count, 1)
        // Rewrite the first bytes, which were already streamed: the stream is abandoned (and aborted).
        try write(fs, created.attributes.ino, created.handle, [9, 9, 9], at: 0)
        content.replaceSubrange(0..<3, with: [9, 9, 9])
        XCTAssertEqual(try store.listMultipartUploads(prefix: ""), [])
        try fs.flush(created.attributes.ino, handle: created.handle)
        XCTAssertEqual(Array(try store.get("f").body), content)
        XCTAssertEqual(store.count(.put), 1)
    }

    func testExplicitMtimeSurvivesAStreamedUpload() throws {
        let store = MemoryObjectStore()
        let fs = try makeStreamingFileSystem(store)
        let created = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, created.attributes.ino, created.handle, bytes(2 * Self.partSize, seed: 5), at: 0)
        let stamp = FileTime(seconds: 1_577_934_245, nanoseconds: 5)
        _ = try fs.setattr(created.attributes.ino, AttributeChanges(permissions: 0o640, mtime: stamp))
        try fs.flush(created.attributes.ino, handle: created.handle)
        let metadata = try XCTUnwrap(try store.head("f").metadata)
        XCTAssertEqual(metadata["mtime"], stamp.metadataValue)
        XCTAssertEqual(metadata["mode"], String(0o100640))
    }

    func testSequentialReadFetchesLargeRangesAndReturnsTheRightBytes() throws {
        let base = MemoryObjectStore()
        let content = bytes(6 << 20, seed: 11)
        try base.put("r", data: Data(content))
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let ino = try fs.lookup(parent: Self.root, name: "r").ino
        let handle = try fs.open(ino, flags: O_RDONLY).handle
        var read: [UInt8] = []
        let request = 128 << 10
        while read.count < content.count {
            read += Array(try fs.read(ino, handle: handle, offset: UInt64(read.count), size: request))
        }
        fs.release(ino, handle: handle)
        XCTAssertEqual(read, content)
        // 48 kernel-sized reads; the growing window turns them into far fewer GETs.
        XCTAssertLessThanOrEqual(store.count(.get), 12)
    }

    func testReadingPastTheLargestWindowKeepsWholeParts() throws {
        // 96 MiB: longer than the 64 MiB window, where each read used to add a 128 KiB GET at the window's edge.
        let base = MemoryObjectStore()
        try base.put("long", data: Data(count: 96 << 20))
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let ino = try fs.lookup(parent: Self.root, name: "long").ino
        let handle = try fs.open(ino, flags: O_RDONLY).handle
        var offset: UInt64 = 0
        while offset < (96 << 20) {
            offset += UInt64(try fs.read(ino, handle: handle, offset: offset, size: 128 << 10).count)
        }
        fs.release(ino, handle: handle)
        XCTAssertEqual(offset, 96 << 20)
        // A stream (the first large read), or parts of at least 1 MiB (a quarter of the window while it grows), never a 128 KiB
        // sliver per kernel read at the window's edge (that was ~700 GETs).
        XCTAssertLessThanOrEqual(store.count(.get), 40)
    }

    func testSeekReadsTheRightBytes() throws {
        let store = MemoryObjectStore()
        let content = bytes(5 << 20, seed: 13)
        try store.put("s", data: Data(content))
        let fs = try makeFileSystem(store)
        let ino = try fs.lookup(parent: Self.root, name: "s").ino
        let handle = try fs.open(ino, flags: O_RDONLY).handle
        for offset in [4_000_000, 17, 2_500_000, 5_242_000, 1 << 20] {
            let got = Array(try fs.read(ino, handle: handle, offset: UInt64(offset), size: 4096))
            XCTAssertEqual(got, Array(content[offset..<min(content.count, offset + 4096)]), "at \(offset)")
        }
        XCTAssertEqual(try fs.read(ino, handle: handle, offset: UInt64(content.count), size: 10).count, 0)
        fs.release(ino, handle: handle)
    }
}

final class StagingLimitTests: FileSystemTestCase {
    private func write(_ fs: FileSystem, _ file: (attributes: FileAttributes, handle: UInt64), count: Int) throws {
        let chunk = [UInt8](repeating: 1, count: count)
        _ = try chunk.withUnsafeBytes { (buffer) throws(FSError) in
            try fs.write(file.attributes.ino, handle: file.handle, offset: 0, data: buffer)
        }
    }

    func testWritesBeyondTheStagingLimitFailWithENOSPCUntilSpaceIsFreed() throws {
        let store = MemoryObjectStore()
        let options = FileSystemOptions(
            uid: 100, gid: 200, metadataTTL: 60, negativeTTL: 60,
            cacheDirectory: try makeCacheDirectory(), stagingLimit: 1 << 20)
        let fs = try FileSystem(store: store, options: options, logger: Logger(label: "bucketfs.tests"))
        let a = try fs.create(parent: Self.root, name: "a", permissions: 0o644, flags: O_WRONLY, caller: caller)
        let b = try fs.create(parent: Self.root, name: "b", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, a, count: 600 << 10)
        XCTAssertThrowsError(try write(fs, b, count: 600 << 10)) { XCTAssertEqual(($0 as? FSError)?.errno, ENOSPC) }
        // Once a is uploaded and closed its staged copy goes, and b fits.
        try fs.flush(a.attributes.ino, handle: a.handle)
        fs.release(a.attributes.ino, handle: a.handle)
        try write(fs, b, count: 600 << 10)
        try fs.flush(b.attributes.ino, handle: b.handle)
        XCTAssertEqual(try store.get("b").body.count, 600 << 10)
    }
}

/// Appending to a large stored object: the unchanged parts are copied on the server, only the tail is uploaded.
final class PartReuseTests: FileSystemTestCase {
    func makeStreamingFileSystem(_ store: any ObjectStore) throws -> FileSystem {
        let options = FileSystemOptions(
            uid: 100, gid: 200, metadataTTL: 60, negativeTTL: 60,
            cacheDirectory: try makeCacheDirectory(), multipartPartSize: 5 << 20)
        return try FileSystem(store: store, options: options, logger: Logger(label: "bucketfs.tests"))
    }

    func testAppendCopiesUnchangedPartsAndUploadsTheTail() throws {
        let memory = MemoryObjectStore()
        let original = Data((0..<(12 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try memory.put("log", data: original, options: PutOptions(metadata: ["mode": "33188"]))
        let counting = CountingStore(memory)
        let fs = try makeStreamingFileSystem(counting)
        let ino = try fs.lookup(parent: FileSystemTestCase.root, name: "log").ino
        let handle = try fs.open(ino, flags: O_WRONLY | O_APPEND).handle
        counting.reset()
        try write(fs, ino, handle: handle, at: 12 << 20, "appended line\n")
        try fs.flush(ino, handle: handle)
        fs.release(ino, handle: handle)
        XCTAssertEqual(counting.count(.uploadPartCopy), 2)  // 2 × 5 MiB copied on the server
        XCTAssertEqual(counting.count(.uploadPart), 1)  // 2 MiB + the new line from the staged file
        XCTAssertEqual(counting.count(.completeMultipartUpload), 1)
        XCTAssertEqual(counting.count(.put), 0)
        XCTAssertEqual(try memory.get("log").body, original + Data("appended line\n".utf8))
        XCTAssertEqual(try memory.head("log").metadata?["mode"], "33188")
    }

    func testChangeNearTheStartUploadsTheWholeFile() throws {
        let memory = MemoryObjectStore()
        try memory.put("log", data: Data(repeating: 7, count: 12 << 20))
        let counting = CountingStore(memory)
        let fs = try makeStreamingFileSystem(counting)
        let ino = try fs.lookup(parent: FileSystemTestCase.root, name: "log").ino
        let handle = try fs.open(ino, flags: O_RDWR).handle
        counting.reset()
        try write(fs, ino, handle: handle, at: 100, "x")
        try fs.flush(ino, handle: handle)
        fs.release(ino, handle: handle)
        XCTAssertEqual(counting.count(.uploadPartCopy), 0)
        XCTAssertEqual(counting.count(.put), 1)
        XCTAssertEqual(try memory.get("log", range: 100..<101).body, Data("x".utf8))
    }

    func testConflictDuringReuseStillFailsAndKeepsTheContent() throws {
        let memory = MemoryObjectStore()
        try memory.put("log", data: Data(repeating: 7, count: 12 << 20))
        let fs = try makeStreamingFileSystem(memory)
        let ino = try fs.lookup(parent: FileSystemTestCase.root, name: "log").ino
        let handle = try fs.open(ino, flags: O_WRONLY | O_APPEND).handle
        try write(fs, ino, handle: handle, at: 12 << 20, "mine")
        try memory.put("log", data: Data("theirs".utf8))  // another writer, meanwhile
        assertFails(.stale("")) { () throws(FSError) in try fs.flush(ino, handle: handle) }
        fs.release(ino, handle: handle)
        XCTAssertEqual(try memory.get("log").body, Data("theirs".utf8))
        let saved = recoveryFiles(fs).data
        XCTAssertEqual(saved.count, 1)
        XCTAssertEqual(FileManager.default.contents(atPath: saved[0])?.count, (12 << 20) + 4)
    }
}

/// A large file read from its start goes through one streaming GET; a small one known from a lookup is read
/// with the lookup's GET.
final class SequentialStreamTests: FileSystemTestCase {
    func testReadingALargeFileFromTheStartIsOneStreamingRequest() throws {
        let memory = MemoryObjectStore()
        let body = Data((0..<(20 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try memory.put("big", data: body)
        let counting = CountingStore(memory)
        let fs = try makeFileSystem(counting)
        let ino = try fs.lookup(parent: FileSystemTestCase.root, name: "big").ino
        let handle = try fs.open(ino, flags: O_RDONLY).handle
        counting.reset()
        var read = Data()
        while read.count < body.count {
            let piece = try fs.read(ino, handle: handle, offset: UInt64(read.count), size: 1 << 20)
            XCTAssertFalse(piece.isEmpty)
            read.append(piece)
        }
        fs.release(ino, handle: handle)
        XCTAssertEqual(read, body)
        XCTAssertEqual(counting.count(.get), 1)
    }

    func testASeekLeavesTheStreamForRangedReads() throws {
        let memory = MemoryObjectStore()
        let body = Data((0..<(40 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 3) })
        try memory.put("big", data: body)
        let fs = try makeFileSystem(memory)
        let ino = try fs.lookup(parent: FileSystemTestCase.root, name: "big").ino
        let handle = try fs.open(ino, flags: O_RDONLY).handle
        XCTAssertEqual(try fs.read(ino, handle: handle, offset: 0, size: 4096), body.subdata(in: 0..<4096))
        let far = 35 << 20
        XCTAssertEqual(
            try fs.read(ino, handle: handle, offset: UInt64(far), size: 4096), body.subdata(in: far..<(far + 4096)))
        XCTAssertEqual(try fs.read(ino, handle: handle, offset: 8192, size: 100), body.subdata(in: 8192..<8292))
        fs.release(ino, handle: handle)
    }

    func testColdCatOfASmallListedFileIsOneRequest() throws {
        let memory = MemoryObjectStore()
        try memory.put("dir/small", data: Data("hello".utf8))
        let counting = CountingStore(memory)
        let fs = try makeFileSystem(counting, metadataTTL: 0.5)
        let dir = try fs.lookup(parent: FileSystemTestCase.root, name: "dir").ino
        _ = try names(fs, dir)  // a listing knows the file and its size...
        Thread.sleep(forTimeInterval: 0.6)  // ...but that is too old now: the lookup revalidates
        counting.reset()
        let ino = try fs.lookup(parent: dir, name: "small").ino
        let handle = try fs.open(ino, flags: O_RDONLY).handle
        XCTAssertEqual(try readAll(fs, ino, handle: handle), "hello")
        fs.release(ino, handle: handle)
        XCTAssertEqual(
            counting.total, 1,
            "lookup's GET serves the read: \(CountingStore.Operation.allCases.map { "\($0)=\(counting.count($0))" })")
        XCTAssertEqual(counting.count(.get), 1)
        // A changed object is not served from what the lookup read before.
        try memory.put("dir/small", data: Data("changed!".utf8))
        Thread.sleep(forTimeInterval: 0.6)
        let again = try fs.lookup(parent: dir, name: "small").ino
        let second = try fs.open(again, flags: O_RDONLY).handle
        XCTAssertEqual(try readAll(fs, again, handle: second), "changed!")
        fs.release(again, handle: second)
    }
}
