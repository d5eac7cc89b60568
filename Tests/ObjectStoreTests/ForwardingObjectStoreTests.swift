import Foundation
import ObjectStore
import Synchronization
import TestSupport
import XCTest

/// `ForwardingObjectStore` forwards every requirement, so a decorator changes only what it writes; `MeteredStore`
/// and the fault-injecting test decorators rely on that.
final class ForwardingObjectStoreTests: XCTestCase {
    /// A decorator that writes nothing.
    final class Plain: ForwardingObjectStore {
        let base: any ObjectStore
        init(_ base: any ObjectStore) { self.base = base }
    }

    /// Hears what a `MeteredStore` reports.
    final class Observer: StoreMeterObserver {
        let operations = Mutex<[String]>([])
        let streamedBytes = Atomic<Int>(0)
        func storeOperation(
            _ operation: String, error: ObjectStoreError?, seconds: Double, received: Int,
            sent: Int
        ) {
            operations.withLock { $0.append(error == nil ? operation : operation + "!") }
        }
        func streamed(_ bytes: Int) { streamedBytes.add(bytes, ordering: .relaxed) }
    }

    /// One call of each requirement through `Plain` reaches the store below once, as the same operation.
    func testEveryRequirementReachesTheBaseOnce() throws {
        let counting = CountingStore(MemoryObjectStore())
        let store = Plain(counting)
        XCTAssertEqual(store.description, counting.description)
        XCTAssertEqual(store.supportsConditionalWrites, counting.supportsConditionalWrites)
        XCTAssertEqual(store.prefersStreamingReads, counting.prefersStreamingReads)
        try store.put("a", data: Data("hello".utf8))
        _ = try store.head("a")
        _ = try store.get("a", range: 1..<3)
        _ = try store.list(ListRequest(prefix: ""))
        try store.copy(from: "a", to: "b", metadata: nil, condition: .none)
        try store.getStreaming("a", range: 0..<5, version: nil) { _ in true }
        let upload = try store.createMultipartUpload("m", options: PutOptions())
        let part = try store.uploadPart("m", uploadID: upload, number: 1, body: .data(Data("x".utf8)))
        let copied = try store.uploadPartCopy(
            "m", uploadID: upload, number: 2, source: "a", range: 0..<5,
            sourceVersion: nil)
        _ = try store.listMultipartUploads(prefix: "")
        try store.completeMultipartUpload(
            "m", uploadID: upload,
            parts: [
                CompletedPart(number: 1, etag: part),
                CompletedPart(number: 2, etag: copied.etag),
            ],
            condition: .none)
        let other = try store.createMultipartUpload("n", options: PutOptions())
        try store.abortMultipartUpload("n", uploadID: other)
        try store.delete("b", condition: .none)
        XCTAssertEqual(store.deleteObjects(["a", "m"]).filter { (try? $0.get()) == nil }.count, 0)
        for operation in CountingStore.Operation.allCases {
            let expected: Int
            switch operation {
            case .get: expected = 2  // get and getStreaming
            case .createMultipartUpload: expected = 2
            default: expected = 1
            }
            XCTAssertEqual(counting.count(operation), expected, "\(operation)")
        }
        XCTAssertEqual(counting.count(.delete), 1, "deleteObjects went down as one batch, not key by key")
    }

    func testValidateIsForwarded() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("fwd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let store = Plain(try LocalDirectoryObjectStore(root: root))
        XCTAssertNoThrow(try store.validate())
        try FileManager.default.removeItem(atPath: root)
        XCTAssertThrowsError(try store.validate()) { XCTAssertEqual($0 as? ObjectStoreError, .noSuchBucket(root)) }
    }

    /// A store that is down fails the batch forms of its writes too: each key of a batch delete, a part copy.
    func testFailingStoreFailsBatchDeletesAndPartCopies() throws {
        let store = FailingStore(MemoryObjectStore())
        try store.put("a", data: Data("hello".utf8))
        let upload = try store.createMultipartUpload("m", options: PutOptions())
        store.failsWrites = true
        let results = store.deleteObjects(["a", "b"])
        XCTAssertEqual(results.count, 2)
        for result in results {
            XCTAssertThrowsError(try result.get()) { XCTAssertEqual($0 as? ObjectStoreError, .transport("down")) }
        }
        XCTAssertThrowsError(
            try store.uploadPartCopy(
                "m", uploadID: upload, number: 1, source: "a", range: 0..<5,
                sourceVersion: nil)
        ) {
            XCTAssertEqual($0 as? ObjectStoreError, .transport("down"))
        }
        store.failsWrites = false
        XCTAssertEqual(String(decoding: try store.get("a").body, as: UTF8.self), "hello", "nothing was deleted")
    }

    /// The meter counts requests and errors (not "not found") and tells its observer of each one.
    func testMeteredStoreCountsAndReports() throws {
        let observer = Observer()
        let store = MeteredStore(FailingStore(MemoryObjectStore()), observer: observer)
        try store.put("a", data: Data("hello".utf8))
        XCTAssertThrowsError(try store.head("missing"))
        (store.base as! FailingStore).failsWrites = true
        XCTAssertThrowsError(try store.delete("a", condition: .none))
        try store.getStreaming("a", range: 0..<5, version: nil) { _ in true }
        let counters = store.snapshot
        XCTAssertEqual(counters.requests, 4)
        XCTAssertEqual(counters.errors, 1)
        XCTAssertEqual(counters.lastError, ObjectStoreError.transport("down").description)
        XCTAssertEqual(observer.operations.withLock { $0 }, ["put", "head", "delete!", "get_streaming"])
        XCTAssertEqual(observer.streamedBytes.load(ordering: .relaxed), 5)
    }
}
