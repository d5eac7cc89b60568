import Foundation
import Locking
import Logging
import Synchronization

/// The locks of one mount: full POSIX detail per file within the mount (`LocalLockTable`), and, across mounts,
/// one lease of the lock strategy per file, held while any local lock on that file exists.
///
/// Lock order: a file's `gate`, then `state`, then the `LockManager`'s own lock (asked for a lease under
/// `state`); `state` is never held across a strategy call or store I/O.
/// A file's gate serialises taking and giving up its lease, so two local requests never race to the strategy.
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
    }

    struct State {
        var files: [UInt64: FileEntry] = [:]
        var waiters: [Waiter] = []
        var nextWaiter: UInt64 = 0
        var waiterThreadStarted = false
        var stopped = false
    }

    let state = Mutex(State())
    /// Wakes the waiter thread: a new waiter, or a lock given up that a waiter may want.
    private let wakeup = DispatchSemaphore(value: 0)

    /// How often a waiter checks for a FUSE interrupt, and the longest wait between tries of the strategy.
    static let interruptPoll: Duration = .milliseconds(20)
    static let firstRetry: Duration = .milliseconds(20)
    static let longestRetry: Duration = .seconds(1)

    init(manager: LockManager?, resourceName: @escaping @Sendable (String) -> String, logger: Logger) {
        self.manager = manager
        self.resourceName = resourceName
        self.logger = logger
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
    /// lease was taken just now: the caller revalidates the file's caches.
    func attempt(_ ino: UInt64, path: String, _ request: FileLock) throws(FSError) -> Outcome {
        let quick = state.withLock { s -> Outcome? in
            var entry = s.files[ino] ?? FileEntry()
            if entry.locks.conflict(with: request) != nil { return .heldLocally }
            if let lease = entry.lease, manager?.lease(for: lease.resource)?.token != lease.token {
                // Lost (the manager could not renew it; it logged and counted that): ask the strategy again.
                // Locks granted under it stay: POSIX has no way to take them back.
                entry.lease = nil
            }
            guard entry.lease != nil || manager == nil else {
                entry.users += 1
                s.files[ino] = entry
                return nil
            }
            entry.locks.apply(request)
            s.files[ino] = entry
            return .granted(newLease: false)
        }
        if let quick { return quick }
        // The file is not held through the strategy yet: take its gate, then the lease.
        let gate = state.withLock { $0.files[ino]!.gate }
        defer { leave(ino) }
        return try gate.mutex.withLock { _ throws(FSError) -> Outcome in
            let recheck = state.withLock { s -> Outcome? in
                guard var entry = s.files[ino] else { return nil }
                if entry.locks.conflict(with: request) != nil { return .heldLocally }
                guard entry.lease != nil else { return nil }
                entry.locks.apply(request)
                s.files[ino] = entry
                return .granted(newLease: false)
            }
            if let recheck { return recheck }
            let lease: Lease?
            do {
                lease = try manager!.tryAcquire(resourceName(path))
            } catch {
                logger.error("lock strategy failed", metadata: ["path": "\(path)", "error": "\(error)"])
                throw FSError.lockUnavailable("\(error)")
            }
            guard let lease else { return .heldElsewhere }
            state.withLock { s in
                s.files[ino]?.lease = lease
                s.files[ino]?.locks.apply(request)
            }
            return .granted(newLease: true)
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

    /// Removes locks with `change`; when the file's last local lock goes, `beforeRelease` runs (the file's
    /// pending writes are uploaded) and then the lease is given back. Returns at once when nothing changed.
    func unlock(_ ino: UInt64, change: (inout LocalLockTable) -> Bool, beforeRelease: () -> Void) {
        let (changed, needsRelease) = state.withLock { s -> (Bool, Bool) in
            guard var entry = s.files[ino] else { return (false, false) }
            guard change(&entry.locks) else { return (false, false) }
            let release = entry.locks.isEmpty && entry.lease != nil
            if release { entry.users += 1 }
            s.files[ino] = entry.idle ? nil : entry
            return (true, release)
        }
        guard changed else { return }
        nudgeLocalWaiters(ino)    // a local waiter may fit now
        guard needsRelease else { return }
        let gate = state.withLock { $0.files[ino]!.gate }
        defer { leave(ino) }
        gate.mutex.withLock { _ in
            // Another local lock may have arrived meanwhile: then the lease stays.
            let stillFree = state.withLock { s in s.files[ino].map { $0.locks.isEmpty && $0.lease != nil } ?? false }
            guard stillFree else { return }
            beforeRelease()
            // Taken from the entry only now, and only if no lock came while the writes went up (such a lock
            // was granted under this lease, so the lease stays).
            let lease = state.withLock { s -> Lease? in
                guard let entry = s.files[ino], entry.locks.isEmpty, let lease = entry.lease else { return nil }
                s.files[ino]?.lease = nil
                return lease
            }
            guard let lease else { return }
            do {
                try manager?.release(lease)
            } catch {
                logger.error("could not release lock", metadata: ["resource": "\(lease.resource)", "error": "\(error)"])
            }
        }
        nudgeLocalWaiters(ino)
    }

    func conflict(_ ino: UInt64, with request: FileLock) -> FileLock? {
        state.withLock { $0.files[ino]?.locks.conflict(with: request) }
    }

    /// Paths' inodes with a lock held in this mount, and their leases (for `bucketfs status` and listings).
    var heldLeases: [Lease] {
        state.withLock { s in s.files.values.compactMap(\.lease) }
    }

    // MARK: Waiting

    /// Queues a blocking request that could not be granted yet. `retry` makes one attempt and answers the
    /// waiter when it returns non-nil; it is called on the waiter thread.
    func wait(_ ino: UInt64, _ request: FileLock, interrupted: @escaping @Sendable () -> Bool,
              reply: @escaping @Sendable (FSError?) -> Void) {
        let start = state.withLock { s -> Bool? in
            if s.stopped { return nil }
            s.nextWaiter += 1
            s.waiters.append(Waiter(id: s.nextWaiter, ino: ino, request: request, interrupted: interrupted,
                                    reply: reply, nextTry: .now + Self.firstRetry, delay: Self.firstRetry))
            defer { s.waiterThreadStarted = true }
            return !s.waiterThreadStarted
        }
        guard let start else { return reply(.interrupted) }
        if start { startWaiterThread() } else { wakeup.signal() }
    }

    /// The waiter thread's retry, set by the owner (`FileSystem`), which knows paths and caches.
    typealias Retry = @Sendable (UInt64, FileLock) throws(FSError) -> Outcome

    private let retryHook = Mutex<Retry?>(nil)

    func setRetry(_ retry: @escaping Retry) {
        retryHook.withLock { $0 = retry }
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
        let retry = retryHook.withLock { $0 }
        for waiter in waiters {
            if waiter.interrupted() {
                finish(waiter.id)?.reply(.interrupted)
                continue
            }
            guard waiter.nextTry <= now, let retry else { continue }
            do {
                switch try retry(waiter.ino, waiter.request) {
                case .granted:
                    finish(waiter.id)?.reply(nil)
                case .heldLocally:
                    // Woken by the unlock; the timed retry is only a safety net.
                    reschedule(waiter.id, after: Self.longestRetry, grow: false)
                case .heldElsewhere:
                    reschedule(waiter.id, after: waiter.delay, grow: true)
                }
            } catch {
                finish(waiter.id)?.reply(error)
            }
        }
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

    private func reschedule(_ id: UInt64, after delay: Duration, grow: Bool) {
        state.withLock { s in
            guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return }
            s.waiters[index].nextTry = .now + delay
            if grow { s.waiters[index].delay = min(s.waiters[index].delay * 2, Self.longestRetry) }
        }
    }

    /// Wakes local waiters of a file at once when its locks change (called from `unlock`): they are retried
    /// on the next pass.
    func nudgeLocalWaiters(_ ino: UInt64) {
        state.withLock { s in
            for index in s.waiters.indices where s.waiters[index].ino == ino { s.waiters[index].nextTry = .now }
        }
        wakeup.signal()
    }

    /// Unmount: waiters are answered EINTR, the thread stops, every lease goes back.
    func shutdown() {
        let waiters = state.withLock { s -> [Waiter] in
            s.stopped = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.reply(.interrupted) }
        wakeup.signal()
        manager?.shutdown()
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

extension FileLockCoordinator {
    /// Files with local locks or a lease, and queued blocking requests: what `.bucketfs/locks/` shows.
    var snapshot: (held: [(ino: UInt64, locks: [FileLock], lease: Lease?)], waiting: [(ino: UInt64, request: FileLock)]) {
        state.withLock { s in
            (s.files.compactMap { ino, entry in
                entry.locks.isEmpty && entry.lease == nil ? nil : (ino: ino, locks: entry.locks.locks, lease: entry.lease)
            }, s.waiters.map { (ino: $0.ino, request: $0.request) })
        }
    }
}
