import FileSystem
import Foundation
import Glibc
import ObjectStore
import TestSupport
import XCTest

/// Requests saved on what programs do most (git, cp, cat, ls -l): each test fails if its saving goes.
final class RequestSavingTests: FileSystemTestCase {
    /// A name that is nowhere: one LIST (of the keys starting with its key), no HEAD after it.
    func testLookingUpAMissingNameIsOneList() throws {
        let base = MemoryObjectStore()
        try put(base, "d/other", "x")
        try put(base, "d/name.lock", "x")  // sorts between `name` and `name/`
        let store = CountingStore(base)
        let fs = try makeFileSystem(store, metadataTTL: 0, negativeTTL: 0)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        store.reset()
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: dir.ino, name: "name") }
        XCTAssertEqual(store.count(.list), 1)
        XCTAssertEqual(store.total, 1)
    }

    /// The page of that LIST fills with names between `name` and `name/`: it cannot tell, and the longer way
    /// answers, right, for a directory, a file and nothing.
    func testManyNeighboursStillGiveTheRightAnswer() throws {
        let base = MemoryObjectStore()
        for i in 0..<40 { try put(base, String(format: "name-%02d", i), "x") }
        try put(base, "name/inner", "x")
        for i in 0..<40 { try put(base, String(format: "file.%02d", i), "x") }
        try put(base, "file", "content")
        for i in 0..<40 { try put(base, String(format: "none.%02d", i), "x") }
        let fs = try makeFileSystem(CountingStore(base), metadataTTL: 0, negativeTTL: 0)
        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "name").kind, .directory)
        let file = try fs.lookup(parent: Self.root, name: "file")
        XCTAssertEqual(file.kind, .file)
        XCTAssertEqual(file.size, 7)
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "none") }
    }

    /// A file the metadata index knows at that version (written from this host before) is one LIST; an unknown
    /// small one a LIST and a GET whose bytes the open reads; a directory whose marker the index knows one LIST, one
    /// without a marker too, an unknown marker a LIST and a HEAD.
    func testLookingUpKnownFilesAndDirectories() throws {
        let base = MemoryObjectStore()
        let store = CountingStore(base)  // the same description, so the same metadata index file
        let cache = try makeCacheDirectory()
        let writer = try makeFileSystem(store, cacheDirectory: cache)
        let made = try writer.create(
            parent: Self.root, name: "mine", permissions: 0o640, flags: O_WRONLY, caller: caller)
        try write(writer, made.attributes.ino, handle: made.handle, at: 0, "mine")
        try writer.flush(made.attributes.ino, handle: made.handle)
        writer.release(made.attributes.ino, handle: made.handle)
        _ = try writer.mkdir(parent: Self.root, name: "dir", permissions: 0o750, caller: caller)
        try put(base, "foreign", "theirs")

        let fs = try makeFileSystem(store, cacheDirectory: cache)
        store.reset()
        let mine = try fs.lookup(parent: Self.root, name: "mine")
        XCTAssertEqual(mine.permissions, 0o640)
        XCTAssertEqual(store.total, 1, "the index knows this version: the LIST alone")
        store.reset()
        let foreign = try fs.lookup(parent: Self.root, name: "foreign")
        XCTAssertEqual(store.count(.list), 1)
        XCTAssertEqual(store.count(.get), 1)
        XCTAssertEqual(store.total, 2)
        let opened = try fs.open(foreign.ino, flags: O_RDONLY)
        XCTAssertEqual(try readAll(fs, foreign.ino, handle: opened.handle), "theirs")
        fs.release(foreign.ino, handle: opened.handle)
        XCTAssertEqual(store.total, 2, "the open read the bytes the lookup fetched")
        store.reset()
        let dir = try fs.lookup(parent: Self.root, name: "dir")
        XCTAssertEqual(dir.kind, .directory)
        XCTAssertEqual(dir.permissions, 0o750)
        XCTAssertEqual(store.total, 1, "the index knows its marker: the LIST alone")
        try put(base, "implicit/inner", "x")
        try put(base, "theirs/", "", metadata: ["mode": String(0o040700)])
        try put(base, "theirs/inner", "x")
        store.reset()
        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "implicit").kind, .directory)
        XCTAssertEqual(store.total, 1, "no marker: the LIST alone")
        store.reset()
        let theirs = try fs.lookup(parent: Self.root, name: "theirs")
        XCTAssertEqual(theirs.permissions, 0o700)
        XCTAssertEqual(store.total, 2, "a marker never seen: a LIST, and a HEAD of it for its metadata")
    }

    /// A rename hands the copy what the node knows of the source, so S3 needs no HEAD of it.
    func testRenameCopiesKnowingTheSource() throws {
        let base = MemoryObjectStore()
        try put(base, "a", "content", metadata: ["mode": "0600"])
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        _ = try fs.lookup(parent: Self.root, name: "a")
        try fs.rename(parent: Self.root, name: "a", newParent: Self.root, newName: "b", noReplace: false)
        XCTAssertEqual(store.count(.copy), 1)
        XCTAssertEqual(store.copiesKnowingSource, 1)
        XCTAssertEqual(try body(base, "b"), "content")
        XCTAssertEqual(try keys(base), ["b"])
    }

    /// A small file just uploaded is read back from memory: its first open after the close costs no GET.
    func testReadingAFileJustWrittenCostsNoGet() throws {
        let store = CountingStore(MemoryObjectStore())
        let fs = try makeFileSystem(store)
        let made = try fs.create(parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, made.attributes.ino, handle: made.handle, at: 0, "fresh bytes")
        try fs.flush(made.attributes.ino, handle: made.handle)
        fs.release(made.attributes.ino, handle: made.handle)
        store.reset()
        let opened = try fs.open(made.attributes.ino, flags: O_RDONLY)
        XCTAssertEqual(try readAll(fs, made.attributes.ino, handle: opened.handle), "fresh bytes")
        fs.release(made.attributes.ino, handle: opened.handle)
        XCTAssertEqual(store.total, 0)
    }

    /// `ls -l` of entries a LIST described without metadata: the first stat HEADs the next ones too, in parallel;
    /// the stats that follow cost nothing and show the stored mode and mtime.
    func testStatsAfterAListingAreFetchedTogether() throws {
        let base = MemoryObjectStore()
        for i in 0..<40 {
            try put(
                base, String(format: "d/f%02d", i), "content",
                metadata: ["mode": String(0o100600), "mtime": "1000000000"])
        }
        let store = CountingStore(base)
        let fs = try makeFileSystem(store, metadataTTL: 60)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        // As the kernel lists for `ls -l`: READDIRPLUS, each entry a lookup.
        var listed: [DirectoryEntry] = []
        let handle = try fs.openDirectory(dir.ino)
        try fs.readDirectory(dir.ino, handle: handle, offset: 0, plus: true) { entry in
            if entry.name.hasPrefix("f") { listed.append(entry) }
            return true
        }
        fs.releaseDirectory(handle: handle)
        XCTAssertEqual(listed.count, 40)
        XCTAssertFalse(listed[0].complete, "a LIST has no metadata")
        store.reset()
        let first = try fs.getattr(listed[0].attributes.ino)
        XCTAssertEqual(first.permissions, 0o600)
        XCTAssertEqual(store.count(.get), 40, "all of them at once (small files: a GET each, for the open to come)")
        for entry in listed {
            let attributes = try fs.getattr(entry.attributes.ino)
            XCTAssertEqual(attributes.permissions, 0o600)
            XCTAssertEqual(attributes.mtime.seconds, 1_000_000_000)
        }
        XCTAssertEqual(store.total, 40, "the other stats were answered from what the first one fetched")
        let opened = try fs.open(listed[7].attributes.ino, flags: O_RDONLY)
        XCTAssertEqual(try readAll(fs, listed[7].attributes.ino, handle: opened.handle), "content")
        fs.release(listed[7].attributes.ino, handle: opened.handle)
        XCTAssertEqual(store.total, 40, "and the open read the bytes fetched")
    }

    /// The same when the kernel asks with LOOKUPs (a plain READDIR, the directory still open).
    func testLookupsAfterAListingAreFetchedTogether() throws {
        let base = MemoryObjectStore()
        for i in 0..<30 { try put(base, String(format: "d/f%02d", i), String(repeating: "y", count: 70 << 10)) }
        let store = CountingStore(base)
        let fs = try makeFileSystem(store, metadataTTL: 60)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        var names: [String] = []
        let handle = try fs.openDirectory(dir.ino)
        try fs.readDirectory(dir.ino, handle: handle, offset: 0, plus: false) { entry in
            if entry.name.hasPrefix("f") { names.append(entry.name) }
            return true
        }
        store.reset()
        for name in names { XCTAssertEqual(try fs.lookup(parent: dir.ino, name: name).size, 70 << 10) }
        fs.releaseDirectory(handle: handle)
        XCTAssertEqual(store.count(.head), 30, "larger than 64 KiB: a HEAD each, all asked by the first lookup")
        XCTAssertEqual(store.total, 30)
    }
}
