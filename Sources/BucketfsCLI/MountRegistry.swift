import FileSystem
import Foundation
import Glibc
import Locking
import Synchronization

/// What the registry file of one live mount says: written at mount, refreshed by the daemon every few seconds.
struct MountRecord: Codable, Equatable, Sendable {
    var pid: Int32
    var source: String
    var mountpoint: String
    /// ISO-8601, UTC.
    var started: String
    var updated: String?
    var pendingUploads: Int?
    var heldLocks: [String]?

    enum CodingKeys: String, CodingKey {
        case pid, source, mountpoint, started, updated
        case pendingUploads = "pending_uploads"
        case heldLocks = "held_locks"
    }

    var startedDate: Date? { ISO8601DateFormatter().date(from: started) }
}

/// A small JSON file per live mount (`<runtime dir>/mounts/<mount point>.json`: pid, source, mount point, start
/// time, pending uploads, held locks), so that `bucketfs unmount` can wait for the daemon to finish uploading and
/// exit, and `bucketfs status` can list mounts.
final class MountRegistry: Sendable {
    let file: String
    private let record: Mutex<MountRecord>
    /// Set by `remove`: a refresh that comes later must not bring the file back.
    private let removed = Mutex(false)

    private init(file: String, record: MountRecord) {
        self.file = file
        self.record = Mutex(record)
    }

    static var directory: String { PrivateDirectory.runtimeBase() + "/mounts" }

    /// Creates the registry directory 0700, or refuses one someone else made (`/tmp/bucketfs-<uid>` is a name
    /// anyone can take first): one line, before anything is mounted.
    static func prepareDirectory() throws(CLIError) {
        do { try PrivateDirectory.prepare(PrivateDirectory.runtimeBase(), sub: "mounts") } catch {
            throw CLIError("runtime directory: \(error)")
        }
    }

    static func file(for mountpoint: String) -> String {
        directory + "/" + fileName(for: mountpoint) + ".json"
    }

    /// A file name for a mount point, one-to-one: `%` and `/` are percent-escaped.
    static func fileName(for mountpoint: String) -> String {
        mountpoint.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "/", with: "%2F")
    }

    static func register(source: String, mountpoint: String) -> MountRegistry? {
        let now = ISO8601DateFormatter().string(from: Date())
        let record = MountRecord(
            pid: getpid(), source: source, mountpoint: mountpoint, started: now, updated: now,
            pendingUploads: 0, heldLocks: [])
        do { try prepareDirectory() } catch {
            FileHandle.standardError.write(
                Data("bucketfs: mount not registered (status, unmount cannot see it): \(error)\n".utf8))
            return nil
        }
        let registry = MountRegistry(file: file(for: mountpoint), record: record)
        return registry.write() ? registry : nil
    }

    /// Rewrites the entry every `interval` seconds with the daemon's pending uploads and held locks, on a thread
    /// of its own (the daemon's work runs on libfuse's threads), until `remove`.
    func refresh(
        every interval: Double, pendingUploads: @escaping @Sendable () -> Int,
        heldLocks: @escaping @Sendable () -> [String]
    ) {
        let thread = Thread { [self] in
            while !removed.withLock({ $0 }) {
                Thread.sleep(forTimeInterval: interval)
                update(pendingUploads: pendingUploads(), heldLocks: heldLocks())
            }
        }
        thread.name = "bucketfs-registry"
        thread.start()
    }

    func update(pendingUploads: Int, heldLocks: [String]) {
        record.withLock { r in
            r.pendingUploads = pendingUploads
            r.heldLocks = heldLocks
            r.updated = ISO8601DateFormatter().string(from: Date())
        }
        _ = write()
    }

    func remove() {
        removed.withLock { gone in
            gone = true
            unlink(file)
        }
    }

    /// Writes to a temporary file and renames it over the entry, so a reader never sees half a file.
    private func write() -> Bool {
        let snapshot = record.withLock { $0 }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(snapshot) else { return false }
        return removed.withLock { gone -> Bool in
            guard !gone else { return false }
            let temporary = file + ".tmp"
            guard FileManager.default.createFile(atPath: temporary, contents: data) else { return false }
            return rename(temporary, file) == 0
        }
    }

    // MARK: - Readers

    static func record(at path: String) -> MountRecord? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(MountRecord.self, from: data)
    }

    /// Every entry whose daemon is still alive, sorted by mount point. Entries of daemons that died without
    /// removing theirs (SIGKILL, a crash) are left out.
    static func liveRecords() -> [MountRecord] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".json") }
            .compactMap { record(at: directory + "/" + $0) }
            .filter { isAlive($0.pid) }
            .sorted { $0.mountpoint < $1.mountpoint }
    }

    /// The pid is alive and still a bucketfs (a pid can be reused after a daemon died without its entry going).
    static func isAlive(_ pid: pid_t) -> Bool {
        guard UploadStateJournal.processExists(pid) else { return false }
        guard let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe") else {
            return true  // another user's process: cannot tell, trust the entry
        }
        return (executable as NSString).lastPathComponent.hasPrefix("bucketfs")
    }

    static func daemonPID(mountpoint: String) -> pid_t? {
        record(at: file(for: mountpoint))?.pid
    }

    /// Polls until `pid` is gone; false after `seconds`.
    static func wait(forExitOf pid: pid_t, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if kill(pid, 0) != 0 && errno == ESRCH { return true }
            usleep(20_000)
        }
        return false
    }
}
