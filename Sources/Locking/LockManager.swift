import Dispatch
import Foundation
import Logging
import Synchronization

/// Holds leases of one strategy for one owner (a mount, a `bucketfs lock run`): acquires with backoff, renews
/// every held lease at a third of its duration on a thread of its own, and reports leases it could not renew.
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

    public init(strategy: any LockStrategy, owner: LockOwner = .current(), leaseDuration: Double = 60,
                logger: Logger = Logger(label: "bucketfs.locks"),
                onLost: (@Sendable (Lease, LockError) -> Void)? = nil) {
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

    /// One attempt: the lease, or `nil` at once if another owner (or this manager) holds `resource`.
    public func tryAcquire(_ resource: String) throws(LockError) -> Lease? {
        let started = Date()
        count { $0.attempts += 1 }
        do {
            guard let lease = try attempt(resource) else {
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

    /// Retries while someone else holds `resource`, backing off from 50 ms (doubling, up to 1 s), until granted,
    /// `timeout` seconds have passed (`nil`: no limit) or `interrupted` says to stop (a FUSE interrupt). Returns
    /// `nil` on timeout or interruption. Backend failures are thrown at once: the caller decides whether to retry.
    public func acquire(_ resource: String, timeout: Double? = nil,
                        interrupted: (() -> Bool)? = nil) throws(LockError) -> Lease? {
        let started = Date()
        let deadline = timeout.map { started.addingTimeInterval($0) }
        var delay = 0.05
        count { $0.attempts += 1 }
        while true {
            let lease: Lease?
            do {
                lease = try attempt(resource)
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
            // Sleep in short slices so an interruption is noticed quickly.
            let wakeAt = min(now.addingTimeInterval(delay), deadline ?? .distantFuture)
            while Date() < wakeAt {
                if interrupted?() == true {
                    count { $0.failures["interrupted", default: 0] += 1 }
                    return nil
                }
                Self.sleep(min(0.05, wakeAt.timeIntervalSinceNow))
            }
            if interrupted?() == true {
                count { $0.failures["interrupted", default: 0] += 1 }
                return nil
            }
            delay = min(delay * 2, 1)
        }
    }

    private func attempt(_ resource: String) throws(LockError) -> Lease? {
        let (stopped, busy) = state.withLock { ($0.stopped, $0.held[resource] != nil) }
        // Nothing would renew a lease granted now.
        if stopped { throw .unavailable("lock manager for \(owner.id) is shut down") }
        // Not re-entrant: a second request from this owner waits like anyone else's, without asking the backend.
        if busy { return nil }
        return try strategy.tryAcquire(resource, owner: owner, lease: leaseDuration)
    }

    private func granted(_ lease: Lease, startedAt started: Date) {
        let now = Date()
        let startThread = changingMetrics { state -> Bool in
            state.nextID += 1
            state.held[lease.resource] = Held(entry: Entry(lease, id: state.nextID), lease: lease,
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
                logger.warning("releasing lock failed", metadata: ["resource": "\(lease.resource)", "error": "\(error)"])
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

    /// Renews every lease that is due; returns how long to sleep, or `nil` to stop.
    private func renewDue() -> Double? {
        let now = Date()
        let (stopped, due) = state.withLock { state in
            (state.stopped, state.held.filter { $0.value.renewAt <= now }.map { ($0.key, $0.value.entry) })
        }
        if stopped { return nil }
        for (resource, entry) in due { renew(resource, entry) }
        let next = state.withLock { $0.held.values.map(\.renewAt).min() }
        guard let next else { return 60 }  // idle: only a signal wakes us usefully
        return min(max(next.timeIntervalSinceNow, 0.01), 60)
    }

    private func renew(_ resource: String, _ entry: Entry) {
        var lostWith: (Lease, LockError)?
        entry.lease.withLock { lease in
            // Released (or replaced) while we were waiting for the entry.
            guard state.withLock({ $0.held[resource]?.entry.id == entry.id }) else { return }
            do throws(LockError) {
                lease = try strategy.renew(lease)
                let renewed = lease
                changingMetrics { state in
                    state.held[resource]?.renewAt = Self.renewalTime(renewed, now: Date())
                    state.held[resource]?.lease = renewed
                    state.metrics.renewals += 1
                }
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
                    logger.warning("lock renewal failed; retrying before the lease runs out",
                                   metadata: ["resource": "\(resource)", "error": "\(error)",
                                              "expires": "\(lease.expires)"])
                }
            }
        }
        guard let (lease, error) = lostWith else { return }
        changingMetrics { state in
            guard state.held[resource]?.entry.id == entry.id else { return }
            state.held[resource] = nil
            state.lost.append(LostLease(lease: lease, reason: error.description, at: Date()))
            if state.lost.count > Self.lostHistory { state.lost.removeFirst(state.lost.count - Self.lostHistory) }
            state.metrics.lost += 1
            state.metrics.currentlyHeld = state.held.count
        }
        logger.error("lock lost: could not renew the lease",
                     metadata: ["resource": "\(resource)", "strategy": "\(strategy.name)", "token": "\(lease.token)",
                                "error": "\(error)"])
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

    private static func sleep(_ seconds: Double) {
        guard seconds > 0 else { return }
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
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
