import Foundation
import ObjectStore
import RedisClient

/// Every record store over one backend.
public struct RecordStores: Sendable {
    /// The default folder of records under a mount's prefix.
    public static let defaultPrefix = ".bucketfs/"

    public let backend: any RecordBackend
    public let sessions: SessionStore
    public let conversations: ConversationStore
    public let checkpoints: CheckpointStore
    public let tasks: TaskContextStore
    public let uploads: UploadStateStore
    public let buffers: ThreadBufferStore
    public let registry: ThreadRegistry
    public let events: EventLog

    /// `ttl`: seconds that buffer slots and registry entries live (seed 004: 24 h); `nil` for ever. `clock` tells
    /// them and the checkpoints (their `created_at`) the time (tests move it by hand).
    public init(
        backend: any RecordBackend, ttl: Double? = 86_400,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.backend = backend
        sessions = SessionStore(backend: backend)
        conversations = ConversationStore(backend: backend)
        checkpoints = CheckpointStore(backend: backend, clock: clock)
        tasks = TaskContextStore(backend: backend)
        uploads = UploadStateStore(backend: backend)
        buffers = ThreadBufferStore(backend: backend, ttl: ttl, clock: clock)
        registry = ThreadRegistry(backend: backend, ttl: ttl, clock: clock)
        events = EventLog(backend: backend)
    }

    /// Records in `store` under `<mount prefix><records prefix>`.
    public init(
        store: any ObjectStore, mountPrefix: String, recordsPrefix: String = defaultPrefix, ttl: Double? = 86_400
    ) {
        self.init(
            backend: ObjectStoreRecordBackend(store: store, prefix: mountPrefix + Self.normalized(recordsPrefix)),
            ttl: ttl)
    }

    /// A backend from a URL: `redis://[:password@]host[:port][/db]` (keys `bucketfs:records:<key>`; `rediss://`
    /// for TLS, see `RedisEndpoint`),
    /// `postgres://[user@]host[:port]/db` (table `bucketfs_records`; `postgresql://` too), or any mount
    /// source (`s3://`, `gs://`, `file://`, `memory://`), whose records are under `<prefix><recordsPrefix>`.
    /// `makeStore` builds the object store (the CLI passes its configured S3/GCS settings).
    public static func backend(
        url: String, recordsPrefix: String = defaultPrefix,
        makeStore: (StoreLocation) throws -> any ObjectStore = { try $0.makeStore() }
    )
        throws(RecordError) -> any RecordBackend
    {
        if url.lowercased().hasPrefix("redis://") || url.lowercased().hasPrefix("rediss://") {
            do {
                return RedisRecordBackend(endpoint: try RedisEndpoint(url: url))
            } catch {
                throw .invalid(String(describing: error))
            }
        }
        let lower = url.lowercased()
        if lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://") {
            return try PostgresRecordBackend(url: url)
        }
        let location: StoreLocation
        do {
            location = try StoreLocation(parsing: url)
        } catch {
            throw .invalid(error.description)
        }
        do {
            return ObjectStoreRecordBackend(
                store: try makeStore(location), prefix: location.prefix + normalized(recordsPrefix))
        } catch {
            throw .unavailable(String(describing: error))
        }
    }

    static func normalized(_ prefix: String) -> String {
        let trimmed = prefix.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        return trimmed.isEmpty ? "" : trimmed + "/"
    }
}
