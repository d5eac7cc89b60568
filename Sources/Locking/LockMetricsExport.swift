import CoreMetrics

/// Sends what a `LockManager` counts to swift-metrics (whatever backend the program bootstrapped; the daemon
/// renders Prometheus text), labelled by strategy. It works from two snapshots of `LockMetrics`, before and
/// after a change, so the counting stays in one place.
struct LockMetricsExport: Sendable {
    let strategy: String

    private var dimensions: [(String, String)] { [("strategy", strategy)] }

    func emit(from before: LockMetrics, to after: LockMetrics) {
        add("bucketfs_lock_attempts_total", after.attempts, before.attempts)
        add("bucketfs_lock_acquired_total", after.acquired, before.acquired)
        add("bucketfs_lock_renewals_total", after.renewals, before.renewals)
        add("bucketfs_lock_renewal_failures_total", after.renewalFailures, before.renewalFailures)
        add("bucketfs_lock_lost_total", after.lost, before.lost)
        add("bucketfs_lock_released_total", after.released, before.released)
        for (reason, count) in after.failures where count > before.failures[reason, default: 0] {
            Counter(label: "bucketfs_lock_failures_total", dimensions: dimensions + [("reason", reason)])
                .increment(by: Int64(count - before.failures[reason, default: 0]))
        }
        if after.currentlyHeld != before.currentlyHeld {
            Gauge(label: "bucketfs_locks_held", dimensions: dimensions).record(after.currentlyHeld)
        }
        // Each change records at most one observation: its value is the growth of the sum.
        if after.acquisitionLatency.count > before.acquisitionLatency.count {
            record("bucketfs_lock_acquire_seconds", after.acquisitionLatency.sum - before.acquisitionLatency.sum)
        }
        if after.holdTime.count > before.holdTime.count {
            record("bucketfs_lock_hold_seconds", after.holdTime.sum - before.holdTime.sum)
        }
    }

    private func add(_ label: String, _ after: UInt64, _ before: UInt64) {
        guard after > before else { return }
        Counter(label: label, dimensions: dimensions).increment(by: Int64(after - before))
    }

    private func record(_ label: String, _ seconds: Double) {
        Timer(label: label, dimensions: dimensions).recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }
}
