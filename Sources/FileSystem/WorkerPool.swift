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

    /// `body(i)` for every `i` in `0..<count`, run on the pool at most `width` at a time; returns the results in
    /// order once all have run. Only for callers outside the pool (a job waiting on the pool could starve it).
    func map<T: Sendable>(_ count: Int, width: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
        let batch = Batch<T>(count: count)
        let runners = max(1, min(width, count))
        for _ in 0..<runners {
            submit {
                while let index = batch.take() { batch.store(body(index), at: index) }
                batch.finishRunner()
            }
        }
        return batch.wait(forRunners: runners)
    }

    /// Indices handed out to the runners of one `map`, their results, and how many runners are done.
    private final class Batch<T: Sendable>: @unchecked Sendable {
        // Guarded by `condition`.
        private let condition = NSCondition()
        private let count: Int
        private var next = 0
        private var finished = 0
        private var results: [T?]

        init(count: Int) {
            self.count = count
            self.results = Array(repeating: nil, count: count)
        }

        func take() -> Int? {
            condition.lock()
            defer { condition.unlock() }
            guard next < count else { return nil }
            next += 1
            return next - 1
        }

        func store(_ result: T, at index: Int) {
            condition.lock()
            results[index] = result
            condition.unlock()
        }

        func finishRunner() {
            condition.lock()
            finished += 1
            condition.broadcast()
            condition.unlock()
        }

        func wait(forRunners runners: Int) -> [T] {
            condition.lock()
            defer { condition.unlock() }
            while finished < runners { condition.wait() }
            return results.map { $0! }
        }
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
