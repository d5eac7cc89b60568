import FileSystem
import Foundation
import Glibc
import Logging
import ObjectStore
import Records

/// The mount's `UploadJournal`: an `UploadState` record per multipart upload in flight (upload id, key, staged
/// file, host and pid), deleted when the upload completes or is aborted. At the next mount on this host,
/// `recoverInterrupted` finds the records of a daemon that died: the staged content goes to the recovery folder
/// (it may be a file cut off mid-write, so it is not completed), the upload is aborted, and it is logged.
struct MountUploadJournal: UploadJournal {
    let uploads: UploadStateStore
    let logger: Logger
    static let host = ProcessInfo.processInfo.hostName

    func begun(key: String, uploadID: String, stagedPath: String) -> String? {
        let id = "upload-" + UUID().uuidString.lowercased()
        let state = UploadStateRecord(id: id, key: key, uploadID: uploadID, stagedPath: stagedPath,
                                      metadata: ["host": .string(Self.host), "pid": .integer(Int64(getpid()))])
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

    /// Handles the uploads of daemons on this host that are gone; returns how many.
    @discardableResult
    func recoverInterrupted(store: any ObjectStore, fileSystem: FileSystem) -> Int {
        let states: [UploadStateRecord]
        do { states = try uploads.listActive() } catch {
            logger.warning("cannot list upload records", metadata: ["error": "\(error)"])
            return 0
        }
        var handled = 0
        for state in states where isOrphan(state) {
            var saved: String?
            if let staged = state.stagedPath, FileManager.default.fileExists(atPath: staged) {
                saved = fileSystem.keepForRecovery(
                    stagedPath: staged, key: state.key,
                    reason: "the daemon stopped while the file was being written; its multipart upload was aborted")
                if saved != nil { unlink(staged) }
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
            logger.error("interrupted upload found and aborted", metadata: [
                "key": "\(state.key)", "upload": "\(state.uploadID)", "saved": "\(saved ?? "no staged data left")"])
            handled += 1
        }
        return handled
    }

    /// Recorded on this host by a process that is no longer a bucketfs daemon.
    private func isOrphan(_ state: UploadStateRecord) -> Bool {
        guard case .string(let host)? = state.metadata["host"], host == Self.host,
              case .integer(let pid)? = state.metadata["pid"], pid != Int64(getpid()) else { return false }
        return !MountRegistry.isAlive(pid_t(pid))
    }
}
