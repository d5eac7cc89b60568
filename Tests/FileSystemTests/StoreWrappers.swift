import Foundation
import ObjectStore
import Synchronization

/// Forwards to another store, but can be told to fail every write (put, copy, multipart completion) with
/// `.transport("down")`, as an unreachable store would.
final class FailingStore: ObjectStore {
    let base: any ObjectStore
    private let failing = Mutex(false)

    init(_ base: any ObjectStore) { self.base = base }

    var description: String { "failing(\(base.description))" }
    var supportsConditionalWrites: Bool { base.supportsConditionalWrites }

    /// While true, writes fail with `.transport("down")`; reads still work.
    var failsWrites: Bool {
        get { failing.withLock { $0 } }
        set { failing.withLock { $0 = newValue } }
    }

    private func check() throws(ObjectStoreError) {
        if failsWrites { throw .transport("down") }
    }

    func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo { try base.head(key) }

    func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        try base.get(key, range: range)
    }

    func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage { try base.list(request) }

    func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        try check()
        return try base.put(key, body: body, options: options)
    }

    func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        try check()
        try base.delete(key, condition: condition)
    }

    func copy(from source: String, to destination: String, metadata: ObjectMetadata?,
              condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
        try check()
        return try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
    }

    func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        try check()
        return try base.createMultipartUpload(key, options: options)
    }

    func uploadPart(_ key: String, uploadID: String, number: Int, body: PutBody) throws(ObjectStoreError) -> String {
        try check()
        return try base.uploadPart(key, uploadID: uploadID, number: number, body: body)
    }

    func completeMultipartUpload(_ key: String, uploadID: String, parts: [CompletedPart],
                                 condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
        try check()
        return try base.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: condition)
    }

    func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        try base.abortMultipartUpload(key, uploadID: uploadID)
    }

    func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        try base.listMultipartUploads(prefix: prefix)
    }
}
