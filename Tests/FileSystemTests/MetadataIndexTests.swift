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

/// A journal whose last line was cut short (a crash, a full disk) without its newline: the next line written must
/// not be glued onto it, or it is lost with it at the next replay (a tombstone lost brings an entry back).
final class MetadataIndexTornTailTests: XCTestCase {
    func testALineWrittenAfterATornTailIsReplayed() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("index-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func info(_ key: String) -> ObjectInfo {
            ObjectInfo(
                key: key, size: 1, lastModified: Date(timeIntervalSince1970: 1_700_000_000), version: "v",
                metadata: ["mode": "100600"])
        }
        let first = MetadataIndex(directory: directory, name: "b")
        first.learn(info("kept"))
        first.learn(info("removed"))
        let file = try XCTUnwrap(FileManager.default.contentsOfDirectory(atPath: directory).first)
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: directory + "/" + file))
        handle.seekToEndOfFile()
        handle.write(Data(#"{"key":"torn","vers"#.utf8))  // no newline: the write was cut short
        handle.closeFile()

        let second = MetadataIndex(directory: directory, name: "b")
        XCTAssertEqual(second.metadata(for: info("kept")), ["mode": "100600"])
        second.forget(key: "removed")
        second.learn(info("new"))

        let third = MetadataIndex(directory: directory, name: "b")
        XCTAssertNil(third.metadata(for: info("removed")), "the tombstone after the torn line")
        XCTAssertEqual(third.metadata(for: info("new")), ["mode": "100600"])
        XCTAssertEqual(third.metadata(for: info("kept")), ["mode": "100600"])
    }

    /// Every control character, quotes, backslashes, DEL, U+2028, combining marks, U+FFFD and non-BMP characters, in
    /// keys, versions, metadata names and values, read back by the next mount exactly (all lines as one array, and
    /// line by line once a torn line makes that fail).
    func testHostileStringsRoundTripThroughTheJournal() throws {
        let controls = String(String.UnicodeScalarView((0..<0x20).map { Unicode.Scalar(UInt8($0)) }))
        let hostile = [
            controls, "\\\"", "\\u0041\\", "a\u{7f}b\u{2028}c\u{2029}", "e\u{301}\u{fffd}😀\u{10ffff}", "/", "",
            "}{\"key\":\"x\"},", "\u{0}",
        ]
        for torn in [false, true] {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("index-\(UUID())").path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let infos = hostile.enumerated().map { i, odd in
                ObjectInfo(
                    key: "k\(i)/" + odd, size: UInt64(i), lastModified: Date(timeIntervalSince1970: 1_700_000_000),
                    version: odd + "v", metadata: ["mode": "100644", odd: odd, "n\(i)" + odd: controls + odd])
            }
            let first = MetadataIndex(directory: directory, name: "b")
            for info in infos { first.learn(info) }
            if torn {
                let file = try XCTUnwrap(FileManager.default.contentsOfDirectory(atPath: directory).first)
                let handle = try XCTUnwrap(FileHandle(forWritingAtPath: directory + "/" + file))
                handle.seekToEndOfFile()
                handle.write(Data(#"{"key":"#.utf8))
                handle.closeFile()
            }
            let second = MetadataIndex(directory: directory, name: "b")
            for info in infos {
                XCTAssertEqual(second.metadata(for: info), info.metadata, "\(Array(info.key.utf8)) torn: \(torn)")
                var other = info
                other.version += "x"
                XCTAssertNil(second.metadata(for: other))
            }
        }
    }
}
