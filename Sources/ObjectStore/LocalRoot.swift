import Foundation
import Glibc

/// Paths under the local backend's root, opened one component at a time with `openat` + `O_NOFOLLOW`, so that a
/// symbolic link planted in the backing directory can never make the daemon read, write or delete outside it
/// (a root daemon must not be steered into `/etc`). Only a link in the last component of a file's key is followed,
/// and only when it resolves, component by component again, to a regular file beneath the root.
///
/// Durability: `sync` is `fsync(2)`; callers use it on a file before renaming it in and on a directory after
/// changing its entries, so that what the store acknowledged survives a power cut. Every sync and rename is
/// reported to `trace` (tests check the order).
struct LocalRoot: Sendable {
    let path: String
    /// `path` with its links resolved, to recognise absolute link targets that point inside.
    let resolvedPath: String
    let trace: (@Sendable (String) -> Void)?

    static let directoryFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
    /// Links followed in a row before a file's key counts as absent (Linux's own limit is 40).
    private static let maxLinks = 8

    init(path: String, trace: (@Sendable (String) -> Void)?) {
        self.path = path
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        resolvedPath = realpath(path, &buffer) != nil ? String(cString: buffer) : path
        self.trace = trace
    }

    /// The root itself (the configured path may contain links: that is the administrator's choice).
    /// `path` split at each `/` byte. Not `split(separator: "/")`, which compares `Character`s: a slash followed
    /// by a combining mark is one grapheme (`/\u{301}`), so `../\u{301}x` came out as one segment, inside the
    /// root to the lexical checks and two to the kernel (which left the root).
    static func segments(of path: some StringProtocol, omittingEmpty: Bool = true) -> [Substring] {
        let text = Substring(path)
        return text.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: omittingEmpty).map {
            Substring(text.unicodeScalars[$0.startIndex..<$0.endIndex])
        }
    }

    func open() -> Int32 {
        Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    }

    /// Opens the directory `segments` below the open directory `base`; -1 with errno set (ELOOP when a component is
    /// a symbolic link, ENOTDIR when it is a file). With `create`, missing directories are made and their parent
    /// is synced. The caller closes the result.
    func openDirectory(_ segments: some Sequence<Substring>, at base: Int32, create: Bool = false) -> Int32 {
        var current = fcntl(base, F_DUPFD_CLOEXEC, 0)
        guard current >= 0 else { return -1 }
        for segment in segments {
            let name = String(segment)
            var next = openat(current, name, Self.directoryFlags)
            if next < 0 && errno == ENOENT && create {
                if mkdirat(current, name, 0o777) == 0 {
                    guard sync(current, "directory above \(name)") else { return fail(closing: current) }
                } else if errno != EEXIST {
                    return fail(closing: current)
                }
                next = openat(current, name, Self.directoryFlags)
            }
            guard next >= 0 else { return fail(closing: current) }
            close(current)
            current = next
        }
        return current
    }

    /// Opens the file `name` in the open directory `directory` (whose path below the root is `parent`) with
    /// `flags`. A symbolic link there is followed only to a file beneath the root (and outside the state folder),
    /// each hop resolved component by component without following links; otherwise -1 with errno ENOENT.
    func openFile(
        _ name: String, in directory: Int32, parent: [Substring], root: Int32, flags: Int32,
        reserved: String
    ) -> Int32 {
        var fd = openat(directory, name, flags | O_NOFOLLOW | O_CLOEXEC)
        guard fd < 0 && errno == ELOOP else { return fd }
        var linkDirectory = fcntl(directory, F_DUPFD_CLOEXEC, 0)
        var linkParent = parent
        var linkName = name
        defer { if linkDirectory >= 0 { close(linkDirectory) } }
        for _ in 0..<Self.maxLinks {
            guard let target = readLink(linkName, in: linkDirectory),
                let resolved = resolve(target, from: linkParent), let last = resolved.last,
                resolved.first.map(String.init) != reserved
            else {
                errno = ENOENT
                return -1
            }
            let above = Array(resolved.dropLast())
            let next = openDirectory(above, at: root)
            guard next >= 0 else {
                errno = ENOENT
                return -1
            }
            close(linkDirectory)
            linkDirectory = next
            linkParent = above
            linkName = String(last)
            fd = openat(linkDirectory, linkName, flags | O_NOFOLLOW | O_CLOEXEC)
            guard fd < 0 && errno == ELOOP else { return fd }
        }
        errno = ENOENT
        return -1
    }

    /// A link's target as segments below the root, resolved lexically (every directory on the way was opened
    /// without following links, so `..` means the real parent); nil when it leaves the root.
    func resolve(_ target: String, from parent: [Substring]) -> [Substring]? {
        var base: [Substring]
        var rest = Substring(target)
        if target.hasPrefix("/") {
            var inside: Substring?
            for prefix in Set([path, resolvedPath]) {
                let withSlash = prefix == "/" ? "/" : prefix + "/"
                if target.hasPrefix(withSlash) { inside = target.dropFirst(withSlash.count) }
            }
            guard let inside else { return nil }
            base = []
            rest = inside
        } else {
            base = parent
        }
        for segment in Self.segments(of: rest) {
            switch segment {
            case ".": continue
            case "..":
                guard !base.isEmpty else { return nil }
                base.removeLast()
            default: base.append(segment)
            }
        }
        return base
    }

    private func readLink(_ name: String, in directory: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlinkat(directory, name, &buffer, Int(PATH_MAX))
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `fsync(2)`, retried on EINTR; false with errno set on failure.
    func sync(_ fd: Int32, _ what: String) -> Bool {
        while fsync(fd) != 0 {
            guard errno == EINTR else { return false }
        }
        trace?("fsync \(what)")
        return true
    }

    func noteRename(_ what: String) {
        trace?("rename \(what)")
    }

    /// Closes `fd` keeping errno, and returns -1.
    private func fail(closing fd: Int32) -> Int32 {
        let saved = errno
        close(fd)
        errno = saved
        return -1
    }
}
