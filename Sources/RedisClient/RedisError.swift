/// What a Redis client call can fail with; `Locking` and `Records` turn it into their own error.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The settings are wrong (bad URL, refused password or database): retrying will not help.
    case invalid(String)
    /// The server could not be reached or stopped answering.
    case unavailable(String)

    public var description: String {
        switch self {
        case .invalid(let detail), .unavailable(let detail): return detail
        }
    }
}
