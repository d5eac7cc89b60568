import Foundation
import Glibc
import ObjectStore
import Synchronization
import TestSupport
import XCTest

@testable import FileSystem

/// What namespace changes cost in store requests (issue 13): a directory rename, `rm -rf`, a create loop.
final class NamespaceCostTests: FileSystemTestCase {
    /// A ranged GET of an empty object as the S3 store does it: the server answers 416, and a HEAD follows for the
    /// object's info (two requests).
    final class EmptyRangeLikeS3: ForwardingObjectStore {
        let base: any ObjectStore
        init(_ base: any ObjectStore) { self.base = base }
        func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
            let got = try base.get(key, range: range)
            if range != nil && got.info.size == 0 { return ObjectData(info: try base.head(key), body: Data()) }
            return got
        }
    }

    /// A stat of an empty file whose attributes aged out is one HEAD: an empty file is not "small" (fetched with
    /// its content in one ranged GET), because S3 and SeaweedFS refuse that GET (416) and a HEAD followed it.
    func testAStatOfAnEmptyFileIsOneHead() throws {
        let store = CountingStore(MemoryObjectStore())
        let fs = try makeFileSystem(EmptyRangeLikeS3(store))
        try put(store, "empty", "")  // another host's
        let ino = try fs.lookup(parent: Self.root, name: "empty").ino
        fs.state.withLock { $0.table[ino]?.validatedAt = .now - .seconds(3600) }
        store.reset()
        XCTAssertEqual(try fs.getattr(ino).size, 0)
        XCTAssertEqual(store.count(.head), 1)
        XCTAssertEqual(store.total, 1, "one request")
    }

    /// A rename of a directory of files: one listing, a copy of each file naming the listed version (no HEAD of
    /// the source), the marker recreated, the old keys deleted in batches.
    func testRenamingADirectoryCopiesEachFileKnowingItsVersion() throws {
        let base = MemoryObjectStore()
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        for i in 0..<20 {
            let created = try fs.create(
                parent: dir.ino, name: "f\(i)", permissions: 0o644, flags: O_WRONLY, caller: caller)
            try write(fs, created.attributes.ino, handle: created.handle, at: 0, "file \(i)")
            try fs.flush(created.attributes.ino, handle: created.handle)
            fs.release(created.attributes.ino, handle: created.handle)
        }
        store.reset()
        try fs.rename(parent: Self.root, name: "d", newParent: Self.root, newName: "e", noReplace: false)
        XCTAssertEqual(store.count(.copy), 20)
        XCTAssertEqual(store.copiesKnowingSource, 20, "each copy names the listed version")
        XCTAssertEqual(store.count(.head), 1, "only the marker's metadata is asked for")
        XCTAssertEqual(try body(base, "e/f7"), "file 7")
        XCTAssertEqual(try keys(base, prefix: "d/"), [])
    }

    /// A create loop in a directory whose listing aged out: the first missing name costs one LIST of the
    /// directory's end (after the last name it held), which answers for the names after it; a name another host
    /// made there is still found, and once that knowledge ages out, a new one is seen.
    func testCreatingFilesAfterTheListingAgedOutCostsOneList() throws {
        let base = MemoryObjectStore()
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        try createFile(fs, dir.ino, "f00")
        fs.state.withLock { $0.listed["d"]?.until = .now }  // the mkdir's knowledge aged out
        try put(base, "d/f05", "another host's")
        store.reset()
        for i in 1..<10 {
            if i == 5 {
                XCTAssertEqual(try fs.lookup(parent: dir.ino, name: "f05").size, 14)
                continue
            }
            assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: dir.ino, name: "f0\(i)") }
            try createFile(fs, dir.ino, "f0\(i)")
        }
        XCTAssertEqual(store.count(.put), 8)
        XCTAssertEqual(store.count(.list), 2, "the end of d; then f05's own lookup")
        XCTAssertEqual(store.total - store.count(.put) - store.count(.list), 1, "f05's content")
        // Aged out again: what another host made since is seen.
        fs.state.withLock { $0.tailKnowledge.tails["d"]?.until = .now }
        try put(base, "d/f20", "new")
        store.reset()
        XCTAssertEqual(try fs.lookup(parent: dir.ino, name: "f20").size, 3)
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: dir.ino, name: "f21") }
        XCTAssertEqual(store.count(.list), 2, "the end of d, then f20's own lookup; f21 from the first")
    }

    /// `rm -rf` of files whose attributes aged out: once unlinks go through the directory in name order, one LIST
    /// revalidates the files still to come instead of a GET each; a file another host changed is asked again.
    func testRemovingFilesInNameOrderRevalidatesThemWithOneList() throws {
        let base = MemoryObjectStore()
        let store = CountingStore(base)
        let fs = try makeFileSystem(store)
        let dir = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        let names = (0..<30).map { String(format: "f%02d", $0) }
        for name in names { try createFile(fs, dir.ino, name) }
        try put(base, "d/f20", "changed by another host")
        fs.state.withLock { s in  // every file's attributes aged out
            for ino in s.table.nodes.keys where s.table[ino]?.kind == .file {
                s.table[ino]?.validatedAt = .now - .seconds(120)
            }
        }
        store.reset()
        for name in names {
            let attributes = try fs.lookup(parent: dir.ino, name: name)
            XCTAssertEqual(attributes.size, name == "f20" ? 23 : 1, name)
            try fs.unlink(parent: dir.ino, name: name)
        }
        try fs.rmdir(parent: Self.root, name: "d")
        XCTAssertEqual(store.count(.delete), 30)
        XCTAssertEqual(store.count(.list), 2, "one revalidating f08 and after; rmdir's emptiness check")
        XCTAssertEqual(store.count(.get) + store.count(.head), 9, "f00-f07 before the run shows; the changed f20")
        XCTAssertEqual(try keys(base), [])
    }

    /// Records the keys asked for by each LIST that starts after a name (a tail or removal LIST).
    final class TailListSizes: ForwardingObjectStore {
        let base: any ObjectStore
        let sizes = Mutex<[Int]>([])
        init(_ base: any ObjectStore) { self.base = base }
        func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage {
            if request.startAfter != nil { sizes.withLock { $0.append(request.maxKeys) } }
            return try base.list(request)
        }
    }

    /// A removal that reaches few names per `metadata_ttl` (on moto a DELETE takes ~15 ms, and its LIST ~1.5 ms per
    /// key listed) revalidates the files ahead of it with LISTs of about as many keys as it will reach while their
    /// answer stays fresh, not 256 each (most of which aged out again unread); once it has passed the names listed,
    /// it lists the next ones.
    func testASlowRemovalListsAboutAsManyKeysAsItReaches() throws {
        let base = MemoryObjectStore()
        let recorder = TailListSizes(base)
        let store = CountingStore(recorder)
        let fs = try makeFileSystem(store)  // metadata_ttl 60 s
        let dir = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        let names = (0..<40).map { String(format: "f%02d", $0) }
        for name in names { try createFile(fs, dir.ino, name) }
        fs.state.withLock { s in  // every file's attributes aged out
            for ino in s.table.nodes.keys where s.table[ino]?.kind == .file {
                s.table[ino]?.validatedAt = .now - .seconds(120)
            }
        }
        store.reset()
        for (index, name) in names.enumerated() {
            if index == 8 {
                // The 8 unlinks so far took 60 s (one per 7.5 s): 10 names within the 60 s of metadata_ttl.
                fs.state.withLock { $0.tailKnowledge.unlinks["d"]?.since = .now - .seconds(60) }
            }
            XCTAssertEqual(try fs.lookup(parent: dir.ino, name: name).size, 1, name)
            try fs.unlink(parent: dir.ino, name: name)
        }
        let listed = recorder.sizes.withLock { $0 }
        XCTAssertEqual(listed.first, FileSystem.removalListingMinimumKeys, "f08 and after: 16, not 256")
        XCTAssertEqual(listed.count, 2, "f24 and after, once f08-f23 were passed")
        XCTAssertLessThan(listed.last ?? 0, FileSystem.removalListingKeys)
        XCTAssertEqual(store.count(.get) + store.count(.head), 8, "f00-f07 before the run shows")
        XCTAssertEqual(store.count(.delete), 40)
    }

    /// The keys of a removal LIST follow the removal's pace: names reached within `metadata_ttl`, and a quarter more.
    func testRemovalListingKeysFollowThePace() throws {
        let fs = try makeFileSystem(MemoryObjectStore(), metadataTTL: 1)
        let now = ContinuousClock.now
        XCTAssertEqual(fs.removalListingKeys(run: 8, since: now - .milliseconds(8), now: now), 256, "1,000 a second")
        XCTAssertEqual(fs.removalListingKeys(run: 100, since: now - .seconds(2), now: now), 63, "50 a second")
        XCTAssertEqual(fs.removalListingKeys(run: 8, since: now - .seconds(4), now: now), 16, "2 a second")
        XCTAssertEqual(fs.removalListingKeys(run: 8, since: now, now: now), 256)
    }

    private func createFile(_ fs: FileSystem, _ parent: UInt64, _ name: String) throws {
        let created = try fs.create(parent: parent, name: name, permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, created.attributes.ino, handle: created.handle, at: 0, "x")
        try fs.flush(created.attributes.ino, handle: created.handle)
        fs.release(created.attributes.ino, handle: created.handle)
    }
}

/// DirectoryMover where a sidecar keeps a directory's metadata: markers are recreated without asking for theirs.
final class DirectoryMoverCostTests: XCTestCase {
    let workers = WorkerPool(threads: 4, name: "test-mover-cost")
    deinit { workers.stop() }

    func testMarkersWithoutMetadataAreNotAskedFor() throws {
        let base = MemoryObjectStore()
        try base.put("d/", data: Data())
        try base.put("d/sub/", data: Data())
        try base.put(
            "d/" + DirectoryMarkers.sidecarName, data: Data(), options: PutOptions(metadata: ["mode": "40700"]))
        for i in 0..<10 { try base.put("d/f\(i)", data: Data("\(i)".utf8)) }
        let store = CountingStore(base)
        let versions = try DirectoryMover(store: store, workers: workers, width: 4, markersCarryMetadata: false)
            .move(from: "d/", to: "e/")
        XCTAssertEqual(store.count(.head), 0)
        XCTAssertEqual(store.count(.put), 2, "the two markers")
        XCTAssertEqual(store.copiesKnowingSource, 11, "ten files and the sidecar")
        XCTAssertEqual(try base.head("e/" + DirectoryMarkers.sidecarName).metadata, ["mode": "40700"])
        XCTAssertEqual(versions["f3"], try base.head("e/f3").version)
        XCTAssertEqual(try base.listAll(prefix: "d/").objects.map(\.key), [])
    }

    /// The old files of a large tree are deleted in 4 DeleteObjects at once (a server may go through one key by key).
    func testManyOldKeysAreDeletedInParallelBatches() throws {
        let base = MemoryObjectStore()
        for i in 0..<100 { try base.put("d/f\(i)", data: Data("\(i)".utf8)) }
        let store = CountingStore(base)
        _ = try DirectoryMover(store: store, workers: workers, width: 16).move(from: "d/", to: "e/")
        XCTAssertEqual(store.count(.deleteObjects), 5, "the files in 4 batches, then the directory")
        XCTAssertEqual(try base.listAll(prefix: "d/").objects.map(\.key), [])
        XCTAssertEqual(try base.listAll(prefix: "e/").objects.count, 100)
    }
}
