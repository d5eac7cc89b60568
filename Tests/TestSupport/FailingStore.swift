import Foundation
import ObjectStore
import Synchronization

/// Forwards to another store, but can be told to fail every write (put, delete, copy, multipart upload and
/// completion) with `.transport("down")`, as an unreachable store would.
public final class FailingStore: ForwardingObjectStore {
    public let base: any ObjectStore
    private let failing = Mutex(false)

    public init(_ base: any ObjectStore) { self.base = base }

    public var description: String { "failing(\(base.description))" }

    /// While true, writes fail with `.transport("down")`; reads still work.
    public var failsWrites: Bool {
        get { failing.withLock { $0 } }
        set { failing.withLock { $0 = newValue } }
    }

    private func check() throws(ObjectStoreError) {
        if failsWrites { throw .transport("down") }
    }

    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        try check()
        return try base.put(key, body: body, options: options)
    }

    public func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        try check()
        try base.delete(key, condition: condition)
    }

    /// Through `delete`, so that each key fails.
    public func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>] { deleteEach(keys) }

    public func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try check()
        return try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
    }

    public func copy(
        from source: ObjectInfo, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try check()
        return try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
    }

    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        try check()
        return try base.createMultipartUpload(key, options: options)
    }

    public func uploadPart(
        _ key: String, uploadID: String, number: Int,
        body: PutBody, crc32c: UInt32?
    ) throws(ObjectStoreError) -> String {
        try check()
        return try base.uploadPart(key, uploadID: uploadID, number: number, body: body, crc32c: crc32c)
    }

    /// Through `uploadPart`, so that it fails too.
    public func uploadPartCopy(
        _ key: String, uploadID: String, number: Int, source: String, range: Range<UInt64>,
        sourceVersion: String?
    ) throws(ObjectStoreError) -> CompletedPart {
        try uploadPartCopyByReading(
            key, uploadID: uploadID, number: number, source: source, range: range,
            sourceVersion: sourceVersion)
    }

    public func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try check()
        return try base.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: condition)
    }
}
