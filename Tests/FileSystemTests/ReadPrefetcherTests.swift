@testable import FileSystem
import Foundation
import ObjectStore
import Synchronization
import XCTest

/// ReadPrefetcher on its own, with many threads reading one handle as databases and parquet readers do.
final class ReadPrefetcherTests: XCTestCase {
    /// Forwards to a memory store; each ranged GET takes a moment, so that concurrent reads overlap.
    final class SlowStore: ObjectStore, @unchecked Sendable {
        let base = MemoryObjectStore()
        let delay: useconds_t
        init(delay: useconds_t) { self.delay = delay }
        var description: String { "slow" }
        var supportsConditionalWrites: Bool { true }
        func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo { try base.head(key) }
        func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
            usleep(delay)
            return try base.get(key, range: range)
        }
        func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage { try base.list(request) }
        func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
            try base.put(key, body: body, options: options)
        }
        func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
            try base.delete(key, condition: condition)
        }
        func copy(from source: String, to destination: String, metadata: ObjectMetadata?,
                  condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
            try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
        }
        func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
            try base.createMultipartUpload(key, options: options)
        }
        func uploadPart(_ key: String, uploadID: String, number: Int, body: PutBody) throws(ObjectStoreError) -> String {
            try base.uploadPart(key, uploadID: uploadID, number: number, body: body)
        }
        func completeMultipartUpload(_ key: String, uploadID: String, parts: [CompletedPart],
                                     condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
            try base.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: condition)
        }
        func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
            try base.abortMultipartUpload(key, uploadID: uploadID)
        }
        func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
            try base.listMultipartUploads(prefix: prefix)
        }
    }

    static func content(_ count: Int) -> Data {
        Data((0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 2654435761) >> 13) })
    }

    /// 8 threads × 60 preads at random offsets (some far apart: seeks for the prefetcher) on one handle: every read
    /// returns exactly the object's bytes. A seek by one thread used to drop the chunk another was fetching, which
    /// then failed with "read-ahead lost a chunk" (EIO).
    func testConcurrentRandomPreadsOnOneHandle() throws {
        let store = SlowStore(delay: 2_000)
        let size = 8 << 20
        let body = Self.content(size)
        try store.base.put("db", data: body)
        let workers = WorkerPool(threads: 4, name: "test-prefetch")
        defer { workers.stop() }
        let budget = PrefetchBudget(bytes: 64 << 20)
        let prefetcher = ReadPrefetcher(store: store, key: "db", size: UInt64(size), settings: ReadPrefetcher.Settings(),
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
