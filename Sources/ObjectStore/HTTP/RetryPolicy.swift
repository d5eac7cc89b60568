import Foundation
import Glibc

/// When an HTTP store sends a request again, and how long it waits first; one policy for every HTTP store.
///
/// A request is sent again after a connection failure or an answer `isRetryable` accepts (each protocol names its
/// own: 5xx, throttling, timeouts), at most `maxRetries` times, with exponential backoff and full jitter: a random
/// wait of up to 100 ms, doubling with each attempt, capped at 5 s. Every body can be sent again (Data is kept, a
/// file is reopened), so conditional requests are retried too; the stores recognise a lost first answer.
struct RetryPolicy: Sendable {
    var maxRetries: Int
    var isRetryable: @Sendable (HTTPResponse) -> Bool
    var firstDelay = 0.1
    var maxDelay = 5.0

    init(maxRetries: Int, isRetryable: @escaping @Sendable (HTTPResponse) -> Bool) {
        self.maxRetries = max(0, maxRetries)
        self.isRetryable = isRetryable
    }

    /// This policy with another number of retries (a resumed stream, say, retries by itself: none here).
    func with(maxRetries: Int) -> RetryPolicy {
        var policy = self
        policy.maxRetries = max(0, maxRetries)
        return policy
    }

    /// The wait after failed attempt `attempt` (1-based).
    func backoff(attempt: Int) {
        let ceiling = min(maxDelay, firstDelay * pow(2.0, Double(attempt - 1)))
        usleep(UInt32(Double.random(in: 0...ceiling) * 1_000_000))
    }
}
