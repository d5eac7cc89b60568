import FileSystem
import Foundation
import Glibc
import ObjectStore
import TestSupport
import XCTest

/// Directory listings, their pagination, and what the metadata cache saves in store requests.
final class ListingTests: FileSystemTestCase {
    // MARK: Caching

    func testSecondLookupWithinTTLMakesNoStoreRequest() throws {
        let base = MemoryObjectStore()
        try put(base, "c.txt", "cached")
        let store = CountingStore(base)
        let fs = try makeFileSystem(store, metadataTTL: 60)

        let first = try fs.lookup(parent: Self.root, name: "c.txt")
        XCTAssertGreaterThan(store.total, 0)
        store.reset()
        let second = try fs.lookup(parent: Self.root, name: "c.txt")
        XCTAssertEqual(store.total, 0)
        XCTAssertEqual(second, first)
        _ = try fs.getattr(first.ino)
        XCTAssertEqual(store.total, 0)
    }

    func testLookupWithZeroTTLAsksTheStoreEveryTime() throws {
        let base = MemoryObjectStore()
        try put(base, "c.txt", "v1")
        let store = CountingStore(base)
        let fs = try makeFileSystem(store, metadataTTL: 0)

        let first = try fs.lookup(parent: Self.root, name: "c.txt")
        store.reset()
        try put(base, "c.txt", "version 2")
        let second = try fs.lookup(parent: Self.root, name: "c.txt")
        XCTAssertEqual(store.total, 1)
        XCTAssertEqual(store.count(.get), 1, "a small file is revalidated with a GET of its first 64 KiB")
        XCTAssertEqual(second.ino, first.ino, "same kind: the inode number is kept")
        XCTAssertEqual(second.size, 9)
    }

    func testNegativeLookupIsCached() throws {
        let store = CountingStore(MemoryObjectStore())
        let fs = try makeFileSystem(store, negativeTTL: 60)
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "nope") }
        store.reset()
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "nope") }
        XCTAssertEqual(store.total, 0)
    }

    func testCreateClearsNegativeEntry() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store, negativeTTL: 60)
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "later") }
        let (file, handle) = try fs.create(
            parent: Self.root, name: "later", permissions: 0o644, flags: O_WRONLY, caller: caller)
        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "later").ino, file.ino)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(try keys(store), ["later"])
    }

    func testReadDirectoryCostsOneListAndNoHead() throws {
        let base = MemoryObjectStore()
        for i in 1...5 { try put(base, "d/file\(i)", String(repeating: "x", count: i)) }
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        store.reset()

        let handle = try fs.openDirectory(dir.ino)
        defer { fs.releaseDirectory(handle: handle) }
        var listing: [DirectoryEntry] = []
        try fs.readDirectory(dir.ino, handle: handle, offset: 0, plus: false) {
            listing.append($0)
            return true
        }

        XCTAssertEqual(store.count(.list), 1)
        XCTAssertEqual(store.count(.head), 0)
        XCTAssertEqual(store.total, 1)
        XCTAssertEqual(listing.map(\.name), [".", "..", "file1", "file2", "file3", "file4", "file5"])
        XCTAssertEqual(listing.dropFirst(2).map(\.attributes.size), [1, 2, 3, 4, 5])
        XCTAssertTrue(listing.dropFirst(2).allSatisfy { $0.attributes.kind == .file })

        // Written by another tool: the LIST carried no metadata and the index knows none, so the entries say they
        // are incomplete (the kernel does not cache them) and a lookup asks the store once — a small GET, whose
        // bytes the open that usually follows reuses — for it and the incomplete entries after it (`ls -l` asks
        // them next). Then the nodes are complete.
        XCTAssertTrue(listing.dropFirst(2).allSatisfy { !$0.complete })
        store.reset()
        let third = try fs.lookup(parent: dir.ino, name: "file3")
        XCTAssertEqual(store.count(.get), 3, "file3, file4, file5")
        XCTAssertEqual(store.total, 3)
        XCTAssertEqual(third.ino, listing[4].attributes.ino)
        XCTAssertEqual(third.size, 3)
        store.reset()
        _ = try fs.lookup(parent: dir.ino, name: "file3")
        XCTAssertEqual(try fs.lookup(parent: dir.ino, name: "file5").size, 5)
        XCTAssertEqual(store.total, 0)
    }

    /// What this host wrote keeps its metadata in the listing after a remount, from the metadata index in the
    /// cache directory: `ls -l` and `rsync` see the kept mode and mtime (to the nanosecond) for one LIST.
    func testListingAfterRemountKeepsMetadataFromTheIndex() throws {
        let base = MemoryObjectStore()
        let store = CountingStore(base)
        let cache = try makeCacheDirectory()
        let first = try makeFileSystem(store, cacheDirectory: cache)
        let setTime = FileTime(seconds: 1_500_000_000, nanoseconds: 123_456_789)
        for name in ["a", "b"] {
            let (file, handle) = try first.create(
                parent: Self.root, name: name, permissions: 0o600, flags: O_WRONLY,
                caller: caller)
            try write(first, file.ino, handle: handle, at: 0, "content of \(name)")
            _ = try first.setattr(file.ino, AttributeChanges(mtime: setTime))
            try first.flush(file.ino, handle: handle)
            first.release(file.ino, handle: handle)
        }
        let second = try makeFileSystem(store, cacheDirectory: cache)  // (one HEAD: the root's attributes)
        store.reset()
        let listing = try entries(second, Self.root).filter { $0.name == "a" || $0.name == "b" }
        XCTAssertEqual(store.count(.list), 1)
        XCTAssertEqual(store.count(.head), 0)
        XCTAssertEqual(listing.map(\.complete), [true, true])
        XCTAssertEqual(listing.map(\.attributes.mtime), [setTime, setTime])
        XCTAssertEqual(listing.map(\.attributes.permissions), [0o600, 0o600])

        // Another tool rewrites `a` (same size, new version): the index no longer answers for it.
        try put(base, "a", "content of x")
        store.reset()
        let relisted = try entries(second, Self.root).filter { $0.name == "a" }
        XCTAssertEqual(relisted.first?.complete, false)
        XCTAssertEqual(relisted.first?.attributes.permissions, 0o644)  // the mount's default, not our old mode
    }

    func testDotEntriesPointAtDirectoryAndParent() throws {
        let store = MemoryObjectStore()
        try put(store, "a/b/c", "x")
        let fs = try makeFileSystem(store)
        let a = try fs.lookup(parent: Self.root, name: "a")
        let b = try fs.lookup(parent: a.ino, name: "b")
        let listing = try entries(fs, b.ino)
        XCTAssertEqual(listing.map(\.name), [".", "..", "c"])
        XCTAssertEqual(listing[0].attributes.ino, b.ino)
        XCTAssertEqual(listing[1].attributes.ino, a.ino)
        let rootListing = try entries(fs, Self.root)
        XCTAssertEqual(rootListing[0].attributes.ino, Self.root)
        XCTAssertEqual(rootListing[1].attributes.ino, Self.root)
    }

    func testOpenDirectoryOnFileIsNotDirectory() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "x")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")
        assertFails(.notDirectory) { () throws(FSError) in try fs.openDirectory(file.ino) }
        assertFails(.isDirectory) { () throws(FSError) in try fs.open(Self.root, flags: O_RDONLY) }
    }

    func testMountUnderAPrefixSeesAndWritesOnlyItsKeys() throws {
        let store = MemoryObjectStore()
        try put(store, "team/alice/notes.txt", "mine")
        try put(store, "team/alice/sub/deep.txt", "deep")
        try put(store, "team/bob/secret.txt", "not mine")
        try put(store, "top.txt", "outside")
        let fs = try makeFileSystem(store, prefix: "team/alice/")

        XCTAssertEqual(try names(fs, Self.root), [".", "..", "notes.txt", "sub"])
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "top.txt") }
        let sub = try fs.lookup(parent: Self.root, name: "sub")
        XCTAssertEqual(try names(fs, sub.ino), [".", "..", "deep.txt"])

        let (file, handle) = try fs.create(
            parent: sub.ino, name: "new.txt", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, file.ino, handle: handle, at: 0, "written")
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        _ = try fs.mkdir(parent: Self.root, name: "made", permissions: 0o755, caller: caller)
        XCTAssertEqual(try body(store, "team/alice/sub/new.txt"), "written")
        XCTAssertEqual(
            try keys(store, prefix: "team/alice/"),
            ["team/alice/made/", "team/alice/notes.txt", "team/alice/sub/deep.txt", "team/alice/sub/new.txt"])
        XCTAssertEqual(try keys(store).count, 6)
    }

    // MARK: Pagination

    func testReadDirectoryResumesFromNextOffset() throws {
        let store = MemoryObjectStore()
        for name in ["e", "a", "c", "b", "d"] { try put(store, name, name) }
        let fs = try makeFileSystem(store)
        let handle = try fs.openDirectory(Self.root)
        defer { fs.releaseDirectory(handle: handle) }

        var firstPage: [DirectoryEntry] = []
        try fs.readDirectory(Self.root, handle: handle, offset: 0, plus: false) { entry in
            guard firstPage.count < 3 else { return false }
            firstPage.append(entry)
            return true
        }
        XCTAssertEqual(firstPage.count, 3)
        let resume = try XCTUnwrap(firstPage.last?.nextOffset)

        var secondPage: [DirectoryEntry] = []
        try fs.readDirectory(Self.root, handle: handle, offset: resume, plus: false) {
            secondPage.append($0)
            return true
        }

        let names = (firstPage + secondPage).map(\.name)
        XCTAssertEqual(names, [".", "..", "a", "b", "c", "d", "e"])
        XCTAssertEqual(Set(names).count, names.count)
        XCTAssertEqual(names.filter { $0 == "." }.count, 1)
        XCTAssertEqual(names.filter { $0 == ".." }.count, 1)

        // Past the end: nothing more.
        var afterEnd: [DirectoryEntry] = []
        let end = try XCTUnwrap(secondPage.last?.nextOffset)
        try fs.readDirectory(Self.root, handle: handle, offset: end, plus: false) {
            afterEnd.append($0)
            return true
        }
        XCTAssertEqual(afterEnd, [])
    }

    func testResumedReadUsesTheSnapshotTakenAtOffsetZero() throws {
        let base = MemoryObjectStore()
        for name in ["a", "b", "c", "d"] { try put(base, name, name) }
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let handle = try fs.openDirectory(Self.root)
        defer { fs.releaseDirectory(handle: handle) }

        var firstPage: [String] = []
        var resume: UInt64 = 0
        try fs.readDirectory(Self.root, handle: handle, offset: 0, plus: false) { entry in
            guard firstPage.count < 3 else { return false }
            firstPage.append(entry.name)
            resume = entry.nextOffset
            return true
        }
        // A key appearing mid-listing neither shifts nor duplicates entries of this handle.
        try put(base, "aa", "new")
        store.reset()
        var rest: [String] = []
        try fs.readDirectory(Self.root, handle: handle, offset: resume, plus: false) {
            rest.append($0.name)
            return true
        }
        XCTAssertEqual(store.total, 0)
        XCTAssertEqual(firstPage + rest, [".", "..", "a", "b", "c", "d"])
    }

    func testReaddirplusCountsLookupsSoForgetBalancesThem() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "x")
        let fs = try makeFileSystem(store)
        let handle = try fs.openDirectory(Self.root)
        var seen: [DirectoryEntry] = []
        try fs.readDirectory(Self.root, handle: handle, offset: 0, plus: true) {
            seen.append($0)
            return true
        }
        fs.releaseDirectory(handle: handle)
        let file = try XCTUnwrap(seen.first { $0.name == "f" })

        // readdirplus counted one lookup: the node stays until the kernel forgets it.
        XCTAssertEqual(try fs.getattr(file.attributes.ino).ino, file.attributes.ino)
        fs.forget(file.attributes.ino, count: 1)
        assertFails(.notFound) { () throws(FSError) in try fs.getattr(file.attributes.ino) }
    }

    // MARK: A reply older than this mount's own changes

    /// Reads directory `d` (or the one whose keys start with `prefix`; readdirplus, as the kernel does: its lookups keep the entries' nodes) with its LIST held
    /// at the store's door until `meanwhile` ran; returns the names that reading listed.
    private func namesListed(
        _ fs: FileSystem, _ store: HoldingStore, _ dir: UInt64, prefix: String = "d/", meanwhile: () throws -> Void
    ) throws -> [String]? {
        store.holdListReply(prefix)
        let listed = Locked<[String]?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            if let handle = try? fs.openDirectory(dir) {
                var names: [String] = []
                try? fs.readDirectory(dir, handle: handle, offset: 0, plus: true) { entry in
                    names.append(entry.name)
                    return true
                }
                fs.releaseDirectory(handle: handle)
                listed.update { $0 = names }
            }
            done.signal()
        }.start()
        XCTAssertEqual(store.entered.wait(timeout: .now() + 10), .success, "the LIST is answered, not yet heard")
        try meanwhile()
        store.release()
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        return listed.value
    }

    /// A LIST answered before an unlink on this mount and heard after it does not bring the file back: it put the
    /// node back in the table, complete and fresh (the local backend lists metadata), so `stat` found the file
    /// removed for `metadata_ttl`.
    func testALateListingDoesNotBringBackAFileUnlinkedMeanwhile() throws {
        let base = try makeLocalStore()
        for name in ["a", "x"] { try put(base, "d/" + name, name) }
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        _ = try fs.lookup(parent: dir.ino, name: "x")
        let listed = try namesListed(fs, store, dir.ino) { try fs.unlink(parent: dir.ino, name: "x") }
        XCTAssertEqual(listed, [".", "..", "a"])
        assertFails(.notFound) { () throws(FSError) in _ = try fs.lookup(parent: dir.ino, name: "x") }
        XCTAssertEqual(try names(fs, dir.ino), [".", "..", "a"])
    }

    /// Nor does it undo a rename onto a name: the old file's version and size no longer stand for the file moved
    /// there (its next upload would be conditional on a version the store no longer has), and the name moved away
    /// stays gone.
    func testALateListingDoesNotUndoARenameMeanwhile() throws {
        let base = try makeLocalStore()
        try put(base, "d/x", "xx")
        try put(base, "d/y", "yyyy")
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        _ = try fs.lookup(parent: dir.ino, name: "x")
        let moved = try fs.lookup(parent: dir.ino, name: "y")
        let listed = try namesListed(fs, store, dir.ino) {
            try fs.rename(parent: dir.ino, name: "y", newParent: dir.ino, newName: "x", noReplace: false)
        }
        XCTAssertEqual(listed, [".", "..", "x"])
        let now = try fs.lookup(parent: dir.ino, name: "x")
        XCTAssertEqual(now.ino, moved.ino)
        XCTAssertEqual(now.size, 4, "y's size, not the replaced file's")
        assertFails(.notFound) { () throws(FSError) in _ = try fs.lookup(parent: dir.ino, name: "y") }
    }

    /// A name removed and made again while such a reply was on the way is listed as it is now: the new file.
    func testALateListingShowsANameMadeAgainMeanwhileAsItIsNow() throws {
        let base = try makeLocalStore()
        for name in ["a", "x"] { try put(base, "d/" + name, name) }
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        let old = try fs.lookup(parent: dir.ino, name: "x")
        var made: (attributes: FileAttributes, handle: UInt64)?
        let listed = try namesListed(fs, store, dir.ino) {
            try fs.unlink(parent: dir.ino, name: "x")
            made = try fs.create(parent: dir.ino, name: "x", permissions: 0o644, flags: O_WRONLY, caller: self.caller)
        }
        XCTAssertEqual(listed, [".", "..", "a", "x"])
        let now = try fs.lookup(parent: dir.ino, name: "x")
        XCTAssertNotEqual(now.ino, old.ino)
        XCTAssertEqual(now.ino, made?.attributes.ino)
        if let made { fs.release(made.attributes.ino, handle: made.handle) }
    }

    /// A listing of `d/sub` heard after `d` was renamed to `e` lists `e/sub`: its reply's entries were nodes under
    /// `d/sub`, a path no directory held, so a `d/sub` made later showed a file that is not there, and the entries
    /// handed to the kernel stood for keys gone.
    func testALateListingOfADirectoryRenamedMeanwhileListsItWhereItIsNow() throws {
        let base = try makeLocalStore()
        try put(base, "d/sub/a", "a")
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store)
        let d = try fs.lookup(parent: Self.root, name: "d")
        let sub = try fs.lookup(parent: d.ino, name: "sub")
        let listed = try namesListed(fs, store, sub.ino, prefix: "d/sub/") {
            try fs.rename(parent: Self.root, name: "d", newParent: Self.root, newName: "e", noReplace: false)
        }
        XCTAssertEqual(listed, [".", "..", "a"])
        let a = try fs.lookup(parent: sub.ino, name: "a")
        XCTAssertEqual(try fs.getattr(a.ino).size, 1, "the entry stands for e/sub/a")
        let newD = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        let newSub = try fs.mkdir(parent: newD.ino, name: "sub", permissions: 0o755, caller: caller)
        assertFails(.notFound) { () throws(FSError) in _ = try fs.lookup(parent: newSub.ino, name: "a") }
        XCTAssertEqual(try names(fs, newSub.ino), [".", ".."])
    }

    /// A directory removed while open lists nothing (the kernel answers ENOENT itself); it listed the bucket root.
    func testListingADirectoryRemovedWhileOpenIsNotFound() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "x")
        let fs = try makeFileSystem(store)
        let d = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        let handle = try fs.openDirectory(d.ino)
        try fs.rmdir(parent: Self.root, name: "d")
        assertFails(.notFound) { () throws(FSError) in
            try fs.readDirectory(d.ino, handle: handle, offset: 0, plus: false) { _ in true }
        }
        fs.releaseDirectory(handle: handle)
    }

    func testPlainReaddirEntriesAreEvictedWhenHandleIsReleased() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "x")
        let fs = try makeFileSystem(store)
        let listing = try entries(fs, Self.root)  // releases its handle
        let file = try XCTUnwrap(listing.first { $0.name == "f" })
        assertFails(.notFound) { () throws(FSError) in try fs.getattr(file.attributes.ino) }
    }

    /// A `stat` takes no directory lock: its HEAD, answered before an unlink here and heard after it, no longer
    /// brings the name back.
    func testAStatHeardAfterAnUnlinkDoesNotBringTheFileBack() throws {
        let base = MemoryObjectStore()
        try put(base, "f", "")  // empty: revalidated with a HEAD (a small file's is a GET)
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store, metadataTTL: 0)
        let f = try fs.lookup(parent: Self.root, name: "f")
        store.holdHeadReply("f")
        let statted = getattrInFlight(fs, f.ino)
        store.entered.wait()  // the HEAD found the object; its reply is on the way
        try fs.unlink(parent: Self.root, name: "f")
        store.release()
        statted.wait()
        assertFails(.notFound) { () throws(FSError) in _ = try fs.lookup(parent: Self.root, name: "f") }
    }

    /// Nor does one that found the object gone detach a file made here under that name meanwhile: its writes
    /// are uploaded at its close.
    func testAStatHeardAfterACreateDoesNotDetachTheNewFile() throws {
        let base = MemoryObjectStore()
        try put(base, "f", "")  // empty: revalidated with a HEAD (a small file's is a GET)
        let store = HoldingStore(base)
        let fs = try makeFileSystem(store, metadataTTL: 0)
        let old = try fs.lookup(parent: Self.root, name: "f")
        try base.delete("f")  // another host removed it
        store.holdHeadReply("f")
        let statted = getattrInFlight(fs, old.ino)
        store.entered.wait()  // the HEAD found nothing; its reply is on the way
        try? fs.unlink(parent: Self.root, name: "f")  // ENOENT from the store; the name is free here
        let (made, handle) = try fs.create(
            parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, made.ino, handle: handle, at: 0, "new")
        store.release()
        statted.wait()
        try fs.flush(made.ino, handle: handle)
        fs.release(made.ino, handle: handle)
        XCTAssertEqual(String(decoding: try base.get("f", range: nil).body, as: UTF8.self), "new")
    }

    /// A local-directory store (its LIST carries metadata, so a node a late reply brings back is complete).
    private func makeLocalStore() throws -> LocalDirectoryObjectStore {
        let root = try makeCacheDirectory() + "/bucket"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        return try LocalDirectoryObjectStore(root: root)
    }

    /// Starts a `getattr` of `ino` on another thread; the semaphore is signalled when it returns.
    private func getattrInFlight(_ fs: FileSystem, _ ino: UInt64) -> DispatchSemaphore {
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? fs.getattr(ino)
            done.signal()
        }
        return done
    }

}
