import Foundation
import Synchronization

/// A clock for code that takes one (`clock: () -> Date`), moved forward by the test so a lease or a TTL runs
/// out when the test says, without sleeping. `frozen`: it stands still between advances. Otherwise it is real
/// time plus an offset, so code that also waits on real timers (a lock manager's renewals) keeps working.
public final class TestClock: Sendable {
    private let state: Mutex<(start: Date?, offset: TimeInterval)>

    public init(frozen: Bool = false) {
        state = Mutex((frozen ? Date() : nil, 0))
    }

    public var now: Date {
        let (start, offset) = state.withLock { ($0.start, $0.offset) }
        return (start ?? Date()).addingTimeInterval(offset)
    }

    /// The clock to hand to the code under test.
    public var read: @Sendable () -> Date { { self.now } }

    public func advance(by seconds: TimeInterval) {
        precondition(seconds >= 0, "a clock does not go back")
        state.withLock { $0.offset += seconds }
    }

    /// Jumps to `date` (nothing if it is past already).
    public func advance(to date: Date) {
        advance(by: max(0, date.timeIntervalSince(now)))
    }
}
