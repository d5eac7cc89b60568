import Foundation

/// A store that wraps another one: every requirement of `ObjectStore` is forwarded to `base` unless the wrapper
/// implements it itself. Decorators (metering, counting, fault injection in tests) write only what they change:
///
///     final class Logged: ForwardingObjectStore {
///         let base: any ObjectStore
///         func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
///             print("put \(key)")
///             return try base.put(key, body: body, options: options)
///         }
///     }
///
/// A protocol rather than a base class, so that a wrapper stays a `final class` whose `Sendable` conformance the
/// compiler checks. The batch operations (`deleteObjects`, `uploadPartCopy`, `getStreaming`) go to `base` in one
/// call as well; a wrapper that changes `delete`, `get` or `uploadPart` and wants the batches to pass through its own
/// version implements them with `deleteEach`, `uploadPartCopyByReading` or `getStreamingByRanges`.
public protocol ForwardingObjectStore: ObjectStore {
    var base: any ObjectStore { get }
}

extension ForwardingObjectStore {
    public var description: String { base.description }
    public var supportsConditionalWrites: Bool { base.supportsConditionalWrites }
    public var prefersStreamingReads: Bool { base.prefersStreamingReads }

    public func validate() throws(ObjectStoreError) { try base.validate() }

    public func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo { try base.head(key) }

    public func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        try base.get(key, range: range)
    }

    public func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage { try base.list(request) }

    @discardableResult
    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        try base.put(key, body: body, options: options)
    }

    public func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        try base.delete(key, condition: condition)
    }

    @discardableResult
    public func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
    }

    @discardableResult
    public func copy(
        from source: ObjectInfo, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
    }

    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        try base.createMultipartUpload(key, options: options)
    }

    public func uploadPart(
        _ key: String, uploadID: String, number: Int,
        body: PutBody, crc32c: UInt32?
    ) throws(ObjectStoreError) -> String {
        try base.uploadPart(key, uploadID: uploadID, number: number, body: body, crc32c: crc32c)
    }

    public func uploadPartCopy(
        _ key: String, uploadID: String, number: Int, source: String, range: Range<UInt64>,
        sourceVersion: String?
    ) throws(ObjectStoreError) -> CompletedPart {
        try base.uploadPartCopy(
            key, uploadID: uploadID, number: number, source: source, range: range,
            sourceVersion: sourceVersion)
    }

    public func getStreaming(
        _ key: String, range: Range<UInt64>, version: String?,
        consumer: @escaping (UnsafeRawBufferPointer) -> Bool
    ) throws(ObjectStoreError) {
        try base.getStreaming(key, range: range, version: version, consumer: consumer)
    }

    @discardableResult
    public func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try base.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: condition)
    }

    public func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        try base.abortMultipartUpload(key, uploadID: uploadID)
    }

    public func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        try base.listMultipartUploads(prefix: prefix)
    }

    public func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>] { base.deleteObjects(keys) }
}
