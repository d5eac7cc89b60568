import Foundation
import Synchronization

/// Watches the lock objects that waiters of one mount wait for: a GET of each every `interval` (100 ms for the
/// first 10 s of waiting, then 250 ms), reporting a resource as soon as its object is free (released, expired,
/// gone) or changed since the last look. Cost while waiting: up to 10 small GETs a second per file waited on,
/// per mount; nothing while nobody waits.
final class ObjectReleaseFeed: LockReleaseFeed {
    let strategy: ObjectLockStrategy
    static let interval = 0.1
    static let slowInterval = 0.25
    static let slowAfter = 10.0

    private struct Watched {
        var version: String?
        var since: Date
    }

    /// Only the feed's own thread uses this; the mutex satisfies Sendable.
    private let watched = Mutex<[String: Watched]>([:])

    init(strategy: ObjectLockStrategy) {
        self.strategy = strategy
    }

    func waitForReleases(of resources: Set<String>, timeout: Double) -> Set<String> {
        let started = Date()
        let known = watched.withLock { watched in
            watched = watched.filter { resources.contains($0.key) }
            for resource in resources where watched[resource] == nil {
                watched[resource] = Watched(version: nil, since: started)
            }
            return watched
        }
        let slow = known.values.allSatisfy { started.timeIntervalSince($0.since) > Self.slowAfter }
        sleepSeconds(min(timeout, slow ? Self.slowInterval : Self.interval))
        var free: Set<String> = []
        for resource in resources {
            let seen: (record: LockRecord, version: String)?
            do {
                seen = try strategy.readRecord(strategy.key(for: resource))
            } catch {
                continue  // the waiter's own retry reports store trouble
            }
            let before = known[resource]?.version
            guard let seen else {
                free.insert(resource)
                continue
            }
            if seen.record.liveHolders(at: strategy.clock()).isEmpty {
                strategy.noteFree(resource, version: seen.version, token: seen.record.token)
                free.insert(resource)
            } else if before != nil && before != seen.version {
                free.insert(resource)
            }
            watched.withLock { $0[resource]?.version = seen.version }
        }
        return free
    }
}
