import Foundation
import Glibc
import Logging
import Synchronization

/// Where the content of a file whose upload failed is kept, so that nothing is lost silently:
/// `<cache>/recovery/<time>-<n>.data` with `<time>-<n>.json` naming the store, the key, the reason and the version
/// the content was based on (`base`: `absent` for a new file, `version:<v>`), so that `bucketfs recover push` can
/// refuse to overwrite a newer object. `bucketfs recover list|push` reads them.
///
/// A copy is durable (file and folder fsynced) before `save` returns, so the caller may drop its original.
/// Copies made for the same `episode` (one file failing again and again while the store is down) replace each
/// other, and `resolved(episode:)` drops the copy once a later upload of that file succeeded: the folder holds one
/// copy per failing file, not one per failed flush.
public struct RecoveryFolder: Sendable {
    public let directory: String
    /// The store's URL (`s3://bucket/`), so that `bucketfs recover push` knows where the key goes.
    public let store: String
    /// How the store was reached (endpoint, region…), so that a push goes to the same place.
    public let context: [String: String]
    let logger: Logger
    /// The copy (path without extension) each episode has, in this process.
    private let episodes = EpisodeTable()

    /// What the saved content was based on: what `recover push` may replace without `--force`.
    public enum Base: Sendable, Equatable {
        /// A new file: the key was absent.
        case absent
        /// The object at this version.
        case version(String)

        var recorded: String {
            switch self {
            case .absent: return "absent"
            case .version(let v): return "version:" + v
            }
        }

        public init?(recorded: String?) {
            guard let recorded else { return nil }
            if recorded == "absent" {
                self = .absent
            } else if recorded.hasPrefix("version:") {
                self = .version(String(recorded.dropFirst(8)))
            } else {
                return nil
            }
        }
    }

    public init(directory: String, store: String, context: [String: String], logger: Logger) {
        self.directory = directory
        self.store = store
        self.context = context
        self.logger = logger
    }

    /// Copies `stagedPath` (a regular file, not followed if it is a link) into the folder. Returns the copy's path,
    /// or nil if even that failed (logged).
    @discardableResult
    public func save(
        stagedPath: String, key: String, reason: String, base: Base? = nil,
        episode: String? = nil
    ) -> String? {
        let fd = open(stagedPath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            logger.critical(
                "upload failed and the content could not be saved for recovery",
                metadata: [
                    "key": "\(key)", "reason": "\(reason)", "error": "\(String(cString: strerror(errno)))",
                    "staged": "\(stagedPath)",
                ])
            return nil
        }
        defer { close(fd) }
        return save(
            contentOf: fd, key: key, reason: reason, base: base, episode: episode,
            describing: stagedPath)
    }

    /// Copies the open file `fd` (from its start) into the folder; see `save(stagedPath:…)`. `store` and
    /// `context` default to this folder's (a crashed daemon's record may name another store).
    @discardableResult
    public func save(
        contentOf fd: Int32, key: String, reason: String, base: Base? = nil, episode: String? = nil,
        store: String? = nil, context: [String: String]? = nil, describing source: String
    ) -> String? {
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        let copy = "\(directory)/\(stamp)-\(UUID().uuidString.prefix(8))"
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
            try Self.copyDurably(from: fd, to: copy + ".data")
            var info = (context ?? self.context).merging([
                "store": store ?? self.store, "key": key, "reason": reason,
                "saved": stamp, "data": copy + ".data",
            ]) { _, fixed in fixed }
            if let base { info["base"] = base.recorded }
            if let episode { info["episode"] = episode }
            let json = try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys])
            try Self.writeAtomically(json, to: copy + ".json")
            try Self.syncDirectory(directory)
        } catch {
            unlink(copy + ".data")
            logger.critical(
                "upload failed and the content could not be saved for recovery",
                metadata: [
                    "key": "\(key)", "reason": "\(reason)", "error": "\(error)", "staged": "\(source)",
                ])
            return nil
        }
        if let episode, let earlier = episodes.replace(episode, with: copy) { remove(earlier) }
        logger.error(
            "upload failed; content kept for recovery",
            metadata: [
                "key": "\(key)", "reason": "\(reason)", "saved": "\(copy).data",
            ])
        return copy + ".data"
    }

    /// A later upload of the file of `episode` succeeded: its copy (if this process made one) is out of date.
    public func resolved(episode: String) {
        guard let copy = episodes.take(episode) else { return }
        remove(copy)
        logger.info("a later upload succeeded; recovery copy removed", metadata: ["saved": "\(copy).data"])
    }

    private func remove(_ copy: String) {
        unlink(copy + ".json")
        unlink(copy + ".data")
        try? Self.syncDirectory(directory)
    }

    // MARK: - Durable files

    struct WriteError: Error, CustomStringConvertible {
        var description: String
    }

    private static func error(_ operation: String, _ path: String) -> WriteError {
        WriteError(description: "\(operation) \(path): \(String(cString: strerror(errno)))")
    }

    /// Copies all of `source` into a new file at `path` (0600) and fsyncs it.
    static func copyDurably(from source: Int32, to path: String) throws {
        let out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw error("create", path) }
        defer { close(out) }
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        var offset: off_t = 0
        while true {
            let n = pread(source, buffer, size, offset)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw error("read", path) }
            if n == 0 { break }
            var done = 0
            while done < n {
                let w = write(out, buffer + done, n - done)
                if w < 0 && errno == EINTR { continue }
                if w < 0 { throw error("write", path) }
                done += w
            }
            offset += off_t(n)
        }
        guard fsync(out) == 0 else { throw error("fsync", path) }
    }

    /// Writes `data` to `path` through a temp file, fsynced (unless `sync` is false) and renamed in (the caller
    /// syncs the directory).
    static func writeAtomically(_ data: Data, to path: String, sync: Bool = true) throws {
        let temp = path + ".tmp-" + UUID().uuidString.prefix(8)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw error("create", temp) }
        let written = data.withUnsafeBytes { buffer -> Bool in
            var done = 0
            while done < buffer.count {
                let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
                if n < 0 && errno == EINTR { continue }
                if n < 0 { return false }
                done += n
            }
            return !sync || fsync(fd) == 0
        }
        let failure = error("write", temp)
        close(fd)
        guard written else {
            unlink(temp)
            throw failure
        }
        guard rename(temp, path) == 0 else {
            unlink(temp)
            throw error("rename", path)
        }
    }

    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw error("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw error("fsync", path) }
    }
}

/// Episode → copy, shared by the copies of one `RecoveryFolder` value.
private final class EpisodeTable: Sendable {
    private let copies = Mutex<[String: String]>([:])

    /// Records `copy` for `episode`; returns the copy it replaces.
    func replace(_ episode: String, with copy: String) -> String? {
        copies.withLock { table in
            let earlier = table[episode]
            table[episode] = copy
            return earlier
        }
    }

    func take(_ episode: String) -> String? {
        copies.withLock { $0.removeValue(forKey: episode) }
    }
}
