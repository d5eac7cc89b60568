import Foundation
import Glibc
import ObjectStore
import TestSupport
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

    /// A listed directory answers for the names it lacks with no request, by exact name: one with only the
    /// composed name knows the decomposed one absent. (Names kept as `String`s found it there, and asked the store.)
    func testAListedDirectoryKnowsTheOtherNormalFormAbsent() throws {
        let base = MemoryObjectStore()
        try put(base, "d/" + composed, "composed")
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        XCTAssertEqual(
            try names(fs, dir.ino).filter { !$0.hasPrefix(".") }.map { Array($0.utf8) }, [Array(composed.utf8)])
        store.reset()
        XCTAssertThrowsError(try fs.lookup(parent: dir.ino, name: decomposed)) {
            XCTAssertEqual($0 as? FSError, .notFound)
        }
        XCTAssertEqual(store.total, 0, "known absent from the listing")
    }

    /// A name may start with a combining mark: the `/` before it is still where the parent's path ends, though
    /// `Character`-wise the two are one grapheme (`/\u{301}`).
    func testANameStartingWithACombiningMark() throws {
        let root = try makeCacheDirectory() + "/bucket"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let store = try LocalDirectoryObjectStore(root: root)
        let mark = "\u{301}x"
        try put(store, "d/" + mark, "mark")
        try put(store, "d/\u{301}e/f", "below")
        let fs = try makeFileSystem(store)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        XCTAssertEqual(
            try names(fs, dir.ino).map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) },
            [".", "..", "\u{301}e", mark].map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) })
        XCTAssertEqual(try read(fs, try fs.lookup(parent: dir.ino, name: mark).ino), "mark")
        let sub = try fs.lookup(parent: dir.ino, name: "\u{301}e")
        XCTAssertEqual(try read(fs, try fs.lookup(parent: sub.ino, name: "f").ino), "below")

        let made = try fs.create(parent: dir.ino, name: "\u{301}y", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, made.attributes.ino, handle: made.handle, at: 0, "new")
        try fs.flush(made.attributes.ino, handle: made.handle)
        fs.release(made.attributes.ino, handle: made.handle)
        XCTAssertEqual(try body(store, "d/\u{301}y"), "new")
        XCTAssertEqual(KeyMapping.parent(of: "d/\u{301}y"), "d")
        XCTAssertEqual(KeyMapping.name(of: "d/\u{301}y"), "\u{301}y")
    }

    /// A directory's rename moves each key to its own new key: `\u{301}x` was cut after two `Character`s of `a/`
    /// (`a`, `/\u{301}`) and copied onto `b/x`, replacing that file; NFC and NFD names kept one version between
    /// them, so the next write to one was refused as a conflict.
    func testARenamedDirectoryKeepsEveryName() throws {
        let root = try makeCacheDirectory() + "/bucket"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let store = try LocalDirectoryObjectStore(root: root)
        let names = ["x", "\u{301}x", "\u{301}d/y", composed, decomposed]
        for name in names { try put(store, "a/" + name, name) }
        let fs = try makeFileSystem(store)
        let a = try fs.lookup(parent: Self.root, name: "a")
        _ = try names.filter { !$0.contains("/") }.map { try fs.lookup(parent: a.ino, name: $0) }
        try fs.rename(parent: Self.root, name: "a", newParent: Self.root, newName: "b", noReplace: false)
        for name in names { XCTAssertEqual(try body(store, "b/" + name), name, "\(Array(name.utf8))") }
        XCTAssertEqual(try keys(store, prefix: "a/"), [])

        let b = try fs.lookup(parent: Self.root, name: "b")
        for name in [composed, decomposed] {
            let file = try fs.lookup(parent: b.ino, name: name)
            let handle = try fs.open(file.ino, flags: O_WRONLY | O_TRUNC).handle
            try write(fs, file.ino, handle: handle, at: 0, "new " + name)
            try fs.flush(file.ino, handle: handle)
            fs.release(file.ino, handle: handle)
            XCTAssertEqual(try body(store, "b/" + name), "new " + name)
        }
    }

    func testAKeyIsRelativeToAPrefixByteForByte() {
        XCTAssertEqual(KeyMapping.relative("d/\u{301}x", below: "d/").map(String.init), "\u{301}x")
        XCTAssertEqual(KeyMapping.relative("d/", below: "d/").map(String.init), "")
        XCTAssertNil(KeyMapping.relative("d", below: "d/"), "shorter than the prefix")
        XCTAssertNil(KeyMapping.relative("e/x", below: "d/"))
        XCTAssertNil(KeyMapping.relative("cafe\u{301}/x", below: "caf\u{e9}/"), "equivalent is not equal")
        XCTAssertNil(KeyMapping.relative("\u{e9}", below: "\u{e9}\u{e9}"))
    }

    /// A file not uploaded yet belongs to its own directory only, not to one whose name is equivalent.
    func testAPendingFileIsListedInItsOwnDirectoryOnly() throws {
        let fs = try makeFileSystem(MemoryObjectStore())
        let one = try fs.mkdir(parent: Self.root, name: "d" + composed, permissions: 0o755, caller: caller)
        let other = try fs.mkdir(parent: Self.root, name: "d" + decomposed, permissions: 0o755, caller: caller)
        let made = try fs.create(parent: other.ino, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        XCTAssertEqual(try names(fs, other.ino), [".", "..", "f"])
        XCTAssertEqual(try names(fs, one.ino), [".", ".."])
        try fs.rmdir(parent: Self.root, name: "d" + composed)
        fs.release(made.attributes.ino, handle: made.handle)
    }

    /// What a LIST of a directory's end told is kept by the directory's exact path: after 8 unlinks in name order in
    /// `dcaf\u{e9}` had one LIST of its last names, a name of `dcafe\u{301}`, another directory, was taken for
    /// missing (ENOENT) from that listing.
    func testTailKnowledgeIsKeptByExactDirectory() throws {
        let store = MemoryObjectStore()
        let files = (1...10).map { String(format: "f%02d", $0) }
        for name in files { try put(store, "d" + composed + "/" + name) }
        try put(store, "d" + decomposed + "/g", "g")
        let fs = try makeFileSystem(store, metadataTTL: 0)  // every file stale: each lookup asks the store
        let one = try fs.lookup(parent: Self.root, name: "d" + composed)
        let other = try fs.lookup(parent: Self.root, name: "d" + decomposed)
        _ = try fs.lookup(parent: one.ino, name: "f09")
        for name in files.prefix(8) { try fs.unlink(parent: one.ino, name: name) }
        _ = try fs.lookup(parent: one.ino, name: "f09")  // `rm -rf` at work: one LIST of the names after f08
        XCTAssertEqual(fs.state.withLock { $0.tailKnowledge.tails["d" + composed]?.complete }, true)
        XCTAssertEqual(try read(fs, try fs.lookup(parent: other.ino, name: "g").ino), "g")
    }

    /// A directory's link count is 2 plus its subdirectories by exact name: `dcaf\u{e9}` and `dcafe\u{301}` are two,
    /// listed or made here, and removing one leaves the other counted.
    func testEquivalentSubdirectoriesAreTwoLinks() throws {
        let store = MemoryObjectStore()
        try put(store, "p/d" + composed + "/x")
        try put(store, "p/d" + decomposed + "/x")
        let fs = try makeFileSystem(store)
        let listed = try fs.lookup(parent: Self.root, name: "p")
        XCTAssertEqual(try names(fs, listed.ino).count, 4)
        XCTAssertEqual(try fs.getattr(listed.ino).linkCount, 4, "listed: 2 + two subdirectories")

        let made = try fs.mkdir(parent: Self.root, name: "q", permissions: 0o755, caller: caller)
        for name in [composed, decomposed] {
            _ = try fs.mkdir(parent: made.ino, name: "d" + name, permissions: 0o755, caller: caller)
        }
        XCTAssertEqual(try fs.getattr(made.ino).linkCount, 4, "made: 2 + two subdirectories")
        try fs.rmdir(parent: made.ino, name: "d" + composed)
        XCTAssertEqual(try fs.getattr(made.ino).linkCount, 3, "the other one is still there")
    }

    /// Renaming a name to its other normal form is a rename (`convmv --nfc`), not a no-op.
    func testARenameToTheOtherNormalFormMovesTheFile() throws {
        let root = try makeCacheDirectory() + "/bucket"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let store = try LocalDirectoryObjectStore(root: root)
        try put(store, decomposed, "bytes")
        try put(store, "d" + decomposed + "/f", "below")
        let fs = try makeFileSystem(store)
        _ = try fs.lookup(parent: Self.root, name: decomposed)
        try fs.rename(parent: Self.root, name: decomposed, newParent: Self.root, newName: composed, noReplace: false)
        _ = try fs.lookup(parent: Self.root, name: "d" + decomposed)
        try fs.rename(
            parent: Self.root, name: "d" + decomposed, newParent: Self.root, newName: "d" + composed, noReplace: false)
        XCTAssertEqual(
            try keys(store).map { Array($0.utf8) },
            [composed, "d" + composed + "/", "d" + composed + "/f"].map { Array($0.utf8) })
        XCTAssertEqual(try read(fs, try fs.lookup(parent: Self.root, name: composed).ino), "bytes")
        assertFails(.notFound) { () throws(FSError) in _ = try fs.lookup(parent: Self.root, name: decomposed) }
    }
}
