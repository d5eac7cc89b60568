import Foundation
import Glibc

/// How waiters learn that a lock may have been let go, so that a blocked request on one mount is retried
/// soon after another mount releases, instead of on a backoff that grows to a second.
///
/// A feed is a hint, never a grant: the waiter still asks the strategy, and keeps a slow timed retry as a safety
/// net (a holder that dies releases nothing; its lease just runs out). One thread calls it (the waiting side
/// of a mount); it blocks that thread for at most `timeout`.
public protocol LockReleaseFeed: AnyObject, Sendable {
    /// Blocks at most `timeout` seconds; returns those of `resources` that may have become free since the
    /// previous call (possibly spuriously, never missing a release the feed can see).
    func waitForReleases(of resources: Set<String>, timeout: Double) -> Set<String>
}

/// For strategies whose attempt is a cheap local call (lock files): every resource, every `interval`.
public final class PollingReleaseFeed: LockReleaseFeed {
    let interval: Double

    public init(interval: Double) {
        self.interval = interval
    }

    public func waitForReleases(of resources: Set<String>, timeout: Double) -> Set<String> {
        sleepSeconds(min(interval, timeout))
        return resources
    }
}

/// Sleeps, resuming after signals.
func sleepSeconds(_ seconds: Double) {
    guard seconds > 0 else { return }
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}
