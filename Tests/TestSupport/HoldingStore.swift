import Foundation
import ObjectStore
import Synchronization

/// Forwards to another store, but holds the next upload (put or multipart completion) of a chosen key at the
/// store's door until `release()`: `entered` tells that the upload is in flight. Or, with `holdHeadReply`, holds
/// the reply of the next HEAD of a key (or LIST of a prefix, `holdListReply`): the store answered, the caller has
/// not heard yet.
public final class HoldingStore: ForwardingObjectStore {
    public let base: any ObjectStore
    private let held = Mutex<String?>(nil)
    private let heldHead = Mutex<String?>(nil)
    private let heldList = Mutex<String?>(nil)
    /// Signalled once the held upload has arrived.
    public let entered = DispatchSemaphore(value: 0)
    private let gate = DispatchSemaphore(value: 0)

    public init(_ base: any ObjectStore) { self.base = base }

    public var description: String { "holding(\(base.description))" }

    /// The next upload of `key` waits for `release()`.
    public func hold(_ key: String) { held.withLock { $0 = key } }

    /// The next HEAD of `key` is answered by the store, then its reply (or its error) waits for `release()`.
    public func holdHeadReply(_ key: String) { heldHead.withLock { $0 = key } }

    /// The next LIST of `prefix` is answered by the store, then its reply waits for `release()`.
    public func holdListReply(_ prefix: String) { heldList.withLock { $0 = prefix } }

    public func release() { gate.signal() }

    private func wait(for key: String, in held: borrowing Mutex<String?>) {
        let mine = held.withLock { current -> Bool in
            guard current == key else { return false }
            current = nil
            return true
        }
        guard mine else { return }
        entered.signal()
        gate.wait()
    }

    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        wait(for: key, in: held)
        return try base.put(key, body: body, options: options)
    }

    public func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        wait(for: key, in: held)
        return try base.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: condition)
    }

    public func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo {
        let reply: Result<ObjectInfo, ObjectStoreError>
        do throws(ObjectStoreError) { reply = .success(try base.head(key)) } catch { reply = .failure(error) }
        wait(for: key, in: heldHead)  // a "not found" is held too
        return try reply.get()
    }

    public func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage {
        let page = try base.list(request)
        wait(for: request.prefix, in: heldList)
        return page
    }
}
