import Foundation
import ObjectStore
import Synchronization

/// Forwards to another store, but holds the next upload (put or multipart completion) of a chosen key at the
/// store's door until `release()`: `entered` tells that the upload is in flight.
final class HoldingStore: ObjectStore {
    let base: any ObjectStore
    private let held = Mutex<String?>(nil)
    /// Signalled once the held upload has arrived.
    let entered = DispatchSemaphore(value: 0)
    private let gate = DispatchSemaphore(value: 0)

    init(_ base: any ObjectStore) { self.base = base }

    var description: String { "holding(\(base.description))" }
    var supportsConditionalWrites: Bool { base.supportsConditionalWrites }

    /// The next upload of `key` waits for `release()`.
    func hold(_ key: String) { held.withLock { $0 = key } }

    func release() { gate.signal() }

    private func wait(for key: String) {
        let mine = held.withLock { current -> Bool in
            guard current == key else { return false }
            current = nil
            return true
        }
        guard mine else { return }
        entered.signal()
        gate.wait()
    }

    func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo { try base.head(key) }
    func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        try base.get(key, range: range)
    }
    func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage { try base.list(request) }

    func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        wait(for: key)
        return try base.put(key, body: body, options: options)
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
        wait(for: key)
        return try base.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: condition)
    }

    func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        try base.abortMultipartUpload(key, uploadID: uploadID)
    }

    func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        try base.listMultipartUploads(prefix: prefix)
    }
}
