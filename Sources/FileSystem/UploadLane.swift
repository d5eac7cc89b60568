import Foundation

/// Where the parts of streamed uploads are sent from: threads of their own, and a bound on the parts in flight for
/// the whole mount.
///
/// Threads of their own, because parts waiting on a slow store must not hold the I/O pool that read-ahead and the
/// metadata fetches of `ls -l` run on: four files streaming four parts each took all 16 of its threads, and a `stat`
/// waited for an upload. The bound, because each part in flight holds a connection and up to a part of the staged
/// file in the page cache, however many files are written at once; `parts_in_flight` still bounds one file.
///
/// A part takes a slot before it is submitted (`acquire`, which waits, first come first served, so that no writer
/// starves behind the others) and its job gives the slot back once the store has answered (`release`). There are as
/// many threads as slots, so a submitted part never waits for a thread. The lane's lock is a leaf: nothing else is
/// taken while it is held, and nobody waits in `acquire` while holding a lock of their own (StreamingUpload lets go
/// of its condition first), so a part that finishes can always give its slot back.
final class UploadLane: @unchecked Sendable {
    let limit: Int
    private let workers: WorkerPool

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var inUse = 0
    /// Tickets are handed out in the order `acquire` is called; the one equal to `serving` goes next.
    private var nextTicket: UInt64 = 0
    private var serving: UInt64 = 0

    init(limit: Int) {
        self.limit = max(1, limit)
        self.workers = WorkerPool(threads: self.limit, name: "bucketfs-upload")
    }

    /// Waits until a slot is free and every earlier caller has had one, then takes it.
    func acquire() {
        condition.lock()
        let ticket = nextTicket
        nextTicket += 1
        while ticket != serving || inUse >= limit { condition.wait() }
        serving += 1
        inUse += 1
        condition.broadcast()  // the next ticket may take a slot too
        condition.unlock()
    }

    /// Callers waiting in `acquire` now.
    var waiting: Int {
        condition.lock()
        defer { condition.unlock() }
        return Int(nextTicket - serving)
    }

    func release() {
        condition.lock()
        inUse -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Runs `job` on the lane's threads. The caller holds a slot for it; the job releases it.
    func submit(_ job: @escaping @Sendable () -> Void) {
        workers.submit(job)
    }

    /// Lets the threads finish once the jobs already submitted have run.
    func stop() {
        workers.stop()
    }
}
