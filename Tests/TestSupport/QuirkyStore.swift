import Foundation
import ObjectStore
import Synchronization

/// Forwards to another store (a memory store by default) with SeaweedFS's quirk and failures a test can switch on:
/// markers cannot be copied (SeaweedFS: NoSuchKey); copies of `failCopyOf` fail; the first `failDeletes` deletes
/// fail, in `deleteObjects` too.
public final class QuirkyStore: ForwardingObjectStore {
    public let base: any ObjectStore
    private let failCopy = Mutex<String?>(nil)
    public let failDeletes = Mutex(0)

    public init(_ base: any ObjectStore = MemoryObjectStore()) { self.base = base }

    public var description: String { "quirky" }
    public var supportsConditionalWrites: Bool { true }

    public var failCopyOf: String? {
        get { failCopy.withLock { $0 } }
        set { failCopy.withLock { $0 = newValue } }
    }

    public func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        let fail = failDeletes.withLock { left -> Bool in
            guard left > 0 else { return false }
            left -= 1
            return true
        }
        if fail { throw .transport("reset") }
        try base.delete(key, condition: condition)
    }

    /// Through `delete`, so that its failures apply.
    public func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>] { deleteEach(keys) }

    public func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        if source.hasSuffix("/") { throw .notFound(key: source) }
        if source == failCopyOf { throw .transport("copy failed") }
        return try base.copy(from: source, to: destination, metadata: metadata, condition: condition)
    }

    public func copy(
        from source: ObjectInfo, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try copy(from: source.key, to: destination, metadata: metadata, condition: condition)
    }
}
