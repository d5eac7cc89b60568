import Foundation

/// The lock could not be had within the configured tries (seed 000's `LockAcquisitionError`).
public struct LockAcquisitionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var resource: String
    public var attempts: Int
    /// The backend failure of the last try; `nil` when the lock was simply held by someone else.
    public var lastError: LockError?

    public init(resource: String, attempts: Int, lastError: LockError?) {
        self.resource = resource
        self.attempts = attempts
        self.lastError = lastError
    }

    public var description: String {
        let why = lastError.map { "last error: \($0)" } ?? "held by another owner"
        return "could not acquire lock on \(resource) after \(attempts) attempt(s): \(why)"
    }
}

/// Runs `body` while holding `resource` through `manager` (renewed in the background if it runs long).
///
/// Tries `retryAttempts` times (at least once), `retryDelay` seconds apart (`retry_attempts` and
/// `retry_delay_seconds` of the config), then throws `LockAcquisitionError`. The lock is released when `body`
/// returns or throws. If the lease was lost while `body` ran, `body`'s result is discarded and `LockError.lost`
/// is thrown: the work was not protected and the caller must know. Blocks the calling thread.
public func withLock<T>(
    _ resource: String, manager: LockManager, retryAttempts: Int, retryDelay: Double,
    _ body: () throws -> T
) throws -> T {
    try withLock(resource, manager: manager, retryAttempts: retryAttempts, retryDelay: retryDelay) { _ in try body() }
}

/// The same, in `mode`, handing `body` the lease: its `token` is the fencing token to pass on to whatever the
/// lock protects (see docs/LOCKING.md, "Fencing tokens").
public func withLock<T>(
    _ resource: String, manager: LockManager, mode: LeaseMode = .exclusive, retryAttempts: Int,
    retryDelay: Double, _ body: (Lease) throws -> T
) throws -> T {
    let tries = max(1, retryAttempts)
    var lease: Lease?
    var lastError: LockError?
    for attempt in 1...tries {
        do {
            lease = try manager.tryAcquire(resource, mode: mode, queue: attempt < tries)
            lastError = nil
        } catch {
            // A configuration error will not fix itself: do not wait for it.
            if case .invalid = error {
                throw LockAcquisitionError(resource: resource, attempts: attempt, lastError: error)
            }
            lastError = error
        }
        if lease != nil { break }
        if attempt < tries && retryDelay > 0 { Thread.sleep(forTimeInterval: retryDelay) }
    }
    guard let lease else { throw LockAcquisitionError(resource: resource, attempts: tries, lastError: lastError) }

    let result: T
    do {
        result = try body(lease)
    } catch {
        try? manager.release(lease)
        throw error
    }
    try manager.release(lease)
    return result
}
