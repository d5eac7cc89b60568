import Foundation
import Glibc
import Logging
import ObjectStore
import Synchronization

/// Makes staged writes survive a crash of the daemon. Each dirty staged file `staging/staged-XXXXXX` gets a sidecar
/// `staged-XXXXXX.journal` (JSON, written through a temp file and renamed in) naming its key, the version its
/// content is based on (or that it is a new file), the metadata to send and the mount that owns it. The sidecar
/// goes when the file is clean again or discarded.
///
/// Sidecars are not fsynced, like the staged bytes they describe: a daemon that dies leaves both in the page cache,
/// which is what recovery needs; after a power loss neither is promised (the file was never fsynced — `fsync`
/// uploads it). The three fsyncs a file cost (sidecar, folder, folder again at its removal) took as long as its
/// PUT in a create loop on SeaweedFS.
///
/// Ownership: every journal holds an exclusive `flock` on `staging/mount-<id>.lock` (a new id per run) for the
/// daemon's life. The kernel drops it when the process dies however it dies, so a lock that can be taken means
/// its owner is gone — no pid is compared, which also holds for a daemon that is pid 1 in a container (every run
/// has the same pid) and across reboots.
///
/// At mount, `recover` handles every sidecar of a mount that is gone: a file every writer had closed is uploaded
/// conditionally (`ifAbsent` for a new file, `ifVersionMatches(base)` otherwise: a newer object is never
/// overwritten); otherwise (still open, so maybe cut off mid-write; changed in the store; another store; store
/// failing) the content goes to the recovery folder. One log line per
/// file. A sidecar that cannot be read is logged and left alone; the others are still recovered.
public final class StagingJournal: Sendable {
    public let directory: String
    /// This run's id: the sidecars it writes carry it.
    public let mountID: String
    /// The store's URL (`s3://bucket/`): a recovered file goes back only to the store it came from.
    let store: String
    let context: [String: String]
    let logger: Logger
    /// Held open (and locked) for the journal's life.
    private let lockFD: Int32
    static let sidecarSuffix = ".journal"

    /// What a staged file's content is based on.
    public enum Base: Sendable, Equatable {
        /// A new file: upload only if the key is still absent.
        case absent
        /// The object at this version: upload only if it is still the current one.
        case version(String)
        /// Nothing to make the upload conditional on: recovery keeps the content in the recovery folder.
        case unknown
    }

    /// One sidecar's content.
    struct Record: Codable, Equatable {
        var formatVersion = 1
        var key: String
        /// `absent`, `version:<v>` or `unknown`.
        var base: String
        var contentType: String?
        var metadata: ObjectMetadata
        var store: String
        var context: [String: String]
        var mountID: String
        var pid: Int32
        var updated: Date
        /// Every writer had closed the file when this was recorded: its content is what they meant, and recovery
        /// may publish it. Otherwise it may be cut off mid-write and only goes to the recovery folder.
        var closed: Bool

        enum CodingKeys: String, CodingKey {
            case formatVersion = "format_version"
            case key, base, metadata, store, context, pid, updated
            case contentType = "content_type"
            case mountID = "mount_id"
            case closed = "closed_by_writers"
        }
    }

    /// Opens the journal in `directory` (created if missing) and takes this run's ownership lock.
    public init(directory: String, store: String, context: [String: String], logger: Logger) throws(FSError) {
        self.directory = directory
        self.store = store
        self.context = context
        self.logger = logger
        mountID = UUID().uuidString.lowercased()
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
        } catch {
            throw FSError.io("cannot create staging directory \(directory): \(error.localizedDescription)")
        }
        let path = "\(directory)/mount-\(mountID).lock"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0, flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let message = String(cString: strerror(errno))
            if fd >= 0 { close(fd) }
            throw FSError.io("cannot lock \(path): \(message)")
        }
        lockFD = fd
    }

    deinit {
        unlink("\(directory)/mount-\(mountID).lock")
        close(lockFD)
    }

    // MARK: - While mounted

    /// Call when a staged file first becomes dirty (`closed: false`), again whenever its key, base or metadata
    /// changes (rename, successful upload of an earlier state, chmod), and with `closed: true` when the last writer
    /// closed it while it is still dirty (its upload failed and waits for a retry). Returns false (logged) if the
    /// sidecar could not be written: the write itself goes on, it is only not crash-safe.
    @discardableResult
    public func record(
        stagedPath: String, key: String, base: Base, contentType: String?,
        metadata: ObjectMetadata, closed: Bool
    ) -> Bool {
        let record = Record(
            key: key, base: Self.encode(base), contentType: contentType, metadata: metadata,
            store: store, context: context, mountID: mountID, pid: getpid(), updated: Date(),
            closed: closed)
        do {
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.sortedKeys]
            try RecoveryFolder.writeAtomically(try encoder.encode(record), to: sidecar(of: stagedPath), sync: false)
            return true
        } catch {
            logger.warning(
                "cannot journal a staged file; it would not survive a crash of the daemon",
                metadata: ["key": "\(key)", "error": "\(error)"])
            return false
        }
    }

    /// Call when the staged file is clean (its content is in the store) or discarded.
    public func clear(stagedPath: String) {
        unlink(sidecar(of: stagedPath))
    }

    func sidecar(of stagedPath: String) -> String {
        "\(directory)/\((stagedPath as NSString).lastPathComponent)\(Self.sidecarSuffix)"
    }

    /// Whether `name` is one `StagedFile` makes (`staged-XXXXXX`): nothing else is ever taken for staged content.
    public static func isStagedFileName(_ name: String) -> Bool { isStagedName(name) }

    static func encode(_ base: Base) -> String {
        switch base {
        case .absent: return "absent"
        case .version(let v): return "version:" + v
        case .unknown: return "unknown"
        }
    }

    static func decode(_ base: String) -> Base {
        if base == "absent" { return .absent }
        if base.hasPrefix("version:") { return .version(String(base.dropFirst(8))) }
        return .unknown
    }
}
