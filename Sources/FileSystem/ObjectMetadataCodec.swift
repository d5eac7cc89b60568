import Foundation
import ObjectStore

/// The POSIX attributes bucketfs keeps in an object's user metadata (`x-amz-meta-*` on S3):
/// `mode` (decimal `st_mode`, as s3fs writes it), `uid`, `gid`, `mtime` (`seconds[.nanoseconds]`) and
/// `symlink` (the target, percent-encoded so that any byte survives HTTP headers), and, where set, `atime`,
/// `ctime` (same form) and `rdev` (a device's number, decimal). The file type is in `mode`'s `S_IFMT` bits.
/// A symlink target longer than `symlinkMetadataLimit` once encoded (S3 allows 2 KB of user metadata in all) is
/// the object's body instead, flagged `symlink-body: 1`; a symlink (`mode`) with neither, as s3fs writes them,
/// has its target in the body too.
struct PosixMetadata: Equatable {
    var mode: UInt32?
    var uid: UInt32?
    var gid: UInt32?
    var mtime: FileTime?
    var symlinkTarget: String?
    var atime: FileTime?
    var ctime: FileTime?
    var rdev: UInt32?
    /// The target is the object's body (`symlinkTarget` nil when decoded).
    var symlinkInBody = false

    init(
        mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, mtime: FileTime? = nil,
        symlinkTarget: String? = nil, atime: FileTime? = nil, ctime: FileTime? = nil, rdev: UInt32? = nil,
        symlinkInBody: Bool = false
    ) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.symlinkTarget = symlinkTarget
        self.atime = atime
        self.ctime = ctime
        self.rdev = rdev
        self.symlinkInBody = symlinkInBody || symlinkTarget.map(Self.storesInBody) == true
    }

    /// The kind the metadata names: the symlink key, else `mode`'s type bits (files written by s3fs carry them
    /// too); nil when it names none.
    var kind: NodeKind? {
        if symlinkTarget != nil || symlinkInBody { return .symlink }
        guard let mode, mode & UInt32(S_IFMT) != 0 else { return nil }
        return NodeKind(mode: mode)
    }

    /// Values that do not parse are ignored (objects written by other tools fall back to the mount defaults).
    init(_ metadata: ObjectMetadata) {
        mode = metadata["mode"].flatMap { UInt32($0) }
        uid = metadata["uid"].flatMap { UInt32($0) }
        gid = metadata["gid"].flatMap { UInt32($0) }
        mtime = metadata["mtime"].flatMap { FileTime(metadataValue: $0) }
        symlinkTarget = metadata["symlink"].flatMap { $0.removingPercentEncoding }
        atime = metadata["atime"].flatMap { FileTime(metadataValue: $0) }
        ctime = metadata["ctime"].flatMap { FileTime(metadataValue: $0) }
        rdev = metadata["rdev"].flatMap { UInt32($0) }
        symlinkInBody = metadata["symlink-body"] == "1"
    }

    static let keys: Set<String> = [
        "mode", "uid", "gid", "mtime", "symlink", "atime", "ctime", "rdev", "symlink-body",
    ]

    /// Longest percent-encoded target kept in metadata: with the other keys well under S3's 2 KB (and the local
    /// backend's extended attribute, one 4 KiB block on ext4).
    static let symlinkMetadataLimit = 1_024

    static func encoded(target: String) -> String? {
        target.addingPercentEncoding(withAllowedCharacters: symlinkSafe)
    }

    static func storesInBody(_ target: String) -> Bool {
        (encoded(target: target)?.utf8.count ?? Int.max) > symlinkMetadataLimit
    }

    /// The entries of `metadata` that are not ours.
    static func foreign(_ metadata: ObjectMetadata) -> ObjectMetadata {
        metadata.filter { !keys.contains($0.key) }
    }

    var objectMetadata: ObjectMetadata {
        var result: ObjectMetadata = [:]
        if let mode { result["mode"] = String(mode) }
        if let uid { result["uid"] = String(uid) }
        if let gid { result["gid"] = String(gid) }
        if let mtime { result["mtime"] = mtime.metadataValue }
        if let atime { result["atime"] = atime.metadataValue }
        if let ctime { result["ctime"] = ctime.metadataValue }
        if let rdev, rdev != 0 { result["rdev"] = String(rdev) }
        if symlinkInBody {
            result["symlink-body"] = "1"
        } else if let symlinkTarget {
            result["symlink"] = Self.encoded(target: symlinkTarget)
        }
        return result
    }

    private static let symlinkSafe = CharacterSet(
        charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/")
}
