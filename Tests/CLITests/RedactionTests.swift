import Foundation
import Locking
import ObjectStore
import RedisClient
import XCTest

@testable import BucketfsCLI

/// No secret in an error message or in printed configuration.
final class RedactionTests: XCTestCase {
    func testRedisURLParseErrorsDoNotQuoteTheURL() {
        for url in ["redis://:hunter2@[bad", "http://:hunter2@host", "redis://:hunter2@host/x", "redis://:hunter2@"] {
            do {
                _ = try RedisEndpoint(url: url)
                XCTFail("\(url) was accepted")
            } catch {
                XCTAssertFalse("\(error)".contains("hunter2"), "\(url): \(error)")
            }
        }
    }

    func testAnUnparsableURLIsNotRedactedToItself() {
        let redacted = Configuration.redactedURL("redis://:hun ter2@host")
        XCTAssertFalse(redacted.contains("hun"), redacted)
        XCTAssertTrue(Configuration.redactedURL("redis://:pw@host:6379/2").hasSuffix("@host:6379/2"))
        XCTAssertFalse(Configuration.redactedURL("redis://:pw@host:6379/2").contains("pw"))
        XCTAssertEqual(Configuration.redactedURL("http://127.0.0.1:9000"), "http://127.0.0.1:9000")
    }

    func testEndpointWithCredentialsIsRedactedInConfigPrint() throws {
        var configuration = Configuration()
        configuration.storage.endpointURL = "https://AKID:s3cr3t@minio.example:9000"
        try configuration.apply(
            mountOptions: "redis_url=redis://alice:pa55@127.0.0.1:6379/1,records_url=redis://:r3c@h")
        let yaml = configuration.redactedYAML(source: "s3://bucket/prefix/")
        for secret in ["s3cr3t", "pa55", "r3c"] { XCTAssertFalse(yaml.contains(secret), yaml) }
        XCTAssertTrue(yaml.contains("minio.example:9000"), yaml)
        XCTAssertTrue(yaml.contains("alice"), yaml)
        let json = String(
            decoding: MountAssembly.configJSON(configuration, source: "s3://bucket/prefix/"), as: UTF8.self)
        for secret in ["s3cr3t", "pa55", "r3c"] { XCTAssertFalse(json.contains(secret), json) }
        XCTAssertTrue(json.contains("minio.example"), json)
    }

    func testErrorsAndLogLinesNeverCarryAURLPassword() {
        let error = CLIError("records_url redis://:t0ps3cret@host:1/0: connection refused")
        XCTAssertFalse(error.description.contains("t0ps3cret"), error.description)
        XCTAssertTrue(error.description.contains("connection refused"), error.description)
        let line = DaemonLogHandler.format(
            level: .error, label: "bucketfs", message: "cannot reach redis://u:t0p@h/",
            metadata: ["url": "rediss://:m3ta@h:1"], journal: false, date: Date())
        XCTAssertFalse(line.contains("t0p"), line)
        XCTAssertFalse(line.contains("m3ta"), line)
    }

    func testPasswordRangesFindPasswordsAnywhereInAText() {
        let cases: [(String, [String])] = [
            ("redis_url=redis://:pw1@h,ro", ["pw1"]),
            ("--redis-url=redis://user:p/w@2@host:6379/0", ["p/w@2"]),
            ("a http://x:y@h b rediss://:z@h", ["y", "z"]),
            ("s3://bucket/prefix/ http://127.0.0.1:9000/", []),
            ("redis://user@host", []),
        ]
        for (text, secrets) in cases {
            let bytes = Array(text.utf8)
            let found = URLRedaction.passwordRanges(in: bytes).map { String(decoding: bytes[$0], as: UTF8.self) }
            XCTAssertEqual(found, secrets, text)
        }
    }
}
