import Foundation
import Glibc
import Logging
import ObjectStore
import TestSupport
import XCTest

@testable import FileSystem

/// Parts of streamed uploads go through the mount's `UploadLane`: threads apart from the I/O pool, so a listing's
/// metadata fetches never wait behind parts, and one bound on parts in flight for every file together.
final class UploadLaneTests: FileSystemTestCase {
    static let partSize = 1 << 20

    private func makeStreamingFileSystem(_ store: any ObjectStore, partsInFlightLimit: Int = 16) throws -> FileSystem {
        var options = FileSystemOptions(
            uid: 100, gid: 200, metadataTTL: 60, negativeTTL: 60, cacheDirectory: try makeCacheDirectory(),
            multipartPartSize: Self.partSize, multipartMaxInFlight: 4)
        options.uploadPartsInFlightLimit = partsInFlightLimit
        return try FileSystem(store: store, options: options, logger: Logger(label: "bucketfs.tests"))
    }

    private func content(_ parts: Int, seed: UInt8) -> [UInt8] {
        (0..<(parts * Self.partSize)).map { UInt8(truncatingIfNeeded: $0 &* 131 >> 3) ^ seed }
    }

    /// Writes `bytes` at `offset` in 256 KiB writes, as the kernel sends them.
    private static func writeParts(
        _ fs: FileSystem, _ file: (ino: UInt64, handle: UInt64), _ bytes: [UInt8], at offset: Int
    ) throws {
        for start in stride(from: 0, to: bytes.count, by: 256 << 10) {
            let chunk = bytes[start..<min(bytes.count, start + (256 << 10))]
            _ = try chunk.withUnsafeBytes { (buffer) throws(FSError) in
                try fs.write(file.ino, handle: file.handle, offset: UInt64(offset + start), data: buffer)
            }
        }
    }

    private func create(_ fs: FileSystem, _ name: String) throws -> (ino: UInt64, handle: UInt64) {
        let created = try fs.create(parent: Self.root, name: name, permissions: 0o644, flags: O_WRONLY, caller: caller)
        return (created.attributes.ino, created.handle)
    }

    private func close(_ fs: FileSystem, _ file: (ino: UInt64, handle: UInt64)) throws {
        try fs.flush(file.ino, handle: file.handle)
        fs.release(file.ino, handle: file.handle)
    }

    /// Polls (the lane has no latch to offer) until `done` holds or 30 s have passed.
    private func eventually(_ done: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while !done() && Date() < deadline { usleep(1_000) }
        return done()
    }

    /// Four files streaming four parts each hold the whole lane (16 parts waiting on the store); `ls -l` of a directory
    /// another tool wrote still gets its HEADs, on the I/O pool. When parts shared that pool they held all 16 of its
    /// threads, and the `stat` waited until an upload finished.
    func testAnLsLRunsWhileUploadsHoldEveryPartSlot() throws {
        let base = MemoryObjectStore()
        for name in ["a", "b", "c"] { try base.put("theirs/\(name)", data: Data()) }
        let store = PartHoldingStore(base)
        let fs = try makeStreamingFileSystem(store)
        let files = try (0..<4).map { try create(fs, "f\($0)") }
        let contents = (0..<4).map { content(4, seed: UInt8($0)) }
        for (file, bytes) in zip(files, contents) { try Self.writeParts(fs, file, bytes, at: 0) }
        XCTAssertTrue(store.waitForArrivals(16), "every part at the store at once")

        let listed = DispatchSemaphore(value: 0)
        let sizes = Locked<[UInt64]?>(nil)
        let root = Self.root
        Thread.detachNewThread {
            // As `ls -l`: READDIRPLUS, then a stat of each entry.
            let found = try? { () throws -> [UInt64] in
                let dir = try fs.lookup(parent: root, name: "theirs")
                let handle = try fs.openDirectory(dir.ino)
                defer { fs.releaseDirectory(handle: handle) }
                var inos: [UInt64] = []
                try fs.readDirectory(dir.ino, handle: handle, offset: 0, plus: true) { entry in
                    if ["a", "b", "c"].contains(entry.name) { inos.append(entry.attributes.ino) }
                    return true
                }
                return try inos.map { try fs.getattr($0).size }
            }()
            sizes.update { $0 = found }
            listed.signal()
        }
        let waited = listed.wait(timeout: .now() + 30)
        store.releaseAll()
        if waited == .timedOut { listed.wait() }
        XCTAssertEqual(waited, .success, "the stat waited for the uploads")
        XCTAssertEqual(sizes.value, [0, 0, 0])

        for file in files { try close(fs, file) }
        for (i, bytes) in contents.enumerated() { XCTAssertEqual(Array(try base.get("f\(i)").body), bytes) }
        XCTAssertEqual(store.peak, 16)
    }

    /// Three files that want 4 + 2 + 2 parts in flight, under a lane of 6: the third file's writer waits for a slot
    /// (the first two hold all six), and no more than six parts are ever at the store; every file arrives whole.
    func testTheMountWideBoundHoldsAcrossFiles() throws {
        let base = MemoryObjectStore()
        let store = PartHoldingStore(base)
        let fs = try makeStreamingFileSystem(store, partsInFlightLimit: 6)
        let (first, second, third) = (try create(fs, "first"), try create(fs, "second"), try create(fs, "third"))
        let contents = [content(4, seed: 1), content(2, seed: 2), content(2, seed: 3)]
        try Self.writeParts(fs, first, contents[0], at: 0)
        try Self.writeParts(fs, second, contents[1], at: 0)
        XCTAssertTrue(store.waitForArrivals(6))

        let written = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            try? UploadLaneTests.writeParts(fs, third, contents[2], at: 0)
            written.signal()
        }
        XCTAssertTrue(eventually { fs.uploadLane.waiting == 1 || store.arrivals > 6 })
        XCTAssertEqual(store.arrivals, 6, "a seventh part reached the store")
        XCTAssertEqual(fs.uploadLane.waiting, 1, "the third writer waits for a slot")
        store.releaseAll()
        written.wait()
        for file in [first, second, third] { try close(fs, file) }
        for (name, bytes) in zip(["first", "second", "third"], contents) {
            XCTAssertEqual(Array(try base.get(name).body), bytes)
        }
        XCTAssertEqual(store.arrivals, 8)
        XCTAssertEqual(store.peak, 6)
    }

    /// One file alone sends its own four parts at once (the lane does not serialise a writer), and no more.
    func testOneFileAloneSendsItsOwnLimitAtOnce() throws {
        let base = MemoryObjectStore()
        let store = PartHoldingStore(base)
        let fs = try makeStreamingFileSystem(store)
        let file = try create(fs, "alone")
        let bytes = content(6, seed: 9)
        try Self.writeParts(fs, file, Array(bytes[..<(4 * Self.partSize)]), at: 0)
        XCTAssertTrue(store.waitForArrivals(4), "four parts at the store at once")
        let written = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            try? UploadLaneTests.writeParts(fs, file, Array(bytes[(4 * Self.partSize)...]), at: 4 * Self.partSize)
            written.signal()
        }
        store.release(2)
        XCTAssertTrue(store.waitForArrivals(2), "the fifth and sixth parts follow the first two")
        store.releaseAll()
        written.wait()
        try close(fs, file)
        XCTAssertEqual(Array(try base.get("alone").body), bytes)
        XCTAssertEqual(store.peak, 4)
    }

    /// Slots go in the order they were asked for.
    func testSlotsGoInTheOrderAsked() {
        let lane = UploadLane(limit: 1)
        defer { lane.stop() }
        lane.acquire()
        let order = Locked<[Int]>([])
        let done = DispatchSemaphore(value: 0)
        for waiter in 1...3 {
            Thread.detachNewThread {
                lane.acquire()
                order.update { $0.append(waiter) }
                lane.release()
                done.signal()
            }
            XCTAssertTrue(eventually { lane.waiting == waiter })
        }
        lane.release()
        for _ in 1...3 { done.wait() }
        XCTAssertEqual(order.value, [1, 2, 3])
        XCTAssertEqual(lane.waiting, 0)
    }
}
