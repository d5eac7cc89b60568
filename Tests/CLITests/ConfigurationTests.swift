import Foundation
import XCTest

@testable import BucketfsCLI

final class ConfigurationTests: XCTestCase {
    private var files: [String] = []

    override func tearDown() {
        for file in files { try? FileManager.default.removeItem(atPath: file) }
        files = []
        super.tearDown()
    }

    /// Writes `yaml` to a temporary file and returns its path.
    private func configFile(_ yaml: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "bucketfs-config-\(UUID().uuidString).yaml"
        ).path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        files.append(path)
        return path
    }

    private func load(_ yaml: String) throws -> Configuration {
        var configuration = Configuration()
        try configuration.apply(yamlFile: try configFile(yaml))
        return configuration
    }

    /// The description of the `CLIError` that `body` throws (fails the test if it throws nothing).
    private func errorText(
        file: StaticString = #filePath, line: UInt = #line,
        _ body: () throws(CLIError) -> Void
    ) -> String {
        do {
            try body()
            XCTFail("expected a CLIError", file: file, line: line)
            return ""
        } catch {
            return error.description
        }
    }

    private func yamlError(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let path = try configFile(yaml)
        return errorText(file: file, line: line) { () throws(CLIError) in
            var configuration = Configuration()
            try configuration.apply(yamlFile: path)
        }
    }

    // MARK: YAML

    func testYAMLFileIsApplied() throws {
        let configuration = try load(
            """
            storage:
              type: s3
              bucket: team-data
              prefix: alice/
              region_name: eu-west-1
              endpoint_url: http://localhost:9000
              aws_access_key_id: AKIDEXAMPLE
              aws_secret_access_key: s3cr3t
              lock:
                strategy: redis
                lease_duration_seconds: 30
                retry_attempts: 5
                retry_delay_seconds: 0.5
                redis_host: redis.local
                redis_port: 6380
                redis_password: hunter2
                redis_db: 2
            mount:
              uid: 1001
              gid: 1002
              file_mode: "0600"
              dir_mode: "0700"
              read_only: true
              allow_other: true
              metadata_ttl: 2.5
              negative_ttl: 0
              cache_dir: /var/tmp/bfs
              log_level: debug
            """)
        XCTAssertEqual(configuration.storage.type, "s3")
        XCTAssertEqual(configuration.storage.bucket, "team-data")
        XCTAssertEqual(configuration.storage.prefix, "alice/")
        XCTAssertEqual(configuration.storage.regionName, "eu-west-1")
        XCTAssertEqual(configuration.storage.endpointURL, "http://localhost:9000")
        XCTAssertEqual(configuration.storage.accessKeyID, "AKIDEXAMPLE")
        XCTAssertEqual(configuration.storage.secretAccessKey, "s3cr3t")
        XCTAssertEqual(configuration.storage.lock.strategy, "redis")
        XCTAssertEqual(configuration.storage.lock.leaseDurationSeconds, 30)
        XCTAssertEqual(configuration.storage.lock.retryAttempts, 5)
        XCTAssertEqual(configuration.storage.lock.retryDelaySeconds, 0.5)
        XCTAssertEqual(configuration.storage.lock.redisHost, "redis.local")
        XCTAssertEqual(configuration.storage.lock.redisPort, 6380)
        XCTAssertEqual(configuration.storage.lock.redisPassword, "hunter2")
        XCTAssertEqual(configuration.storage.lock.redisDB, 2)
        XCTAssertEqual(configuration.mount.uid, 1001)
        XCTAssertEqual(configuration.mount.gid, 1002)
        XCTAssertEqual(configuration.mount.fileMode, 0o600)
        XCTAssertEqual(configuration.mount.dirMode, 0o700)
        XCTAssertTrue(configuration.mount.readOnly)
        XCTAssertTrue(configuration.mount.allowOther)
        XCTAssertEqual(configuration.mount.metadataTTL, 2.5)
        XCTAssertEqual(configuration.mount.negativeTTL, 0)
        XCTAssertEqual(configuration.mount.cacheDir, "/var/tmp/bfs")
        XCTAssertEqual(configuration.mount.logLevel, "debug")
        XCTAssertEqual(configuration.sourceFromStorage(), "s3://team-data/alice/")
    }

    func testKeysAbsentFromYAMLKeepDefaults() throws {
        let configuration = try load("storage:\n  type: file\n  base_dir: /srv/data\n")
        let defaults = Configuration()
        XCTAssertEqual(configuration.mount, defaults.mount)
        XCTAssertEqual(configuration.storage.lock, defaults.storage.lock)
        XCTAssertEqual(configuration.storage.baseDir, "/srv/data")
        XCTAssertEqual(configuration.sourceFromStorage(), "file:///srv/data")
    }

    func testEmptyYAMLFileChangesNothing() throws {
        XCTAssertEqual(try load(""), Configuration())
    }

    func testUnknownTopLevelKeyIsNamed() throws {
        let text = try yamlError("storage:\n  type: file\nstorgae:\n  bucket: x\n")
        XCTAssertTrue(text.contains("\"storgae\""), text)
        XCTAssertTrue(text.contains("unknown"), text)
    }

    func testUnknownStorageKeyIsNamedWithItsSection() throws {
        let text = try yamlError("storage:\n  buckett: x\n")
        XCTAssertTrue(text.contains("storage.buckett"), text)
    }

    func testUnknownLockKeyIsNamedWithItsFullPath() throws {
        let text = try yamlError("storage:\n  lock:\n    bogus: 1\n")
        XCTAssertTrue(text.contains("storage.lock.bogus"), text)
    }

    func testUnknownMountKeyIsNamedWithItsSection() throws {
        let text = try yamlError("mount:\n  read_onyl: true\n")
        XCTAssertTrue(text.contains("mount.read_onyl"), text)
    }

    func testErrorsNameTheConfigFile() throws {
        let path = try configFile("mount:\n  bogus: 1\n")
        let text = errorText { () throws(CLIError) in
            var configuration = Configuration()
            try configuration.apply(yamlFile: path)
        }
        XCTAssertTrue(text.contains(path), text)
    }

    func testBadValueTypesNameTheKey() throws {
        let cases: [(yaml: String, key: String)] = [
            ("storage:\n  bucket: [a, b]\n", "storage.bucket"),
            ("storage: 5\n", "storage"),
            ("storage:\n  lock: yes\n", "storage.lock"),
            ("storage:\n  lock:\n    lease_duration_seconds: soon\n", "storage.lock.lease_duration_seconds"),
            ("storage:\n  lock:\n    lease_duration_seconds: 0\n", "storage.lock.lease_duration_seconds"),
            ("storage:\n  lock:\n    redis_port: {a: 1}\n", "storage.lock.redis_port"),
            ("storage:\n  lock:\n    retry_delay_seconds: -1\n", "storage.lock.retry_delay_seconds"),
            ("storage:\n  lock:\n    strategy: zookeeper\n", "storage.lock.strategy"),
            ("mount:\n  uid: alice\n", "uid"),
            ("mount:\n  read_only: maybe\n", "read_only"),
            ("mount:\n  metadata_ttl: forever\n", "metadata_ttl"),
            ("mount:\n  file_mode: \"0999\"\n", "file_mode"),
            ("mount:\n  dir_mode: \"017777\"\n", "dir_mode"),
            ("mount:\n  log_level: chatty\n", "log_level"),
        ]
        for (yaml, key) in cases {
            let text = try yamlError(yaml)
            XCTAssertTrue(text.contains(key), "\(yaml.debugDescription): \(text)")
        }
    }

    func testQuotedFileModeIsOctal() throws {
        XCTAssertEqual(try load("mount:\n  file_mode: \"0600\"\n").mount.fileMode, 0o600)
        XCTAssertEqual(try load("mount:\n  file_mode: \"644\"\n").mount.fileMode, 0o644)
        XCTAssertEqual(try load("mount:\n  dir_mode: \"0750\"\n").mount.dirMode, 0o750)
    }

    /// Yams resolves scalars with YAML 1.1 rules, where a leading 0 makes an integer octal: `0600` arrives as
    /// the Int 384, whose decimal digits the mode parser then reads as octal again. Only the quoted form is
    /// documented; this pins what the unquoted form does today.
    func testUnquotedFileModeAsYamsReadsIt() throws {
        // A mode without a leading zero is read as octal digits, as documented for -o.
        XCTAssertEqual(try load("mount:\n  file_mode: 644\n").mount.fileMode, 0o644)
    }

    func testUnquotedLeadingZeroFileModeMustNotBeMisread() throws {
        // Either the intended mode or an error naming the key; never a different mode.
        for (yaml, mode) in [("0644", UInt32(0o644)), ("0755", 0o755), ("0600", 0o600)] {
            var configuration = Configuration()
            let path = try configFile("mount:\n  file_mode: \(yaml)\n")
            do {
                try configuration.apply(yamlFile: path)
                XCTAssertEqual(configuration.mount.fileMode, mode, "file_mode: \(yaml)")
            } catch {
                XCTAssertTrue(error.description.contains("file_mode"), error.description)
            }
        }
    }

    func testInvalidYAMLIsAnErrorNamingTheFile() throws {
        let path = try configFile("storage: [unclosed\n")
        let text = errorText { () throws(CLIError) in
            var configuration = Configuration()
            try configuration.apply(yamlFile: path)
        }
        XCTAssertTrue(text.contains(path), text)
        XCTAssertFalse(text.contains("\n"), "one line: \(text)")
    }

    func testMissingFileIsAnError() {
        let text = errorText { () throws(CLIError) in
            var configuration = Configuration()
            try configuration.apply(yamlFile: "/nonexistent/bucketfs.yaml")
        }
        XCTAssertTrue(text.contains("/nonexistent/bucketfs.yaml"), text)
    }

    func testTopLevelListIsAnError() throws {
        let text = try yamlError("- a\n- b\n")
        XCTAssertTrue(text.contains("mapping"), text)
    }

    // MARK: -o options

    func testMountOptionsApply() throws {
        var configuration = Configuration()
        try configuration.apply(mountOptions: "ro,uid=5,gid=6,allow_other,metadata_ttl=2.5,file_mode=0640,cache_dir=/c")
        XCTAssertTrue(configuration.mount.readOnly)
        XCTAssertEqual(configuration.mount.uid, 5)
        XCTAssertEqual(configuration.mount.gid, 6)
        XCTAssertTrue(configuration.mount.allowOther)
        XCTAssertEqual(configuration.mount.metadataTTL, 2.5)
        XCTAssertEqual(configuration.mount.fileMode, 0o640)
        XCTAssertEqual(configuration.mount.cacheDir, "/c")

        try configuration.apply(mountOptions: "rw,debug")
        XCTAssertFalse(configuration.mount.readOnly)
        XCTAssertEqual(configuration.mount.logLevel, "debug")
    }

    func testEmptyMountOptionItemsAreIgnored() throws {
        var configuration = Configuration()
        try configuration.apply(mountOptions: ",ro,,")
        XCTAssertTrue(configuration.mount.readOnly)
        var untouched = Configuration()
        try untouched.apply(mountOptions: "")
        XCTAssertEqual(untouched, Configuration())
    }

    func testUnknownMountOptionIsNamed() {
        let text = errorText { () throws(CLIError) in
            var configuration = Configuration()
            try configuration.apply(mountOptions: "ro,bogus=1")
        }
        XCTAssertTrue(text.contains("bogus"), text)
    }

    func testBadMountOptionValueIsNamed() {
        for option in ["uid=-1", "metadata_ttl=abc", "allow_other=perhaps", "dir_mode=9"] {
            let text = errorText { () throws(CLIError) in
                var configuration = Configuration()
                try configuration.apply(mountOptions: option)
            }
            let key = String(option.prefix { $0 != "=" })
            XCTAssertTrue(text.contains(key), "\(option): \(text)")
        }
    }

    func testMountOptionsOverrideYAML() throws {
        var configuration = try load("mount:\n  uid: 7\n  read_only: true\n  metadata_ttl: 10\n  log_level: warning\n")
        XCTAssertEqual(configuration.mount.uid, 7)
        try configuration.apply(mountOptions: "uid=9,rw,metadata_ttl=0.5")
        XCTAssertEqual(configuration.mount.uid, 9)
        XCTAssertFalse(configuration.mount.readOnly)
        XCTAssertEqual(configuration.mount.metadataTTL, 0.5)
        XCTAssertEqual(configuration.mount.logLevel, "warning", "a key -o does not name keeps its YAML value")
    }

    // MARK: Output

    func testLockSettingsFromMountOptionsAndYAML() throws {
        var configuration = try load(
            """
            storage:
              lock:
                strategy: redis
                redis_url: redis://user:hunter2@10.0.0.5:6380/2
                lease_duration_seconds: 30
            """)
        XCTAssertEqual(configuration.storage.lock.strategy, "redis")
        XCTAssertEqual(configuration.storage.lock.redisURL, "redis://user:hunter2@10.0.0.5:6380/2")
        XCTAssertEqual(configuration.storage.lock.leaseDurationSeconds, 30)
        try configuration.apply(
            mountOptions: "lock_strategy=file,file_lock_dir=/tmp/l,lock_lease_seconds=7,metrics_addr=127.0.0.1:9464")
        XCTAssertEqual(configuration.storage.lock.strategy, "file")
        XCTAssertEqual(configuration.storage.lock.fileLockDir, "/tmp/l")
        XCTAssertEqual(configuration.storage.lock.leaseDurationSeconds, 7)
        XCTAssertEqual(configuration.mount.metricsAddress, "127.0.0.1:9464")
        let printed = configuration.redactedYAML(source: nil)
        XCTAssertFalse(printed.contains("hunter2"), printed)
        XCTAssertTrue(printed.contains("10.0.0.5:6380"), printed)
    }

    func testBadLockStrategyIsNamed() {
        var configuration = Configuration()
        let text = errorText { () throws(CLIError) in try configuration.apply(mountOptions: "lock_strategy=zookeeper") }
        XCTAssertTrue(text.contains("lock_strategy") && text.contains("zookeeper") && text.contains("none"), text)
        let lease = errorText { () throws(CLIError) in try configuration.apply(mountOptions: "lock_lease_seconds=0") }
        XCTAssertTrue(lease.contains("lock_lease_seconds"), lease)
    }

    func testRedactedYAMLHidesSecrets() throws {
        let configuration = try load(
            """
            storage:
              type: s3
              bucket: b
              aws_access_key_id: AKIDVISIBLE
              aws_secret_access_key: wJalrXUtnFEMI-secret-value
              lock:
                strategy: redis
                redis_password: p4ssw0rd-redis-value
            """)
        let yaml = configuration.redactedYAML(source: "s3://b/")
        XCTAssertFalse(yaml.contains("wJalrXUtnFEMI-secret-value"), yaml)
        XCTAssertFalse(yaml.contains("p4ssw0rd-redis-value"), yaml)
        XCTAssertTrue(yaml.contains("aws_secret_access_key: \"<redacted>\""), yaml)
        XCTAssertTrue(yaml.contains("redis_password: \"<redacted>\""), yaml)
        XCTAssertTrue(yaml.contains("AKIDVISIBLE"), yaml)
        XCTAssertTrue(yaml.contains("source: \"s3://b/\""), yaml)
    }

    func testRedactedYAMLSaysNullWhenNoSecretIsSet() {
        let yaml = Configuration().redactedYAML(source: nil)
        XCTAssertTrue(yaml.contains("aws_secret_access_key: null"), yaml)
        XCTAssertFalse(yaml.contains("<redacted>"), yaml)
        XCTAssertFalse(yaml.contains("source:"), yaml)
    }

    func testRedactedYAMLReadsBackToTheSameConfiguration() throws {
        var original = try load("storage:\n  type: file\n  base_dir: /srv\nmount:\n  file_mode: \"0600\"\n  uid: 3\n")
        try original.apply(mountOptions: "allow_other,metadata_ttl=4")
        let printed = original.redactedYAML(source: nil)
        let reread = try load(printed)
        XCTAssertEqual(reread.mount, original.mount)
        XCTAssertEqual(reread.storage.baseDir, "/srv")
    }
}
