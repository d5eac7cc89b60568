import Foundation
import Glibc
import XCTest

@testable import Locking

/// Runtime and lock directories no other local user can prepare for us.
final class PrivateDirectoryTests: XCTestCase {
    private var root = ""

    override func setUpWithError() throws {
        root =
            FileManager.default.temporaryDirectory.appendingPathComponent("bucketfs-private-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
        super.tearDown()
    }

    private func mode(_ path: String) -> mode_t {
        var info = stat()
        XCTAssertEqual(lstat(path, &info), 0)
        return info.st_mode & 0o7777
    }

    private func refusal(_ body: () throws(PrivateDirectory.Refused) -> Void) -> String {
        do {
            try body()
            XCTFail("accepted")
            return ""
        } catch {
            return error.description
        }
    }

    func testCreatedDirectoriesAre0700() throws {
        let path = try PrivateDirectory.prepare(root + "/base", sub: "a/b")
        XCTAssertEqual(path, root + "/base/a/b")
        for created in ["/base", "/base/a", "/base/a/b"] { XCTAssertEqual(mode(root + created), 0o700, created) }
    }

    func testAnExistingDirectoryOfOursIsClosedToOthers() throws {
        XCTAssertEqual(mkdir(root + "/base", 0o755), 0)
        _ = chmod(root + "/base", 0o755)
        try PrivateDirectory.prepare(root + "/base")
        XCTAssertEqual(mode(root + "/base"), 0o700)
    }

    func testAWorldWritableDirectoryIsRefused() {
        XCTAssertEqual(mkdir(root + "/base", 0o777), 0)
        _ = chmod(root + "/base", 0o777)
        let text = refusal { () throws(PrivateDirectory.Refused) in try PrivateDirectory.prepare(root + "/base") }
        XCTAssertTrue(text.contains("writable by group or others") && text.contains(root + "/base"), text)
    }

    func testADirectoryOfAnotherUserIsRefused() throws {
        try XCTSkipUnless(geteuid() == 0, "chown to another user needs root")
        XCTAssertEqual(mkdir(root + "/base", 0o700), 0)
        XCTAssertEqual(chown(root + "/base", 65534, 65534), 0)
        let text = refusal { () throws(PrivateDirectory.Refused) in try PrivateDirectory.prepare(root + "/base") }
        XCTAssertTrue(text.contains("owned by uid 65534"), text)
    }

    func testALinkInPlaceOfTheDirectoryIsRefused() throws {
        XCTAssertEqual(mkdir(root + "/elsewhere", 0o700), 0)
        XCTAssertEqual(symlink(root + "/elsewhere", root + "/base"), 0)
        let text = refusal { () throws(PrivateDirectory.Refused) in try PrivateDirectory.prepare(root + "/base") }
        XCTAssertTrue(text.contains("not a directory"), text)
    }

    /// The default lock directory lives under the runtime base: a base someone else made is refused.
    func testFileLockStrategyRefusesAForeignRuntimeBase() {
        XCTAssertEqual(mkdir(root + "/base", 0o777), 0)
        _ = chmod(root + "/base", 0o777)
        XCTAssertThrowsError(try FileLockStrategy(directory: root + "/base/locks", runtimeBase: root + "/base")) {
            XCTAssertTrue("\($0)".contains("writable by group or others"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/base/locks"))
        XCTAssertNoThrow(try FileLockStrategy(directory: root + "/mine/locks", runtimeBase: root + "/mine"))
        XCTAssertEqual(mode(root + "/mine/locks"), 0o700)
    }

    /// A link planted where a lock file will be is never followed: its target is neither rewritten nor truncated.
    func testALinkPlantedAsALockFileIsNotFollowed() throws {
        let strategy = try FileLockStrategy(directory: root + "/locks")
        let victim = root + "/victim"
        try "precious\n".write(toFile: victim, atomically: false, encoding: .utf8)
        XCTAssertEqual(symlink(victim, strategy.lockPath("data/x")), 0)
        XCTAssertThrowsError(
            try strategy.tryAcquire(
                "data/x", owner: LockOwner(id: "o", host: "h", pid: 1),
                lease: 5)
        ) {
            XCTAssertTrue("\($0)".contains("symbolic link"), "\($0)")
        }
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "precious\n")
        // A lock file that is ours is created 0600.
        let lease = try XCTUnwrap(
            try strategy.tryAcquire(
                "data/y", owner: LockOwner(id: "o", host: "h", pid: 1),
                lease: 5))
        XCTAssertEqual(mode(strategy.lockPath("data/y")), 0o600)
        try strategy.release(lease)
    }
}
