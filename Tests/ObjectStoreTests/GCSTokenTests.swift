import Foundation
import TestSupport
import XCTest

@testable import ObjectStore

/// The OAuth2 flows against a loopback server that verifies the JWT (RS256 signature with the test key pair's public
/// key; iss, scope, aud, iat, exp) and then stands in for the storage endpoint, checking the bearer token.
final class GCSTokenTests: XCTestCase {
    private var server: TokenTestServer!

    override func setUpWithError() throws {
        do { server = try TokenTestServer() } catch {
            throw XCTSkip("the token test server needs python3 with cryptography: \(error)")
        }
    }

    override func tearDown() {
        server?.stop()
        super.tearDown()
    }

    private func makeStore(bucket: String = "b", credentialsFile: String? = nil) throws -> GCSObjectStore {
        try GCSObjectStore(
            configuration: GCSConfiguration(
                bucket: bucket, endpointURL: server.endpoint,
                credentialsFile: credentialsFile ?? server.credentialsFile(),
                maxRetries: 3, environment: [:]))
    }

    func testServiceAccountTokenIsSignedCachedAndSent() throws {
        let store = try makeStore()
        XCTAssertEqual(store.projectID, "test-project", "from the credentials file")
        for _ in 0..<3 { _ = try store.list(ListRequest(prefix: "")) }
        let stats = try server.stats()
        XCTAssertEqual(stats["rejected"] as? [String], [])
        XCTAssertEqual(stats["issued"] as? Int, 1, "one token, cached for the next requests")
        XCTAssertEqual(stats["auth"] as? [String], Array(repeating: "Bearer token-1", count: 3))
        XCTAssertEqual(stats["unauthorized"] as? Int, 0)
        let claims = try XCTUnwrap(stats["claims"] as? [String: Any])
        XCTAssertEqual(claims["scope"] as? String, GCSTokenProvider.scope)
        XCTAssertEqual(claims["iss"] as? String, server.email)
    }

    /// A token the server stops accepting is dropped and fetched again, once, within the same call.
    func testRejectedTokenIsRenewed() throws {
        let store = try makeStore()
        _ = try store.list(ListRequest(prefix: ""))
        try server.control("/revoke")
        _ = try store.list(ListRequest(prefix: ""))
        let stats = try server.stats()
        XCTAssertEqual(stats["issued"] as? Int, 2)
        XCTAssertEqual(stats["unauthorized"] as? Int, 1)
        XCTAssertEqual((stats["auth"] as? [String])?.last, "Bearer token-2")
    }

    /// A token close to its expiry is replaced before it is used (no request goes out with it).
    func testTokenNearExpiryIsRefreshedFirst() throws {
        try server.control("/lifetime/60")  // under the provider's 5-minute margin: never good enough to reuse
        let store = try makeStore()
        _ = try store.list(ListRequest(prefix: ""))
        _ = try store.list(ListRequest(prefix: ""))
        let stats = try server.stats()
        XCTAssertEqual(stats["issued"] as? Int, 2)
        XCTAssertEqual(stats["unauthorized"] as? Int, 0)
        XCTAssertEqual(stats["auth"] as? [String], ["Bearer token-1", "Bearer token-2"])
    }

    func testWrongKeyIsUnauthorizedInOneLine() throws {
        let store = try makeStore(credentialsFile: try server.credentialsFile(wrongKey: true))
        XCTAssertThrowsError(try store.validate()) {
            guard case ObjectStoreError.unauthorized(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("invalid_grant"), detail)
            XCTAssertFalse(detail.contains("\n"), detail)
        }
        XCTAssertEqual((try server.stats()["rejected"] as? [String])?.count, 1)
    }

    func testRetriesOnServerErrors() throws {
        let store = try makeStore(bucket: "flaky")
        _ = try store.list(ListRequest(prefix: ""))
        XCTAssertEqual(store.attemptCount, 3, "two 503s, then success")
    }

    func testMetadataServerToken() throws {
        let provider = try GCSTokenProvider(
            credentials: .metadataServer(host: "127.0.0.1:\(server.port)"),
            client: HTTPClient(options: HTTPClient.Options()))
        XCTAssertEqual(try provider.token(), "token-1")
        XCTAssertEqual(try provider.token(), "token-1")
        XCTAssertEqual(provider.fetchCount.load(ordering: .relaxed), 1)
        let (credentials, _) = try GCSCredentials.resolve(
            GCSConfiguration(bucket: "b"),
            environment: ["GCE_METADATA_HOST": "127.0.0.1:\(server.port)", "HOME": "/nonexistent"],
            emulator: false)
        XCTAssertEqual(credentials, .metadataServer(host: "127.0.0.1:\(server.port)"))

        let unreachable = try GCSTokenProvider(
            credentials: .metadataServer(host: "127.0.0.1:\(try Loopback.freePort())"),
            client: HTTPClient(options: HTTPClient.Options(connectTimeout: 1)))
        XCTAssertThrowsError(try unreachable.token()) {
            guard case ObjectStoreError.unauthorized(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("GOOGLE_APPLICATION_CREDENTIALS"), detail)
        }
    }

    /// The JWT's shape, checked locally too: three base64url parts, RS256 header with the key id.
    func testAssertionShape() throws {
        let pem = try String(contentsOfFile: server.directory + "/key.pem", encoding: .utf8)
        let account = GCSCredentials.ServiceAccount(
            clientEmail: "a@b", privateKeyPEM: pem, privateKeyID: "k",
            tokenURI: "https://example/token", projectID: nil)
        let jwt = try GCSTokenProvider.assertion(
            for: account, signer: RSASHA256Signer(pem: pem),
            now: Date(timeIntervalSince1970: 1_700_000_000))
        let parts = jwt.split(separator: ".").map(String.init)
        XCTAssertEqual(parts.count, 3)
        XCTAssertFalse(jwt.contains("=") || jwt.contains("+") || jwt.contains("/"))
        func decode(_ part: String) throws -> [String: Any] {
            var text = part.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            text += String(repeating: "=", count: (4 - text.count % 4) % 4)
            return try XCTUnwrap(
                try JSONSerialization.jsonObject(with: XCTUnwrap(Data(base64Encoded: text))) as? [String: Any])
        }
        XCTAssertEqual(try decode(parts[0])["alg"] as? String, "RS256")
        XCTAssertEqual(try decode(parts[0])["kid"] as? String, "k")
        let claims = try decode(parts[1])
        XCTAssertEqual(claims["iat"] as? Int, 1_700_000_000)
        XCTAssertEqual(claims["exp"] as? Int, 1_700_003_600)
        XCTAssertEqual(claims["aud"] as? String, "https://example/token")
        XCTAssertEqual(try RSASHA256Signer(pem: pem).sign(Data("x".utf8)).count, 256, "a 2048-bit RSA signature")
        XCTAssertThrowsError(try RSASHA256Signer(pem: "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"))
    }
}
