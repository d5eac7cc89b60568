import Foundation
import Glibc
import ObjectStore
import XCTest

@testable import FileSystem

/// Two keys that are different bytes but canonically equivalent Unicode (`caf\u{e9}`, NFC, and `cafe\u{301}`,
/// NFD, as macOS writes names) are two objects: Swift's `String` compares them equal, the bucket and the kernel do
/// not. Each is listed, has its own inode, reads its own bytes, and a write to one leaves the other alone.
final class CanonicalEquivalenceTests: FileSystemTestCase {
    private let composed = "caf\u{e9}"
    private let decomposed = "cafe\u{301}"

    private func read(_ fs: FileSystem, _ ino: UInt64) throws -> String {
        let handle = try fs.open(ino, flags: O_RDONLY).handle
        defer { fs.release(ino, handle: handle) }
        return String(decoding: try fs.read(ino, handle: handle, offset: 0, size: 100), as: UTF8.self)
    }

    func testCanonicallyEquivalentKeysAreTwoFiles() throws {
        let root = try makeCacheDirectory() + "/bucket"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let store = try LocalDirectoryObjectStore(root: root)
        try put(store, "d/" + composed, "composed")
        try put(store, "d/" + decomposed, "decomposed")
        let fs = try makeFileSystem(store)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        let listed = try names(fs, dir.ino).map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) }
        XCTAssertEqual(listed, [".", "..", decomposed, composed].map { Array($0.utf8) })

        let a = try fs.lookup(parent: dir.ino, name: composed)
        let b = try fs.lookup(parent: dir.ino, name: decomposed)
        XCTAssertNotEqual(a.ino, b.ino)
        XCTAssertEqual(try read(fs, a.ino), "composed")
        XCTAssertEqual(try read(fs, b.ino), "decomposed")

        let handle = try fs.open(b.ino, flags: O_WRONLY | O_TRUNC).handle
        try write(fs, b.ino, handle: handle, at: 0, "rewritten")
        try fs.flush(b.ino, handle: handle)
        fs.release(b.ino, handle: handle)
        XCTAssertEqual(try body(store, "d/" + composed), "composed", "the other file is untouched")
        XCTAssertEqual(try body(store, "d/" + decomposed), "rewritten")
    }

    /// The metadata index keeps one entry per key byte for byte: two empty objects (the same ETag, as every
    /// symlink and FIFO has) under equivalent keys keep their own metadata.
    func testTheMetadataIndexKeepsEquivalentKeysApart() {
        let index = MetadataIndex(directory: nil, name: "b")
        func info(_ key: String, _ target: String? = nil) -> ObjectInfo {
            ObjectInfo(
                key: key, size: 0, lastModified: Date(timeIntervalSince1970: 1_700_000_000),
                version: "d41d8cd98f00b204e9800998ecf8427e", metadata: target.map { ["symlink": $0] })
        }
        index.learn(info(composed, "one"))
        index.learn(info(decomposed, "two"))
        XCTAssertEqual(index.metadata(for: info(composed)), ["symlink": "one"])
        XCTAssertEqual(index.metadata(for: info(decomposed)), ["symlink": "two"])
        index.forget(key: decomposed)
        XCTAssertEqual(index.metadata(for: info(composed)), ["symlink": "one"])
        XCTAssertNil(index.metadata(for: info(decomposed)))
    }

    /// What this mount knows absent is known by exact name: removing one of the two, or making an empty directory
    /// of one name, says nothing of the other.
    func testAbsenceIsKnownByExactName() throws {
        let root = try makeCacheDirectory() + "/bucket"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let store = try LocalDirectoryObjectStore(root: root)
        try put(store, composed, "composed")
        try put(store, decomposed, "decomposed")
        try put(store, "d" + composed + "/x", "x")
        let fs = try makeFileSystem(store)
        _ = try fs.lookup(parent: Self.root, name: decomposed)
        try fs.unlink(parent: Self.root, name: decomposed)
        let kept = try fs.lookup(parent: Self.root, name: composed)
        XCTAssertEqual(try read(fs, kept.ino), "composed")

        _ = try fs.mkdir(parent: Self.root, name: "d" + decomposed, permissions: 0o755, caller: caller)
        let other = try fs.lookup(parent: Self.root, name: "d" + composed)
        XCTAssertEqual(try read(fs, try fs.lookup(parent: other.ino, name: "x").ino), "x")
    }
}
