import Foundation
import Glibc
import Locking
import Logging
import ObjectStore
import RedisClient

/// The lock strategy a configuration names, and how a file of the mount is named to it. `bucketfs mount` and
/// `bucketfs lock` share this, so a `bucketfs lock run SOURCE data/x` excludes a flock on `MOUNT/data/x`.
struct LockSetup {
    let strategy: (any LockStrategy)?
    /// Path under the mount root ("" for the root itself, named ".") → the strategy's resource name.
    let resourceName: @Sendable (String) -> String
    let leaseSeconds: Double
    let retryAttempts: Int
    let retryDelay: Double

    /// `none`: locks hold within one mount only; `object` is the default on every backend.
    init(configuration: Configuration, location: StoreLocation, store: any ObjectStore) throws(CLIError) {
        let lock = configuration.storage.lock
        leaseSeconds = Double(lock.leaseDurationSeconds)
        retryAttempts = lock.retryAttempts
        retryDelay = lock.retryDelaySeconds
        // The object strategy lives under the mount's own prefix; Redis and lock files are shared by every
        // bucket, so their names carry the source.
        let source = location.description.hasSuffix("/") ? location.description : location.description + "/"
        let local: @Sendable (String) -> String = { $0.isEmpty ? "." : $0 }
        switch lock.strategy ?? "object" {
        case "none":
            strategy = nil
            resourceName = local
        case "object":
            strategy = ObjectLockStrategy(store: store, prefix: location.prefix)
            resourceName = local
        case "redis":
            let endpoint: RedisEndpoint
            do {
                if let url = lock.redisURL {
                    endpoint = try RedisEndpoint(url: url)
                } else {
                    endpoint = RedisEndpoint(
                        host: lock.redisHost ?? "127.0.0.1", port: lock.redisPort ?? 6379,
                        password: lock.redisPassword, db: lock.redisDB)
                }
            } catch {
                throw CLIError("bad Redis settings: \(error)")
            }
            strategy = RedisLockStrategy(endpoint: endpoint)
            resourceName = { source + local($0) }
        default:  // "file"
            let directory = lock.fileLockDir ?? Self.defaultFileLockDirectory()
            do { strategy = try FileLockStrategy(directory: directory) } catch {
                throw CLIError("cannot use lock directory \(directory): \(error)")
            }
            resourceName = { source + local($0) }
        }
    }

    var strategyName: String { strategy?.name ?? "none" }

    /// Checks that the strategy answers (Redis reachable, lock directory usable), so that a mount with a lock
    /// backend it cannot reach fails at once with one line.
    func validate() throws(CLIError) {
        // The object strategy lives in the store, which `openStore` has just checked; listing its holders would
        // read every lock object.
        guard let strategy, strategy.name != "object" else { return }
        do { _ = try strategy.holders() } catch {
            throw CLIError("lock strategy \(strategy.name) unavailable: \(error)")
        }
    }

    func makeManager(logger: Logger, onLost: (@Sendable (Lease, LockError) -> Void)? = nil) -> LockManager? {
        guard let strategy else { return nil }
        return LockManager(
            strategy: strategy, owner: .current(), leaseDuration: leaseSeconds, logger: logger,
            onLost: onLost)
    }

    static func defaultFileLockDirectory() -> String {
        // The same base as the mount registry, made and checked by `PrivateDirectory` (FileLockStrategy).
        PrivateDirectory.runtimeBase() + "/locks"
    }
}
