import ArgumentParser
import XCTest

@testable import BucketfsCLI

/// Every numeric command-line flag is bounded: negative, zero where zero means nothing, `inf`, `nan`, too large
/// or not a number is refused while parsing, in one message naming the flag (and the range, when it parsed).
final class FlagBoundsTests: XCTestCase {
    private func refusal(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try BucketfsCommand.parseAsRoot(arguments)
            XCTFail("\(arguments) was accepted", file: file, line: line)
            return ""
        } catch {
            XCTAssertEqual(
                BucketfsCommand.exitCode(for: error), .validationFailure, "\(arguments)", file: file,
                line: line)
            return BucketfsCommand.message(for: error)
        }
    }

    func testOutOfRangeFlagsNameTheFlagAndTheRange() {
        let cases: [(arguments: [String], flag: String, range: String)] = [
            (["unmount", "/mnt/x", "--timeout=-5"], "--timeout", "from 0.001 to 86400"),
            (["unmount", "/mnt/x", "--timeout", "0"], "--timeout", "from 0.001 to 86400"),
            (["unmount", "/mnt/x", "--timeout", "inf"], "--timeout", "from 0.001 to 86400"),
            (["unmount", "/mnt/x", "--timeout", "1e300"], "--timeout", "from 0.001 to 86400"),
            (["lock", "run", "--wait", "nan", "file:///b/", "f", "--", "true"], "--wait", "from 0 to 86400"),
            (["lock", "run", "--wait=-1", "file:///b/", "f", "--", "true"], "--wait", "from 0 to 86400"),
            (["lock", "run", "--wait", "86401", "file:///b/", "f", "--", "true"], "--wait", "from 0 to 86400"),
            (
                ["sessions", "cleanup", "file:///b/", "--max-idle-hours", "87601"], "--max-idle-hours",
                "from 0 to 87600"
            ),
            (["sessions", "cleanup", "file:///b/", "--max-idle-hours=-inf"], "--max-idle-hours", "to 87600"),
            (["uploads", "cleanup", "file:///b/", "--older-than=-1"], "--older-than", "from 0 to 87600"),
            (["checkpoints", "list", "file:///b/", "--limit", "0"], "--limit", "from 1 to 1000000"),
            (["events", "tail", "file:///b/", "--lines=-3"], "--lines", "from 0 to 1000000"),
            (["events", "tail", "file:///b/", "--interval", "0"], "--interval", "from 0.01 to 3600"),
            (["mount", "file:///b/", "/mnt/x", "--uid", "4294967295"], "--uid", "from 0 to 4294967294"),
            (["config", "print", "file:///b/", "--metadata-ttl", "inf"], "--metadata-ttl", "from 0 to 86400"),
            (
                ["mount", "file:///b/", "/mnt/x", "--lock-lease-seconds", "0"], "--lock-lease-seconds",
                "from 1 to 86400"
            ),
        ]
        for (arguments, flag, range) in cases {
            let text = refusal(arguments)
            XCTAssertTrue(text.contains(flag), "\(arguments): \(text)")
            XCTAssertTrue(text.contains(range), "\(arguments): \(text)")
            XCTAssertFalse(text.contains("\n"), "\(arguments): \(text)")
        }
    }

    /// Not numbers, or too large for the type: ArgumentParser's own refusal, which names the flag too.
    func testNonNumbersAndOverflowsNameTheFlag() {
        let cases: [(arguments: [String], flag: String)] = [
            (["unmount", "/mnt/x", "--timeout", "soon"], "--timeout"),
            (["lock", "run", "--wait", "10s", "file:///b/", "f", "--", "true"], "--wait"),
            (["checkpoints", "list", "file:///b/", "--limit", "99999999999999999999"], "--limit"),
            (
                ["mount", "file:///b/", "/mnt/x", "--lock-lease-seconds", "99999999999999999999"],
                "--lock-lease-seconds"
            ),
            (["mount", "file:///b/", "/mnt/x", "--gid", "-1"], "--gid"),
        ]
        for (arguments, flag) in cases {
            let text = refusal(arguments)
            XCTAssertTrue(text.contains(flag), "\(arguments): \(text)")
        }
    }

    func testValuesAtTheBoundsAreAccepted() throws {
        for arguments in [
            ["unmount", "/mnt/x", "--timeout", "86400"], ["unmount", "/mnt/x", "--timeout", "0.5"],
            ["lock", "run", "--wait", "0", "file:///b/", "f", "--", "true"],
            ["events", "tail", "file:///b/", "-n", "0", "--interval", "0.01"],
            ["checkpoints", "list", "file:///b/", "--limit", "1000000"],
            ["sessions", "cleanup", "file:///b/", "--max-idle-hours", "0.5"],
            ["mount", "file:///b/", "/mnt/x", "--uid", "4294967294", "--metadata-ttl", "0"],
        ] {
            XCTAssertNoThrow(try BucketfsCommand.parseAsRoot(arguments), "\(arguments)")
        }
    }
}
