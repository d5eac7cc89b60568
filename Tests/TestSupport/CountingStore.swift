import Foundation
import ObjectStore
import Synchronization

/// Forwards to another store and counts the requests by operation, so that tests can assert how many
/// store calls a filesystem operation costs.
public final class CountingStore: ForwardingObjectStore {
    public enum Operation: String, Sendable, CaseIterable {
        case head, get, list, put, delete, copy, deleteObjects
        case createMultipartUpload, uploadPart, uploadPartCopy, completeMultipartUpload, abortMultipartUpload
        case listMultipartUploads
    }

    public let base: any ObjectStore
    private let counts = Mutex<[Operation: Int]>([:])
    private let knownSourceCopies = Atomic<Int>(0)
    /// Copies made with the source's `ObjectInfo` (no HEAD of it needed on S3); never reset.
    public var copiesKnowingSource: Int { knownSourceCopies.load(ordering: .relaxed) }

    public init(_ base: any ObjectStore) { self.base = base }

    public var description: String { "counting(\(base.description))" }

    public func count(_ operation: Operation) -> Int { counts.withLock { $0[operation] ?? 0 } }
    public var total: Int { counts.withLock { $0.values.reduce(0, +) } }
    public func reset() { counts.withLock { $0 = [:] } }

    private func record(_ operation: Operation) { counts.withLock { $0[operation, default: 0] += 1 } }

    public func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo {
        record(.head)
        return try base.head(key)
    }

    public func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        record(.get)
        return try base.get(key, range: range)
    }

    public func getStreaming(
        _ key: String, range: Range<UInt64>, version: String?,
        consumer: @escaping (UnsafeRawBufferPointer) -> Bool
    ) throws(ObjectStoreError) {
        record(.get)
        try base.getStreaming(key, range: range, version: version, consumer: consumer)
    }

    public func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage {
        record(.list)
        return try base.list(request)
    }

    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        record(.put)
        return try base.put(key, body: body, options: options)
    }

    public func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        record(.delete)
        try base.delete(key, condition: condition)
    }

    /// One count per call (S3 sends a request per 1,000 keys).
    public func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>] {
        record(.deleteObjects)
        return base.deleteObjects(keys)
    }

    public func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        record(.copy)
        return try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
    }

    /// Counted as `copy`, and apart as `copyKnowingSource`.
    public func copy(
        from source: ObjectInfo, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        record(.copy)
        knownSourceCopies.add(1, ordering: .relaxed)
        return try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
    }

    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        record(.createMultipartUpload)
        return try base.createMultipartUpload(key, options: options)
    }

    public func uploadPart(
        _ key: String, uploadID: String, number: Int,
        body: PutBody, crc32c: UInt32?
    ) throws(ObjectStoreError) -> String {
        record(.uploadPart)
        return try base.uploadPart(key, uploadID: uploadID, number: number, body: body, crc32c: crc32c)
    }

    public func uploadPartCopy(
        _ key: String, uploadID: String, number: Int, source: String, range: Range<UInt64>,
        sourceVersion: String?
    ) throws(ObjectStoreError) -> CompletedPart {
        record(.uploadPartCopy)
        return try base.uploadPartCopy(
            key, uploadID: uploadID, number: number, source: source, range: range,
            sourceVersion: sourceVersion)
    }

    public func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        record(.completeMultipartUpload)
        return try base.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: condition)
    }

    public func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        record(.abortMultipartUpload)
        try base.abortMultipartUpload(key, uploadID: uploadID)
    }

    public func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        record(.listMultipartUploads)
        return try base.listMultipartUploads(prefix: prefix)
    }
}
