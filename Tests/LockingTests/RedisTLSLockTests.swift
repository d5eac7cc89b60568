import Foundation
import RedisClient
import TestSupport
import XCTest

@testable import Locking

/// The redis strategy over `rediss://` against a TLS-only `redis-server` (certificates made by `openssl` for the
/// class): the shared suite, certificate and host-name verification, client certificates, URL forms.
final class RedisTLSLockTests: XCTestCase {
    private static let redis = SharedServer { try TLSRedisServer(password: password) }

    override class func tearDown() {
        redis.stop()
        super.tearDown()
    }
    private var suite: LockingSuite!
    private static let password = "tls-pa55"

    override func setUpWithError() throws {
        let redis: TLSRedisServer
        do { redis = try Self.redis.get() } catch { throw XCTSkip("\(error)") }
        let endpoint = try RedisEndpoint(url: redis.url(password: Self.password, db: 1))
        XCTAssertNotNil(endpoint.tls)
        suite = LockingSuite(makeStrategy: { RedisLockStrategy(endpoint: endpoint) })
    }

    func testExclusionAndTokens() throws { try suite.exclusionAndTokens() }
    func testSharedLeases() throws { try suite.sharedLeases() }
    func testRacingAcquirers() throws { try suite.racingAcquirers() }
    func testManagerWaits() throws { try suite.managerWaits() }
    func testReleaseFeedHearsRelease() throws { try suite.releaseFeedHearsRelease() }

    /// A server certificate that the given CA did not sign is refused before any command (so before AUTH: the
    /// password never reaches that server), with one line naming the reason.
    func testCertificateFromAnotherCAIsRefused() throws {
        let server = try Self.redis.get()
        let strategy = RedisLockStrategy(
            endpoint: try RedisEndpoint(
                url: server.url(
                    ca: server.otherCAFile,
                    password: Self.password)))
        XCTAssertThrowsError(try strategy.tryAcquire("x", owner: suite.owner("a"), lease: 5)) {
            guard case LockError.invalid(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("certificate was refused"), detail)
            XCTAssertTrue(detail.contains("(trusting CA file \(server.otherCAFile))"), detail)
            XCTAssertFalse(detail.contains("\n"), detail)
            XCTAssertFalse(detail.contains(Self.password), detail)
        }
    }

    /// The certificate names 127.0.0.1 only: connecting as `localhost` must fail the host check.
    func testCertificateForAnotherHostIsRefused() throws {
        let server = try Self.redis.get()
        let strategy = RedisLockStrategy(
            endpoint: try RedisEndpoint(
                url: server.url(
                    password: Self.password,
                    host: "localhost")))
        XCTAssertThrowsError(try strategy.holders()) {
            guard case LockError.invalid(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("certificate was refused"), detail)
        }
    }

    /// Without `?ca=` the system store is used, which does not know the test CA.
    func testSystemStoreDoesNotTrustTheTestCA() throws {
        let server = try Self.redis.get()
        let endpoint = RedisEndpoint(port: server.port, password: Self.password, tls: RedisEndpoint.TLS())
        XCTAssertThrowsError(try RedisLockStrategy(endpoint: endpoint).holders()) {
            guard case LockError.invalid(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("certificate was refused"), detail)
        }
    }

    func testUnreadableCAFileIsAConfigurationError() throws {
        let server = try Self.redis.get()
        let strategy = RedisLockStrategy(endpoint: try RedisEndpoint(url: server.url(ca: "/nonexistent/ca.pem")))
        XCTAssertThrowsError(try strategy.holders()) {
            guard case LockError.invalid(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("cannot read the Redis CA file /nonexistent/ca.pem"), detail)
        }
    }

    /// A server that asks for client certificates refuses a client without one and serves one with one.
    func testClientCertificate() throws {
        let server: TLSRedisServer
        do { server = try TLSRedisServer(clientCertificates: true) } catch { throw XCTSkip("\(error)") }
        defer { server.stop() }
        let anonymous = RedisLockStrategy(endpoint: try RedisEndpoint(url: server.url()))
        XCTAssertThrowsError(try anonymous.holders())
        let identified = RedisLockStrategy(endpoint: try RedisEndpoint(url: server.url(clientCertificate: true)))
        let lease = try XCTUnwrap(try identified.tryAcquire("mtls", owner: suite.owner("a"), lease: 5))
        XCTAssertEqual(try identified.holders().map(\.resource), ["mtls"])
        try identified.release(lease)
    }

    func testTLSEndpointURLs() throws {
        let endpoint = try RedisEndpoint(url: "rediss://alice:pw@cache.example:6380/2?ca=/etc/ca.pem")
        XCTAssertEqual(
            endpoint,
            RedisEndpoint(
                host: "cache.example", port: 6380, username: "alice", password: "pw",
                db: 2, tls: RedisEndpoint.TLS(caFile: "/etc/ca.pem")))
        XCTAssertEqual(try RedisEndpoint(url: "REDISS://h").tls, RedisEndpoint.TLS())
        XCTAssertEqual(endpoint.description, "rediss://***@cache.example:6380/2")
        XCTAssertEqual(
            try RedisEndpoint(url: "rediss://h?cert=/c.pem&key=/k.pem").tls,
            RedisEndpoint.TLS(certFile: "/c.pem", keyFile: "/k.pem"))
        let refused = [
            "redis://h?ca=/ca.pem": "needs rediss://",
            "rediss://h?verify=none": "unknown parameter 'verify'",
            "rediss://h?cert=/c.pem": "both 'cert' and 'key'", "rediss://h?ca=": "needs a file path",
        ]
        for (url, reason) in refused {
            XCTAssertThrowsError(try RedisEndpoint(url: url), url) {
                guard case RedisError.invalid(let detail) = $0 else { return XCTFail("got \($0)") }
                XCTAssertTrue(detail.contains(reason), "\(url): \(detail)")
            }
        }
    }
}
