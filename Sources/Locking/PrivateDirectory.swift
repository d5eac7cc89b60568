import Foundation
import Glibc

/// Directories only this user may enter: the runtime directory (mount registry, default lock files) and the cache
/// directory (staged data, recovery copies, logs that name keys).
///
/// Without `XDG_RUNTIME_DIR` a user's runtime directory is `/tmp/bucketfs-<uid>`, a name anyone can guess and
/// create first, with links inside pointing at the user's files. So a directory made here is made 0700, and one
/// found already there must be a real directory (not a link), owned by this user, and writable by nobody else;
/// otherwise it is refused with one line saying why.
public enum PrivateDirectory {
    public struct Refused: Error, CustomStringConvertible {
        public let description: String
    }

    /// The directory for this user's runtime files: `/run/bucketfs` for root, `$XDG_RUNTIME_DIR/bucketfs`, else
    /// `/tmp/bucketfs-<uid>`.
    public static func runtimeBase(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if getuid() == 0 { return "/run/bucketfs" }
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/bucketfs" }
        return "/tmp/bucketfs-\(getuid())"
    }

    /// `base/sub` (sub may be ""), each created 0700 if missing, `base` checked as above (its parents, such as
    /// /tmp or /run, are the system's). Returns the full path.
    @discardableResult
    public static func prepare(_ base: String, sub: String = "") throws(Refused) -> String {
        let parent = (base as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != base {
            // The parents (/tmp, $XDG_RUNTIME_DIR, ~/.cache) may be shared or ours: made if missing, not checked.
            do { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
                throw Refused(description: "cannot create \(parent): \(error.localizedDescription)")
            }
        }
        try makeOrCheck(base)
        var path = base
        for component in sub.split(separator: "/") {
            path += "/" + component
            try makeOrCheck(path)
        }
        return path
    }

    /// Creates `path` 0700, or checks that the one there is a directory of ours that no one else can write.
    public static func makeOrCheck(_ path: String) throws(Refused) {
        if mkdir(path, 0o700) == 0 {
            _ = chmod(path, 0o700)  // the umask may have taken bits we set, never added any
            return
        }
        guard errno == EEXIST else {
            throw Refused(description: "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard lstat(path, &info) == 0 else {
            throw Refused(description: "cannot use \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw Refused(description: "refusing \(path): not a directory (a symbolic link or a file is there)")
        }
        guard info.st_uid == geteuid() else {
            throw Refused(
                description: "refusing \(path): owned by uid \(info.st_uid), not by this user "
                    + "(uid \(geteuid())); remove it or set XDG_RUNTIME_DIR")
        }
        guard info.st_mode & 0o022 == 0 else {
            throw Refused(
                description: "refusing \(path): writable by group or others (mode "
                    + "0\(String(info.st_mode & 0o7777, radix: 8))); chmod 700 it")
        }
        // Ours and safe: close it to others too (an older version made these 0755).
        if info.st_mode & 0o077 != 0 { _ = chmod(path, 0o700) }
    }
}
