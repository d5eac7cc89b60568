import Foundation
import Logging
import ObjectStore
import Records

/// The mount's own session record: created at mount, its counters refreshed every few seconds from the store
/// meter, ended with a status at unmount. A records backend that fails is logged, never fatal to the mount.
final class MountSession: @unchecked Sendable {
    let id: String
    let stores: RecordStores
    private let meter: MeteredStore
    private let logger: Logger
    private let stop = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)

    /// A fresh mount id, `mount-<12 hex digits>`: the session's id and the name of the mount's event stream.
    static func newID() -> String {
        "mount-" + UUID().uuidString.lowercased().prefix(13).replacingOccurrences(of: "-", with: "")
    }

    /// Creates the record; nil (logged) when the backend refuses.
    init?(id: String = MountSession.newID(), stores: RecordStores, meter: MeteredStore, logger: Logger,
          metadata: [String: JSONValue]) {
        self.id = id
        self.stores = stores
        self.meter = meter
        self.logger = logger
        do {
            try stores.sessions.create(id: id, userID: String(getuid()), metadata: metadata.merging(["mount_id": .string(id)]) { a, _ in a })
        } catch {
            logger.warning("cannot record the mount's session", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Refreshes the counters every `interval` seconds on a thread of its own, until `end`.
    func refresh(every interval: Double) {
        let thread = Thread { [self] in
            while stop.wait(timeout: .now() + interval) == .timedOut { update() }
            stopped.signal()
        }
        thread.name = "bucketfs-session"
        thread.start()
    }

    func end(status: String) {
        stop.signal()
        _ = stopped.wait(timeout: .now() + 10)
        update()
        do { try stores.sessions.end(id, status: status) } catch {
            logger.warning("cannot end the mount's session record", metadata: ["error": "\(error)"])
        }
    }

    private func update() {
        let counters = meter.snapshot
        do {
            try stores.sessions.modify(id) { record in
                record.metrics = SessionRecord.Metrics(requestCount: counters.requests,
                                                       totalProcessingTime: (counters.seconds * 1000).rounded() / 1000,
                                                       errorCount: counters.errors)
            }
        } catch {
            logger.warning("cannot refresh the mount's session record", metadata: ["error": "\(error)"])
        }
    }
}
