import Foundation
import Glibc

/// Checks made before anything is mounted, each failing with one readable line.
enum MountPointCheck {
    /// The absolute path with symlinks resolved, as /proc/self/mountinfo shows mount points.
    static func absolute(_ path: String) -> String {
        let full = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        guard let resolved = realpath(full, nil) else { return URL(fileURLWithPath: full).standardizedFileURL.path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The absolute mount point, if it exists, is a directory and is not already a mount.
    static func validate(_ path: String) throws(CLIError) -> String {
        let full = absolute(path)
        var st = stat()
        if stat(full, &st) != 0 {
            if errno == ENOTCONN {
                throw CLIError(
                    "mount point \(full) is a disconnected FUSE mount: "
                        + "run `bucketfs unmount \(full)` or `fusermount3 -u \(full)`"
                )
            }
            throw CLIError("mount point \(full) does not exist")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw CLIError("mount point \(full) is not a directory") }
        if let type = mountType(at: full) {
            throw CLIError("mount point \(full) is already a mount (\(type))")
        }
        return full
    }

    /// FUSE needs two things a container does not get by default, checked here so that a missing one is one line
    /// naming the container flag that gives it: the device, and CAP_SYS_ADMIN for mount(2).
    static func requireFuseDevice() throws(CLIError) {
        // Users other than root open the device too (libfuse then mounts through the setuid fusermount3).
        if getuid() != 0, access("/dev/fuse", F_OK) == 0 {
            guard access("/dev/fuse", R_OK | W_OK) == 0 else {
                throw CLIError(
                    "/dev/fuse is not open to users other than root here: as root, chmod 0666 /dev/fuse "
                        + "(the mode udev gives it on a standard system), or mount as root"
                )
            }
            guard FuseConfiguration.fusermountPath() != nil else {
                throw CLIError("fusermount3 is missing: install fuse3 (users other than root mount through it)")
            }
            guard mayGainSysAdmin() else { throw CLIError(sysAdminMissing) }
            return
        }
        // Opened, not only access()ed: a device cgroup (a container without --device) refuses the open itself.
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        let deviceError = fd < 0 ? errno : 0
        if fd >= 0 { close(fd) }
        switch (deviceError, mayGainSysAdmin()) {
        case (0, true):
            return
        case (0, false):
            throw CLIError(sysAdminMissing)
        case (let error, let capable):
            let problem =
                error == ENOENT
                ? "/dev/fuse is missing" : "/dev/fuse cannot be opened (\(String(cString: strerror(error))))"
            guard capable else {
                throw CLIError(
                    "\(problem), and CAP_SYS_ADMIN is missing: "
                        + "run the container with --device /dev/fuse --cap-add SYS_ADMIN")
            }
            guard error == ENOENT else {
                throw CLIError(
                    "\(problem): run the container with --device /dev/fuse "
                        + "(a bind mount of it is not enough)")
            }
            throw CLIError(
                "\(problem): install fuse3 (modprobe fuse) on a host, "
                    + "or run the container with --device /dev/fuse")
        }
    }

    static let sysAdminMissing =
        "CAP_SYS_ADMIN is missing, which mount(2) needs (also through the setuid "
        + "fusermount3): run the container with --cap-add SYS_ADMIN"

    /// Whether mount(2) can be reached: CAP_SYS_ADMIN in this process's effective set, or in its bounding set,
    /// which caps what the setuid fusermount3 (libfuse's fallback on EPERM) gains. Unreadable /proc: assume yes.
    static func mayGainSysAdmin() -> Bool {
        guard let status = procFile("/proc/self/status") else { return true }
        let sysAdmin: UInt64 = 1 << 21  // CAP_SYS_ADMIN
        var found = false
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") || line.hasPrefix("CapBnd:") {
            guard let mask = UInt64(line.split(separator: "\t").last ?? "", radix: 16) else { return true }
            found = found || mask & sysAdmin != 0
        }
        return found
    }

    /// The filesystem type mounted exactly at `path`, from /proc/self/mountinfo, or nil.
    static func mountType(at path: String) -> String? {
        guard let text = procFile("/proc/self/mountinfo") else { return nil }
        var found: String?
        for line in text.split(separator: "\n") {
            // "id parent major:minor root mountpoint options [optional...] - fstype source superopts"
            let fields = line.split(separator: " ")
            guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            if unescape(String(fields[4])) == path { found = String(fields[dash + 1]) }
        }
        return found
    }

    /// A /proc file read to its end. Foundation's String(contentsOfFile:) stops after the first read(), which /proc
    /// ends at a page: a mount table over 4 KiB (a container host, a Kubernetes node) lost its last mounts.
    static func procFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n > 0 {
                data += buffer[0..<n]
                continue
            }
            if n < 0 && errno == EINTR { continue }
            guard n == 0 else { return nil }
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
    private static func unescape(_ field: String) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3,
                let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
