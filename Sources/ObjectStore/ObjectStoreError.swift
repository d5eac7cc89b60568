/// Every failure of every backend, in cases a caller can act on.
public enum ObjectStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The key (or the upload) does not exist.
    case notFound(key: String)
    /// A `PutCondition`/`DeleteCondition` did not hold: someone else wrote first.
    case preconditionFailed(key: String)
    /// The bucket (or backing directory) does not exist.
    case noSuchBucket(String)
    /// Credentials missing, wrong or expired.
    case unauthorized(String)
    /// Authenticated but not allowed.
    case accessDenied(String)
    /// The store asked us to slow down (503 SlowDown, 429); safe to retry later.
    case throttled(String)
    /// The key cannot be stored by this backend (e.g. a local path where a directory stands in the way).
    case invalidKey(key: String, reason: String)
    /// The request was malformed or refused for a reason the caller must fix (bad part list, too small part…).
    case invalidRequest(String)
    /// The backend has no room left.
    case noSpace(String)
    /// Network or server failure; `detail` says what happened.
    case transport(String)
    /// Anything else the backend reported, with its message.
    case other(String)

    public var description: String {
        switch self {
        case .notFound(let key): return "not found: \(key)"
        case .preconditionFailed(let key): return "precondition failed (changed by another writer): \(key)"
        case .noSuchBucket(let name): return "no such bucket: \(name)"
        case .unauthorized(let detail): return "unauthorized: \(detail)"
        case .accessDenied(let detail): return "access denied: \(detail)"
        case .throttled(let detail): return "throttled: \(detail)"
        case .invalidKey(let key, let reason): return "invalid key \(key): \(reason)"
        case .invalidRequest(let detail): return "invalid request: \(detail)"
        case .noSpace(let detail): return "no space: \(detail)"
        case .transport(let detail): return "transport error: \(detail)"
        case .other(let detail): return detail
        }
    }
}
