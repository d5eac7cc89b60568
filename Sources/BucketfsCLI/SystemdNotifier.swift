import Foundation
import Glibc

/// systemd's readiness protocol (`Type=notify`) without libsystemd: each state change is one datagram of
/// `KEY=value` lines sent to the AF_UNIX socket named by `$NOTIFY_SOCKET`. A name starting with `@` is in the
/// abstract namespace (the `@` stands for a leading NUL byte).
struct SystemdNotifier: Sendable {
    let socketPath: String

    /// The notifier for `$NOTIFY_SOCKET`, or nil when not started by systemd (nor by a test posing as it).
    static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        -> SystemdNotifier?
    {
        guard let path = environment["NOTIFY_SOCKET"], path.hasPrefix("/") || path.hasPrefix("@"), path.utf8.count > 1
        else { return nil }
        return SystemdNotifier(socketPath: path)
    }

    /// The mount is serving: systemd finishes starting the unit (and starts what is ordered after it).
    @discardableResult
    func ready(status: String? = nil) -> Bool {
        notify("READY=1\nMAINPID=\(getpid())" + (status.map { "\nSTATUS=" + $0 } ?? ""))
    }

    /// The daemon is shutting down (pending uploads are flushed, then it unmounts).
    @discardableResult
    func stopping() -> Bool { notify("STOPPING=1") }

    /// Free text shown by `systemctl status`.
    @discardableResult
    func status(_ text: String) -> Bool { notify("STATUS=" + text) }

    /// Sends one datagram; false when it could not be sent (systemd treats a lost notification as none).
    func notify(_ message: String) -> Bool {
        guard let (address, length) = Self.address(socketPath) else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var target = address
        let bytes = Array(message.utf8)
        let sent = withUnsafePointer(to: &target) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL), socketAddress, length)
            }
        }
        return sent == bytes.count
    }

    /// The socket address and its length; an abstract name's length counts its bytes exactly (no trailing NUL).
    static func address(_ path: String) -> (sockaddr_un, socklen_t)? {
        var name = Array(path.utf8)
        let abstract = name.first == UInt8(ascii: "@")
        if abstract { name[0] = 0 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // A filesystem path needs room for its terminating NUL; an abstract name does not.
        guard name.count + (abstract ? 0 : 1) <= capacity else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: name)
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        let length = pathOffset + name.count + (abstract ? 0 : 1)
        return (address, socklen_t(length))
    }
}
