import FileSystem
import Foundation
import Glibc
import ObjectStore
import TestSupport
import XCTest

/// The staged copy of a file written here becomes the block cache's entry for the version stored
/// (`BlockCache.adopt`): only ever under a version whose bytes it holds. Each case reads the object back through a
/// second filesystem over the same cache directory, which serves it from that entry if there is one.
final class WrittenCopyCacheTests: FileSystemTestCase {
    /// Over 64 KiB, so that the read back goes through the block cache, not the small-content cache.
    static let size = 100_000

    /// What a fresh mount over `cache` reads at `path` (a lookup, an open, reads to the end).
    func readBack(_ store: any ObjectStore, cache: String, _ path: [String]) throws -> Data {
        let fs = try makeFileSystem(store, cacheDirectory: cache)
        var parent = Self.root
        for name in path { parent = try fs.lookup(parent: parent, name: name).ino }
        let opened = try fs.open(parent, flags: O_RDONLY)
        defer { fs.release(parent, handle: opened.handle) }
        var data = Data()
        while true {
            let piece = try fs.read(parent, handle: opened.handle, offset: UInt64(data.count), size: 1 << 16)
            if piece.isEmpty { break }
            data.append(piece)
        }
        return data
    }

    /// A file written, uploaded and renamed while still open, after another writer replaced it: the copy the
    /// rename made holds the other writer's bytes, so this mount's copy must not be kept under that version.
    func testARenameAfterAnotherWritersChangeKeepsNoCopyUnderTheNewVersion() throws {
        let store = MemoryObjectStore()
        let cache = try makeCacheDirectory()
        let fs = try makeFileSystem(store, cacheDirectory: cache)
        let made = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_RDWR, caller: caller)
        try write(fs, made.attributes.ino, handle: made.handle, at: 0, String(repeating: "a", count: Self.size))
        try fs.flush(made.attributes.ino, handle: made.handle)
        let theirs = Data(String(repeating: "b", count: Self.size).utf8)
        try store.put("f", data: theirs, options: PutOptions())
        try fs.rename(parent: Self.root, name: "f", newParent: Self.root, newName: "g", noReplace: false)
        fs.release(made.attributes.ino, handle: made.handle)
        XCTAssertEqual(try store.get("g").body, theirs, "the rename copied what the store had")
        XCTAssertEqual(try readBack(store, cache: cache, ["g"]), theirs)
    }

    /// The same through a directory's rename: each key is copied at the version listed, maybe another writer's.
    func testADirectoryRenameAfterAnotherWritersChangeKeepsNoCopyUnderTheNewVersion() throws {
        let store = MemoryObjectStore()
        let cache = try makeCacheDirectory()
        let fs = try makeFileSystem(store, cacheDirectory: cache)
        let dir = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        let made = try fs.create(parent: dir.ino, name: "f", permissions: 0o644, flags: O_RDWR, caller: caller)
        try write(fs, made.attributes.ino, handle: made.handle, at: 0, String(repeating: "a", count: Self.size))
        try fs.flush(made.attributes.ino, handle: made.handle)
        let theirs = Data(String(repeating: "b", count: Self.size).utf8)
        try store.put("d/f", data: theirs, options: PutOptions())
        try fs.rename(parent: Self.root, name: "d", newParent: Self.root, newName: "e", noReplace: false)
        fs.release(made.attributes.ino, handle: made.handle)
        XCTAssertEqual(try store.get("e/f").body, theirs, "the move copied what the store had")
        XCTAssertEqual(try readBack(store, cache: cache, ["e", "f"]), theirs)
    }

    /// Without another writer the copy is still kept after a close: what this mount wrote is read back from it.
    func testAFileWrittenHereIsReadBackFromItsCopy() throws {
        let store = CountingStore(MemoryObjectStore())
        let cache = try makeCacheDirectory()
        let fs = try makeFileSystem(store, cacheDirectory: cache)
        let made = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_RDWR, caller: caller)
        let ours = String(repeating: "a", count: Self.size)
        try write(fs, made.attributes.ino, handle: made.handle, at: 0, ours)
        try fs.flush(made.attributes.ino, handle: made.handle)
        fs.release(made.attributes.ino, handle: made.handle)
        store.reset()
        XCTAssertEqual(try readBack(store, cache: cache, ["f"]), Data(ours.utf8))
        XCTAssertEqual(store.count(.get), 0, "served from the copy this mount kept")
    }

    /// Two stores sharing a cache directory may both have an object of one key at one version (a counter here, a
    /// generation number on GCS or local): a mount of one is never served the other's entry.
    func testAMountOfAnotherStoreIsNotServedThisOnesCopy() throws {
        let ours = MemoryObjectStore(name: "ours")
        let counted = CountingStore(ours)
        let cache = try makeCacheDirectory()
        let fs = try makeFileSystem(counted, cacheDirectory: cache)
        let made = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_RDWR, caller: caller)
        try write(fs, made.attributes.ino, handle: made.handle, at: 0, String(repeating: "a", count: Self.size))
        try fs.flush(made.attributes.ino, handle: made.handle)
        fs.release(made.attributes.ino, handle: made.handle)
        let other = MemoryObjectStore(name: "other")
        let theirs = Data(String(repeating: "b", count: Self.size).utf8)
        try other.put("f", data: theirs, options: PutOptions())
        XCTAssertEqual(try other.head("f").version, try ours.head("f").version, "the same key and version")
        XCTAssertEqual(try readBack(other, cache: cache, ["f"]), theirs)
        counted.reset()
        XCTAssertEqual(try readBack(counted, cache: cache, ["f"]), Data(String(repeating: "a", count: Self.size).utf8))
        XCTAssertEqual(counted.count(.get), 0, "a remount of ours is still served its copy")
    }
}
