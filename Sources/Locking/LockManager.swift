import Dispatch
import Foundation
import Logging
import Synchronization

/// Holds leases of one strategy for one owner (a mount, a `bucketfs lock run`): acquires with backoff, renews
/// every held lease at a third of its duration, and reports leases it could not renew.
///
/// Renewal: a thread of its own schedules renewals; each runs on a short-lived worker thread, so a renewal stuck
/// in a slow store (retries can take minutes) holds up no other lease. A lease whose renewal has not come back
/// when it expires is lost then — reported at once, whatever the stuck call answers later (a late success is
/// given back). `validLease(for:)` stops vouching for a lease `safetyMargin` before its expiry, so a caller
/// never grants anything under a lease it cannot prove it still holds.
///
/// Blocking calls (`acquire`, `release`) block the calling thread: call them from libfuse workers or threads of
/// your own, not from Swift's cooperative pool.
public final class LockManager: Sendable {
    public let strategy: any LockStrategy
    public let owner: LockOwner
    /// Lease asked for on every acquisition (`lease_duration_seconds`).
    public let leaseDuration: Double
    private let onLost: (@Sendable (Lease, LockError) -> Void)?
    private let logger: Logger

    /// A held lease. Its mutex serialises the strategy calls on it, so a renewal in flight and a release
    /// cannot both act on the same version.
    private final class Entry: Sendable {
        let lease: Mutex<Lease>
        let id: UInt64
        /// Set when the lease was declared lost while a renewal was stuck: a late success is then given back.
        let abandoned = Atomic<Bool>(false)
        init(_ lease: Lease, id: UInt64) {
            self.lease = Mutex(lease)
            self.id = id
        }
    }

    /// What the manager knows of a held lease without waiting for its entry (a renewal may be in flight).
    private struct Held {
        var entry: Entry
        /// The latest lease, updated after each renewal.
        var lease: Lease
        var renewAt: Date
        var acquired: Date
        /// A renewal is running on a worker thread.
        var renewing = false
    }

    private struct State {
        var held: [String: Held] = [:]
        var lost: [LostLease] = []
        var nextID: UInt64 = 0
        var stopped = false
        var threadStarted = false
        var metrics: LockMetrics
    }

    private let state: Mutex<State>
    private let export: LockMetricsExport
    /// Wakes the renewal thread early: a new lease may be due sooner than it planned, or we are stopping.
    private let wakeup = DispatchSemaphore(value: 0)

    /// How many lost leases `lostLeases` remembers.
    static let lostHistory = 100
    /// Renewals running at once, at most; more wait for the next round.
    static let renewalWorkers = 16

    /// How long before its expiry a lease stops counting as held for new grants: a tenth of it, at most 2 s.
    public static func safetyMargin(_ duration: Double) -> Double {
        min(duration / 10, 2)
    }

    public init(
        strategy: any LockStrategy, owner: LockOwner = .current(), leaseDuration: Double = 60,
        logger: Logger = Logger(label: "bucketfs.locks"),
        onLost: (@Sendable (Lease, LockError) -> Void)? = nil
    ) {
        self.strategy = strategy
        self.owner = owner
        self.leaseDuration = leaseDuration
        self.logger = logger
        self.onLost = onLost
        state = Mutex(State(metrics: LockMetrics(strategy: strategy.name)))
        export = LockMetricsExport(strategy: strategy.name)
    }

    deinit {
        // The renewal thread holds only a weak reference; it ends on its next wake-up.
        wakeup.signal()
    }

    // MARK: Acquiring

    /// One attempt: the lease, or `nil` at once if another owner (or this manager) holds `resource`. `queue`:
    /// the caller will ask again soon (a strategy with a waiting line keeps its place).
    public func tryAcquire(
        _ resource: String, mode: LeaseMode = .exclusive,
        queue: Bool = false
    ) throws(LockError) -> Lease? {
        let started = Date()
        count { $0.attempts += 1 }
        do {
            guard let lease = try attempt(resource, mode: mode, queue: queue) else {
                count { $0.failures["held", default: 0] += 1 }
                return nil
            }
            granted(lease, startedAt: started)
            return lease
        } catch {
            count { $0.failures[Self.reason(error), default: 0] += 1 }
            throw error
        }
    }

    /// Retries while someone else holds `resource` until granted, `timeout` seconds have passed (`nil`: no
    /// limit) or `interrupted` says to stop (a FUSE interrupt). Between tries it listens to the strategy's
    /// release feed (a release elsewhere is heard within a round trip or a watch interval), with a timed retry
    /// backing off from 50 ms to 1 s as a safety net. Returns `nil` on timeout or interruption. Backend
    /// failures are thrown at once: the caller decides whether to retry.
    public func acquire(
        _ resource: String, mode: LeaseMode = .exclusive, timeout: Double? = nil,
        interrupted: (() -> Bool)? = nil
    ) throws(LockError) -> Lease? {
        let started = Date()
        let deadline = timeout.map { started.addingTimeInterval($0) }
        var delay = 0.05
        var feed: (any LockReleaseFeed)?
        count { $0.attempts += 1 }
        while true {
            let lease: Lease?
            do {
                lease = try attempt(resource, mode: mode, queue: true)
            } catch {
                count { $0.failures[Self.reason(error), default: 0] += 1 }
                throw error
            }
            if let lease {
                granted(lease, startedAt: started)
                return lease
            }
            let now = Date()
            if let deadline, now >= deadline {
                count { $0.failures["timeout", default: 0] += 1 }
                return nil
            }
            if feed == nil { feed = strategy.makeReleaseFeed() }
            let wakeAt = min(now.addingTimeInterval(delay), deadline ?? .distantFuture)
            // In short slices when someone may interrupt us, so that it is noticed quickly.
            let slice = interrupted == nil ? 1.0 : 0.05
            while Date() < wakeAt {
                if interrupted?() == true {
                    count { $0.failures["interrupted", default: 0] += 1 }
                    return nil
                }
                let freed = feed!.waitForReleases(of: [resource], timeout: min(slice, wakeAt.timeIntervalSinceNow))
                if !freed.isEmpty { break }
            }
            if interrupted?() == true {
                count { $0.failures["interrupted", default: 0] += 1 }
                return nil
            }
            delay = min(delay * 2, 1)
        }
    }

    /// Changes a held lease between shared and exclusive without letting go (see `LockStrategy.convert`):
    /// `nil` when an upgrade must wait for other sharers. Throws `.lost` if the lease is gone.
    public func convert(_ lease: Lease, to mode: LeaseMode) throws(LockError) -> Lease? {
        guard let held = state.withLock({ $0.held[lease.resource] }), held.lease.token == lease.token else {
            throw .lost(lease.resource)
        }
        // Under the entry's mutex, like renewals, so that the version converted is the current one.
        let converted = try held.entry.lease.withLock { (current: inout Lease) throws(LockError) -> Lease? in
            guard let converted = try strategy.convert(current, to: mode) else { return nil }
            current = converted
            return converted
        }
        guard let converted else { return nil }
        let now = Date()
        state.withLock { state in
            guard state.held[lease.resource]?.entry.id == held.entry.id else { return }
            state.held[lease.resource]?.lease = converted
            state.held[lease.resource]?.renewAt = Self.renewalTime(converted, now: now)
        }
        return converted
    }

    private func attempt(_ resource: String, mode: LeaseMode, queue: Bool) throws(LockError) -> Lease? {
        let (stopped, busy) = state.withLock { ($0.stopped, $0.held[resource] != nil) }
        // Nothing would renew a lease granted now.
        if stopped { throw .unavailable("lock manager for \(owner.id) is shut down") }
        // Not re-entrant: a second request from this owner waits like anyone else's, without asking the backend.
        if busy { return nil }
        return try strategy.tryAcquire(resource, owner: owner, lease: leaseDuration, mode: mode, queue: queue)
    }

    private func granted(_ lease: Lease, startedAt started: Date) {
        let now = Date()
        let startThread = changingMetrics { state -> Bool in
            state.nextID += 1
            state.held[lease.resource] = Held(
                entry: Entry(lease, id: state.nextID), lease: lease,
                renewAt: Self.renewalTime(lease, now: now), acquired: now)
            state.metrics.acquired += 1
            state.metrics.currentlyHeld = state.held.count
            state.metrics.recordLatency(now.timeIntervalSince(started))
            defer { state.threadStarted = true }
            return !state.threadStarted
        }
        if startThread { startRenewalThread() } else { wakeup.signal() }
    }

    // MARK: Releasing

    /// Gives `lease` up. Throws `.lost` if it had been lost already (reported through `onLost` then), or the
    /// backend's error; the manager forgets the lease either way.
    public func release(_ lease: Lease) throws(LockError) {
        let removed = changingMetrics { state -> Held? in
            // Lock order is entry then state (see `renew`): never take an entry's mutex in here.
            guard let held = state.held[lease.resource], held.lease.token == lease.token else { return nil }
            state.held[lease.resource] = nil
            state.metrics.currentlyHeld = state.held.count
            return held
        }
        guard let removed else { throw .lost(lease.resource) }
        count { $0.recordHoldTime(Date().timeIntervalSince(removed.acquired)) }
        // Waits for a renewal in flight, then releases the version it left.
        try removed.entry.lease.withLock { (current: inout Lease) throws(LockError) in
            do throws(LockError) {
                try strategy.release(current)
                count { $0.released += 1 }
            } catch {
                logger.warning(
                    "releasing lock failed", metadata: ["resource": "\(lease.resource)", "error": "\(error)"])
                throw error
            }
        }
    }

    /// Releases every held lease (unmount); failures are logged, not thrown. Stops the renewal thread.
    public func shutdown() {
        for lease in held {
            try? release(lease)
        }
        state.withLock { $0.stopped = true }
        wakeup.signal()
    }

    // MARK: Looking

    /// The leases held now.
    public var held: [Lease] {
        state.withLock { $0.held.values.map(\.lease) }.sorted { $0.resource < $1.resource }
    }

    /// The lease held on `resource`, if any.
    public func lease(for resource: String) -> Lease? {
        state.withLock { $0.held[resource]?.lease }
    }

    /// The lease held on `resource` if it is good for at least `safetyMargin` more by this host's clock: a lease
    /// whose renewal is late or failing stops being vouched for before it runs out, so nothing new is granted
    /// under it (what was granted stays: POSIX cannot take a lock back).
    public func validLease(for resource: String, at now: Date = Date()) -> Lease? {
        guard let lease = lease(for: resource),
            lease.expires.timeIntervalSince(now) > Self.safetyMargin(lease.duration)
        else { return nil }
        return lease
    }

    /// Recently lost leases, oldest first (at most `lostHistory`), for listings.
    public var lostLeases: [LostLease] {
        state.withLock { $0.lost }
    }

    public var metrics: LockMetrics {
        state.withLock { $0.metrics }
    }

    // MARK: Renewal

    private func startRenewalThread() {
        let wakeup = self.wakeup
        let thread = Thread { [weak self] in
            while true {
                // A strong reference only while working, so that dropping the manager ends the thread.
                guard let manager = self else { return }
                guard let pause = manager.renewDue() else { return }
                _ = wakeup.wait(timeout: .now() + pause)
            }
        }
        thread.name = "bucketfs-lock-renewal"
        thread.start()
    }

    /// Starts the renewals that are due, each on a worker thread; declares lost the leases that expired
    /// unrenewed (their renewal stuck or failing). Returns how long to sleep, or `nil` to stop.
    private func renewDue() -> Double? {
        let now = Date()
        let (stopped, due, expired) = state.withLock { state -> (Bool, [(String, Entry)], [(String, Entry)]) in
            var running = state.held.values.filter(\.renewing).count
            var due: [(String, Entry)] = []
            var expired: [(String, Entry)] = []
            for (resource, held) in state.held.sorted(by: { $0.value.renewAt < $1.value.renewAt }) {
                if now >= held.lease.expires {
                    expired.append((resource, held.entry))
                } else if held.renewAt <= now, !held.renewing, running < Self.renewalWorkers {
                    state.held[resource]?.renewing = true
                    running += 1
                    due.append((resource, held.entry))
                }
            }
            return (state.stopped, due, expired)
        }
        if stopped { return nil }
        for (resource, entry) in expired {
            let lease = state.withLock { $0.held[resource]?.lease }
            if let lease {
                declareLost(resource, entry, lease, .unavailable("renewal did not complete before the lease ran out"))
            }
        }
        for (resource, entry) in due {
            let worker = Thread { [weak self] in self?.renew(resource, entry) }
            worker.name = "bucketfs-lock-renew"
            worker.start()
        }
        let next = state.withLock { state in
            state.held.values.map { $0.renewing ? $0.lease.expires : min($0.renewAt, $0.lease.expires) }.min()
        }
        guard let next else { return 60 }  // idle: only a signal wakes us usefully
        return min(max(next.timeIntervalSinceNow, 0.01), 60)
    }

    /// One renewal, on a worker thread.
    private func renew(_ resource: String, _ entry: Entry) {
        var lostWith: (Lease, LockError)?
        var lateSuccess: Lease?
        entry.lease.withLock { lease in
            defer {
                state.withLock { state in
                    if state.held[resource]?.entry.id == entry.id { state.held[resource]?.renewing = false }
                }
                wakeup.signal()
            }
            // Released (or replaced) while we were waiting for the entry.
            guard state.withLock({ $0.held[resource]?.entry.id == entry.id }) else { return }
            do throws(LockError) {
                let renewed = try strategy.renew(lease)
                lease = renewed
                let stillHeld = changingMetrics { state -> Bool in
                    guard state.held[resource]?.entry.id == entry.id else { return false }
                    state.held[resource]?.renewAt = Self.renewalTime(renewed, now: Date())
                    state.held[resource]?.lease = renewed
                    state.metrics.renewals += 1
                    return true
                }
                // Declared lost while the call was stuck: it is ours again in the backend, but nobody uses it.
                if !stillHeld && entry.abandoned.load(ordering: .acquiring) { lateSuccess = renewed }
            } catch {
                count { $0.renewalFailures += 1 }
                let now = Date()
                // The backend may come back before the lease runs out; once it has run out, someone else may
                // hold the lock, so it is lost whatever the backend says later.
                if case .lost = error {
                    lostWith = (lease, error)
                } else if now >= lease.expires {
                    lostWith = (lease, error)
                } else {
                    let retry = min(lease.duration / 3, max(lease.expires.timeIntervalSince(now) / 3, 0.1))
                    state.withLock { $0.held[resource]?.renewAt = now.addingTimeInterval(retry) }
                    logger.warning(
                        "lock renewal failed; retrying before the lease runs out",
                        metadata: [
                            "resource": "\(resource)", "error": "\(error)",
                            "expires": "\(lease.expires)",
                        ])
                }
            }
        }
        if let lateSuccess { try? strategy.release(lateSuccess) }
        guard let (lease, error) = lostWith else { return }
        declareLost(resource, entry, lease, error)
    }

    private func declareLost(_ resource: String, _ entry: Entry, _ lease: Lease, _ error: LockError) {
        let removed = changingMetrics { state -> Bool in
            guard state.held[resource]?.entry.id == entry.id else { return false }
            state.held[resource] = nil
            entry.abandoned.store(true, ordering: .releasing)
            state.lost.append(LostLease(lease: lease, reason: error.description, at: Date()))
            if state.lost.count > Self.lostHistory { state.lost.removeFirst(state.lost.count - Self.lostHistory) }
            state.metrics.lost += 1
            state.metrics.currentlyHeld = state.held.count
            return true
        }
        guard removed else { return }
        logger.error(
            "lock lost: could not renew the lease",
            metadata: [
                "resource": "\(resource)", "strategy": "\(strategy.name)", "token": "\(lease.token)",
                "error": "\(error)",
            ])
        onLost?(lease, error)
    }

    // MARK: Helpers

    private static func renewalTime(_ lease: Lease, now: Date) -> Date {
        now.addingTimeInterval(lease.duration / 3)
    }

    private func count(_ update: (inout LockMetrics) -> Void) {
        changingMetrics { update(&$0.metrics) }
    }

    /// `state.withLock`, after which the metric changes `body` made also go to swift-metrics.
    @discardableResult
    private func changingMetrics<T: Sendable>(_ body: (inout State) -> T) -> T {
        let (result, before, after) = state.withLock { state in
            let before = state.metrics
            let result = body(&state)
            return (result, before, state.metrics)
        }
        export.emit(from: before, to: after)
        return result
    }

    private static func reason(_ error: LockError) -> String {
        switch error {
        case .lost: return "lost"
        case .unavailable: return "unavailable"
        case .invalid: return "invalid"
        }
    }

}

/// A lease the manager could not renew, kept for listings.
public struct LostLease: Sendable, Equatable {
    public var lease: Lease
    public var reason: String
    public var at: Date
}

/// Counters of one manager, as a snapshot; the project exports them as metrics labelled by `strategy`.
public struct LockMetrics: Sendable, Equatable {
    public var strategy: String
    /// Calls to `tryAcquire`/`acquire` (a waiting `acquire` counts once).
    public var attempts: UInt64 = 0
    public var acquired: UInt64 = 0
    /// Attempts that did not end in a lease, by reason: held, timeout, interrupted, unavailable, invalid.
    public var failures: [String: UInt64] = [:]
    public var renewals: UInt64 = 0
    public var renewalFailures: UInt64 = 0
    public var lost: UInt64 = 0
    public var released: UInt64 = 0
    public var currentlyHeld: Int = 0
    /// Time from the call to the grant, waiting included.
    public var acquisitionLatency = Histogram()
    /// Time from grant to release.
    public var holdTime = Histogram(bounds: [0.01, 0.1, 1, 10, 60, 600, 3600])

    public init(strategy: String) {
        self.strategy = strategy
    }

    mutating func recordLatency(_ seconds: Double) { acquisitionLatency.record(seconds) }
    mutating func recordHoldTime(_ seconds: Double) { holdTime.record(seconds) }

    /// Prometheus-style: cumulative counts per upper bound, plus sum and count.
    public struct Histogram: Sendable, Equatable {
        public var bounds: [Double]
        /// `counts[i]`: observations <= `bounds[i]`; observations above the last bound only count in `count`.
        public var counts: [UInt64]
        public var sum: Double = 0
        public var count: UInt64 = 0

        public init(bounds: [Double] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30]) {
            self.bounds = bounds
            counts = Array(repeating: 0, count: bounds.count)
        }

        mutating func record(_ value: Double) {
            sum += value
            count += 1
            for (index, bound) in bounds.enumerated() where value <= bound { counts[index] += 1 }
        }
    }
}
