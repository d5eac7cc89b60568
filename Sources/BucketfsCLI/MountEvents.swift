import FileSystem
import Foundation
import Locking
import Logging
import Records

/// The mount's event stream, `events/<mount id>/<seq>.json` in the records backend: mounted, unmounted, lock
/// lost, upload recovered after a crash, upload failed. An event that cannot be written is logged; the mount
/// goes on.
final class MountEvents: EventSink {
    let stream: String
    private let log: EventLog
    private let logger: Logger

    init(stream: String, log: EventLog, logger: Logger) {
        self.stream = stream
        self.log = log
        self.logger = logger
    }

    func emit(_ type: String, _ data: [String: JSONValue]) {
        do { try log.append(stream: stream, type: type, data: data) } catch {
            logger.warning("cannot record a mount event", metadata: ["type": "\(type)", "error": "\(error)"])
        }
    }

    /// Staged files of a killed daemon, handled at this mount: finished uploading (`upload_resumed`) or kept in
    /// the recovery folder (`upload_recovered`, action `kept`).
    func stagingRecovered(_ report: StagingJournal.RecoveryReport) {
        for key in report.uploaded { emit(MountEventType.uploadResumed, ["key": .string(key), "action": "uploaded"]) }
        for key in report.kept {
            let saved = report.savedCopies[key]
            emit(
                MountEventType.uploadRecovered,
                [
                    "key": .string(key), "action": "kept",
                    "recovery_id": saved.map { .string(Self.recoveryID(saved: $0)) } ?? .null,
                    "recovery_path": saved.map { .string($0) } ?? .null,
                ])
        }
    }

    /// For `LockManager(onLost:)`, called on its renewal thread.
    func lockLost(_ lease: Lease, _ error: LockError) {
        emit(
            MountEventType.lockLost,
            [
                "resource": .string(lease.resource), "token": .integer(Int64(lease.token)),
                "error": .string(error.description),
            ])
    }
}
