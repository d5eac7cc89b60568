import Glibc
import ObjectStore

/// Why a filesystem operation failed. `errno` is the single place where a failure becomes an errno.
public enum FSError: Error, Sendable, Equatable, CustomStringConvertible {
    case notFound
    case exists
    case notEmpty
    case notDirectory
    case isDirectory
    case readOnly
    case nameTooLong
    case invalidArgument
    case notSupported
    case permissionDenied
    /// The operation is not permitted at all here (hard links).
    case notPermitted
    /// A name that is not valid UTF-8: object keys cannot hold it, and altering it would rename the file.
    case illegalName
    case noSpace
    /// Beyond the largest object a store holds (S3: 5 TiB).
    case fileTooLarge
    /// Someone else changed the object since we read it; our content went to the recovery folder.
    case stale(String)
    /// The store failed (transport, server, unexpected answer); detail for the log.
    case io(String)
    case badHandle
    /// A non-blocking lock request met a lock held here or by another mount.
    case wouldBlock
    /// A blocking lock request was interrupted by a signal (or the mount is going away).
    case interrupted
    /// The lock strategy could not be reached or refused the request; detail for the log.
    case lockUnavailable(String)

    public var errno: Int32 {
        switch self {
        case .notFound: return ENOENT
        case .exists: return EEXIST
        case .notEmpty: return ENOTEMPTY
        case .notDirectory: return ENOTDIR
        case .isDirectory: return EISDIR
        case .readOnly: return EROFS
        case .nameTooLong: return ENAMETOOLONG
        case .invalidArgument: return EINVAL
        case .notSupported: return ENOTSUP
        case .permissionDenied: return EACCES
        case .notPermitted: return EPERM
        case .illegalName: return EILSEQ
        case .noSpace: return ENOSPC
        case .fileTooLarge: return EFBIG
        case .stale: return ESTALE
        case .io: return EIO
        case .badHandle: return EBADF
        case .wouldBlock: return EAGAIN
        case .interrupted: return EINTR
        case .lockUnavailable: return ENOLCK
        }
    }

    /// How a store failure surfaces to a program using the mount.
    init(_ error: ObjectStoreError) {
        switch error {
        case .notFound: self = .notFound
        case .preconditionFailed(let key): self = .stale("changed by another writer: \(key)")
        case .accessDenied, .unauthorized: self = .permissionDenied
        case .noSpace: self = .noSpace
        case .invalidKey: self = .invalidArgument
        case .noSuchBucket, .throttled, .invalidRequest, .transport, .other: self = .io(error.description)
        }
    }

    public var description: String {
        switch self {
        case .stale(let detail): return "stale: \(detail)"
        case .io(let detail): return "I/O error: \(detail)"
        case .lockUnavailable(let detail): return "lock unavailable: \(detail)"
        default: return String(cString: strerror(errno))
        }
    }
}
