import Foundation
import ObjectStore
import Records
import RedisClient
import TestSupport
import XCTest

/// The whole records suite over `rediss://`: a TLS-only `redis-server` with a password, certificates made for
/// the class, the server verified against their CA.
final class RedisTLSRecordsTests: RecordsBackendTestCase {
    private static let redis = SharedServer { try TLSRedisServer(password: "tls-s3cret") }

    override class func tearDown() {
        redis.stop()
        super.tearDown()
    }

    override func setUpWithError() throws {
        let redis: TLSRedisServer
        do { redis = try Self.redis.get() } catch { throw XCTSkip("\(error)") }
        let url = redis.url(password: "tls-s3cret", db: 2)
        let endpoint = try RedisEndpoint(url: url)
        suite = RecordsSuite { RedisRecordBackend(endpoint: endpoint, namespace: "tls:\($0)") }
    }

    /// `rediss://` is accepted wherever `redis://` is; a server certificate from another CA is refused at once,
    /// in one line that says why and holds no password.
    func testBackendFromTLSURL() throws {
        let server = try Self.redis.get()
        let backend = try RecordStores.backend(url: server.url(password: "tls-s3cret"))
        XCTAssertTrue(backend is RedisRecordBackend)
        XCTAssertTrue(backend.description.hasPrefix("rediss://***@127.0.0.1:"), backend.description)
        try backend.ping()

        let wrongCA = try RecordStores.backend(url: server.url(ca: server.otherCAFile, password: "tls-s3cret"))
        XCTAssertThrowsError(try wrongCA.ping()) {
            let text = "\($0)"
            guard case RecordError.invalid = $0 else { return XCTFail("not a configuration error: \(text)") }
            XCTAssertTrue(text.contains("certificate was refused"), text)
            XCTAssertFalse(text.contains("\n"), text)
            XCTAssertFalse(text.contains("tls-s3cret"), text)
        }
    }
}
