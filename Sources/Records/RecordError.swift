/// Every failure of a record store; `description` is one line for the user.
public enum RecordError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The backend (object store, Redis) could not be reached or failed.
    case unavailable(String)
    /// A stored record is not the JSON this version understands.
    case corrupt(String)
    /// A bad id, URL or argument.
    case invalid(String)
    /// Compare-and-swap kept losing to other writers.
    case contended(String)

    public var description: String {
        switch self {
        case .unavailable(let detail): return "record backend unavailable: \(detail)"
        case .corrupt(let detail): return "corrupt record: \(detail)"
        case .invalid(let detail): return "invalid record request: \(detail)"
        case .contended(let key): return "record \(key) kept changing under concurrent updates; gave up"
        }
    }
}
