import Foundation
import Glibc
import Synchronization

/// Hears of every request a `MeteredStore` forwards (the daemon turns them into `bucketfs_store_*` metrics).
public protocol StoreMeterObserver: Sendable {
    /// One call: `error` is nil for an answer ("not found" and "changed by another writer" included).
    func storeOperation(_ operation: String, error: ObjectStoreError?, seconds: Double, received: Int, sent: Int)
    /// Bytes a streaming GET handed on (told when it ends, whatever the outcome).
    func streamed(_ bytes: Int)
}

/// Forwards to a store and counts its requests, failures and time spent: the counters of the mount's session
/// record and the last error of `.bucketfs/health.json`; per operation, `observer` hears of each request.
public final class MeteredStore: ForwardingObjectStore {
    public struct Counters: Sendable {
        public var requests = 0
        public var errors = 0
        public var seconds = 0.0
        public var lastError: String?
        public var lastErrorAt: Date?
    }

    public let base: any ObjectStore
    private let observer: (any StoreMeterObserver)?
    private let counters = Mutex(Counters())

    public init(_ base: any ObjectStore, observer: (any StoreMeterObserver)?) {
        self.base = base
        self.observer = observer
    }

    public var snapshot: Counters { counters.withLock { $0 } }

    /// Runs one request and counts it; "not found" and "changed by another writer" are answers, not errors.
    /// `sent` is the body's size; `received` reads the result's.
    private func metered<T>(
        _ operation: String, sent: Int = 0, received: (T) -> Int = { _ in 0 },
        _ body: () throws(ObjectStoreError) -> T
    ) throws(ObjectStoreError) -> T {
        let start = ContinuousClock.now
        do {
            let result = try body()
            note(operation, start, error: nil, sent: sent, received: received(result))
            return result
        } catch {
            switch error {
            case .notFound, .preconditionFailed: note(operation, start, error: nil, sent: 0, received: 0)
            default: note(operation, start, error: error, sent: 0, received: 0)
            }
            throw error
        }
    }

    private func note(
        _ operation: String, _ start: ContinuousClock.Instant, error: ObjectStoreError?, sent: Int,
        received: Int
    ) {
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        counters.withLock { c in
            c.requests += 1
            c.seconds += seconds
            if let error {
                c.errors += 1
                c.lastError = error.description
                c.lastErrorAt = Date()
            }
        }
        observer?.storeOperation(operation, error: error, seconds: seconds, received: received, sent: sent)
    }

    private static func size(_ body: PutBody) -> Int {
        switch body {
        case .data(let data): return data.count
        case .file(let path):
            var info = stat()
            return stat(path, &info) == 0 ? Int(info.st_size) : 0
        case .fileRange(_, _, let length): return Int(length)
        }
    }

    public func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo {
        try metered("head") { () throws(ObjectStoreError) in try base.head(key) }
    }

    public func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        try metered("get", received: { $0.body.count }) { () throws(ObjectStoreError) in
            try base.get(key, range: range)
        }
    }

    public func getStreaming(
        _ key: String, range: Range<UInt64>, version: String?,
        consumer: @escaping (UnsafeRawBufferPointer) -> Bool
    ) throws(ObjectStoreError) {
        let received = Atomic<Int>(0)
        defer { observer?.streamed(received.load(ordering: .relaxed)) }
        try metered("get_streaming") { () throws(ObjectStoreError) in
            try base.getStreaming(key, range: range, version: version) { piece in
                received.add(piece.count, ordering: .relaxed)
                return consumer(piece)
            }
        }
    }

    public func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage {
        try metered("list") { () throws(ObjectStoreError) in try base.list(request) }
    }

    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        try metered("put", sent: Self.size(body)) { () throws(ObjectStoreError) in
            try base.put(key, body: body, options: options)
        }
    }

    public func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        try metered("delete") { () throws(ObjectStoreError) in try base.delete(key, condition: condition) }
    }

    /// Forwarded as one batch (S3: DeleteObjects); the first failing key, if any, is the error noted.
    public func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>] {
        var results: [Result<Void, ObjectStoreError>] = []
        _ = try? metered("delete_objects") { () throws(ObjectStoreError) in
            results = base.deleteObjects(keys)
            for case .failure(let error) in results { throw error }
        }
        return results
    }

    public func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try metered("copy") { () throws(ObjectStoreError) in
            try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
        }
    }

    public func copy(
        from source: ObjectInfo, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try metered("copy") { () throws(ObjectStoreError) in
            try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
        }
    }

    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        try metered("create_multipart_upload") { () throws(ObjectStoreError) in
            try base.createMultipartUpload(key, options: options)
        }
    }

    public func uploadPart(
        _ key: String, uploadID: String, number: Int,
        body: PutBody, crc32c: UInt32?
    ) throws(ObjectStoreError) -> String {
        try metered("upload_part", sent: Self.size(body)) { () throws(ObjectStoreError) in
            try base.uploadPart(key, uploadID: uploadID, number: number, body: body, crc32c: crc32c)
        }
    }

    public func uploadPartCopy(
        _ key: String, uploadID: String, number: Int, source: String, range: Range<UInt64>,
        sourceVersion: String?
    ) throws(ObjectStoreError) -> CompletedPart {
        try metered("upload_part_copy") { () throws(ObjectStoreError) in
            try base.uploadPartCopy(
                key, uploadID: uploadID, number: number, source: source, range: range,
                sourceVersion: sourceVersion)
        }
    }

    public func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try metered("complete_multipart_upload") { () throws(ObjectStoreError) in
            try base.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: condition)
        }
    }

    public func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        try metered("abort_multipart_upload") { () throws(ObjectStoreError) in
            try base.abortMultipartUpload(key, uploadID: uploadID)
        }
    }

    public func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        try metered("list_multipart_uploads") { () throws(ObjectStoreError) in
            try base.listMultipartUploads(prefix: prefix)
        }
    }
}
