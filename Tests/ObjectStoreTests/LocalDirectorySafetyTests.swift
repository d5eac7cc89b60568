import Foundation
import Glibc
import ObjectStore
import TestSupport
import XCTest

/// The local backend is durable when it acknowledges (fsync before and after the rename) and never reaches
/// outside its root through a symbolic link planted in the backing directory.
final class LocalDirectorySafetyTests: XCTestCase {
    private var directories: [String] = []

    override func tearDown() {
        for directory in directories { try? FileManager.default.removeItem(atPath: directory) }
        directories = []
        super.tearDown()
    }

    private func makeDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bucketfs-safety-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        directories.append(path)
        return path
    }

    private func index(
        of event: String, in events: [String], file: StaticString = #filePath,
        line: UInt = #line
    ) -> Int {
        guard let index = events.firstIndex(of: event) else {
            XCTFail("no \"\(event)\" in \(events)", file: file, line: line)
            return -1
        }
        return index
    }

    func testPutSyncsTheFileBeforeTheRenameAndTheDirectoryAfter() throws {
        let events = Locked<[String]>([])
        let store = try LocalDirectoryObjectStore(
            root: try makeDirectory(), trace: { e in events.update { $0.append(e) } })
        events.update { $0 = [] }
        try store.put("a/b/c.txt", data: Data("durable".utf8))
        let seen = events.value
        let fileSynced = index(of: "fsync temp file", in: seen)
        let renamed = index(of: "rename a/b/c.txt", in: seen)
        let directorySynced = index(of: "fsync directory of a/b/c.txt", in: seen)
        XCTAssertLessThan(fileSynced, renamed, "the data must be on disk before the name points at it")
        XCTAssertLessThan(renamed, directorySynced, "the new name must be on disk before put returns")
        XCTAssertTrue(
            seen.contains("fsync directory above a") && seen.contains("fsync directory above b"),
            "directories made for the key are synced into their parents: \(seen)")

        events.update { $0 = [] }
        try store.delete("a/b/c.txt")
        XCTAssertEqual(events.value.filter { $0.hasPrefix("fsync") }.count, 1, "a delete syncs the directory")
        events.update { $0 = [] }
        try store.put("m/", data: Data())
        XCTAssertTrue(events.value.contains("fsync directory of m/"), "\(events.value)")
    }

    func testMultipartPartsAndCompletionAreSynced() throws {
        let events = Locked<[String]>([])
        let store = try LocalDirectoryObjectStore(
            root: try makeDirectory(), trace: { e in events.update { $0.append(e) } })
        let upload = try store.createMultipartUpload("big", options: PutOptions())
        events.update { $0 = [] }
        let etag = try store.uploadPart("big", uploadID: upload, number: 1, body: .data(Data("part".utf8)))
        XCTAssertTrue(events.value.contains { $0.hasPrefix("fsync part-1.tmp-") }, "\(events.value)")
        XCTAssertTrue(events.value.contains("rename part-1"))
        events.update { $0 = [] }
        try store.completeMultipartUpload(
            "big", uploadID: upload, parts: [CompletedPart(number: 1, etag: etag)], condition: .none)
        let seen = events.value
        XCTAssertLessThan(index(of: "fsync temp file", in: seen), index(of: "rename big", in: seen))
        XCTAssertLessThan(index(of: "rename big", in: seen), index(of: "fsync directory of big", in: seen))
        XCTAssertEqual(try store.get("big").body, Data("part".utf8))
    }

    func testALinkToADirectoryOutsideIsNeverWrittenReadOrDeletedThrough() throws {
        let root = try makeDirectory()
        let outside = try makeDirectory()
        try Data("secret".utf8).write(to: URL(fileURLWithPath: "\(outside)/secret"))
        try FileManager.default.createSymbolicLink(atPath: "\(root)/evil", withDestinationPath: outside)
        let store = try LocalDirectoryObjectStore(root: root)

        XCTAssertThrowsError(try store.put("evil/planted", data: Data("x".utf8)))
        XCTAssertThrowsError(try store.put("evil/deeper/planted", data: Data("x".utf8)))
        XCTAssertThrowsError(try store.put("evil/newdir/", data: Data()))
        XCTAssertThrowsError(try store.copy(from: "nothing", to: "evil/copied", metadata: nil, condition: .none))
        XCTAssertThrowsError(try store.get("evil/secret")) {
            XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "evil/secret"))
        }
        XCTAssertThrowsError(try store.head("evil/")) {
            XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "evil/"))
        }
        try store.delete("evil/secret")
        XCTAssertEqual(try store.listAll(prefix: "evil/", delimiter: nil).objects.map(\.key), [])
        let upload = try store.createMultipartUpload("evil/mp", options: PutOptions())
        let etag = try store.uploadPart("evil/mp", uploadID: upload, number: 1, body: .data(Data("p".utf8)))
        XCTAssertThrowsError(
            try store.completeMultipartUpload(
                "evil/mp", uploadID: upload,
                parts: [CompletedPart(number: 1, etag: etag)], condition: .none))

        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outside), ["secret"])
        XCTAssertEqual(try String(contentsOfFile: "\(outside)/secret", encoding: .utf8), "secret")
    }

    func testAPlantedStateFolderLinkIsNotWrittenThrough() throws {
        let root = try makeDirectory()
        let outside = try makeDirectory()
        let store = try LocalDirectoryObjectStore(root: root)
        try FileManager.default.removeItem(atPath: "\(root)/.bucketfs-local/tmp")
        try FileManager.default.createSymbolicLink(atPath: "\(root)/.bucketfs-local/tmp", withDestinationPath: outside)
        XCTAssertThrowsError(try store.put("k", data: Data("x".utf8)))
        XCTAssertEqual(
            try FileManager.default.contentsOfDirectory(atPath: outside), [],
            "no temp file may be created through the link")
    }

    func testLinksToFilesAreFollowedOnlyBeneathTheRoot() throws {
        let root = try makeDirectory()
        let outside = try makeDirectory()
        try Data("secret".utf8).write(to: URL(fileURLWithPath: "\(outside)/secret"))
        let store = try LocalDirectoryObjectStore(root: root)
        try store.put("d/real", data: Data("inside".utf8))
        let fm = FileManager.default
        try fm.createSymbolicLink(atPath: "\(root)/leak", withDestinationPath: "\(outside)/secret")
        try fm.createSymbolicLink(
            atPath: "\(root)/d/up",
            withDestinationPath: "../../\(URL(fileURLWithPath: outside).lastPathComponent)/secret")
        try fm.createSymbolicLink(atPath: "\(root)/d/sibling", withDestinationPath: "real")
        try fm.createSymbolicLink(atPath: "\(root)/viaparent", withDestinationPath: "./d/../d/real")
        try fm.createSymbolicLink(atPath: "\(root)/chain", withDestinationPath: "viaparent")
        try fm.createSymbolicLink(atPath: "\(root)/state", withDestinationPath: ".bucketfs-local/lock")

        for key in ["leak", "d/up", "state"] {
            XCTAssertThrowsError(try store.get(key), key) {
                XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: key))
            }
        }
        for key in ["d/sibling", "viaparent", "chain"] {
            XCTAssertEqual(try store.get(key).body, Data("inside".utf8), key)
        }
        let listed = try store.listAll(prefix: "", delimiter: nil).objects.map(\.key)
        XCTAssertEqual(listed, ["chain", "d/", "d/real", "d/sibling", "viaparent"])
        // Writing a key that is a link replaces the link; the target outside is untouched.
        try store.put("leak", data: Data("mine".utf8))
        XCTAssertEqual(try String(contentsOfFile: "\(outside)/secret", encoding: .utf8), "secret")
        XCTAssertEqual(try store.get("leak").body, Data("mine".utf8))
    }

    /// A `/` followed by a combining mark is one `Character` (`/\u{301}`) but still a separator to the kernel: a
    /// link to `../\u{301}secret` leaves the root (it was taken for one segment, inside), and a key whose name
    /// starts with a combining mark is a file in its directory.
    func testASlashBeforeACombiningMarkStillSeparates() throws {
        let parent = try makeDirectory()
        let root = parent + "/root"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Data("secret".utf8).write(to: URL(fileURLWithPath: "\(parent)/\u{301}secret"))
        try FileManager.default.createSymbolicLink(atPath: "\(root)/leak", withDestinationPath: "../\u{301}secret")
        let store = try LocalDirectoryObjectStore(root: root)
        XCTAssertThrowsError(try store.get("leak")) { XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "leak")) }
        XCTAssertEqual(try store.listAll(prefix: "", delimiter: nil).objects.map(\.key), [])

        try store.put("d/\u{301}x", data: Data("mark".utf8))
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(root)/d/\u{301}x"))
        XCTAssertEqual(try store.get("d/\u{301}x").body, Data("mark".utf8))
        XCTAssertEqual(
            try store.listAll(prefix: "d/", delimiter: "/").objects.map { Array($0.key.utf8) },
            [Array("d/".utf8), Array("d/\u{301}x".utf8)])
        XCTAssertThrowsError(try store.put("../\u{301}y", data: Data())) {
            guard case .invalidKey = $0 as? ObjectStoreError else { return XCTFail("\($0)") }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(parent)/\u{301}y"))
    }
}
