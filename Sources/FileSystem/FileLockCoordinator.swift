import Foundation
import Locking
import Logging
import Synchronization

/// The locks of one mount: full POSIX detail per file within the mount (`LocalLockTable`), and, across mounts,
/// one lease of the lock strategy per file, held while any local lock on that file exists — shared while the
/// local locks are all shared, exclusive while any is exclusive (converted both ways as they change).
///
/// Lock order: a file's `gate`, then `state`, then the `LockManager`'s own lock (asked for a lease under
/// `state`); `state` is never held across a strategy call or store I/O.
/// A file's gate serialises taking, converting and giving up its lease, so two local requests never race to the
/// strategy.
///
/// Nothing is granted under a lease the manager no longer vouches for (`validLease`): one whose renewal is late
/// stops counting `safetyMargin` before it expires, and a new request then asks the strategy again.
final class FileLockCoordinator: Sendable {
    /// How this mount's files are named to the strategy (the same mapping `bucketfs lock run` uses).
    let resourceName: @Sendable (String) -> String
    let manager: LockManager?
    let logger: Logger

    final class Gate: Sendable {
        let mutex = Mutex(())
    }

    struct FileEntry {
        var locks = LocalLockTable()
        var gate = Gate()
        /// Threads inside the gate or waiting for it: the entry stays while any.
        var users = 0
        /// The strategy's lease on this file, while this mount holds it.
        var lease: Lease?
        /// When the lease was taken from the strategy: local waiters are handed it directly for `localSlice`,
        /// then it goes back so that other mounts get their turn.
        var leaseSince: ContinuousClock.Instant = .now

        var idle: Bool { locks.isEmpty && lease == nil && users == 0 }
    }

    /// A blocking request not granted yet.
    struct Waiter {
        var id: UInt64
        var ino: UInt64
        var request: FileLock
        var interrupted: @Sendable () -> Bool
        var reply: @Sendable (FSError?) -> Void
        var nextTry: ContinuousClock.Instant
        var delay: Duration
        /// Set while another mount holds the file: the release feed watches it.
        var resource: String?
    }

    struct State {
        var files: [UInt64: FileEntry] = [:]
        var waiters: [Waiter] = []
        var nextWaiter: UInt64 = 0
        var waiterThreadStarted = false
        var feedThreadStarted = false
        var stopped = false
        /// A moving average of how long the strategy takes to answer an acquire or release, in seconds.
        var strategyLatency = 0.0
        /// When this mount last gave a file's lease back after holding it for local waiters. Kept here, not in
        /// the file's entry: the entry goes once the file has no lock and no lease, which is just then (the
        /// window was lost with it, and a busy mount took the lease straight back).
        var yieldedAt: [UInt64: ContinuousClock.Instant] = [:]
    }

    let state = Mutex(State())
    /// Wakes the waiter thread: a new waiter, or a lock given up that a waiter may want.
    private let wakeup = DispatchSemaphore(value: 0)
    /// Wakes the feed thread: a waiter started waiting for another mount.
    private let feedWakeup = DispatchSemaphore(value: 0)

    /// How often a waiter checks for a FUSE interrupt, and the longest wait between tries of the strategy (the
    /// release feed wakes waiters sooner).
    static let interruptPoll: Duration = .milliseconds(20)
    static let firstRetry: Duration = .milliseconds(20)
    static let longestRetry: Duration = .seconds(1)
    /// How long local waiters may be handed the lease without giving it back.
    static let localSlice: Duration = .milliseconds(500)

    /// After giving the lease back at the end of a slice, local waiters leave the strategy alone this long so a
    /// waiter on another mount (woken by the release feed) can take its turn. Redis keeps a waiting line of its
    /// own, so nothing is needed there.
    let yieldWindow: Duration
    /// The other mount's waiter needs its feed's look and its own acquire (a round trip each) within the window:
    /// on a slow or loaded store a fixed window was too short and one mount kept the file for a minute (tested).
    /// So the window grows by this many of the strategy's measured round trips, up to `longestYield`.
    static let yieldRoundTrips = 4.0
    static let longestYield: Duration = .seconds(2)

    /// The window local waiters step back for now: `yieldWindow` plus a few of the strategy's round trips.
    var currentYieldWindow: Duration {
        guard yieldWindow > .zero else { return .zero }
        let latency = state.withLock { $0.strategyLatency }
        return min(yieldWindow + .milliseconds(Int(latency * Self.yieldRoundTrips * 1000)), Self.longestYield)
    }

    /// Times a call to the strategy into `strategyLatency` (a moving average, a quarter for the newest).
    private func timed<T>(_ call: () throws(LockError) -> T) throws(LockError) -> T {
        let started = ContinuousClock.now
        defer {
            let seconds = Self.seconds(ContinuousClock.now - started)
            state.withLock {
                $0.strategyLatency = $0.strategyLatency == 0 ? seconds : $0.strategyLatency * 0.75 + seconds * 0.25
            }
        }
        return try call()
    }

    init(manager: LockManager?, resourceName: @escaping @Sendable (String) -> String, logger: Logger) {
        self.manager = manager
        self.resourceName = resourceName
        self.logger = logger
        switch manager?.strategy.name {
        case "object": yieldWindow = .milliseconds(300)
        case "file": yieldWindow = .milliseconds(50)
        default: yieldWindow = .zero
        }
    }

    enum Outcome: Equatable {
        case granted(newLease: Bool)
        /// Another owner in this mount holds a conflicting lock.
        case heldLocally
        /// Another mount holds the file through the strategy.
        case heldElsewhere
    }

    // MARK: Granting

    /// One attempt at `request` on `ino` (at `path`, for the strategy). `.granted(newLease: true)` when the
    /// lease was taken just now: the caller revalidates the file's caches. `queue`: the request will be retried
    /// (a blocking one), so it may keep a place in the strategy's waiting line.
    func attempt(_ ino: UInt64, path: String, _ request: FileLock, queue: Bool = false) throws(FSError) -> Outcome {
        let quick = state.withLock { s -> Outcome? in
            var entry = s.files[ino] ?? FileEntry()
            if entry.locks.conflict(with: request) != nil { return .heldLocally }
            if let lease = entry.lease, manager?.lease(for: lease.resource)?.token != lease.token {
                // Lost (the manager could not renew it; it logged and counted that): ask the strategy again.
                // Locks granted under it stay: POSIX has no way to take them back.
                entry.lease = nil
            }
            let covered =
                entry.lease.map { lease in
                    (lease.mode == .exclusive || request.mode == .shared)
                        && manager?.validLease(for: lease.resource)?.token == lease.token
                } ?? false
            guard covered || manager == nil else {
                entry.users += 1
                s.files[ino] = entry
                return nil
            }
            entry.locks.apply(request)
            s.files[ino] = entry
            return .granted(newLease: false)
        }
        if let quick { return quick }
        // Not held through the strategy (or only shared, or no longer provably): take the gate, then the lease.
        let gate = state.withLock { $0.files[ino]!.gate }
        defer { leave(ino) }
        return try gate.mutex.withLock { _ throws(FSError) -> Outcome in
            try strategyAttempt(ino, path: path, request, queue: queue)
        }
    }

    /// Under the file's gate: upgrade the lease, or take a new one.
    private func strategyAttempt(
        _ ino: UInt64, path: String, _ request: FileLock,
        queue: Bool
    ) throws(FSError) -> Outcome {
        guard let manager else { return .heldElsewhere }
        let now = ContinuousClock.now
        let yieldWindow = currentYieldWindow
        let current = state.withLock { s -> (outcome: Outcome?, lease: Lease?) in
            guard let entry = s.files[ino] else { return (nil, nil) }
            if entry.locks.conflict(with: request) != nil { return (.heldLocally, nil) }
            // Local waiters step back for a moment after a slice, so another mount can take its turn.
            if queue, let yielded = s.yieldedAt[ino], now - yielded < yieldWindow { return (.heldElsewhere, nil) }
            return (nil, entry.lease)
        }
        if let outcome = current.outcome { return outcome }
        var lease = current.lease
        if let held = lease, manager.lease(for: held.resource)?.token != held.token {
            lease = nil  // lost meanwhile
        }
        if let held = lease {
            guard manager.validLease(for: held.resource) != nil else {
                // A renewal is late: nothing new under this lease until it is renewed or declared lost.
                return .heldElsewhere
            }
            if held.mode == .exclusive || request.mode == .shared {
                grant(ino, request, lease: held)
                return .granted(newLease: false)
            }
            // Shared here, exclusive wanted: upgrade in place once the other mounts' sharers are gone.
            do {
                guard let upgraded = try manager.convert(held, to: .exclusive) else { return .heldElsewhere }
                grant(ino, request, lease: upgraded)
                return .granted(newLease: false)
            } catch .lost {
                state.withLock { s in if s.files[ino]?.lease?.token == held.token { s.files[ino]?.lease = nil } }
            } catch {
                logger.error("lock strategy failed", metadata: ["path": "\(path)", "error": "\(error)"])
                throw FSError.lockUnavailable("\(error)")
            }
        }
        // The mode the local locks need once this one is granted.
        let mode = state.withLock { s -> LeaseMode in
            let locks = (s.files[ino]?.locks.locks ?? []) + [request]
            return locks.contains { $0.mode == .exclusive } ? .exclusive : .shared
        }
        let taken: Lease?
        do {
            taken = try timed { () throws(LockError) in
                try manager.tryAcquire(resourceName(path), mode: mode, queue: queue)
            }
        } catch {
            logger.error("lock strategy failed", metadata: ["path": "\(path)", "error": "\(error)"])
            throw FSError.lockUnavailable("\(error)")
        }
        guard let taken else { return .heldElsewhere }
        state.withLock { s in
            s.files[ino]?.leaseSince = .now
            s.yieldedAt[ino] = nil
        }
        grant(ino, request, lease: taken)
        return .granted(newLease: true)
    }

    private func grant(_ ino: UInt64, _ request: FileLock, lease: Lease) {
        state.withLock { s in
            s.files[ino]?.lease = lease
            s.files[ino]?.locks.apply(request)
        }
    }

    /// Lets go of the entry taken for the gate; an idle entry is dropped.
    private func leave(_ ino: UInt64) {
        state.withLock { s in
            s.files[ino]?.users -= 1
            if s.files[ino]?.idle == true { s.files[ino] = nil }
        }
    }

    // MARK: Giving up

    /// What the lease needs after local locks changed.
    private enum LeaseChange {
        case none
        /// No local lock left: give it back (after uploading the file's pending writes).
        case release
        /// Only shared locks left under an exclusive lease: let other mounts' readers in (after the upload).
        case downgrade
    }

    /// Removes locks with `change`; when the file's last local lock goes, `beforeRelease` runs (the file's
    /// pending writes are uploaded) and then the lease is given back — unless local waiters want it and its
    /// slice is not over, then they are handed it directly. When only shared locks remain, an exclusive lease
    /// becomes shared (after `beforeRelease` too). Returns at once when nothing changed.
    func unlock(_ ino: UInt64, change: (inout LocalLockTable) -> Bool, beforeRelease: () -> Void) {
        let now = ContinuousClock.now
        let (changed, needed) = state.withLock { s -> (Bool, LeaseChange) in
            guard var entry = s.files[ino] else { return (false, .none) }
            guard change(&entry.locks) else { return (false, .none) }
            var needed = LeaseChange.none
            if let lease = entry.lease {
                if entry.locks.isEmpty {
                    let localWaiter = s.waiters.contains { $0.ino == ino }
                    if !(localWaiter && now - entry.leaseSince < Self.localSlice) { needed = .release }
                } else if lease.mode == .exclusive, !entry.locks.locks.contains(where: { $0.mode == .exclusive }) {
                    needed = .downgrade
                }
            }
            if needed != .none { entry.users += 1 }
            s.files[ino] = entry.idle ? nil : entry
            return (true, needed)
        }
        guard changed else { return }
        nudgeLocalWaiters(ino)  // a local waiter may fit now
        guard needed != .none else { return }
        let gate = state.withLock { $0.files[ino]!.gate }
        defer { leave(ino) }
        gate.mutex.withLock { _ in
            switch needed {
            case .release: giveBack(ino, beforeRelease: beforeRelease)
            case .downgrade: downgrade(ino, beforeRelease: beforeRelease)
            case .none: break
            }
        }
        nudgeLocalWaiters(ino)
    }

    /// Under the gate: the lease goes back if no local lock came meanwhile.
    private func giveBack(_ ino: UInt64, beforeRelease: () -> Void) {
        // Another local lock may have arrived meanwhile: then the lease stays.
        let stillFree = state.withLock { s in s.files[ino].map { $0.locks.isEmpty && $0.lease != nil } ?? false }
        guard stillFree else { return }
        beforeRelease()
        // Taken from the entry only now, and only if no lock came while the writes went up (such a lock
        // was granted under this lease, so the lease stays).
        let lease = state.withLock { s -> Lease? in
            guard let entry = s.files[ino], entry.locks.isEmpty, let lease = entry.lease else { return nil }
            s.files[ino]?.lease = nil
            // Held for local waiters to the end of a slice: they step back for a moment.
            if s.waiters.contains(where: { $0.ino == ino }) {
                let now = ContinuousClock.now
                s.yieldedAt = s.yieldedAt.filter { now - $0.value < Self.longestYield }
                s.yieldedAt[ino] = now
            }
            return lease
        }
        guard let lease else { return }
        do {
            if let manager { try timed { () throws(LockError) in try manager.release(lease) } }
        } catch {
            logger.error("could not release lock", metadata: ["resource": "\(lease.resource)", "error": "\(error)"])
        }
    }

    /// Under the gate: exclusive → shared, if the local locks are still all shared.
    private func downgrade(_ ino: UInt64, beforeRelease: () -> Void) {
        func sharedOnly() -> Lease? {
            state.withLock { s in
                guard let entry = s.files[ino], let lease = entry.lease, lease.mode == .exclusive, !entry.locks.isEmpty,
                    !entry.locks.locks.contains(where: { $0.mode == .exclusive })
                else { return nil }
                return lease
            }
        }
        guard sharedOnly() != nil else { return }
        beforeRelease()  // readers on other mounts see what was written under the exclusive lease
        guard let lease = sharedOnly(), let manager else { return }
        do {
            guard let shared = try manager.convert(lease, to: .shared) else { return }
            state.withLock { s in if s.files[ino]?.lease?.token == lease.token { s.files[ino]?.lease = shared } }
        } catch {
            logger.error("could not downgrade lock", metadata: ["resource": "\(lease.resource)", "error": "\(error)"])
            if case .lost = error {
                state.withLock { s in if s.files[ino]?.lease?.token == lease.token { s.files[ino]?.lease = nil } }
            }
        }
    }

    /// A lease kept for local waiters that then went away (interrupted): give it back.
    func releaseIfUnused(_ ino: UInt64, beforeRelease: () -> Void) {
        let gate = state.withLock { s -> Gate? in
            guard var entry = s.files[ino], entry.locks.isEmpty, entry.lease != nil,
                !s.waiters.contains(where: { $0.ino == ino })
            else { return nil }
            entry.users += 1
            s.files[ino] = entry
            return entry.gate
        }
        guard let gate else { return }
        defer { leave(ino) }
        gate.mutex.withLock { _ in giveBack(ino, beforeRelease: beforeRelease) }
    }

    func conflict(_ ino: UInt64, with request: FileLock) -> FileLock? {
        state.withLock { $0.files[ino]?.locks.conflict(with: request) }
    }

    /// `F_GETLK` for the locks of other mounts: when this mount's lease cannot rule them out, the strategy is
    /// asked for the file's holders (one round trip). Reported as one lock over the whole file with pid 0: the
    /// strategy knows a holder's mode, not its ranges or processes.
    func remoteConflict(_ ino: UInt64, path: String, with request: FileLock) -> FileLock? {
        guard let manager else { return nil }
        let held = state.withLock { $0.files[ino]?.lease }
        // An exclusive lease here, or a shared one for a shared question, leaves nobody else in the way.
        if let held, manager.validLease(for: held.resource)?.token == held.token,
            held.mode == .exclusive || request.mode == .shared
        {
            return nil
        }
        let records: [LockRecord]
        do {
            records = try manager.strategy.holders(of: resourceName(path))
        } catch {
            logger.warning(
                "F_GETLK could not ask the lock strategy", metadata: ["path": "\(path)", "error": "\(error)"])
            return nil
        }
        let mode: LeaseMode = request.mode == .exclusive ? .exclusive : .shared
        guard let other = records.first(where: { $0.owner != manager.owner.id && $0.leaseMode.conflicts(with: mode) })
        else { return nil }
        return FileLock(
            owner: 0, kind: request.kind, mode: other.leaseMode == .exclusive ? .exclusive : .shared,
            start: 0, end: .max, pid: 0)
    }

    /// Paths' inodes with a lock held in this mount, and their leases (for `bucketfs status` and listings).
    var heldLeases: [Lease] {
        state.withLock { s in s.files.values.compactMap(\.lease) }
    }

    // MARK: Waiting

    /// Queues a blocking request that could not be granted yet. `retry` makes one attempt and answers the
    /// waiter when it returns non-nil; it is called on the waiter thread.
    func wait(
        _ ino: UInt64, _ request: FileLock, interrupted: @escaping @Sendable () -> Bool,
        reply: @escaping @Sendable (FSError?) -> Void
    ) {
        let start = state.withLock { s -> Bool? in
            if s.stopped { return nil }
            s.nextWaiter += 1
            s.waiters.append(
                Waiter(
                    id: s.nextWaiter, ino: ino, request: request, interrupted: interrupted,
                    reply: reply, nextTry: .now + Self.firstRetry, delay: Self.firstRetry))
            defer { s.waiterThreadStarted = true }
            return !s.waiterThreadStarted
        }
        guard let start else { return reply(.interrupted) }
        if start { startWaiterThread() } else { wakeup.signal() }
    }

    /// The waiter thread's retry, set by the owner (`FileSystem`), which knows paths and caches; it also
    /// hands back the lease of a file whose waiters went away (`Release`).
    typealias Retry = @Sendable (UInt64, FileLock) throws(FSError) -> Outcome
    typealias Release = @Sendable (UInt64) -> Void
    /// The path of an inode, to name it to the release feed.
    typealias PathOf = @Sendable (UInt64) -> String?

    /// A class, not a tuple: a typed-throws closure copied out of a tuple is wrapped in one more thunk on every
    /// read, and the waiter thread reads it on every pass (the chain of thunks grew until the stack overflowed).
    final class Hooks: Sendable {
        let retry: Retry
        let release: Release
        let path: PathOf
        init(retry: @escaping Retry, release: @escaping Release, path: @escaping PathOf) {
            self.retry = retry
            self.release = release
            self.path = path
        }
    }

    private let retryHook = Mutex<Hooks?>(nil)

    func setRetry(_ retry: @escaping Retry, release: @escaping Release, path: @escaping PathOf) {
        retryHook.withLock { $0 = Hooks(retry: retry, release: release, path: path) }
    }

    private func startWaiterThread() {
        let wakeup = self.wakeup
        let thread = Thread { [weak self] in
            while true {
                guard let coordinator = self else { return }
                guard let pause = coordinator.serveWaiters() else { return }
                _ = wakeup.wait(timeout: .now() + pause)
            }
        }
        thread.name = "bucketfs-lock-waiters"
        thread.start()
    }

    /// Answers interrupted waiters, retries the ones that are due; returns how long to sleep, nil to stop.
    private func serveWaiters() -> Double? {
        let (stopped, waiters) = state.withLock { ($0.stopped, $0.waiters) }
        if stopped { return nil }
        let now = ContinuousClock.now
        let hooks = retryHook.withLock { $0 }
        var touched: Set<UInt64> = []
        for waiter in waiters {
            if waiter.interrupted() {
                finish(waiter.id)?.reply(.interrupted)
                touched.insert(waiter.ino)
                continue
            }
            guard waiter.nextTry <= now, let hooks else { continue }
            do {
                switch try hooks.retry(waiter.ino, waiter.request) {
                case .granted:
                    finish(waiter.id)?.reply(nil)
                case .heldLocally:
                    // Woken by the unlock; the timed retry is only a safety net.
                    reschedule(waiter.id, after: Self.longestRetry, grow: false, watch: nil)
                case .heldElsewhere:
                    reschedule(waiter.id, after: waiter.delay, grow: true, watch: waiter.ino)
                }
            } catch {
                finish(waiter.id)?.reply(error)
                touched.insert(waiter.ino)
            }
        }
        // A lease kept for waiters that have gone meanwhile goes back.
        for ino in touched { hooks?.release(ino) }
        return state.withLock { s in
            s.waiters.isEmpty ? 60 : Self.seconds(Self.interruptPoll)
        }
    }

    private func finish(_ id: UInt64) -> Waiter? {
        state.withLock { s in
            guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: index)
        }
    }

    private func reschedule(_ id: UInt64, after delay: Duration, grow: Bool, watch ino: UInt64?) {
        let pathOf = retryHook.withLock { $0?.path }
        let resource = ino.flatMap { pathOf?($0) }.map(resourceName)
        let startFeed = state.withLock { s -> Bool in
            guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return false }
            s.waiters[index].nextTry = .now + delay
            if grow { s.waiters[index].delay = min(s.waiters[index].delay * 2, Self.longestRetry) }
            s.waiters[index].resource = resource
            guard resource != nil else { return false }
            defer { s.feedThreadStarted = true }
            return !s.feedThreadStarted
        }
        if startFeed { startFeedThread() } else if resource != nil { feedWakeup.signal() }
    }

    /// Listens to the strategy's release feed for the files waiters wait on elsewhere, and makes their waiters
    /// due at once when one may have been released.
    private func startFeedThread() {
        guard let feed = manager?.strategy.makeReleaseFeed() else { return }
        let feedWakeup = self.feedWakeup
        let thread = Thread { [weak self] in
            while true {
                guard let coordinator = self else { return }
                let (stopped, watched) = coordinator.state.withLock { s in
                    (s.stopped, Set(s.waiters.compactMap(\.resource)))
                }
                if stopped { return }
                if watched.isEmpty {
                    _ = feedWakeup.wait(timeout: .now() + 60)
                    continue
                }
                let freed = feed.waitForReleases(of: watched, timeout: 1)
                guard !freed.isEmpty else { continue }
                coordinator.state.withLock { s in
                    for index in s.waiters.indices where s.waiters[index].resource.map(freed.contains) == true {
                        s.waiters[index].nextTry = .now
                    }
                }
                coordinator.wakeup.signal()
            }
        }
        thread.name = "bucketfs-lock-feed"
        thread.start()
    }

    /// Wakes local waiters of a file at once when its locks change (called from `unlock`): they are retried
    /// on the next pass.
    func nudgeLocalWaiters(_ ino: UInt64) {
        state.withLock { s in
            for index in s.waiters.indices where s.waiters[index].ino == ino { s.waiters[index].nextTry = .now }
        }
        wakeup.signal()
    }

    /// Unmount: waiters are answered EINTR, the threads stop, every lease goes back.
    func shutdown() {
        let waiters = state.withLock { s -> [Waiter] in
            s.stopped = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.reply(.interrupted) }
        wakeup.signal()
        feedWakeup.signal()
        manager?.shutdown()
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

extension FileLockCoordinator {
    /// Files with local locks or a lease, and queued blocking requests: what `.bucketfs/locks/` shows.
    var snapshot: (held: [(ino: UInt64, locks: [FileLock], lease: Lease?)], waiting: [(ino: UInt64, request: FileLock)])
    {
        state.withLock { s in
            (
                s.files.compactMap { ino, entry in
                    entry.locks.isEmpty && entry.lease == nil
                        ? nil : (ino: ino, locks: entry.locks.locks, lease: entry.lease)
                }, s.waiters.map { (ino: $0.ino, request: $0.request) }
            )
        }
    }
}
