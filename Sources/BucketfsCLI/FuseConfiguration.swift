import Foundation
import Glibc

/// What `/etc/fuse.conf` allows users who are not root, read the way fusermount3 reads it: one option per line,
/// `#` starts a comment.
enum FuseConfiguration {
    static let path = "/etc/fuse.conf"

    /// Whether `user_allow_other` is set (a missing file sets nothing).
    static func allowsOther(configPath: String = path) -> Bool {
        guard let text = try? String(contentsOfFile: configPath, encoding: .utf8) else { return false }
        return text.split(whereSeparator: \.isNewline).contains { line in
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            return content.trimmingCharacters(in: .whitespaces) == "user_allow_other"
        }
    }

    /// fusermount3 refuses `allow_other` for users other than root unless fuse.conf allows it, and says so in a
    /// way that is easy to miss: check first and say how to fix it, before anything is mounted.
    static func requireAllowOtherPermitted(
        allowOther: Bool, uid: uid_t = getuid(),
        configPath: String = path
    ) throws(CLIError) {
        guard allowOther, uid != 0, !allowsOther(configPath: configPath) else { return }
        throw CLIError(
            "allow_other is refused for users other than root unless \(configPath) has a line user_allow_other: "
                + "add it (as root: echo user_allow_other >> \(configPath)), or mount without allow_other"
        )
    }

    /// Users other than root mount through the setuid fusermount3, which opens /dev/fuse itself: they only need
    /// the device to exist and fusermount3 to be installed.
    static func fusermountPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        let directories =
            (environment["PATH"] ?? "").split(separator: ":").map(String.init)
            + ["/usr/bin", "/bin", "/usr/local/bin"]
        return directories.map { $0 + "/fusermount3" }.first { access($0, X_OK) == 0 }
    }
}
