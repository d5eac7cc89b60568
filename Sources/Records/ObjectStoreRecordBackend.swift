import Foundation
import ObjectStore

/// Records as JSON objects `<prefix><key>` in an object store (S3, GCS, a local directory, memory), so that they
/// read as files through a mount. Create is a put conditional on absence, replace a put conditional on the
/// version read; stores without conditional writes get plain puts (best effort, documented).
public struct ObjectStoreRecordBackend: RecordBackend {
    public let store: any ObjectStore
    /// Ends with `/` (or is empty); e.g. `team/data/.bucketfs/`.
    public let prefix: String

    public init(store: any ObjectStore, prefix: String) {
        self.store = store
        self.prefix = prefix.isEmpty || prefix.hasSuffix("/") ? prefix : prefix + "/"
    }

    public var description: String { "\(store.description) \(prefix)" }

    private static let contentType = "application/json"

    public func read(_ key: String) throws(RecordError) -> StoredRecord? {
        do {
            let object = try store.get(prefix + key)
            return StoredRecord(data: object.body, version: object.info.version, modified: object.info.lastModified)
        } catch .notFound {
            return nil
        } catch {
            throw Self.failure(error)
        }
    }

    public func create(_ key: String, data: Data) throws(RecordError) -> String? {
        try conditionalPut(key, data: data, condition: .ifAbsent)
    }

    public func replace(_ key: String, data: Data, ifVersion version: String) throws(RecordError) -> String? {
        try conditionalPut(key, data: data, condition: .ifVersionMatches(version))
    }

    public func write(_ key: String, data: Data) throws(RecordError) -> String {
        do {
            return try store.put(prefix + key, data: data, options: PutOptions(contentType: Self.contentType)).version
        } catch {
            throw Self.failure(error)
        }
    }

    public func remove(_ key: String) throws(RecordError) -> Bool {
        do {
            _ = try store.head(prefix + key)
            try store.delete(prefix + key)
            return true
        } catch .notFound {
            return false
        } catch {
            throw Self.failure(error)
        }
    }

    public func keys(under keyPrefix: String) throws(RecordError) -> [String] {
        do {
            return try store.listAll(prefix: prefix + keyPrefix).objects
                .map { String($0.key.dropFirst(prefix.count)) }
                .filter { !$0.isEmpty && !$0.hasSuffix("/") }
                .sorted()
        } catch {
            throw Self.failure(error)
        }
    }

    public func ping() throws(RecordError) {
        do {
            _ = try store.list(ListRequest(prefix: prefix, delimiter: "/", maxKeys: 1))
        } catch {
            throw Self.failure(error)
        }
    }

    private func conditionalPut(_ key: String, data: Data, condition: PutCondition) throws(RecordError) -> String? {
        let options = PutOptions(
            contentType: Self.contentType, condition: store.supportsConditionalWrites ? condition : .none)
        do {
            return try store.put(prefix + key, data: data, options: options).version
        } catch .preconditionFailed {
            return nil
        } catch .notFound {
            // ifVersionMatches on a key deleted meanwhile.
            return nil
        } catch {
            throw Self.failure(error)
        }
    }

    private static func failure(_ error: ObjectStoreError) -> RecordError {
        .unavailable(String(describing: error))
    }
}
