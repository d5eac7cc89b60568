import Foundation

/// A fixed set of threads of our own for blocking store calls made in the background (read-ahead, part
/// uploads). Blocking calls never go to Swift's cooperative pool (two threads here) nor to Dispatch's
/// width-limited global queues.
final class WorkerPool: @unchecked Sendable {
    // `queue` and `stopped` are guarded by `condition`.
    private let condition = NSCondition()
    private var queue: [@Sendable () -> Void] = []
    private var stopped = false

    init(threads: Int, name: String) {
        for i in 0..<threads {
            let thread = Thread { [self] in self.work() }
            thread.name = "\(name)-\(i)"
            thread.start()
        }
    }

    func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        queue.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Lets the threads finish: queued jobs still run, then each thread exits.
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    private func work() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopped { condition.wait() }
            if queue.isEmpty {
                condition.unlock()
                return
            }
            let job = queue.removeFirst()
            condition.unlock()
            job()
        }
    }
}
