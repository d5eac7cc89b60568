import Foundation
import Synchronization

/// A session record kept alive by its owner (the daemon's mount): created at start, its counters refreshed every
/// few seconds from `counters`, ended with a status at the end. A backend that fails after the start is reported
/// through `warn` and never stops the owner.
public final class LiveSession: @unchecked Sendable {
    public let id: String
    private let sessions: SessionStore
    private let counters: @Sendable () -> SessionRecord.Metrics
    private let warn: @Sendable (String, any Error) -> Void
    // Sendable by construction: the semaphores are thread-safe and everything else is immutable.
    private let stop = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let refreshing = Atomic(false)

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
        _ = try sessions.create(id: id, userID: userID, metadata: fields)
    }

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
        update()
        do { _ = try sessions.end(id, status: status) } catch {
            warn("cannot end the mount's session record", error)
        }
    }

    /// Writes the current counters into the record.
    public func update() {
        let metrics = counters()
        do {
            _ = try sessions.modify(id) { $0.metrics = metrics }
        } catch {
            warn("cannot refresh the mount's session record", error)
        }
    }
}
