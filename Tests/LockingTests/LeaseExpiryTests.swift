import Foundation
import ObjectStore
import Synchronization
import TestSupport
import XCTest

@testable import Locking

/// A strategy whose renewals can be made to hang (a store answering nothing while the client retries for
/// minutes) and whose acquisitions then fail, as when the store is out of reach.
final class StallingStrategy: LockStrategy {
    let base: any LockStrategy
    var name: String { base.name }
    /// Resources whose renewals hang; all of them when it holds "*".
    let stalled = Mutex<Set<String>>([])
    private let gate = DispatchSemaphore(value: 0)
    let renewing = Atomic<Int>(0)

    init(_ base: any LockStrategy) { self.base = base }

    func stall(_ resources: Set<String> = ["*"]) { stalled.withLock { $0 = resources } }

    /// Lets every hung renewal go on (to the real backend).
    func resume() {
        stalled.withLock { $0 = [] }
        for _ in 0..<64 { gate.signal() }
    }

    private func isStalled(_ resource: String) -> Bool {
        stalled.withLock { $0.contains("*") || $0.contains(resource) }
    }

    func tryAcquire(_ resource: String, owner: LockOwner, lease: Double, mode: LeaseMode) throws(LockError) -> Lease? {
        if stalled.withLock({ $0.contains("*") }) { throw .unavailable("stalled") }
        return try base.tryAcquire(resource, owner: owner, lease: lease, mode: mode)
    }

    func convert(_ lease: Lease, to mode: LeaseMode) throws(LockError) -> Lease? { try base.convert(lease, to: mode) }

    func renew(_ lease: Lease) throws(LockError) -> Lease {
        if isStalled(lease.resource) {
            renewing.add(1, ordering: .relaxed)
            gate.wait()
        }
        return try base.renew(lease)
    }

    func release(_ lease: Lease) throws(LockError) { try base.release(lease) }
    func holders() throws(LockError) -> [LockRecord] { try base.holders() }
}

/// Issue 12: a lease whose renewal hangs must stop counting before it runs out, be reported lost when it does,
/// and hold up no other lease's renewal.
final class LeaseExpiryTests: XCTestCase {
    func owner(_ name: String) -> LockOwner {
        LockOwner(id: "\(name)-\(UUID().uuidString.prefix(8))", host: "h", pid: 1)
    }

    func testAStuckRenewalIsLostAtExpiryAndHoldsUpNoOtherLease() throws {
        let store = MemoryObjectStore()
        let stalling = StallingStrategy(ObjectLockStrategy(store: store))
        let lost = Mutex<[String]>([])
        let manager = LockManager(
            strategy: stalling, owner: owner("m"), leaseDuration: 1,
            onLost: { lease, _ in lost.withLock { $0.append(lease.resource) } })
        defer {
            stalling.resume()
            manager.shutdown()
        }
        let stuck = try XCTUnwrap(try manager.tryAcquire("stuck"))
        _ = try XCTUnwrap(try manager.tryAcquire("healthy"))
        stalling.stall(["stuck"])
        let other = ObjectLockStrategy(store: store)

        // Until `stuck` runs out, it is vouched for only up to its safety margin before expiry.
        XCTAssertNotNil(manager.validLease(for: "stuck"))
        XCTAssertNil(
            manager.validLease(for: "stuck", at: stuck.expires.addingTimeInterval(-0.05)),
            "no lease is vouched for within its safety margin of expiry")

        // Lost once its expiry passes, although the renewal call has not come back.
        let deadline = Date().addingTimeInterval(5)
        while lost.withLock({ $0.isEmpty }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        XCTAssertEqual(lost.withLock { $0 }, ["stuck"])
        XCTAssertGreaterThanOrEqual(Date(), stuck.expires, "not before the lease ran out")
        XCTAssertEqual(stalling.renewing.load(ordering: .relaxed), 1, "the renewal is still hanging")
        XCTAssertNil(manager.lease(for: "stuck"))
        XCTAssertEqual(manager.metrics.lost, 1)

        // The healthy lease kept being renewed meanwhile: another owner is still refused well past 1 s.
        Thread.sleep(until: stuck.expires.addingTimeInterval(1))
        XCTAssertNil(try other.tryAcquire("healthy", owner: owner("o"), lease: 5))
        XCTAssertGreaterThanOrEqual(manager.metrics.renewals, 3)
        XCTAssertNotNil(manager.validLease(for: "healthy"))

        // The hung renewal finally succeeds: the lease was given up already, so it is handed back.
        let taken = try XCTUnwrap(try other.tryAcquire("stuck", owner: owner("o"), lease: 5), "expired: free")
        stalling.resume()
        try other.release(taken)
        XCTAssertEqual(lost.withLock { $0 }, ["stuck"])
    }
}
