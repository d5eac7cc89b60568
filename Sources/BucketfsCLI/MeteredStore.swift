import Foundation
import ObjectStore
import Synchronization

/// Forwards to the mount's store and counts its requests, failures and time spent: the counters of the mount's
/// session record and the last error of `.bucketfs/health.json`.
final class MeteredStore: ObjectStore {
    struct Counters: Sendable {
        var requests = 0
        var errors = 0
        var seconds = 0.0
        var lastError: String?
        var lastErrorAt: Date?
    }

    let base: any ObjectStore
    private let counters = Mutex(Counters())

    init(_ base: any ObjectStore) { self.base = base }

    var description: String { base.description }
    var supportsConditionalWrites: Bool { base.supportsConditionalWrites }
    var prefersStreamingReads: Bool { base.prefersStreamingReads }
    var snapshot: Counters { counters.withLock { $0 } }

    /// Runs one request and counts it; "not found" and "changed by another writer" are answers, not errors.
    private func metered<T>(_ body: () throws(ObjectStoreError) -> T) throws(ObjectStoreError) -> T {
        let start = ContinuousClock.now
        do {
            let result = try body()
            note(start, error: nil)
            return result
        } catch {
            switch error {
            case .notFound, .preconditionFailed: note(start, error: nil)
            default: note(start, error: error)
            }
            throw error
        }
    }

    private func note(_ start: ContinuousClock.Instant, error: ObjectStoreError?) {
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
    }

    func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo { try metered { () throws(ObjectStoreError) in try base.head(key) } }

    func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        try metered { () throws(ObjectStoreError) in try base.get(key, range: range) }
    }

    func getStreaming(_ key: String, range: Range<UInt64>, version: String?,
                      consumer: @escaping (UnsafeRawBufferPointer) -> Bool) throws(ObjectStoreError) {
        try metered { () throws(ObjectStoreError) in try base.getStreaming(key, range: range, version: version, consumer: consumer) }
    }

    func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage {
        try metered { () throws(ObjectStoreError) in try base.list(request) }
    }

    func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        try metered { () throws(ObjectStoreError) in try base.put(key, body: body, options: options) }
    }

    func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        try metered { () throws(ObjectStoreError) in try base.delete(key, condition: condition) }
    }

    /// Forwarded as one batch (S3: DeleteObjects); the first failing key, if any, is the error noted.
    func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>] {
        var results: [Result<Void, ObjectStoreError>] = []
        _ = try? metered { () throws(ObjectStoreError) in
            results = base.deleteObjects(keys)
            for case .failure(let error) in results { throw error }
        }
        return results
    }

    func copy(from source: String, to destination: String, metadata: ObjectMetadata?,
              condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
        try metered { () throws(ObjectStoreError) in
            try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
        }
    }

    func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        try metered { () throws(ObjectStoreError) in try base.createMultipartUpload(key, options: options) }
    }

    func uploadPart(_ key: String, uploadID: String, number: Int, body: PutBody) throws(ObjectStoreError) -> String {
        try metered { () throws(ObjectStoreError) in try base.uploadPart(key, uploadID: uploadID, number: number, body: body) }
    }

    func uploadPartCopy(_ key: String, uploadID: String, number: Int, source: String, range: Range<UInt64>,
                        sourceVersion: String?) throws(ObjectStoreError) -> String {
        try metered { () throws(ObjectStoreError) in
            try base.uploadPartCopy(key, uploadID: uploadID, number: number, source: source, range: range,
                                    sourceVersion: sourceVersion)
        }
    }

    func completeMultipartUpload(_ key: String, uploadID: String, parts: [CompletedPart],
                                 condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
        try metered { () throws(ObjectStoreError) in
            try base.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: condition)
        }
    }

    func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        try metered { () throws(ObjectStoreError) in try base.abortMultipartUpload(key, uploadID: uploadID) }
    }

    func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        try metered { () throws(ObjectStoreError) in try base.listMultipartUploads(prefix: prefix) }
    }
}
