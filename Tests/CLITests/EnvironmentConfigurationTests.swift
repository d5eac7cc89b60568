import Foundation
import XCTest

@testable import BucketfsCLI

/// The `BUCKETFS_*` layer: every option, its place in the precedence, its errors, and `config print --sources`.
final class EnvironmentConfigurationTests: XCTestCase {
    /// A valid value that is not the default, for every option variable.
    static let samples: [String: String] = [
        "BUCKETFS_UID": "4242", "BUCKETFS_GID": "4243", "BUCKETFS_FILE_MODE": "0600", "BUCKETFS_DIR_MODE": "0700",
        "BUCKETFS_READ_ONLY": "true", "BUCKETFS_ALLOW_OTHER": "yes", "BUCKETFS_METADATA_TTL": "7",
        "BUCKETFS_NEGATIVE_TTL": "8", "BUCKETFS_CACHE_DIR": "/tmp/bfs-cache", "BUCKETFS_PART_SIZE_MIB": "16",
        "BUCKETFS_PARTS_IN_FLIGHT": "9", "BUCKETFS_READ_AHEAD_MIB": "64", "BUCKETFS_RENAME_PARALLELISM": "3",
        "BUCKETFS_STAGING_MAX_MIB": "100", "BUCKETFS_LOG_LEVEL": "debug", "BUCKETFS_METRICS_ADDR": "127.0.0.1:9",
        "BUCKETFS_CONTROL_DIR": ".ctl", "BUCKETFS_RECORDS_URL": "redis://h/1", "BUCKETFS_RECORDS_PREFIX": "r/",
        "BUCKETFS_LOCK_STRATEGY": "redis", "BUCKETFS_LOCK_LEASE_SECONDS": "30", "BUCKETFS_REDIS_URL": "redis://h:1/0",
        "BUCKETFS_FILE_LOCK_DIR": "/tmp/locks", "BUCKETFS_TYPE": "s3", "BUCKETFS_BUCKET": "b", "BUCKETFS_PREFIX": "p/",
        "BUCKETFS_BASE_DIR": "/d", "BUCKETFS_REGION_NAME": "eu-west-1", "BUCKETFS_ENDPOINT_URL": "http://e:1",
        "BUCKETFS_AWS_ACCESS_KEY_ID": "AK", "BUCKETFS_AWS_SECRET_ACCESS_KEY": "SK", "BUCKETFS_AWS_SESSION_TOKEN": "ST",
        "BUCKETFS_PROFILE": "prof", "BUCKETFS_PATH_STYLE": "true", "BUCKETFS_NO_SIGN_REQUEST": "1",
        "BUCKETFS_PROJECT_ID": "proj", "BUCKETFS_CREDENTIALS_FILE": "/c.json", "BUCKETFS_LOCK_RETRY_ATTEMPTS": "5",
        "BUCKETFS_LOCK_RETRY_DELAY_SECONDS": "2.5", "BUCKETFS_REDIS_HOST": "h", "BUCKETFS_REDIS_PORT": "7000",
        "BUCKETFS_REDIS_PASSWORD": "pw", "BUCKETFS_REDIS_DB": "3", "BUCKETFS_CONTROL_DIR_MODE": "0444",
        "BUCKETFS_LOCK_MODE": "best_effort", "BUCKETFS_BLOCK_CACHE_MIB": "0",
    ]

    private func lines(_ configuration: Configuration) -> [String] {
        configuration.redactedYAML(source: nil).split(separator: "\n").map(String.init)
    }

    /// Each variable changes exactly one printed key, and together they reach every key `config print` shows:
    /// an option added to the YAML without a variable fails here.
    func testEveryOptionHasAVariable() throws {
        XCTAssertEqual(Set(Self.samples.keys), Set(Configuration.environmentKeys.keys))
        let defaults = lines(Configuration())
        var reached = Set<Int>()
        for (name, value) in Self.samples {
            var configuration = Configuration()
            try configuration.apply(environment: [name: value])
            let changed = zip(defaults, lines(configuration)).enumerated().filter { $0.element.0 != $0.element.1 }
            XCTAssertEqual(changed.count, 1, "\(name) changed \(changed.map(\.element.1))")
            reached.formUnion(changed.map(\.offset))
        }
        let keyLines = Set(defaults.indices.filter { !defaults[$0].hasSuffix(":") })
        let missed = keyLines.subtracting(reached).map { defaults[$0] }
        XCTAssertEqual(missed, [], "keys without a BUCKETFS_ variable")
    }

    func testEnvironmentIsAppliedWithTheYAMLKeysRules() throws {
        var configuration = Configuration()
        try configuration.apply(environment: [
            "BUCKETFS_LOCK_STRATEGY": "redis", "BUCKETFS_REDIS_URL": "redis://127.0.0.1:6390/2",
            "BUCKETFS_FILE_MODE": "0640", "BUCKETFS_READ_ONLY": "on", "BUCKETFS_REGION_NAME": "eu-central-1",
            "BUCKETFS_LOCK_RETRY_ATTEMPTS": "7", "BUCKETFS_METADATA_TTL": "",  // empty: unset
            "BUCKETFS_BIN": "/usr/bin/bucketfs", "PATH": "/bin",
        ])
        XCTAssertEqual(configuration.storage.lock.strategy, "redis")
        XCTAssertEqual(configuration.storage.lock.redisURL, "redis://127.0.0.1:6390/2")
        XCTAssertEqual(configuration.mount.fileMode, 0o640)
        XCTAssertTrue(configuration.mount.readOnly)
        XCTAssertEqual(configuration.storage.regionName, "eu-central-1")
        XCTAssertEqual(configuration.storage.lock.retryAttempts, 7)
        XCTAssertEqual(configuration.mount.metadataTTL, Configuration().mount.metadataTTL)
    }

    func testBadValueIsOneLineNamingTheVariable() {
        for (name, value) in [
            ("BUCKETFS_UID", "alice"), ("BUCKETFS_LOCK_STRATEGY", "paxos"),
            ("BUCKETFS_PART_SIZE_MIB", "3"), ("BUCKETFS_PATH_STYLE", "maybe"),
        ] {
            var configuration = Configuration()
            do {
                try configuration.apply(environment: [name: value])
                XCTFail("\(name)=\(value) was accepted")
            } catch {
                XCTAssertTrue(error.description.contains(name), error.description)
                XCTAssertFalse(error.description.contains("\n"))
            }
        }
    }

    func testPrecedenceDefaultsYAMLEnvironmentFlagsOptions() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("env-\(UUID().uuidString).yaml").path
        try "mount:\n  uid: 10\n  gid: 11\n  metadata_ttl: 3\n  negative_ttl: 4\n".write(
            toFile: file, atomically: true,
            encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let options = try ConfigurationOptions.parse([
            "--config", file, "--uid", "20", "--metadata-ttl", "5",
            "-o", "uid=30",
        ])
        let environment = ["BUCKETFS_UID": "40", "BUCKETFS_GID": "41", "BUCKETFS_METADATA_TTL": "6"]
        let configuration = try options.resolve(environment: environment)
        XCTAssertEqual(configuration.mount.uid, 30)  // -o beats the flag and the environment
        XCTAssertEqual(configuration.mount.metadataTTL, 5)  // the flag beats the environment
        XCTAssertEqual(configuration.mount.gid, 41)  // the environment beats YAML
        XCTAssertEqual(configuration.mount.negativeTTL, 4)  // YAML beats the default

        let annotated = ConfigCommand.Print.annotated(try options.layers(environment: environment), source: nil)
        XCTAssertTrue(annotated.contains("  uid: 30  # -o\n"), annotated)
        XCTAssertTrue(annotated.contains("  gid: 41  # BUCKETFS_GID\n"), annotated)
        XCTAssertTrue(annotated.contains("  metadata_ttl: 5.0  # flag\n"), annotated)
        XCTAssertTrue(annotated.contains("  negative_ttl: 4.0  # \(file)\n"), annotated)
        XCTAssertTrue(annotated.contains("  dir_mode: \"0755\"\n"), annotated)
    }

    func testConfigFileFromTheEnvironmentYieldsToTheFlag() throws {
        let directory = FileManager.default.temporaryDirectory.path
        let fromEnvironment = directory + "/env-a-\(UUID().uuidString).yaml"
        let fromFlag = directory + "/env-b-\(UUID().uuidString).yaml"
        try "mount:\n  uid: 1\n".write(toFile: fromEnvironment, atomically: true, encoding: .utf8)
        try "mount:\n  uid: 2\n".write(toFile: fromFlag, atomically: true, encoding: .utf8)
        defer { for f in [fromEnvironment, fromFlag] { try? FileManager.default.removeItem(atPath: f) } }
        let environment = ["BUCKETFS_CONFIG": fromEnvironment]
        XCTAssertEqual(try ConfigurationOptions.parse([]).resolve(environment: environment).mount.uid, 1)
        XCTAssertEqual(
            try ConfigurationOptions.parse(["--config", fromFlag]).resolve(environment: environment).mount.uid, 2)
    }

    func testUnknownVariablesAreReportedNotApplied() throws {
        let environment = ["BUCKETFS_LOCK_STRATGY": "redis", "BUCKETFS_SOURCE": "s3://b/", "BUCKETFS_OPTIONS": "ro"]
        XCTAssertEqual(Configuration.unknownVariables(in: environment), ["BUCKETFS_LOCK_STRATGY"])
        XCTAssertEqual(try ConfigurationOptions.parse([]).resolve(environment: environment), Configuration())
    }
}
