import Foundation

/// One event of a stream's append-only log, `events/<stream>/<sequence>.json` (`<sequence>` 10 digits, so key
/// order is log order). `type` says what happened (`mounted`, `upload_failed`…), `data` the details.
public struct EventRecord: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var stream: String
    /// 0-based position in the stream.
    public var sequence: Int
    public var type: String
    public var timestamp: Date
    public var data: [String: JSONValue]

    public init(
        stream: String, sequence: Int, type: String, timestamp: Date = RecordCoding.now(),
        data: [String: JSONValue] = [:]
    ) {
        schemaVersion = RecordCoding.schemaVersion
        self.stream = stream
        self.sequence = sequence
        self.type = type
        self.timestamp = timestamp
        self.data = data
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case stream, sequence, type, timestamp, data
    }
}

/// Where a component reports what happened to it (the daemon: its mount's event stream). Implementations never
/// throw and never block for long: a failed write is logged, not the caller's problem.
public protocol EventSink: Sendable {
    func emit(_ type: String, _ data: [String: JSONValue])
}

/// The event types the daemon writes.
public enum MountEventType {
    public static let mounted = "mounted"
    public static let unmounted = "unmounted"
    public static let lockLost = "lock_lost"
    /// A staged file a killed daemon left was uploaded at the next mount (the object had not changed meanwhile).
    public static let uploadResumed = "upload_resumed"
    /// An upload a crashed daemon left in flight was found at the next mount: aborted, content kept for recovery.
    public static let uploadRecovered = "upload_recovered"
    /// An upload failed at close/fsync: its content is in the recovery folder (the dead-letter queue).
    public static let uploadFailed = "upload_failed"
}

extension EventSink {
    /// An upload failed; `saved` is the recovery folder's data file (`RecoveryFolder.save`), nil if it could not
    /// be saved. The event names the id `bucketfs recover list|push` takes.
    public func uploadFailed(key: String, saved: String?, error: String, conflict: Bool) {
        var data: [String: JSONValue] = ["key": .string(key), "error": .string(error), "conflict": .bool(conflict)]
        data["recovery_id"] = saved.map { .string(Self.recoveryID(saved: $0)) } ?? .null
        data["recovery_path"] = saved.map { .string($0) } ?? .null
        emit(MountEventType.uploadFailed, data)
    }

    /// `<dir>/<stamp>-<id>.data` → `<stamp>-<id>`.
    public static func recoveryID(saved path: String) -> String {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return name.hasSuffix(".data") ? String(name.dropLast(5)) : name
    }
}
