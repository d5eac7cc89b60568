import Foundation
import ObjectStore
import TestSupport
import XCTest

@testable import FileSystem

/// The on-disk block cache, on its own and under the read-ahead and the sequential stream.
final class BlockCacheTests: XCTestCase {
    var directory = ""
    let workers = WorkerPool(threads: 2, name: "test-cache")

    override func setUp() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("blocks-\(UUID().uuidString)").path
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
        workers.stop()
    }

    func readAll(
        _ store: any ObjectStore, key: String, size: Int, budget: PrefetchBudget, version: String?,
        chunk: Int = 128 << 10
    ) throws -> Data {
        let prefetcher = ReadPrefetcher(
            store: store, key: key, size: UInt64(size), settings: ReadPrefetcher.Settings(),
            budget: budget, workers: workers, version: version)
        defer { prefetcher.close() }
        var data = Data()
        while data.count < size { data.append(try prefetcher.read(offset: UInt64(data.count), count: chunk)) }
        return data
    }

    /// A second handle, and a new cache over the same directory (a remount), read without a request; a new version
    /// of the object is fetched, never served from the old blocks.
    func testRereadsComeFromTheCacheUntilTheVersionChanges() throws {
        let memory = MemoryObjectStore()
        let store = CountingStore(memory)
        let size = (5 << 20) + 1234
        let body = ReadPrefetcherTests.content(size)
        let info = try memory.put("f", data: body)
        let budget = PrefetchBudget(bytes: 64 << 20, cache: BlockCache(directory: directory, limit: 64 << 20))
        XCTAssertEqual(try readAll(store, key: "f", size: size, budget: budget, version: info.version), body)
        XCTAssertGreaterThan(store.count(.get), 0)
        store.reset()
        XCTAssertEqual(try readAll(store, key: "f", size: size, budget: budget, version: info.version), body)
        XCTAssertEqual(store.count(.get), 0, "a second handle reads the cached blocks")

        let remounted = PrefetchBudget(bytes: 64 << 20, cache: BlockCache(directory: directory, limit: 64 << 20))
        XCTAssertEqual(
            try readAll(
                store, key: "f", size: size, budget: remounted, version: info.version,
                chunk: 4096 * 3), body)
        XCTAssertEqual(store.count(.get), 0, "the blocks survive a remount")

        var changed = body
        changed[3 << 20] ^= 0xff
        let second = try memory.put("f", data: changed)
        XCTAssertEqual(try readAll(store, key: "f", size: size, budget: remounted, version: second.version), changed)
        XCTAssertGreaterThan(store.count(.get), 0, "a changed object is fetched again")
    }

    /// Without a version at open, the first GET's version is used.
    func testVersionLearnedFromTheFirstRead() throws {
        let memory = MemoryObjectStore()
        let store = CountingStore(memory)
        let body = ReadPrefetcherTests.content(3 << 20)
        let info = try memory.put("g", data: body)
        let budget = PrefetchBudget(bytes: 64 << 20, cache: BlockCache(directory: directory, limit: 64 << 20))
        XCTAssertEqual(try readAll(store, key: "g", size: body.count, budget: budget, version: nil), body)
        store.reset()
        XCTAssertEqual(try readAll(store, key: "g", size: body.count, budget: budget, version: info.version), body)
        XCTAssertEqual(store.count(.get), 0)
    }

    func testLeastRecentlyUsedBlocksGoFirst() {
        let block = Data(repeating: 7, count: 1000)
        let cache = BlockCache(directory: directory, limit: 3 * 1100, blockSize: 1000)
        for number in 0..<3 { cache.store(key: "k", version: "v", number: number, data: block) }
        XCTAssertNotNil(cache.block(key: "k", version: "v", number: 0))  // used: now the most recent
        cache.store(key: "k", version: "v", number: 3, data: block)
        XCTAssertLessThanOrEqual(cache.size, 3 * 1100)
        XCTAssertNotNil(cache.block(key: "k", version: "v", number: 0))
        XCTAssertNil(cache.block(key: "k", version: "v", number: 1), "the least recently used block was evicted")
        XCTAssertNotNil(cache.block(key: "k", version: "v", number: 3))
        XCTAssertNil(cache.block(key: "k", version: "other", number: 0), "another version is another block")
        let reopened = BlockCache(directory: directory, limit: 3 * 1100, blockSize: 1000)
        XCTAssertEqual(reopened.block(key: "k", version: "v", number: 3), block)
    }

    /// A range of a block is read alone (a 4 KiB random read copies 4 KiB, not the block); another object's header
    /// under the same file name is a miss.
    func testRangeOfABlock() throws {
        let block = Data((0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        let cache = BlockCache(directory: directory, limit: 1 << 20, blockSize: 1000)
        cache.store(key: "k", version: "v", number: 2, data: block)
        XCTAssertEqual(cache.read(key: "k", version: "v", number: 2, range: 100..<150), block.subdata(in: 100..<150))
        XCTAssertEqual(cache.read(key: "k", version: "v", number: 2, range: 990..<1000), block.subdata(in: 990..<1000))
        XCTAssertNil(cache.read(key: "k", version: "w", number: 2, range: 0..<10))
        XCTAssertNil(cache.read(key: "k", version: "v", number: 3, range: 0..<10))
        let file = try XCTUnwrap(
            try FileManager.default.contentsOfDirectory(atPath: directory).first { $0.hasSuffix(".2") })
        try Data("other\nv\n".utf8 + block).write(to: URL(fileURLWithPath: directory + "/" + file), options: .atomic)
        // (This cache still has the block's own file open, whose bytes are right: a remount opens the file anew.)
        XCTAssertEqual(cache.read(key: "k", version: "v", number: 2, range: 0..<10), block.subdata(in: 0..<10))
        let remounted = BlockCache(directory: directory, limit: 1 << 20, blockSize: 1000)
        XCTAssertNil(remounted.read(key: "k", version: "v", number: 2, range: 0..<10), "a header naming another key")
    }

    /// The streaming GET fills the cache too; once cached, no stream starts and ranged reads serve the file.
    func testSequentialStreamFillsTheCache() throws {
        let memory = MemoryObjectStore()
        let size = (4 << 20) + 77
        let body = ReadPrefetcherTests.content(size)
        let info = try memory.put("s", data: body)
        let cache = BlockCache(directory: directory, limit: 64 << 20)
        let budget = PrefetchBudget(bytes: 64 << 20, cache: cache)
        let stream = try XCTUnwrap(
            SequentialStream.start(
                store: memory, key: "s", version: info.version, from: 0,
                size: UInt64(size), budget: budget))
        var data = Data()
        while data.count < size {
            data.append(try XCTUnwrap(try stream.read(offset: UInt64(data.count), count: 128 << 10)))
        }
        XCTAssertEqual(data, body)
        // The writer thread stores each block after the transfer handed it on.
        stream.waitForCacheWrites()
        stream.close()
        for number in 0...4 {
            let expected = body.subdata(in: (number << 20)..<min(size, (number + 1) << 20))
            XCTAssertEqual(cache.block(key: "s", version: info.version, number: number), expected, "block \(number)")
        }
        XCTAssertNil(
            SequentialStream.start(
                store: memory, key: "s", version: info.version, from: 0,
                size: UInt64(size), budget: budget))
    }

    /// A file handed over whole (a staged copy just uploaded) is moved in, serves every block of that version alone
    /// (the last one ends with the object), survives a new cache over the directory, and is evicted as one entry.
    func testAnAdoptedFileServesEveryBlockOfItsVersionOnly() throws {
        let size = (3 << 20) + 4321
        let body = ReadPrefetcherTests.content(size)
        let staged = directory + "-staged"
        XCTAssertTrue(FileManager.default.createFile(atPath: staged, contents: body))
        defer { unlink(staged) }
        let cache = BlockCache(directory: directory, limit: 64 << 20)
        XCTAssertTrue(cache.adopt(key: "d/f", version: "v1", path: staged, size: UInt64(size)))
        XCTAssertFalse(FileManager.default.fileExists(atPath: staged), "moved, not copied")
        for number in 0..<4 {
            XCTAssertTrue(cache.contains(key: "d/f", version: "v1", number: number))
            let expected = body[(number << 20)..<min(size, (number + 1) << 20)]
            XCTAssertEqual(cache.block(key: "d/f", version: "v1", number: number), Data(expected), "block \(number)")
        }
        XCTAssertEqual(
            cache.read(key: "d/f", version: "v1", number: 2, range: 100..<4196),
            body[((2 << 20) + 100)..<((2 << 20) + 4196)])
        XCTAssertNil(cache.block(key: "d/f", version: "v2", number: 0), "another version is not served")
        XCTAssertNil(cache.block(key: "d/g", version: "v1", number: 0), "another key is not served")

        let remounted = BlockCache(directory: directory, limit: 64 << 20)
        XCTAssertEqual(remounted.block(key: "d/f", version: "v1", number: 3), Data(body[(3 << 20)...]))

        // Too large for the cache (over half its limit): refused, the file stays where it was.
        let small = BlockCache(directory: directory + "-small", limit: UInt64(size))
        defer { try? FileManager.default.removeItem(atPath: directory + "-small") }
        XCTAssertTrue(FileManager.default.createFile(atPath: staged, contents: body))
        XCTAssertFalse(small.adopt(key: "d/h", version: "v1", path: staged, size: UInt64(size)))
        XCTAssertTrue(FileManager.default.fileExists(atPath: staged))
        // A size that is not the file's is not kept.
        XCTAssertTrue(remounted.adopt(key: "d/h", version: "v1", path: staged, size: UInt64(size) + 1))
        XCTAssertNil(remounted.block(key: "d/h", version: "v1", number: 0))

        // Blocks stored after it push it out once the limit is reached: the whole object goes at once.
        let tight = BlockCache(directory: directory, limit: UInt64(size) + (2 << 20))
        XCTAssertNotNil(tight.block(key: "d/f", version: "v1", number: 0))
        for number in 0..<3 { tight.store(key: "other", version: "v", number: number, data: Data(count: 1 << 20)) }
        XCTAssertFalse(tight.contains(key: "d/f", version: "v1", number: 1))
        XCTAssertNil(tight.block(key: "d/f", version: "v1", number: 1))
    }

    /// A crash can leave a file renamed into the cache whose bytes were never all written back: journaling file
    /// systems (ordered data) keep a prefix of a new file then, down to nothing. A block file shorter than its header
    /// is refused at open; one whose bytes end early reads short, which the reader takes for a miss. Either is fetched
    /// again and replaced (before, it stayed indexed: a GET at every read of it). A whole-object file cut short has
    /// lost its trailer, and is refused.
    func testAFileCutShortByACrashIsNotServedAndIsReplaced() throws {
        let memory = MemoryObjectStore()
        let store = CountingStore(memory)
        // The middle block of three cut to its header and half its bytes; a one-block object's cut inside its header.
        for (key, size, block, kept) in [("f", (2 << 20) + 100, 1, 8 + (1 << 19)), ("g", 100_000, 0, 3)] {
            let body = ReadPrefetcherTests.content(size)
            let info = try memory.put(key, data: body)
            let first = PrefetchBudget(bytes: 64 << 20, cache: BlockCache(directory: directory, limit: 64 << 20))
            XCTAssertEqual(try readAll(store, key: key, size: size, budget: first, version: info.version), body)
            let cut = try FileManager.default.contentsOfDirectory(atPath: directory).sorted().first { name in
                name.hasSuffix(".\(block)")
                    && (try? Data(contentsOf: URL(fileURLWithPath: directory + "/" + name)).prefix(64))?
                        .range(of: Data("\(key)\n\(info.version)\n".utf8)) != nil
            }
            XCTAssertEqual(truncate(directory + "/" + (try XCTUnwrap(cut, key)), off_t(kept)), 0)

            store.reset()
            let remounted = PrefetchBudget(bytes: 64 << 20, cache: BlockCache(directory: directory, limit: 64 << 20))
            XCTAssertEqual(try readAll(store, key: key, size: size, budget: remounted, version: info.version), body)
            XCTAssertGreaterThan(store.count(.get), 0, "the block cut short is fetched (\(key))")
            store.reset()
            XCTAssertEqual(try readAll(store, key: key, size: size, budget: remounted, version: info.version), body)
            XCTAssertEqual(store.count(.get), 0, "and kept again (\(key))")
        }

        let size = (2 << 20) + 100
        let body = ReadPrefetcherTests.content(size)
        let cache = BlockCache(directory: directory, limit: 64 << 20)
        let staged = directory + "-staged"
        XCTAssertTrue(FileManager.default.createFile(atPath: staged, contents: body))
        defer { unlink(staged) }
        XCTAssertTrue(cache.adopt(key: "h", version: "v", path: staged, size: UInt64(size)))
        let whole = try XCTUnwrap(
            try FileManager.default.contentsOfDirectory(atPath: directory).first { $0.hasSuffix(".o") })
        XCTAssertEqual(truncate(directory + "/" + whole, off_t(size + 10)), 0)
        XCTAssertNil(BlockCache(directory: directory, limit: 64 << 20).block(key: "h", version: "v", number: 0))
    }
}
