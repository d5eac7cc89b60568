import FileSystem
import Foundation
import Glibc
import Logging
import ObjectStore
import Records

/// The mount's `UploadJournal`: an `UploadState` record per multipart upload in flight (upload id, key, staged
/// file, host, pid, this run's mount id and the boot id), deleted when the upload completes or is aborted. At the
/// next mount on this host, `recoverInterrupted` finds the records of a daemon that died: the staged content goes
/// to the recovery folder (it may be a file cut off mid-write, so it is not completed), the upload is aborted, and
/// it is logged.
///
/// The records live in the bucket (or a shared Redis), so nothing in them is trusted as a local path: a staged
/// file is touched only if it is a plain file directly inside this mount's staging folder.
struct MountUploadJournal: UploadJournal {
    let uploads: UploadStateStore
    let logger: Logger
    /// This mount's staging folder: the only place a recorded staged file may be.
    let stagingDirectory: String
    /// New for every run, so that a daemon that is pid 1 in a container tells its own records from those of the
    /// run before it (same host name, same pid).
    let mountID: String
    /// Where a recovered upload is reported (`upload_recovered`).
    var events: (any EventSink)?
    static let host = ProcessInfo.processInfo.hostName
    static let bootID = (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
        .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""

    func begun(key: String, uploadID: String, stagedPath: String) -> String? {
        let id = "upload-" + UUID().uuidString.lowercased()
        let state = UploadStateRecord(id: id, key: key, uploadID: uploadID, stagedPath: stagedPath, metadata: [
            "host": .string(Self.host), "pid": .integer(Int64(getpid())), "mount_id": .string(mountID),
            "boot_id": .string(Self.bootID),
        ])
        do {
            try uploads.save(state)
            return id
        } catch {
            logger.warning("cannot record a multipart upload in flight", metadata: ["key": "\(key)", "error": "\(error)"])
            return nil
        }
    }

    func ended(_ id: String) {
        do { try uploads.delete(id) } catch {
            logger.warning("cannot remove the record of a finished upload", metadata: ["id": "\(id)", "error": "\(error)"])
        }
    }

    /// Handles the uploads of daemons on this host that are gone; returns how many. A record that cannot be read is
    /// logged and the others are still handled.
    @discardableResult
    func recoverInterrupted(store: any ObjectStore, recovery: RecoveryFolder) -> Int {
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
                    logger.error("upload record names a staged file outside this mount's staging folder; ignored",
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
                    stagedGone = true    // the staging journal's recovery (which runs first) took care of it
                }
            }
            do throws(ObjectStoreError) {
                try store.abortMultipartUpload(state.key, uploadID: state.uploadID)
            } catch .notFound {
                // already gone
            } catch {
                logger.warning("cannot abort an interrupted upload", metadata: ["key": "\(state.key)", "error": "\(error)"])
                continue    // keep the record: the next mount tries again
            }
            try? uploads.delete(state.id)
            if !stagedGone { events?.emit(MountEventType.uploadRecovered, [
                "key": .string(state.key), "upload_id": .string(state.uploadID), "action": "aborted",
                "recovery_id": saved.map { .string(MountEvents.recoveryID(saved: $0)) } ?? .null,
                "recovery_path": saved.map { .string($0) } ?? .null,
                "host": state.metadata["host"] ?? .null, "pid": state.metadata["pid"] ?? .null,
            ]) }
            logger.error("interrupted upload found and aborted", metadata: [
                "key": "\(state.key)", "upload": "\(state.uploadID)", "saved": "\(saved ?? "no staged data left")"])
            handled += 1
        }
        return handled
    }

    /// Recorded on this host by a daemon that is gone: another boot, this pid but another run (pid 1 in a
    /// container), or a pid that is no longer a bucketfs daemon.
    func isOrphan(_ state: UploadStateRecord) -> Bool {
        guard case .string(let host)? = state.metadata["host"], host == Self.host,
              case .integer(let pid)? = state.metadata["pid"] else { return false }
        if case .string(let boot)? = state.metadata["boot_id"], !boot.isEmpty, !Self.bootID.isEmpty,
           boot != Self.bootID { return true }
        if pid == Int64(getpid()) {
            guard case .string(let run)? = state.metadata["mount_id"] else { return false }
            return run != mountID
        }
        guard let pid = pid_t(exactly: pid), pid > 0 else { return false }
        return !MountRegistry.isAlive(pid)
    }
}

/// A staged path read from a record, accepted only as a regular file directly inside the staging folder, opened
/// without following links (so a forged record cannot make the daemon copy or delete anything else).
struct StagedPathCheck {
    private let folder: Int32
    private let name: String
    /// The open file, or nil when it is already gone.
    let fd: Int32?

    init?(_ recorded: String, stagingDirectory: String) {
        let url = URL(fileURLWithPath: recorded)
        let name = url.lastPathComponent
        guard recorded.hasPrefix("/"), url.deletingLastPathComponent().path == URL(fileURLWithPath: stagingDirectory).path,
              url.standardized.path == recorded, StagingJournal.isStagedFileName(name) else { return nil }
        let folder = open(stagingDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard folder >= 0 else { return nil }
        let fd = openat(folder, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            guard errno == ENOENT else { Glibc.close(folder); return nil }
            self.fd = nil
        } else {
            var status = stat()
            guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
                Glibc.close(fd)
                Glibc.close(folder)
                return nil
            }
            self.fd = fd
        }
        self.folder = folder
        self.name = name
    }

    func remove() {
        unlinkat(folder, name, 0)
    }

    func close() {
        if let fd { Glibc.close(fd) }
        Glibc.close(folder)
    }
}
