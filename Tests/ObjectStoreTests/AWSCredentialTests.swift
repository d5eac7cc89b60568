import Foundation
import TestSupport
import XCTest

@testable import ObjectStore

/// The AWS credential chain: its order (no network), and each source that asks a service against a loopback
/// stand-in — moto's STS (AssumeRoleWithWebIdentity, AssumeRole), and `Tests/integration/credential_standins.py`
/// for IMDSv2 and the container endpoint — with expiry and refresh; then an S3 store signing with them on moto.
final class AWSCredentialTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "aws-credentials-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory + "/.aws", withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
        super.tearDown()
    }

    private func write(_ text: String, _ name: String) throws -> String {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func source(_ environment: [String: String]) throws -> S3CredentialSource? {
        try S3CredentialSource.resolve(
            S3Configuration(bucket: "b"), environment: ["HOME": directory].merging(environment) { $1 })
    }

    // MARK: Order

    func testChainOrderIsTheSDKs() throws {
        try """
        [default]
        role_arn = arn:aws:iam::123456789012:role/from-profile
        source_profile = base
        [profile base]
        aws_access_key_id = BASEKEY
        aws_secret_access_key = basesecret
        [profile tool]
        credential_process = /usr/local/bin/get-keys --json
        """.write(toFile: directory + "/.aws/config", atomically: true, encoding: .utf8)
        let keys = ["AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret"]
        let web = ["AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token", "AWS_ROLE_ARN": "arn:aws:iam::1:role/web"]
        let container = ["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc"]
        let all = keys.merging(web) { $1 }.merging(container) { $1 }

        guard case .fixed(let fixed, let origin)? = try source(all) else { return XCTFail("environment keys first") }
        XCTAssertEqual(fixed.accessKeyID, "ENVKEY")
        XCTAssertEqual(origin, "environment (AWS_ACCESS_KEY_ID)")
        guard case .webIdentity(let role, let file, _, _)? = try source(web.merging(container) { $1 }) else {
            return XCTFail("web identity before the profile")
        }
        XCTAssertEqual(role, "arn:aws:iam::1:role/web")
        XCTAssertEqual(file, "/var/run/token")
        guard case .assumeRole(let assumed, _, _, let base, _)? = try source(container) else {
            return XCTFail("the profile before the container")
        }
        XCTAssertEqual(assumed, "arn:aws:iam::123456789012:role/from-profile")
        XCTAssertEqual(
            base,
            .fixed(
                S3Credentials(accessKeyID: "BASEKEY", secretAccessKey: "basesecret"),
                origin: "profile base"))
        XCTAssertEqual(
            try source(["AWS_PROFILE": "tool"]),
            .process(command: "/usr/local/bin/get-keys --json", origin: "profile tool"))
        XCTAssertEqual(
            try source(["AWS_PROFILE": "none"].merging(container) { $1 }),
            .container(url: "http://169.254.170.2/v2/credentials/abc", tokenFile: nil, token: nil))
        XCTAssertEqual(try source(["AWS_PROFILE": "none"]), .instanceMetadata(endpoint: "http://169.254.169.254"))
        XCTAssertThrowsError(try source(["AWS_PROFILE": "none", "AWS_EC2_METADATA_DISABLED": "true"])) {
            XCTAssertEqual($0 as? ObjectStoreError, .unauthorized(S3Credentials.missingMessage))
        }
        // What config print shows names the source, never a secret.
        let described = try XCTUnwrap(try source(container)).description
        XCTAssertTrue(described.contains("from-profile") && described.contains("profile base"), described)
        XCTAssertFalse(described.contains("basesecret"))
    }

    func testSourceProfileLoopIsOneLine() throws {
        try
            ("[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n"
            + "[profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = a\n")
            .write(toFile: directory + "/.aws/config", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try source(["AWS_PROFILE": "a"])) {
            XCTAssertTrue("\($0)".contains("loops back"), "\($0)")
        }
    }

    // MARK: credential_process

    func testCredentialProcess() throws {
        let script = try write(
            """
            #!/bin/sh
            echo '{"Version": 1, "AccessKeyId": "PROCKEY", "SecretAccessKey": "procsecret", \
            "SessionToken": "proctoken", "Expiration": "2099-01-01T00:00:00Z"}'
            """, "creds.sh")
        chmod(script, 0o755)
        try "[profile tool]\ncredential_process = \(script)\n".write(
            toFile: directory + "/.aws/config", atomically: true,
            encoding: .utf8)
        let provider = S3CredentialProvider(
            source: try XCTUnwrap(try source(["AWS_PROFILE": "tool"])), region: "us-east-1",
            environment: [:])
        let keys = try provider.credentials()
        XCTAssertEqual(keys.accessKeyID, "PROCKEY")
        XCTAssertEqual(keys.sessionToken, "proctoken")
        XCTAssertEqual(keys.expiration, HTTPTimestamp.parseISO8601("2099-01-01T00:00:00Z"))
        _ = try provider.credentials()
        XCTAssertEqual(provider.fetchCount.load(ordering: .relaxed), 1, "valid until 2099: run once")

        let failing = try write("#!/bin/sh\nexit 3\n", "fail.sh")
        chmod(failing, 0o755)
        XCTAssertThrowsError(
            try S3CredentialProvider(
                source: .process(command: failing, origin: "profile x"),
                region: "us-east-1", environment: [:]
            ).credentials()
        ) {
            XCTAssertTrue("\($0)".contains("exited with status 3"), "\($0)")
        }
    }

    // MARK: IMDSv2 and the container endpoint

    func testInstanceMetadataV2CachesThenRefreshesBeforeExpiry() throws {
        let standIn = try CredentialStandIns()
        defer { standIn.stop() }
        let provider = S3CredentialProvider(
            source: .instanceMetadata(endpoint: standIn.endpoint), region: "us-east-1",
            environment: [:])
        let first = try provider.credentials()
        XCTAssertEqual(first.accessKeyID, "KEY-1")
        XCTAssertEqual(first.sessionToken, "session-1")
        XCTAssertEqual(try provider.credentials(), first, "an hour left: cached")
        var stats = try standIn.stats()
        XCTAssertEqual(stats["imds_tokens"] as? Int, 1)
        XCTAssertEqual(stats["imds_issued"] as? Int, 1)
        XCTAssertEqual(stats["imds_unauthorized"] as? Int, 0, "every metadata read carried the IMDSv2 token")

        // Keys that live 4 s are replaced half-way, before they lapse.
        try standIn.control("/_lifetime/4")
        provider.invalidate()
        let short = try provider.credentials()
        let expiration = try XCTUnwrap(short.expiration)
        var next = short
        let deadline = Date().addingTimeInterval(30)
        while next == short && Date() < deadline {
            usleep(50_000)
            next = try provider.credentials()
        }
        XCTAssertNotEqual(next.accessKeyID, short.accessKeyID, "refreshed")
        XCTAssertLessThan(Date(), expiration, "refreshed before the old keys expired")
        stats = try standIn.stats()
        XCTAssertEqual(stats["imds_issued"] as? Int, 3)
    }

    func testContainerCredentialsSendTheTokenFromItsFile() throws {
        let standIn = try CredentialStandIns()
        defer { standIn.stop() }
        let tokenFile = try write(standIn.containerToken + "\n", "token")
        let environment = [
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": standIn.endpoint + "/container-credentials",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": tokenFile, "AWS_PROFILE": "none",
        ]
        let found = try XCTUnwrap(try source(environment))
        XCTAssertEqual(
            found, .container(url: standIn.endpoint + "/container-credentials", tokenFile: tokenFile, token: nil))
        let keys = try S3CredentialProvider(source: found, region: "us-east-1", environment: environment).credentials()
        XCTAssertEqual(keys.accessKeyID, "KEY-1")
        XCTAssertNotNil(keys.expiration)

        _ = try write("wrong-token", "token")
        XCTAssertThrowsError(
            try S3CredentialProvider(source: found, region: "us-east-1", environment: environment)
                .credentials()
        ) { XCTAssertTrue("\($0)".contains("HTTP 403"), "\($0)") }
        XCTAssertEqual(try standIn.stats()["container_rejected"] as? Int, 1)
        // Plain http to another machine would send the token in the clear: refused.
        XCTAssertThrowsError(
            try AWSMetadataCredentials(client: HTTPClient(options: .init()))
                .container(url: "http://10.1.2.3/creds", tokenFile: nil, token: "t"))
    }

    /// A store on moto signing with instance-metadata keys; `credentialSource` names IMDSv2.
    func testStoreSignsWithInstanceMetadataKeys() throws {
        let standIn = try CredentialStandIns()
        defer { standIn.stop() }
        let moto = try MotoServer()
        defer { moto.stop() }
        try moto.createBucket("imds")
        let store = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "imds", region: "us-east-1", endpointURL: moto.endpoint,
                environment: ["HOME": directory, "AWS_EC2_METADATA_SERVICE_ENDPOINT": standIn.endpoint]))
        XCTAssertTrue(store.credentialSource.contains("IMDSv2"), store.credentialSource)
        try store.validate()
        _ = try store.put("a", body: .data(Data("hello".utf8)), options: PutOptions())
        XCTAssertEqual(try store.get("a", range: nil).body, Data("hello".utf8))
        XCTAssertEqual(try standIn.stats()["imds_issued"] as? Int, 1)
    }

    // MARK: STS (moto)

    func testWebIdentityAndAssumeRoleThroughMotoSTS() throws {
        let moto = try MotoServer()
        defer { moto.stop() }
        try moto.createBucket("sts")
        let tokenFile = try write("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln", "web-token")
        let environment = [
            "HOME": directory, "AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile,
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/bucketfs", "AWS_ENDPOINT_URL_STS": moto.endpoint,
        ]
        let provider = S3CredentialProvider(
            source: try XCTUnwrap(try source(environment)), region: "us-east-1",
            environment: environment)
        let keys = try provider.credentials()
        XCTAssertTrue(keys.accessKeyID.hasPrefix("ASIA"), keys.accessKeyID)
        XCTAssertFalse(keys.sessionToken?.isEmpty ?? true)
        XCTAssertGreaterThan(try XCTUnwrap(keys.expiration), Date())
        let store = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "sts", region: "us-east-1",
                endpointURL: moto.endpoint, environment: environment))
        XCTAssertTrue(store.credentialSource.hasPrefix("web identity"), store.credentialSource)
        _ = try store.put("k", body: .data(Data("x".utf8)), options: PutOptions())

        // role_arn + source_profile: AssumeRole signed with the source profile's keys.
        try
            ("[profile base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = basesecret\n"
            + "[profile ops]\nrole_arn = arn:aws:iam::123456789012:role/ops\nsource_profile = base\n")
            .write(toFile: directory + "/.aws/config", atomically: true, encoding: .utf8)
        let profileEnvironment = ["HOME": directory, "AWS_PROFILE": "ops", "AWS_ENDPOINT_URL_STS": moto.endpoint]
        let assumed = try S3CredentialProvider(
            source: try XCTUnwrap(try source(profileEnvironment)), region: "us-east-1",
            environment: profileEnvironment
        ).credentials()
        XCTAssertTrue(assumed.accessKeyID.hasPrefix("ASIA"), assumed.accessKeyID)
        XCTAssertNotEqual(assumed.accessKeyID, keys.accessKeyID)

        // An unreadable token file is named.
        var broken = environment
        broken["AWS_WEB_IDENTITY_TOKEN_FILE"] = directory + "/missing"
        XCTAssertThrowsError(
            try S3CredentialProvider(
                source: try XCTUnwrap(try source(broken)), region: "us-east-1",
                environment: broken
            ).credentials()
        ) {
            XCTAssertTrue("\($0)".contains("missing"), "\($0)")
        }
    }
}

/// `Tests/integration/credential_standins.py` on a free loopback port.
final class CredentialStandIns: ServerProcess, @unchecked Sendable {
    let containerToken: String
    let subjectFile: String

    init(subject: String = "subject-token-1") throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("integration/credential_standins.py").path
        let subjectFile = NSTemporaryDirectory() + "subject-\(UUID().uuidString)"
        self.subjectFile = subjectFile
        try subject.write(toFile: subjectFile, atomically: true, encoding: .utf8)
        let python = try Loopback.require("python3", install: "apt-get install python3")
        let token = "container-token-\(UUID().uuidString)"
        containerToken = token
        try super.init(
            name: "credential stand-ins", executable: python,
            arguments: { port in
                [script, String(port), token, subjectFile]
            }, timeout: 20)
    }

    override func stop() {
        super.stop()
        try? FileManager.default.removeItem(atPath: subjectFile)
    }

    func stats() throws -> [String: Any] { try control("/_stats") }

    @discardableResult
    func control(_ path: String) throws -> [String: Any] {
        let response = try HTTPClient(options: HTTPClient.Options()).perform(
            HTTPRequest(method: "GET", url: endpoint + path))
        return (try JSONSerialization.jsonObject(with: response.body) as? [String: Any]) ?? [:]
    }
}
