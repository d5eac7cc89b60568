import Foundation
import ObjectStore
import XCTest

@testable import FileSystem

/// The metadata index's journal, replayed by the next mount: later lines win, a tombstone removes, a torn or
/// undecodable line is skipped without losing the lines around it.
final class MetadataIndexTests: XCTestCase {
    var directory = ""

    override func setUp() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("index-\(UUID().uuidString)").path
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func info(_ key: String, _ version: String, metadata: ObjectMetadata? = nil) -> ObjectInfo {
        ObjectInfo(
            key: key, size: 0, lastModified: Date(timeIntervalSince1970: 1_700_000_000), version: version,
            metadata: metadata)
    }

    /// Writes a journal with a first index: `a` learnt twice (v2 wins), `b` forgotten, `c` and `d` kept.
    private func writeJournal(tornLineAfterC: Bool) throws {
        let first = MetadataIndex(directory: directory, name: "bucket")
        first.learn(info("a", "v1", metadata: ["mode": "100600"]))
        first.learn(info("b", "v1", metadata: [:]))
        first.learn(info("c", "v1", metadata: [:]))
        if tornLineAfterC {
            let file = try XCTUnwrap(FileManager.default.contentsOfDirectory(atPath: directory).first)
            let handle = try XCTUnwrap(FileHandle(forWritingAtPath: directory + "/" + file))
            handle.seekToEndOfFile()
            handle.write(Data("{\"key\":\"x\",\"vers\n".utf8))  // a line cut short by a crash
            handle.closeFile()
        }
        first.learn(info("a", "v2", metadata: ["mode": "100644"]))
        first.forget(key: "b")
        first.learn(info("d", "v1", metadata: ["mode": "100755"]))
    }

    private func assertReplayed() {
        let second = MetadataIndex(directory: directory, name: "bucket")
        XCTAssertNil(second.metadata(for: info("a", "v1")), "an older version")
        XCTAssertEqual(second.metadata(for: info("a", "v2")), ["mode": "100644"])
        XCTAssertNil(second.metadata(for: info("b", "v1")), "forgotten")
        XCTAssertEqual(second.metadata(for: info("c", "v1")), [:], "known to carry no metadata")
        XCTAssertEqual(second.metadata(for: info("d", "v1")), ["mode": "100755"])
        XCTAssertNil(second.metadata(for: info("x", "v1")))
    }

    func testJournalIsReplayedInOrder() throws {
        try writeJournal(tornLineAfterC: false)
        assertReplayed()
    }

    func testATornLineIsSkippedAndTheLinesAroundItKept() throws {
        try writeJournal(tornLineAfterC: true)
        assertReplayed()
    }
}
