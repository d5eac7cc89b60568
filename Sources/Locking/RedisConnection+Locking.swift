import RedisClient

extension LockError {
    /// A refused password or database stays a configuration error; anything else is an outage.
    init(_ error: RedisError) {
        switch error {
        case .invalid(let detail): self = .invalid(detail)
        case .unavailable(let detail): self = .unavailable(detail)
        }
    }
}

extension RedisConnection {
    /// `command` with its failure as a `LockError`.
    func lockCommand(_ arguments: [String]) throws(LockError) -> RedisValue {
        do { return try command(arguments) } catch { throw LockError(error) }
    }
}
