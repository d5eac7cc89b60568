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
}
