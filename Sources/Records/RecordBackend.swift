import Foundation

/// A stored record's bytes and the version that a compare-and-swap must name.
public struct StoredRecord: Sendable, Equatable {
    public var data: Data
    public var version: String
    public var modified: Date?

    public init(data: Data, version: String, modified: Date? = nil) {
        self.data = data
        self.version = version
        self.modified = modified
    }
}

/// Where records live: keys such as `sessions/<id>.json` (relative to the records prefix) mapped to JSON bytes,
/// with versions for compare-and-swap. Implemented over any `ObjectStore` and over Redis.
///
/// Calls are synchronous and may block on I/O (never call them from Swift's cooperative pool). Every failure is
/// a `RecordError`.
public protocol RecordBackend: Sendable {
    /// For logs and `health`, e.g. `s3://bucket/prefix/.bucketfs/` or `redis://127.0.0.1:6379/0`.
    var description: String { get }
    func read(_ key: String) throws(RecordError) -> StoredRecord?
    /// Writes only if the key is absent; `nil` when it exists already.
    func create(_ key: String, data: Data) throws(RecordError) -> String?
    /// Writes only if the key is still at `version`; `nil` when it changed (or is gone).
    func replace(_ key: String, data: Data, ifVersion version: String) throws(RecordError) -> String?
    /// Writes whatever is there.
    @discardableResult
    func write(_ key: String, data: Data) throws(RecordError) -> String
    /// `false` when the key was absent.
    @discardableResult
    func remove(_ key: String) throws(RecordError) -> Bool
    /// Every key under `prefix` (recursively), sorted.
    func keys(under prefix: String) throws(RecordError) -> [String]
    /// A cheap round trip that proves the backend answers.
    func ping() throws(RecordError)
}
