import Foundation
import ObjectStore
import Synchronization
import TestSupport
import XCTest

@testable import FileSystem

/// ReadPrefetcher on its own, with many threads reading one handle as databases and parquet readers do.
final class ReadPrefetcherTests: XCTestCase {
    static func content(_ count: Int) -> Data {
        Data((0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) })
    }

    /// 8 threads × 60 preads at random offsets (some far apart: seeks for the prefetcher) on one handle: every read
    /// returns exactly the object's bytes. A seek by one thread used to drop the chunk another was fetching, which
    /// then failed with "read-ahead lost a chunk" (EIO).
    func testConcurrentRandomPreadsOnOneHandle() throws {
        // Each ranged GET takes a moment, so that concurrent reads overlap.
        let store = DelayingStore(MemoryObjectStore())
        store.getDelay.withLock { $0 = 0.002 }
        let size = 8 << 20
        let body = Self.content(size)
        try store.base.put("db", data: body)
        let workers = WorkerPool(threads: 4, name: "test-prefetch")
        defer { workers.stop() }
        let budget = PrefetchBudget(bytes: 64 << 20)
        let prefetcher = ReadPrefetcher(
            store: store, key: "db", size: UInt64(size), settings: ReadPrefetcher.Settings(),
            budget: budget, workers: workers)
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<60 {
                let count = [4096, 16384, 131072][Int.random(in: 0..<3, using: &generator)]
                let offset = Int.random(in: 0..<(size - count), using: &generator)
                do {
                    let data = try prefetcher.read(offset: UInt64(offset), count: count)
                    if data != body.subdata(in: offset..<(offset + count)) {
                        failures.withLock { $0.append("thread \(thread): wrong bytes at \(offset)+\(count)") }
                    }
                } catch {
                    failures.withLock { $0.append("thread \(thread): \(error) at \(offset)+\(count)") }
                }
            }
        }
        let found = failures.withLock { $0 }
        XCTAssertEqual(found.count, 0, "first failures: \(found.prefix(3))")
        prefetcher.close()
    }

    /// Counts the bytes ranged GETs send.
    final class ByteCountingStore: ForwardingObjectStore, @unchecked Sendable {
        let base: any ObjectStore = MemoryObjectStore()
        let bytes = Mutex(0)
        func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
            let got = try base.get(key, range: range)
            bytes.withLock { $0 += got.body.count }
            return got
        }
    }

    /// A read of the first 4 KiB (a file's header, as SQLite or a parquet reader does), then random 4 KiB reads
    /// over a 256 MiB object, as a database's lookups or fio's randread: each fetches its own initial window (1 MiB)
    /// and reads nothing ahead, even when it happens to land just after the one before. The first read put the
    /// handle on the planner's plan — one ranged stretch for the whole file — and every random read inside that
    /// stretch counted as planned: read-ahead of 8 to 64 MiB for each 4 KiB read.
    func testRandomReadsDoNotReadAhead() throws {
        let store = ByteCountingStore()
        let size = 256 << 20
        try store.base.put("big", data: Data(count: size))
        let workers = WorkerPool(threads: 4, name: "test-prefetch")
        defer { workers.stop() }
        let prefetcher = ReadPrefetcher(
            store: store, key: "big", size: UInt64(size), settings: ReadPrefetcher.Settings(),
            budget: PrefetchBudget(bytes: 128 << 20), workers: workers)
        defer { prefetcher.close() }
        var state: UInt64 = 12345
        XCTAssertEqual(try prefetcher.read(offset: 0, count: 4096).count, 4096)
        let reads = 300
        for _ in 1..<reads {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let offset = Int((state >> 33) % UInt64(size / 4096)) * 4096
            XCTAssertEqual(try prefetcher.read(offset: UInt64(offset), count: 4096).count, 4096)
        }
        let fetched = store.bytes.withLock { $0 } >> 20
        // One initial window per read, and a little more for the odd read that lands near the one before.
        XCTAssertLessThanOrEqual(fetched, reads * 21 / 20, "MiB fetched for \(reads) reads")
    }
}
