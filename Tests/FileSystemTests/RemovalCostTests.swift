import Foundation
import Glibc
import ObjectStore
import Synchronization
import TestSupport
import XCTest

@testable import FileSystem

/// What `rm -rf` of a directory costs in store requests (issue 13), and what the listing it reads twice may
/// reuse: GNU rm reads a directory once to see whether it is empty, then all of it, then unlinks each name and
/// removes the directory.
final class RemovalCostTests: FileSystemTestCase {
    private func createFile(_ fs: FileSystem, _ parent: UInt64, _ name: String) throws {
        let created = try fs.create(parent: parent, name: name, permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, created.attributes.ino, handle: created.handle, at: 0, "x")
        try fs.flush(created.attributes.ino, handle: created.handle)
        fs.release(created.attributes.ino, handle: created.handle)
    }

    /// The first entries of a directory read through a handle closed after them (rm's emptiness check).
    private func firstEntries(_ fs: FileSystem, _ ino: UInt64, count: Int) throws -> [String] {
        let handle = try fs.openDirectory(ino)
        defer { fs.releaseDirectory(handle: handle) }
        var names: [String] = []
        try fs.readDirectory(ino, handle: handle, offset: 0, plus: true) {
            names.append($0.name)
            return names.count < count
        }
        return names
    }

    /// `rm -rf d` as GNU rm does it: one LIST for both reads of the directory, one DELETE per file and nothing
    /// else per file, then the emptiness check and one DeleteObjects for the directory's marker and sidecar.
    func testRmRfListsTheDirectoryOnceAndDeletesEachFileOnce() throws {
        let base = MemoryObjectStore()
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        let names = (0..<40).map { String(format: "f%02d", $0) }
        for name in names { try createFile(fs, dir.ino, name) }
        fs.state.withLock { $0.listed["d"]?.until = .now }  // what the creates taught aged out
        store.reset()
        XCTAssertEqual(try firstEntries(fs, dir.ino, count: 3), [".", "..", "f00"])
        let listed = try entries(fs, dir.ino, plus: true).map(\.name).filter { $0 != "." && $0 != ".." }
        XCTAssertEqual(listed, names)
        XCTAssertEqual(store.count(.list), 1, "the second read reuses the first one's listing")
        for name in listed { try fs.unlink(parent: dir.ino, name: name) }
        try fs.rmdir(parent: Self.root, name: "d")
        XCTAssertEqual(store.count(.delete), 40)
        XCTAssertEqual(store.count(.deleteObjects), 1, "the marker and the sidecar")
        XCTAssertEqual(store.count(.list), 2, "the listing; rmdir's emptiness check")
        XCTAssertEqual(store.count(.head) + store.count(.get), 0)
        XCTAssertEqual(try keys(base), [])
    }

    /// A reused listing shows what this mount changed since (a new file, a file gone, a file's new size) and,
    /// once `metadata_ttl` has passed, what another host did; a name a lookup found or missed lists again.
    func testAReusedListingShowsLocalChangesAndAgesOut() throws {
        let base = MemoryObjectStore()
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        for name in ["a", "b"] { try createFile(fs, dir.ino, name) }
        XCTAssertEqual(try names(fs, dir.ino), [".", "..", "a", "b"])
        try createFile(fs, dir.ino, "c")
        try fs.unlink(parent: dir.ino, name: "a")
        XCTAssertEqual(try names(fs, dir.ino), [".", "..", "b", "c"], "local changes list again")

        let b = try fs.lookup(parent: dir.ino, name: "b")
        let handle = try fs.open(b.ino, flags: O_WRONLY).handle
        try write(fs, b.ino, handle: handle, at: 1, "longer")
        try fs.flush(b.ino, handle: handle)
        fs.release(b.ino, handle: handle)
        store.reset()
        let reused = try entries(fs, dir.ino)
        XCTAssertEqual(store.count(.list), 0, "nothing came or went: reused")
        XCTAssertEqual(reused.first { $0.name == "b" }?.attributes.size, 7, "attributes as they are now")

        try put(base, "d/e", "another host's")
        XCTAssertEqual(try names(fs, dir.ino), [".", "..", "b", "c"], "trusted for metadata_ttl")
        fs.state.withLock { s in s.recentListings[dir.ino]?.until = .now }
        XCTAssertEqual(try names(fs, dir.ino), [".", "..", "b", "c", "e"], "aged out: listed again")

        try base.delete("d/e")
        fs.state.withLock { s in  // e's attributes aged out; the listing has not
            for ino in s.table.nodes.keys where s.table[ino]?.path == "d/e" {
                s.table[ino]?.validatedAt = .now - .seconds(120)
            }
        }
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: dir.ino, name: "e") }
        XCTAssertEqual(try names(fs, dir.ino), [".", "..", "b", "c"], "a name found gone lists again")
    }

    /// A listing whose LIST was answered before an unlink on this mount and arrived after it is not kept for
    /// reuse: the next read of the directory lists again and no longer shows the name removed.
    func testAListingThatRacedAnUnlinkIsNotReused() throws {
        let base = MemoryObjectStore()
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        for name in ["a", "x"] { try createFile(fs, dir.ino, name) }
        store.holdListReply("d/")
        let first = Mutex<[String]>([])
        let listed = DispatchSemaphore(value: 0)
        Thread {  // readdirplus, as the kernel reads: its lookups keep the entries' nodes
            if let handle = try? fs.openDirectory(dir.ino) {
                try? fs.readDirectory(dir.ino, handle: handle, offset: 0, plus: true) { entry in
                    first.withLock { $0.append(entry.name) }
                    return true
                }
                fs.releaseDirectory(handle: handle)
            }
            listed.signal()
        }.start()
        XCTAssertEqual(store.entered.wait(timeout: .now() + 10), .success, "the LIST is answered, not yet heard")
        try fs.unlink(parent: dir.ino, name: "x")
        store.release()
        XCTAssertEqual(listed.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(first.withLock { $0 }, [".", "..", "a"], "answered before the unlink: x not brought back")
        XCTAssertEqual(try names(fs, dir.ino), [".", "..", "a"])
    }
}

/// The metadata index's lines are written by hand: they must read back as the entries written, whatever the
/// key, version and metadata hold.
final class MetadataIndexLineTests: XCTestCase {
    func testLinesDecodeAsTheEntriesWritten() throws {
        let odd = "q\"uo\\te/é\u{1}\t\n\u{7f}\u{2028}😀"
        let entries = [
            MetadataIndex.Entry(key: "a", version: "\"etag\"", size: 0, modified: nil, metadata: nil),
            MetadataIndex.Entry(key: odd, version: odd, size: UInt64.max, modified: -5, metadata: [:]),
            MetadataIndex.Entry(
                key: "d/f", version: "v", size: 42, modified: 1_700_000_000,
                metadata: ["mode": "100644", odd: odd, "": ""]),
        ]
        for entry in entries {
            var line: [UInt8] = []
            entry.appendLine(to: &line)
            XCTAssertEqual(line.last, 0x0A)
            XCTAssertEqual(line.filter { $0 == 0x0A }.count, 1, "one line")
            XCTAssertEqual(try JSONDecoder().decode(MetadataIndex.Entry.self, from: Data(line)), entry)
        }
    }

    func testAJournalOfOddKeysIsReplayed() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("index-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let odd = "d/\"x\\y\"\n\u{0}é"
        let info = ObjectInfo(
            key: odd, size: 3, lastModified: Date(timeIntervalSince1970: 1_700_000_000), version: "\"e\\t\"",
            metadata: ["mode": "100600", "k\"": "v\n"])
        let first = MetadataIndex(directory: directory, name: "b")
        first.learn(info)
        first.learn(ObjectInfo(key: "gone", size: 0, lastModified: info.lastModified, version: "1", metadata: [:]))
        first.forget(key: "gone")
        let second = MetadataIndex(directory: directory, name: "b")
        XCTAssertEqual(second.metadata(for: info), ["mode": "100600", "k\"": "v\n"])
        XCTAssertNil(
            second.metadata(for: ObjectInfo(key: "gone", size: 0, lastModified: info.lastModified, version: "1")))
    }

    /// Removing the 3,000 files of a 3,000-entry index appends a tombstone each and never rewrites the journal
    /// (it did twice); a journal of mostly dead lines is still rewritten once over 20,000 lines.
    func testTombstonesOfAnRmRfDoNotRewriteTheJournal() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("index-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func info(_ i: Int) -> ObjectInfo {
            ObjectInfo(
                key: "d/f\(i)", size: 1, lastModified: Date(timeIntervalSince1970: 1_700_000_000), version: "v",
                metadata: ["mode": "100644"])
        }
        func journal() throws -> (inode: UInt64, lines: Int) {
            let name = try XCTUnwrap(FileManager.default.contentsOfDirectory(atPath: directory).first)
            let path = directory + "/" + name
            let inode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? UInt64)
            return (inode, try Data(contentsOf: URL(fileURLWithPath: path)).filter { $0 == 0x0A }.count)
        }
        let index = MetadataIndex(directory: directory, name: "b")
        for i in 0..<3_000 { index.learn(info(i)) }
        let before = try journal()
        for i in 0..<3_000 { index.forget(key: "d/f\(i)") }
        let after = try journal()
        XCTAssertEqual(after.inode, before.inode, "not rewritten")
        XCTAssertEqual(after.lines, 6_000)
        XCTAssertNil(MetadataIndex(directory: directory, name: "b").metadata(for: info(5)))
        index.learn(info(3))
        func learnE(_ count: Int) {
            for i in 0..<count {
                index.learn(ObjectInfo(key: "e", size: UInt64(i), lastModified: .now, version: "v", metadata: [:]))
            }
        }
        learnE(13_000)  // 19,001 lines, 2 live entries
        XCTAssertEqual(try journal().inode, before.inode)
        learnE(1_000)
        XCTAssertNotEqual(try journal().inode, before.inode, "rewritten once over 20,000 lines")
        XCTAssertLessThan(try journal().lines, 1_000)
        let replayed = MetadataIndex(directory: directory, name: "b")
        XCTAssertEqual(replayed.metadata(for: info(3)), ["mode": "100644"])
        XCTAssertNil(replayed.metadata(for: info(2_000)))
    }
}
