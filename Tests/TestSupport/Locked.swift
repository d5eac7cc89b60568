import Synchronization

/// A value shared between threads in tests (a `Mutex` cannot be captured by an escaping closure).
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    public init(_ value: Value) { mutex = Mutex(value) }
    public func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
    public var value: Value { mutex.withLock { $0 } }
    public func update(_ body: (inout Value) -> Void) { mutex.withLock { body(&$0) } }
}
