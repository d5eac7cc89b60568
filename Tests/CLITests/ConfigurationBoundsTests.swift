import Foundation
import XCTest

@testable import BucketfsCLI

/// Every numeric option is bounded: a value outside its range is one line naming the key and the range,
/// never a trap (uid above 2^32, `inf` seconds) or a thread per unit (rename_parallelism=100000).
final class ConfigurationBoundsTests: XCTestCase {
    private func optionError(_ option: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            var configuration = Configuration()
            try configuration.apply(mountOptions: option)
            XCTFail("\(option) was accepted", file: file, line: line)
            return ""
        } catch {
            return error.description
        }
    }

    func testOutOfRangeOptionsNameTheKeyAndTheRange() {
        let cases: [(option: String, range: String)] = [
            ("metadata_ttl=inf", "from 0 to 86400"),
            ("metadata_ttl=nan", "from 0 to 86400"),
            ("negative_ttl=1e300", "from 0 to 86400"),
            ("uid=4294967296", "from 0 to 4294967294"),
            ("uid=99999999999999999999", "from 0 to 4294967294"),
            ("gid=4294967295", "from 0 to 4294967294"),
            ("rename_parallelism=100000", "from 1 to 256"),
            ("rename_parallelism=0", "from 1 to 256"),
            ("parts_in_flight=100000", "from 1 to 64"),
            ("read_ahead_mib=9223372036854775807", "from 0 to 65536"),
            ("staging_max_mib=9223372036854775807", "from 0 to 1073741824"),
            ("lock_lease_seconds=9223372036854775807", "from 1 to 86400"),
            ("part_size_mib=9223372036854775807", "from 0 to 5120"),
        ]
        for (option, range) in cases {
            let text = optionError(option)
            let key = String(option.prefix { $0 != "=" })
            XCTAssertTrue(text.contains(key), "\(option): \(text)")
            XCTAssertTrue(text.contains(range), "\(option): \(text)")
            XCTAssertFalse(text.contains("\n"), "\(option): \(text)")
        }
    }

    func testYAMLLockNumbersAreBounded() throws {
        let cases: [(yaml: String, key: String, range: String)] = [
            ("storage:\n  lock:\n    retry_attempts: 100000000\n", "storage.lock.retry_attempts", "from 0 to 1000"),
            ("storage:\n  lock:\n    retry_delay_seconds: inf\n", "storage.lock.retry_delay_seconds", "from 0 to 3600"),
            ("storage:\n  lock:\n    redis_port: 70000\n", "storage.lock.redis_port", "from 1 to 65535"),
            ("storage:\n  lock:\n    redis_db: -1\n", "storage.lock.redis_db", "from 0 to 1000000"),
        ]
        for (yaml, key, range) in cases {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("bounds-\(UUID()).yaml").path
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: path) }
            do {
                var configuration = Configuration()
                try configuration.apply(yamlFile: path)
                XCTFail("\(yaml.debugDescription) was accepted")
            } catch {
                XCTAssertTrue(error.description.contains(key), error.description)
                XCTAssertTrue(error.description.contains(range), error.description)
            }
        }
    }

    func testValuesAtTheBoundsAreAccepted() throws {
        var configuration = Configuration()
        try configuration.apply(
            mountOptions: "uid=4294967294,gid=0,metadata_ttl=86400,negative_ttl=0,"
                + "rename_parallelism=256,parts_in_flight=64,read_ahead_mib=0,staging_max_mib=1073741824")
        XCTAssertEqual(configuration.mount.uid, 4_294_967_294)
        XCTAssertEqual(configuration.mount.metadataTTL, 86_400)
        XCTAssertEqual(configuration.mount.renameParallelism, 256)
        XCTAssertEqual(configuration.mount.stagingMaxMiB, 1 << 30)
    }
}

final class ControlDirModeOptionTests: XCTestCase {
    func testControlDirModeTakesReadBitsOnly() throws {
        var configuration = Configuration()
        XCTAssertEqual(configuration.mount.controlDirMode, 0o400)
        try configuration.apply(mountOptions: "control_dir_mode=0444")
        XCTAssertEqual(configuration.mount.controlDirMode, 0o444)
        XCTAssertThrowsError(try configuration.apply(mountOptions: "control_dir_mode=0666")) {
            XCTAssertTrue("\($0)".contains("control_dir_mode"), "\($0)")
        }
    }
}
