import Foundation
import Glibc
import Logging
import ObjectStore
import Records

/// The mount's `UploadJournal` in its records: an `UploadState` record per multipart upload in flight (upload id,
/// key, staged file, host, pid, this run's mount id and the boot id), deleted when the upload completes or is
/// aborted. At the next mount on this host, `recoverInterrupted` finds the records of a daemon that died: the
/// staged content goes to the recovery folder (it may be a file cut off mid-write, so it is not completed), the
/// upload is aborted, and it is logged.
///
/// The records live in the bucket (or a shared Redis), so nothing in them is trusted as a local path: a staged
/// file is touched only if it is a plain file directly inside this mount's staging folder.
public struct UploadStateJournal: UploadJournal {
    public let uploads: UploadStateStore
    let logger: Logger
    /// This mount's staging folder: the only place a recorded staged file may be.
    let stagingDirectory: String
    /// New for every run, so that a daemon that is pid 1 in a container tells its own records from those of the
    /// run before it (same host name, same pid).
    public let mountID: String
    /// Where a recovered upload is reported (`upload_recovered`).
    public var events: (any EventSink)?
    /// Whether a pid recorded on this host is still a live daemon (the CLI checks that it is a bucketfs).
    let isAlive: @Sendable (pid_t) -> Bool
    public static let host = ProcessInfo.processInfo.hostName
    public static let bootID =
        (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
        .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""

    public init(
        uploads: UploadStateStore, logger: Logger, stagingDirectory: String, mountID: String,
        events: (any EventSink)? = nil,
        isAlive: @escaping @Sendable (pid_t) -> Bool = UploadStateJournal.processExists
    ) {
        self.uploads = uploads
        self.logger = logger
        self.stagingDirectory = stagingDirectory
        self.mountID = mountID
        self.events = events
        self.isAlive = isAlive
    }

    /// The default liveness check: the pid exists and is not a zombie (a killed daemon not yet reaped answers
    /// kill(0) but is gone: its state in /proc/PID/stat is Z).
    public static func processExists(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        return stat[close...].dropFirst(2).first != "Z"
    }

    public func begun(key: String, uploadID: String, stagedPath: String) -> String? {
        let id = "upload-" + UUID().uuidString.lowercased()
        let state = UploadStateRecord(
            id: id, key: key, uploadID: uploadID, stagedPath: stagedPath,
            metadata: [
                "host": .string(Self.host), "pid": .integer(Int64(getpid())), "mount_id": .string(mountID),
                "boot_id": .string(Self.bootID),
            ])
        do {
            try uploads.save(state)
            return id
        } catch {
            logger.warning(
                "cannot record a multipart upload in flight",
                metadata: ["key": "\(key)", "error": "\(error)"])
            return nil
        }
    }

    public func ended(_ id: String) {
        do { try uploads.delete(id) } catch {
            logger.warning(
                "cannot remove the record of a finished upload",
                metadata: ["id": "\(id)", "error": "\(error)"])
        }
    }

    /// Handles the uploads of daemons on this host that are gone; returns how many. A record that cannot be read is
    /// logged and the others are still handled.
    @discardableResult
    public func recoverInterrupted(store: any ObjectStore, recovery: RecoveryFolder) -> Int {
        let states: [UploadStateRecord]
        do {
            let listing = try uploads.listActiveTolerating()
            for (key, error) in listing.unreadable {
                logger.error("unreadable upload record; skipped", metadata: ["record": "\(key)", "error": "\(error)"])
            }
            states = listing.states
        } catch {
            logger.warning("cannot list upload records", metadata: ["error": "\(error)"])
            return 0
        }
        var handled = 0
        for state in states where isOrphan(state) {
            var saved: String?
            var stagedGone = false
            if let recorded = state.stagedPath {
                guard let staged = StagedPathCheck(recorded, stagingDirectory: stagingDirectory) else {
                    logger.error(
                        "upload record names a staged file outside this mount's staging folder; ignored",
                        metadata: ["record": "\(state.id)", "key": "\(state.key)", "path": "\(recorded)"])
                    continue
                }
                defer { staged.close() }
                if let fd = staged.fd {
                    saved = recovery.save(
                        contentOf: fd, key: state.key,
                        reason: "the daemon stopped while the file was being written; its multipart upload was aborted",
                        describing: recorded)
                    if saved != nil { staged.remove() }
                } else {
                    stagedGone = true  // the staging journal's recovery (which runs first) took care of it
                }
            }
            do throws(ObjectStoreError) {
                try store.abortMultipartUpload(state.key, uploadID: state.uploadID)
            } catch .notFound {
                // already gone
            } catch {
                logger.warning(
                    "cannot abort an interrupted upload",
                    metadata: ["key": "\(state.key)", "error": "\(error)"])
                continue  // keep the record: the next mount tries again
            }
            try? uploads.delete(state.id)
            if !stagedGone, let events {
                events.emit(
                    MountEventType.uploadRecovered,
                    [
                        "key": .string(state.key), "upload_id": .string(state.uploadID), "action": "aborted",
                        "recovery_id": saved.map { .string(type(of: events).recoveryID(saved: $0)) } ?? .null,
                        "recovery_path": saved.map { .string($0) } ?? .null,
                        "host": state.metadata["host"] ?? .null, "pid": state.metadata["pid"] ?? .null,
                    ])
            }
            logger.error(
                "interrupted upload found and aborted",
                metadata: [
                    "key": "\(state.key)", "upload": "\(state.uploadID)", "saved": "\(saved ?? "no staged data left")",
                ])
            handled += 1
        }
        return handled
    }

    /// Recorded on this host by a daemon that is gone: another boot, this pid but another run (pid 1 in a
    /// container), or a pid that is no longer a bucketfs daemon.
    public func isOrphan(_ state: UploadStateRecord) -> Bool {
        guard case .string(let host)? = state.metadata["host"], host == Self.host,
            case .integer(let pid)? = state.metadata["pid"]
        else { return false }
        if case .string(let boot)? = state.metadata["boot_id"], !boot.isEmpty, !Self.bootID.isEmpty,
            boot != Self.bootID
        {
            return true
        }
        if pid == Int64(getpid()) {
            guard case .string(let run)? = state.metadata["mount_id"] else { return false }
            return run != mountID
        }
        guard let pid = pid_t(exactly: pid), pid > 0 else { return false }
        return !isAlive(pid)
    }
}
