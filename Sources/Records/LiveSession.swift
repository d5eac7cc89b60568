import Foundation
import Synchronization

/// A session record kept alive by its owner (the daemon's mount): created at start, its counters refreshed every
/// few seconds from `counters`, ended with a status at the end. A backend that fails after the start is reported
/// through `warn` and never stops the owner.
///
/// The session keeps the record and version it last wrote, so a refresh is one write conditional on that version
/// (no read first); only when someone else changed the record (or the version is unknown) does it read and retry.
public final class LiveSession: @unchecked Sendable {
    public let id: String
    private let sessions: SessionStore
    private let counters: @Sendable () -> SessionRecord.Metrics
    private let warn: @Sendable (String, any Error) -> Void
    // Sendable by construction: the semaphores are thread-safe and everything else is immutable.
    private let stop = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let refreshing = Atomic(false)
    /// The record as this session last wrote it, and its version; nil until known.
    private let written = Mutex<(record: SessionRecord, version: String)?>(nil)

    /// A fresh mount id, `mount-<12 hex digits>`: the session's id and the name of the mount's event stream.
    public static func newMountID() -> String {
        "mount-" + UUID().uuidString.lowercased().prefix(13).replacingOccurrences(of: "-", with: "")
    }

    /// Creates the record (`metadata` plus `mount_id`); throws when the backend refuses.
    public init(
        id: String, sessions: SessionStore, userID: String, metadata: [String: JSONValue],
        counters: @escaping @Sendable () -> SessionRecord.Metrics,
        warn: @escaping @Sendable (String, any Error) -> Void = { _, _ in }
    ) throws(RecordError) {
        self.id = id
        self.sessions = sessions
        self.counters = counters
        self.warn = warn
        let fields = metadata.merging(["mount_id": .string(id)]) { mine, _ in mine }
        try RecordKey.validate(id, "session id")
        let record = SessionRecord(sessionID: id, userID: userID, metadata: fields)
        guard let version = try sessions.table.backend.create(key, data: try RecordCoding.encode(record)) else {
            throw .invalid("session \(id) exists already")
        }
        written.withLock { $0 = (record, version) }
    }

    private var key: String { RecordKey.session(id) }

    /// Refreshes the counters every `interval` seconds on a thread of its own, until `end`.
    public func refresh(every interval: Double) {
        guard !refreshing.exchange(true, ordering: .relaxed) else { return }
        let thread = Thread { [self] in
            while stop.wait(timeout: .now() + interval) == .timedOut { update() }
            stopped.signal()
        }
        thread.name = "bucketfs-session"
        thread.start()
    }

    /// Stops the refreshing, writes the last counters and marks the record ended with `status`.
    public func end(status: String) {
        if refreshing.load(ordering: .relaxed) {
            stop.signal()
            _ = stopped.wait(timeout: .now() + 10)
        }
        let metrics = counters()
        do {
            try modify { record in
                record.metrics = metrics
                record.status = status
                record.endedAt = RecordCoding.now()
            }
        } catch {
            warn("cannot end the mount's session record", error)
        }
    }

    /// Writes the current counters into the record.
    public func update() {
        let metrics = counters()
        do {
            try modify { $0.metrics = metrics }
        } catch {
            warn("cannot refresh the mount's session record", error)
        }
    }

    /// `change` applied to the record as last written, conditional on its version (one request); when that fails
    /// (another writer, or a lost answer), the current record is read and changed instead, as
    /// `SessionStore.modify` does. The refresher thread and `end` never run this at once (`end` stops it first).
    private func modify(_ change: (inout SessionRecord) -> Void) throws(RecordError) {
        if let (record, version) = written.withLock({ $0 }), try replace(record, at: version, change) { return }
        written.withLock { $0 = nil }
        for _ in 0..<RecordTable<SessionRecord>.maxAttempts {
            guard let (current, version) = try sessions.table.load(key) else { return }  // removed: nothing to do
            if try replace(current, at: version, change) { return }
            usleep(1_000 + UInt32.random(in: 0..<1_000))
        }
        throw .contended(key)
    }

    /// Writes `record` changed, if its version is still `version`; what was written is remembered for the next.
    private func replace(_ record: SessionRecord, at version: String, _ change: (inout SessionRecord) -> Void)
        throws(RecordError) -> Bool
    {
        var changed = record
        change(&changed)
        changed.updatedAt = max(RecordCoding.now(), changed.updatedAt)
        let data = try RecordCoding.encode(changed)
        guard let next = try sessions.table.backend.replace(key, data: data, ifVersion: version) else { return false }
        written.withLock { $0 = (changed, next) }
        return true
    }
}
