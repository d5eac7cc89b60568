import Foundation
import XCTest

@testable import ObjectStore

/// Workload identity federation (`external_account` files) against the loopback stand-ins: the subject token
/// from its file is exchanged at STS, the federated token buys the impersonated service account's token, and
/// that is what storage requests carry; cached while valid, fetched again near expiry, the subject re-read.
final class GCSExternalAccountTests: XCTestCase {
    private var standIn: CredentialStandIns!
    private var files: [String] = []

    override func setUpWithError() throws {
        standIn = try CredentialStandIns()
    }

    override func tearDown() {
        standIn?.stop()
        for file in files { try? FileManager.default.removeItem(atPath: file) }
        super.tearDown()
    }

    private func credentialsFile(impersonate: Bool) throws -> String {
        var document: [String: Any] = [
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k8s",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": standIn.endpoint + "/v1/token",
            "credential_source": ["file": standIn.subjectFile],
        ]
        if impersonate { document["service_account_impersonation_url"] = standIn.endpoint + "/impersonate" }
        let path = NSTemporaryDirectory() + "external-\(UUID().uuidString).json"
        try JSONSerialization.data(withJSONObject: document).write(to: URL(fileURLWithPath: path))
        files.append(path)
        return path
    }

    private func makeStore(_ file: String) throws -> GCSObjectStore {
        try GCSObjectStore(
            configuration: GCSConfiguration(
                bucket: "b", endpointURL: standIn.endpoint,
                credentialsFile: file, maxRetries: 1, environment: [:]))
    }

    func testImpersonatedTokenIsCachedAndSent() throws {
        let file = try credentialsFile(impersonate: true)
        let store = try makeStore(file)
        for _ in 0..<3 { _ = try store.list(ListRequest(prefix: "")) }
        let stats = try standIn.stats()
        XCTAssertEqual(stats["sts_issued"] as? Int, 1)
        XCTAssertEqual(stats["impersonated"] as? Int, 1)
        XCTAssertEqual(stats["storage_auth"] as? [String], Array(repeating: "Bearer impersonated-1", count: 3))
        let described = GCSObjectStore.credentialSourceDescription(
            GCSConfiguration(
                bucket: "b", credentialsFile: file,
                environment: [:]))
        XCTAssertTrue(
            described.contains("workload identity federation") && described.contains(standIn.subjectFile),
            described)
    }

    /// Tokens that live a minute (under the 5-minute margin) are fetched again before each use, and each fetch
    /// reads the subject token file again (Kubernetes rotates it).
    func testTokenNearExpiryIsRefreshedAndTheSubjectReRead() throws {
        try standIn.control("/_lifetime/60")
        let store = try makeStore(try credentialsFile(impersonate: false))
        _ = try store.list(ListRequest(prefix: ""))
        _ = try store.list(ListRequest(prefix: ""))
        var stats = try standIn.stats()
        XCTAssertEqual(stats["storage_auth"] as? [String], ["Bearer federated-1", "Bearer federated-2"])
        XCTAssertEqual(stats["storage_rejected"] as? Int, 0)

        try "rotated-subject".write(toFile: standIn.subjectFile, atomically: true, encoding: .utf8)
        _ = try store.list(ListRequest(prefix: ""))
        stats = try standIn.stats()
        XCTAssertEqual(stats["sts_issued"] as? Int, 3, "the rotated subject token was sent")
    }

    func testRejectedSubjectTokenIsOneLine() throws {
        let store = try makeStore(try credentialsFile(impersonate: true))
        try "".write(toFile: standIn.subjectFile, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try store.validate()) {
            XCTAssertTrue("\($0)".contains("subject token"), "\($0)")
            XCTAssertFalse("\($0)".contains("\n"))
        }
    }
}
