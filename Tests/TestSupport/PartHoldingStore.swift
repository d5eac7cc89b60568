import Foundation
import ObjectStore

/// Forwards to another store, but every `uploadPart` waits at the store's door until `release(_:)` lets it in: the
/// test decides when parts finish. Counts the parts waiting or being sent at once (`peak`), and signals `arrived`
/// once for each part that reaches the door.
public final class PartHoldingStore: ForwardingObjectStore, @unchecked Sendable {
    public let base: any ObjectStore
    public let arrived = DispatchSemaphore(value: 0)
    // Guarded by `condition`.
    private let condition = NSCondition()
    private var admitted = 0
    private var open = false
    private var current = 0
    private var highest = 0
    private var count = 0

    public init(_ base: any ObjectStore) { self.base = base }

    public var description: String { "part-holding(\(base.description))" }

    /// Lets `count` held parts (or the next ones to arrive) go through.
    public func release(_ count: Int) {
        condition.lock()
        admitted += count
        condition.broadcast()
        condition.unlock()
    }

    /// Lets every part through, now and from now on.
    public func releaseAll() {
        condition.lock()
        open = true
        condition.broadcast()
        condition.unlock()
    }

    /// The most parts that were at the store at once.
    public var peak: Int {
        condition.lock()
        defer { condition.unlock() }
        return highest
    }

    /// The parts that have reached the store so far.
    public var arrivals: Int {
        condition.lock()
        defer { condition.unlock() }
        return count
    }

    /// Waits until `count` more parts have arrived, or `timeout` seconds: false if they did not.
    public func waitForArrivals(_ count: Int, timeout: Double = 30) -> Bool {
        for _ in 0..<count where arrived.wait(timeout: .now() + timeout) == .timedOut { return false }
        return true
    }

    public func uploadPart(
        _ key: String, uploadID: String, number: Int, body: PutBody, crc32c: UInt32?
    ) throws(ObjectStoreError) -> String {
        condition.lock()
        current += 1
        count += 1
        highest = max(highest, current)
        condition.unlock()
        arrived.signal()
        condition.lock()
        while !open && admitted == 0 { condition.wait() }
        if !open { admitted -= 1 }
        condition.unlock()
        defer {
            condition.lock()
            current -= 1
            condition.unlock()
        }
        return try base.uploadPart(key, uploadID: uploadID, number: number, body: body, crc32c: crc32c)
    }
}
