import Foundation
import Glibc

/// A small JSON file per live mount (`<runtime dir>/mounts/<mount point>.json`: pid, source, mount point, start
/// time), so that `bucketfs unmount` can wait for the daemon to finish uploading and exit.
struct MountRegistry {
    let file: String

    static var directory: String {
        if getuid() == 0 { return "/run/bucketfs/mounts" }
        if let runtime = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], !runtime.isEmpty {
            return runtime + "/bucketfs/mounts"
        }
        return "/tmp/bucketfs-\(getuid())/mounts"
    }

    static func file(for mountpoint: String) -> String {
        directory + "/" + fileName(for: mountpoint) + ".json"
    }

    /// A file name for a mount point, one-to-one: `%` and `/` are percent-escaped.
    static func fileName(for mountpoint: String) -> String {
        mountpoint.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "/", with: "%2F")
    }

    static func register(source: String, mountpoint: String) -> MountRegistry? {
        let entry: [String: Any] = ["pid": Int(getpid()), "source": source, "mountpoint": mountpoint,
                                    "started": ISO8601DateFormatter().string(from: Date())]
        let path = file(for: mountpoint)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
            return MountRegistry(file: path)
        } catch {
            return nil
        }
    }

    func remove() { unlink(file) }

    static func daemonPID(mountpoint: String) -> pid_t? {
        guard let data = FileManager.default.contents(atPath: file(for: mountpoint)),
              let entry = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let pid = entry["pid"] as? Int else { return nil }
        return pid_t(pid)
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
