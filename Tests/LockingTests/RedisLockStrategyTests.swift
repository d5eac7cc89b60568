import Foundation
import RedisClient
import TestSupport
import XCTest

@testable import Locking

/// The redis strategy against a `redis-server` started for the class.
final class RedisLockStrategyTests: LockingStrategyTestCase {
    private static let redis = SharedServer { try RedisServer() }

    override class func tearDown() {
        redis.stop()
        super.tearDown()
    }

    override func setUpWithError() throws {
        let port = try Self.redis.get().port
        suite = LockingSuite(makeStrategy: { RedisLockStrategy(endpoint: RedisEndpoint(port: port)) })
    }

    // MARK: Redis specifics

    /// A stopped Redis cannot renew: the manager reports the lease lost (log, metric, callback) before long.
    func testStoppingRedisLosesTheLease() throws {
        let server = try RedisServer()
        defer { server.stop() }
        let lost = Locked<[Lease]>([])
        let signal = DispatchSemaphore(value: 0)
        let manager = LockManager(
            strategy: RedisLockStrategy(endpoint: RedisEndpoint(port: server.port)),
            owner: suite.owner("m"), leaseDuration: 1,
            onLost: { lease, _ in
                lost.withLock { $0.append(lease) }
                signal.signal()
            })
        defer { manager.shutdown() }
        let lease = try XCTUnwrap(try manager.tryAcquire("victim"))
        let renewing = Date().addingTimeInterval(5)
        while manager.metrics.renewals < 1 && Date() < renewing { Thread.sleep(forTimeInterval: 0.02) }
        XCTAssertGreaterThanOrEqual(manager.metrics.renewals, 1)

        server.stop()
        let stopped = Date()
        XCTAssertEqual(signal.wait(timeout: .now() + 5), .success, "onLost called")
        XCTAssertLessThan(Date().timeIntervalSince(stopped), 3)
        XCTAssertEqual(lost.withLock { $0.map(\.token) }, [lease.token])
        XCTAssertEqual(manager.metrics.lost, 1)
        XCTAssertGreaterThanOrEqual(manager.metrics.renewalFailures, 1)
        XCTAssertEqual(manager.metrics.currentlyHeld, 0)
        XCTAssertTrue(manager.held.isEmpty)
        XCTAssertEqual(manager.lostLeases.map(\.lease.resource), ["victim"])
        XCTAssertThrowsError(try manager.release(lease)) { XCTAssertEqual($0 as? LockError, .lost("victim")) }
        XCTAssertThrowsError(try manager.tryAcquire("victim")) {
            guard case LockError.unavailable = $0 else { return XCTFail("got \($0)") }
        }
        XCTAssertEqual(manager.metrics.failures["unavailable"], 1)
    }

    /// A restarted server (same port) is reconnected to transparently.
    func testReconnectsAfterServerRestart() throws {
        let strategy = RedisLockStrategy(endpoint: RedisEndpoint(port: try Self.redis.get().port))
        let lease = try XCTUnwrap(try strategy.tryAcquire("reconnect", owner: suite.owner("a"), lease: 30))
        // Kill the connection from the server side.
        let admin = RedisConnection(endpoint: strategy.endpoint)
        XCTAssertEqual(
            try admin.command(["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]).text.flatMap(Int.init).map {
                $0 >= 1
            }, true)
        let renewed = try strategy.renew(lease)
        XCTAssertEqual(renewed.token, lease.token)
        try strategy.release(renewed)
    }

    func testUnreachableServerIsUnavailable() throws {
        let port = try Loopback.freePort()
        let strategy = RedisLockStrategy(endpoint: RedisEndpoint(port: port))
        XCTAssertThrowsError(try strategy.tryAcquire("x", owner: suite.owner("a"), lease: 1)) {
            guard case LockError.unavailable(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("127.0.0.1:\(port)"), detail)
        }
        XCTAssertThrowsError(try strategy.holders())
    }

    /// AUTH and SELECT after connecting; a wrong password is a configuration error.
    func testPasswordAndDatabase() throws {
        guard let executable = Loopback.find("redis-server") else { throw XCTSkip("redis-server is not installed") }
        let server = try ServerProcess(name: "redis-server", executable: executable) { port in
            [
                "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass",
                "s3cret",
            ]
        }
        defer { server.stop() }
        let good = RedisLockStrategy(endpoint: try RedisEndpoint(url: "redis://:s3cret@127.0.0.1:\(server.port)/3"))
        let lease = try XCTUnwrap(try good.tryAcquire("db3", owner: suite.owner("a"), lease: 30))
        XCTAssertEqual(try good.holders().map(\.resource), ["db3"])
        let otherDB = RedisLockStrategy(endpoint: RedisEndpoint(port: server.port, password: "s3cret", db: 0))
        XCTAssertEqual(try otherDB.holders(), [], "database 3 is not database 0")
        XCTAssertNotNil(try otherDB.tryAcquire("db3", owner: suite.owner("b"), lease: 30))
        try good.release(lease)

        let bad = RedisLockStrategy(endpoint: RedisEndpoint(port: server.port, password: "wrong"))
        XCTAssertThrowsError(try bad.tryAcquire("x", owner: suite.owner("a"), lease: 1)) {
            guard case LockError.invalid(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("AUTH"), detail)
            XCTAssertFalse(detail.contains("wrong"), "no password in messages: \(detail)")
        }
        let none = RedisLockStrategy(endpoint: RedisEndpoint(port: server.port))
        XCTAssertThrowsError(try none.tryAcquire("x", owner: suite.owner("a"), lease: 1)) {
            guard case LockError.unavailable(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("NOAUTH"), detail)
        }
    }

    func testEndpointURLs() throws {
        XCTAssertEqual(try RedisEndpoint(url: "redis://cache.internal"), RedisEndpoint(host: "cache.internal"))
        XCTAssertEqual(
            try RedisEndpoint(url: "redis://:p%40ss@10.0.0.5:6380/2"),
            RedisEndpoint(host: "10.0.0.5", port: 6380, password: "p@ss", db: 2))
        XCTAssertEqual(
            try RedisEndpoint(url: "redis://alice:pw@h:1/"),
            RedisEndpoint(host: "h", port: 1, username: "alice", password: "pw"))
        XCTAssertEqual(RedisEndpoint(host: "h", password: "pw", db: 1).description, "redis://***@h:6379/1")
        for bad in ["http://h", "redis://", "redis://h/x", "redis://h/-1"] {
            XCTAssertThrowsError(try RedisEndpoint(url: bad), bad) {
                guard case RedisError.invalid = $0 else { return XCTFail("got \($0)") }
            }
        }
    }

    func testReservedSuffixes() throws {
        let strategy = RedisLockStrategy(endpoint: RedisEndpoint(port: try Self.redis.get().port))
        for resource in ["x:fence", "x:info"] {
            XCTAssertThrowsError(try strategy.tryAcquire(resource, owner: suite.owner("a"), lease: 1)) {
                guard case LockError.invalid = $0 else { return XCTFail("got \($0)") }
            }
        }
    }
}
