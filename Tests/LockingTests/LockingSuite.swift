import Foundation
import Locking
import Synchronization
import TestSupport
import XCTest

/// The behaviour every strategy must show, run the same way on each. `makeStrategy` gives a new client of the
/// same backend each time (another "mount"); each check works on resources of its own.
struct LockingSuite {
    /// `false` for the file strategy: a flock is held until released or its holder dies, whatever the lease.
    var leasesExpire = true
    /// `false` for the file strategy: a flock probe sees that a file is shared, not by whom.
    var listsEverySharer = true
    /// The clock the strategies read, where they decide expiry themselves (object, file): the checks move it
    /// instead of sleeping. `nil` for Redis, whose server's clock decides: there time really passes.
    var clock: TestClock? = nil
    var makeStrategy: () throws -> any LockStrategy

    /// The time the strategies see.
    var now: Date { clock?.now ?? Date() }

    /// A lease to let run out: short where time really passes, long where the clock jumps (no race with a slow
    /// machine then).
    var shortLease: Double { clock == nil ? 0.3 : 30 }

    /// Lets the strategies' time reach `date`.
    func pass(until date: Date) {
        if let clock { clock.advance(to: date) } else { Thread.sleep(until: date) }
    }

    func owner(_ name: String) -> LockOwner {
        LockOwner(id: "\(name)-\(UUID().uuidString.prefix(8))", host: "host-\(name)", pid: 4000 + Int32(name.count))
    }

    /// With a slash and a space, so escaping and nested keys are exercised everywhere.
    func resource(_ check: String) -> String {
        "tests/\(check) \(UUID().uuidString.prefix(8).lowercased())"
    }

    // MARK: Checks

    /// A second owner is refused while the lock is held, and gets it after release; tokens grow every time.
    func exclusionAndTokens() throws {
        let a = try makeStrategy()
        let b = try makeStrategy()
        let ownerA = owner("a")
        let ownerB = owner("b")
        let resource = resource("exclusion")

        let first = try XCTUnwrap(try a.tryAcquire(resource, owner: ownerA, lease: 30))
        XCTAssertEqual(first.resource, resource)
        XCTAssertEqual(first.owner, ownerA)
        XCTAssertNil(try b.tryAcquire(resource, owner: ownerB, lease: 30), "held by A")
        XCTAssertNil(try a.tryAcquire(resource, owner: ownerA, lease: 30), "not re-entrant")
        XCTAssertNil(try a.tryAcquire(resource, owner: ownerB, lease: 30), "same client, other owner")
        XCTAssertNotNil(try b.tryAcquire(resource + "-other", owner: ownerB, lease: 30), "other resources are free")
        try a.release(first)

        let second = try XCTUnwrap(try b.tryAcquire(resource, owner: ownerB, lease: 30))
        XCTAssertGreaterThan(second.token, first.token)
        XCTAssertNil(try a.tryAcquire(resource, owner: ownerA, lease: 30), "held by B")
        try b.release(second)
        let third = try XCTUnwrap(try a.tryAcquire(resource, owner: ownerA, lease: 30))
        XCTAssertGreaterThan(third.token, second.token)
        try a.release(third)

        // Releasing twice is a lost lease, not a silent success.
        XCTAssertThrowsError(try a.release(third)) { XCTAssertEqual($0 as? LockError, .lost(resource)) }
    }

    /// A lease that is not renewed is taken over after it expires, never before; the old holder learns it lost.
    func expiryTakeover() throws {
        let a = try makeStrategy()
        let b = try makeStrategy()
        let ownerA = owner("a")
        let ownerB = owner("b")
        let resource = resource("expiry")

        let lease = try XCTUnwrap(try a.tryAcquire(resource, owner: ownerA, lease: shortLease))
        var refusals = 0
        while now < lease.expires.addingTimeInterval(-shortLease / 4) {
            XCTAssertNil(try b.tryAcquire(resource, owner: ownerB, lease: 30), "taken over before expiry")
            refusals += 1
            pass(until: now.addingTimeInterval(shortLease / 10))
        }
        XCTAssertGreaterThan(refusals, 0)
        pass(until: lease.expires.addingTimeInterval(shortLease / 3))

        guard leasesExpire else {
            XCTAssertNil(try b.tryAcquire(resource, owner: ownerB, lease: 30), "a flock outlives its lease")
            let renewed = try a.renew(lease)
            XCTAssertGreaterThan(renewed.expires, lease.expires)
            try a.release(renewed)
            return
        }
        let taken = try XCTUnwrap(try b.tryAcquire(resource, owner: ownerB, lease: 30), "expired: B takes over")
        XCTAssertGreaterThan(taken.token, lease.token, "tokens grow across a takeover")
        XCTAssertThrowsError(try a.renew(lease)) { XCTAssertEqual($0 as? LockError, .lost(resource)) }
        XCTAssertThrowsError(try a.release(lease)) { XCTAssertEqual($0 as? LockError, .lost(resource)) }
        XCTAssertNil(try a.tryAcquire(resource, owner: ownerA, lease: 30), "B still holds it")
        XCTAssertEqual(try b.holders().filter { $0.resource == resource }.map(\.owner), [ownerB.id])
        try b.release(taken)
    }

    /// Renewing moves the expiry; a renewed lease outlives its first expiry.
    func renewExtends() throws {
        let a = try makeStrategy()
        let b = try makeStrategy()
        let ownerA = owner("a")
        let ownerB = owner("b")
        let resource = resource("renew")

        let lease = try XCTUnwrap(try a.tryAcquire(resource, owner: ownerA, lease: 2 * shortLease))
        pass(until: now.addingTimeInterval(shortLease))
        var renewed = try a.renew(lease)
        XCTAssertGreaterThan(renewed.expires, lease.expires)
        XCTAssertEqual(renewed.token, lease.token)
        XCTAssertEqual(renewed.acquired, lease.acquired)
        pass(until: lease.expires.addingTimeInterval(shortLease / 3))
        XCTAssertNil(try b.tryAcquire(resource, owner: ownerB, lease: 30), "renewed past the first expiry")
        renewed = try a.renew(renewed)
        try a.release(renewed)
        XCTAssertThrowsError(try a.renew(renewed)) { XCTAssertEqual($0 as? LockError, .lost(resource)) }
        XCTAssertNotNil(try b.tryAcquire(resource, owner: ownerB, lease: 30))
    }

    /// `holders()` names the holder (owner, host, pid, token) and forgets it after release.
    func holdersListing() throws {
        let a = try makeStrategy()
        let b = try makeStrategy()
        let ownerA = owner("alpha")
        let resource = resource("holders")
        let lease = try XCTUnwrap(try a.tryAcquire(resource, owner: ownerA, lease: 30))

        let record = try XCTUnwrap(try b.holders().first { $0.resource == resource }, "seen from another client")
        XCTAssertEqual(record.owner, ownerA.id)
        XCTAssertEqual(record.host, "host-alpha")
        XCTAssertEqual(record.pid, ownerA.pid)
        XCTAssertEqual(record.token, lease.token)
        XCTAssertGreaterThan(record.expires, now)
        XCTAssertNotEqual(record.released, true)

        // The JSON shape: ISO-8601 dates and the documented field names.
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: record.encoded()) as? [String: Any])
        XCTAssertEqual(Set(json.keys), ["owner", "host", "pid", "acquired", "expires", "token", "resource"])
        let expires = try XCTUnwrap(json["expires"] as? String)
        XCTAssertNotNil(try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(expires), expires)
        XCTAssertEqual(try LockRecord.decode(record.encoded()), record)

        try a.release(lease)
        XCTAssertNil(try b.holders().first { $0.resource == resource }, "released")
    }

    /// 16 threads, each its own client and owner, race for a free lock, then for a released one: one winner each time.
    func racingAcquirers() throws {
        let resource = resource("race")
        let clients = try (0..<16).map { _ in try makeStrategy() }
        let owners = (0..<16).map { owner("racer\($0)") }

        func race() -> [Lease] {
            let winners = Locked<[Lease]>([])
            let errors = Locked<[String]>([])
            let start = DispatchSemaphore(value: 0)
            let done = DispatchGroup()
            for index in 0..<16 {
                done.enter()
                let client = clients[index]
                let owner = owners[index]
                Thread {
                    start.wait()
                    do {
                        if let lease = try client.tryAcquire(resource, owner: owner, lease: 30) {
                            winners.withLock { $0.append(lease) }
                        }
                    } catch {
                        errors.withLock { $0.append("\(error)") }
                    }
                    done.leave()
                }.start()
            }
            for _ in 0..<16 { start.signal() }
            done.wait()
            XCTAssertEqual(errors.withLock { $0 }, [])
            return winners.withLock { $0 }
        }

        let first = race()
        XCTAssertEqual(first.count, 1, "exactly one winner of a free lock")
        guard let winner = first.first else { return }
        try clients[owners.firstIndex(of: winner.owner)!].release(winner)

        let second = race()
        XCTAssertEqual(second.count, 1, "exactly one winner of a released lock")
        if let next = second.first {
            XCTAssertGreaterThan(next.token, winner.token)
            try? clients[owners.firstIndex(of: next.owner)!].release(next)
        }
    }

    /// The manager keeps a 1 s lease alive for 3 s by renewing it; another owner is refused all along.
    func managerRenews() throws {
        let resource = resource("manager")
        let manager = LockManager(strategy: try makeStrategy(), owner: owner("m"), leaseDuration: 1)
        let other = try makeStrategy()
        let ownerB = owner("b")
        defer { manager.shutdown() }

        let lease = try XCTUnwrap(try manager.tryAcquire(resource))
        XCTAssertNil(try manager.tryAcquire(resource), "not re-entrant")
        let end = Date().addingTimeInterval(3)
        while Date() < end {
            XCTAssertNil(try other.tryAcquire(resource, owner: ownerB, lease: 30), "held by the manager")
            Thread.sleep(forTimeInterval: 0.2)
        }
        let metrics = manager.metrics
        XCTAssertGreaterThanOrEqual(metrics.renewals, 5, "renewed every third of a second")
        XCTAssertEqual(metrics.lost, 0)
        XCTAssertEqual(metrics.currentlyHeld, 1)
        XCTAssertEqual(metrics.acquired, 1)
        XCTAssertEqual(metrics.attempts, 2)
        XCTAssertEqual(metrics.failures["held"], 1)
        XCTAssertEqual(metrics.acquisitionLatency.count, 1)
        XCTAssertTrue(manager.lostLeases.isEmpty)
        let current = try XCTUnwrap(manager.lease(for: resource))
        XCTAssertGreaterThan(current.expires, lease.expires)
        XCTAssertEqual(manager.held.map(\.resource), [resource])

        try manager.release(lease)  // the caller's copy is stale; the manager releases the current version
        XCTAssertEqual(manager.metrics.currentlyHeld, 0)
        XCTAssertEqual(manager.metrics.holdTime.count, 1)
        XCTAssertNotNil(try other.tryAcquire(resource, owner: ownerB, lease: 30))
    }

    /// `acquire` waits for a holder to let go, and gives up at its timeout.
    func managerWaits() throws {
        let resource = resource("wait")
        let holder = LockManager(strategy: try makeStrategy(), owner: owner("holder"), leaseDuration: 30)
        let waiter = LockManager(strategy: try makeStrategy(), owner: owner("waiter"), leaseDuration: 30)
        defer {
            holder.shutdown()
            waiter.shutdown()
        }

        let held = try XCTUnwrap(try holder.tryAcquire(resource))
        let started = Date()
        XCTAssertNil(try waiter.acquire(resource, timeout: 0.3))
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(started), 0.29)
        XCTAssertEqual(waiter.metrics.failures["timeout"], 1)
        XCTAssertNil(
            try waiter.acquire(resource, timeout: 10, interrupted: { Date().timeIntervalSince(started) > 0.6 }))
        XCTAssertEqual(waiter.metrics.failures["interrupted"], 1)

        DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) { try? holder.release(held) }
        let waitStart = Date()
        let granted = try XCTUnwrap(try waiter.acquire(resource, timeout: 10), "granted once released")
        XCTAssertLessThan(Date().timeIntervalSince(waitStart), 3)
        XCTAssertGreaterThan(granted.token, held.token)
        XCTAssertGreaterThan(waiter.metrics.acquisitionLatency.sum, 0.2)
    }

    /// `withLock` runs its body under the lock, and gives up with `LockAcquisitionError` when it is held elsewhere.
    func withLockHelper() throws {
        let resource = resource("withlock")
        let manager = LockManager(strategy: try makeStrategy(), owner: owner("w"), leaseDuration: 30)
        let other = try makeStrategy()
        let ownerB = owner("b")
        defer { manager.shutdown() }

        let value = try withLock(resource, manager: manager, retryAttempts: 3, retryDelay: 0.05) { () throws -> Int in
            XCTAssertNil(try other.tryAcquire(resource, owner: ownerB, lease: 30), "held while the body runs")
            XCTAssertEqual(manager.held.map(\.resource), [resource])
            return 42
        }
        XCTAssertEqual(value, 42)
        XCTAssertTrue(manager.held.isEmpty, "released after the body")

        struct BodyFailure: Error {}
        XCTAssertThrowsError(
            try withLock(resource, manager: manager, retryAttempts: 1, retryDelay: 0) { () throws -> Void in
                throw BodyFailure()
            }
        ) {
            XCTAssertTrue($0 is BodyFailure)
        }
        XCTAssertTrue(manager.held.isEmpty, "released after a throwing body")

        let taken = try XCTUnwrap(try other.tryAcquire(resource, owner: ownerB, lease: 30))
        var ran = false
        let started = Date()
        XCTAssertThrowsError(try withLock(resource, manager: manager, retryAttempts: 3, retryDelay: 0.1) { ran = true })
        {
            let error = $0 as? LockAcquisitionError
            XCTAssertEqual(error, LockAcquisitionError(resource: resource, attempts: 3, lastError: nil))
        }
        XCTAssertFalse(ran)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(started), 0.19, "two delays between three tries")
        try other.release(taken)
    }

    /// Shared leases of two owners coexist; an exclusive request waits for every sharer; conversions work both
    /// ways without letting go; every grant (and every upgrade) has a greater token; `holders(of:)` lists them.
    func sharedLeases() throws {
        let a = try makeStrategy()
        let b = try makeStrategy()
        let c = try makeStrategy()
        let ownerA = owner("a")
        let ownerB = owner("b")
        let ownerC = owner("c")
        let resource = resource("shared")

        let sharedA = try XCTUnwrap(try a.tryAcquire(resource, owner: ownerA, lease: 30, mode: .shared))
        XCTAssertEqual(sharedA.mode, .shared)
        let sharedB = try XCTUnwrap(
            try b.tryAcquire(resource, owner: ownerB, lease: 30, mode: .shared),
            "shared + shared coexist")
        XCTAssertGreaterThan(sharedB.token, sharedA.token)
        XCTAssertNil(try c.tryAcquire(resource, owner: ownerC, lease: 30, mode: .exclusive), "exclusive waits")
        let listed = try c.holders(of: resource)
        XCTAssertEqual(Set(listed.map(\.leaseMode)), [.shared])
        if listsEverySharer {
            XCTAssertEqual(Set(listed.map(\.owner)), [ownerA.id, ownerB.id])
            XCTAssertEqual(try c.holders().filter { $0.resource == resource }.count, 2)
        }

        // Renewing a sharer keeps the other in place.
        let renewedA = try a.renew(sharedA)
        XCTAssertNil(try a.convert(renewedA, to: .exclusive), "no upgrade while B shares")
        try b.release(sharedB)
        XCTAssertNil(try c.tryAcquire(resource, owner: ownerC, lease: 30, mode: .exclusive), "A still shares")

        // Upgrade as the last sharer: a new, greater token; nobody else gets in, not even to share.
        let exclusiveA = try XCTUnwrap(try a.convert(renewedA, to: .exclusive))
        XCTAssertEqual(exclusiveA.mode, .exclusive)
        XCTAssertGreaterThan(exclusiveA.token, sharedB.token)
        XCTAssertNil(try b.tryAcquire(resource, owner: ownerB, lease: 30, mode: .shared), "exclusive excludes sharers")
        XCTAssertEqual(try c.holders(of: resource).map(\.leaseMode), [.exclusive])
        let renewedExclusive = try a.renew(exclusiveA)

        // Downgrade: readers may join at once.
        let sharedAgain = try XCTUnwrap(try a.convert(renewedExclusive, to: .shared))
        XCTAssertEqual(sharedAgain.mode, .shared)
        let sharedB2 = try XCTUnwrap(try b.tryAcquire(resource, owner: ownerB, lease: 30, mode: .shared))
        XCTAssertGreaterThan(sharedB2.token, exclusiveA.token)
        try a.release(sharedAgain)
        XCTAssertThrowsError(try a.release(sharedAgain)) { XCTAssertEqual($0 as? LockError, .lost(resource)) }
        try b.release(sharedB2)

        let exclusiveC = try XCTUnwrap(
            try c.tryAcquire(resource, owner: ownerC, lease: 30, mode: .exclusive),
            "free once every sharer has gone")
        XCTAssertGreaterThan(exclusiveC.token, sharedB2.token)
        try c.release(exclusiveC)
        XCTAssertEqual(try c.holders(of: resource), [])
    }

    /// A sharer whose lease ran out no longer counts: an exclusive request gets in, and the sharer learns it lost.
    func expiredSharerIsDropped() throws {
        guard leasesExpire else { return }
        let a = try makeStrategy()
        let b = try makeStrategy()
        let ownerA = owner("a")
        let ownerB = owner("b")
        let resource = resource("shared-expiry")
        let sharedA = try XCTUnwrap(try a.tryAcquire(resource, owner: ownerA, lease: shortLease, mode: .shared))
        XCTAssertNil(try b.tryAcquire(resource, owner: ownerB, lease: 30, mode: .exclusive))
        pass(until: sharedA.expires.addingTimeInterval(shortLease / 3))
        let taken = try XCTUnwrap(try b.tryAcquire(resource, owner: ownerB, lease: 30, mode: .exclusive))
        XCTAssertGreaterThan(taken.token, sharedA.token)
        XCTAssertThrowsError(try a.renew(sharedA)) { XCTAssertEqual($0 as? LockError, .lost(resource)) }
        try b.release(taken)
    }

    /// The release feed reports a released resource soon after the release (within its interval).
    func releaseFeedHearsRelease() throws {
        let a = try makeStrategy()
        let b = try makeStrategy()
        let resource = resource("feed")
        let lease = try XCTUnwrap(try a.tryAcquire(resource, owner: owner("a"), lease: 30))
        let feed = b.makeReleaseFeed()
        // Nothing released yet: a short wait may come back empty (or spuriously with it: a hint, never a grant).
        _ = feed.waitForReleases(of: [resource], timeout: 0.2)
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { try? a.release(lease) }
        let deadline = Date().addingTimeInterval(5)
        var heard = false
        while Date() < deadline && !heard {
            heard =
                feed.waitForReleases(of: [resource], timeout: 1).contains(resource)
                && (try? b.holders(of: resource).isEmpty) == true
        }
        XCTAssertTrue(heard, "the feed reported the release")
    }

    /// Malformed requests are `.invalid`, not crashes or backend errors.
    func invalidRequests() throws {
        let a = try makeStrategy()
        XCTAssertThrowsError(try a.tryAcquire("", owner: owner("a"), lease: 1)) {
            guard case LockError.invalid = $0 else { return XCTFail("got \($0)") }
        }
        XCTAssertThrowsError(try a.tryAcquire(resource("lease"), owner: owner("a"), lease: 0)) {
            guard case LockError.invalid = $0 else { return XCTFail("got \($0)") }
        }
    }
}
