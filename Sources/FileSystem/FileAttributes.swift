import Foundation

public enum NodeKind: Sendable, Equatable {
    case file
    case directory
    case symlink
    /// Special files: zero-byte objects whose type (and device number) live in metadata; the kernel serves
    /// their I/O (a FIFO's pipe, a device's driver), never the store.
    case fifo
    case socket
    case characterDevice
    case blockDevice

    /// The `S_IFMT` bits of this kind.
    public var typeBits: UInt32 {
        switch self {
        case .file: return UInt32(S_IFREG)
        case .directory: return UInt32(S_IFDIR)
        case .symlink: return UInt32(S_IFLNK)
        case .fifo: return UInt32(S_IFIFO)
        case .socket: return UInt32(S_IFSOCK)
        case .characterDevice: return UInt32(S_IFCHR)
        case .blockDevice: return UInt32(S_IFBLK)
        }
    }

    /// The kind a full `st_mode` names; nil for a type bucketfs cannot hold.
    public init?(mode: UInt32) {
        switch mode & UInt32(S_IFMT) {
        case UInt32(S_IFREG): self = .file
        case UInt32(S_IFDIR): self = .directory
        case UInt32(S_IFLNK): self = .symlink
        case UInt32(S_IFIFO): self = .fifo
        case UInt32(S_IFSOCK): self = .socket
        case UInt32(S_IFCHR): self = .characterDevice
        case UInt32(S_IFBLK): self = .blockDevice
        default: return nil
        }
    }

    /// A zero-byte object whose metadata alone says what it is (a LIST cannot tell it from an empty file).
    public var isSpecial: Bool { self != .file && self != .directory }
}

/// A point in time with nanosecond precision (a `Date` would round nanoseconds away).
public struct FileTime: Sendable, Equatable, Comparable {
    public var seconds: Int64
    public var nanoseconds: UInt32

    public init(seconds: Int64, nanoseconds: UInt32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public init(_ date: Date) {
        let t = date.timeIntervalSince1970
        let s = t.rounded(.down)
        self.init(seconds: Int64(s), nanoseconds: UInt32(min(999_999_999, max(0, ((t - s) * 1e9).rounded()))))
    }

    public static func now() -> FileTime {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return FileTime(seconds: Int64(ts.tv_sec), nanoseconds: UInt32(ts.tv_nsec))
    }

    /// `seconds.nanoseconds`, the form kept in object metadata (s3fs and rclone read the integer part).
    public var metadataValue: String {
        nanoseconds == 0 ? String(seconds) : String(format: "%lld.%09u", seconds, nanoseconds)
    }

    public init?(metadataValue: String) {
        let parts = metadataValue.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let s = Int64(parts[0]) else { return nil }
        var ns: UInt32 = 0
        if parts.count == 2 {
            let digits = parts[1].prefix(9)
            guard !digits.isEmpty, let value = UInt32(digits) else { return nil }
            ns = value * UInt32(pow(10, Double(9 - digits.count)))
        }
        self.init(seconds: s, nanoseconds: ns)
    }

    public static func < (a: FileTime, b: FileTime) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }
}

/// What `stat` shows for a node.
public struct FileAttributes: Sendable, Equatable {
    public var ino: UInt64
    public var kind: NodeKind
    public var size: UInt64
    /// Permission bits only (`0o7777`); the file type comes from `kind`.
    public var permissions: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtime: FileTime
    public var ctime: FileTime
    public var atime: FileTime
    /// Device number of a character or block device (0 otherwise).
    public var rdev: UInt32
    /// Names the node has: 0 once unlinked (or replaced) while still open; a directory 2 plus its subdirectories.
    public var linkCount: UInt32
    /// 512-byte blocks allocated, where known (a file's local staged copy, which may have holes); nil: as many
    /// as the size takes.
    public var blocks: UInt64?

    public init(
        ino: UInt64, kind: NodeKind, size: UInt64, permissions: UInt32, uid: UInt32, gid: UInt32,
        mtime: FileTime, ctime: FileTime, atime: FileTime? = nil, rdev: UInt32 = 0, linked: Bool = true,
        subdirectories: UInt32 = 0, blocks: UInt64? = nil
    ) {
        self.ino = ino
        self.kind = kind
        self.size = size
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.ctime = ctime
        self.atime = atime ?? mtime
        self.rdev = rdev
        self.linkCount = linked ? (kind == .directory ? 2 + min(subdirectories, UInt32.max - 2) : 1) : 0
        self.blocks = blocks
    }

    /// `st_blocks`: the blocks allocated where known, else those the size takes.
    public var allocatedBlocks: UInt64 {
        blocks ?? (size / 512 + (size % 512 == 0 ? 0 : 1))
    }

    /// The full `st_mode`: type bits plus permissions.
    public var mode: UInt32 { kind.typeBits | permissions }
}

/// The `setattr` fields that a request asks to change; `nil` leaves a field alone.
public struct AttributeChanges: Sendable, Equatable {
    public var permissions: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var mtime: FileTime?
    public var atime: FileTime?

    public init(
        permissions: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, size: UInt64? = nil,
        mtime: FileTime? = nil, atime: FileTime? = nil
    ) {
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime = mtime
        self.atime = atime
    }

    public var changesMetadata: Bool {
        permissions != nil || uid != nil || gid != nil || mtime != nil || atime != nil
    }
}

/// Who asks: the owner given to new files and directories.
public struct Caller: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public init(uid: UInt32, gid: UInt32) {
        self.uid = uid
        self.gid = gid
    }
}

public struct DirectoryEntry: Sendable, Equatable {
    public var name: String
    public var attributes: FileAttributes
    /// The offset to pass back to continue after this entry.
    public var nextOffset: UInt64
    /// false: mode, owner and times are the mount's defaults for want of metadata (a LIST entry the metadata
    /// index does not know); the kernel must not cache them, a `stat` asks (`getattr`).
    public var complete: Bool

    public init(name: String, attributes: FileAttributes, nextOffset: UInt64, complete: Bool = true) {
        self.name = name
        self.attributes = attributes
        self.nextOffset = nextOffset
        self.complete = complete
    }
}

public struct FileSystemStats: Sendable, Equatable {
    public var blockSize: UInt64
    public var totalBlocks: UInt64
    public var freeBlocks: UInt64
    public var totalFiles: UInt64
    public var freeFiles: UInt64
    public var maxNameLength: UInt64
}
