import FileSystem
import Foundation
import Glibc
import ObjectStore
import TestSupport
import XCTest

/// What common operations cost in store requests.
final class RequestCostTests: FileSystemTestCase {
    func testCreatingFilesInANewDirectoryCostsOnePutEach() throws {
        let store = CountingStore(MemoryObjectStore())
        let fs = try makeFileSystem(store, metadataTTL: 60, negativeTTL: 60)
        let dir = try fs.mkdir(parent: Self.root, name: "fresh", permissions: 0o755, caller: caller)
        store.reset()
        for i in 0..<5 {
            // As the kernel does for open(O_CREAT): a lookup that finds nothing, then create.
            assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: dir.ino, name: "f\(i)") }
            let created = try fs.create(
                parent: dir.ino, name: "f\(i)", permissions: 0o644, flags: O_WRONLY, caller: caller)
            try write(fs, created.attributes.ino, handle: created.handle, at: 0, "x")
            try fs.flush(created.attributes.ino, handle: created.handle)
            fs.release(created.attributes.ino, handle: created.handle)
        }
        XCTAssertEqual(store.count(.put), 5)
        XCTAssertEqual(store.total, 5, "no LIST or HEAD: the new directory is known to be empty")
    }

    func testAListedDirectoryAnswersMissingNamesWithoutRequests() throws {
        let base = MemoryObjectStore()
        try put(base, "d/a", "1")
        let store = CountingStore(base)
        let fs = try makeFileSystem(store, negativeTTL: 60)
        let dir = try fs.lookup(parent: Self.root, name: "d")
        XCTAssertEqual(try names(fs, dir.ino), [".", "..", "a"])
        store.reset()
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: dir.ino, name: "missing") }
        XCTAssertEqual(store.total, 0)
        // With no knowledge kept (TTL 0), the same question goes to the store.
        let cold = try makeFileSystem(store, metadataTTL: 0, negativeTTL: 0)
        let coldDir = try cold.lookup(parent: Self.root, name: "d")
        _ = try names(cold, coldDir.ino)
        store.reset()
        assertFails(.notFound) { () throws(FSError) in try cold.lookup(parent: coldDir.ino, name: "missing") }
        XCTAssertGreaterThan(store.total, 0)
    }

    func testRevalidatingAKnownFileIsOneRequest() throws {
        let base = MemoryObjectStore()
        try put(base, "f", "content")
        try base.put("large", data: Data(count: 100 << 10))
        let store = CountingStore(base)
        let fs = try makeFileSystem(store, metadataTTL: 0)
        _ = try fs.lookup(parent: Self.root, name: "f")
        _ = try fs.lookup(parent: Self.root, name: "large")
        store.reset()
        _ = try fs.lookup(parent: Self.root, name: "f")
        XCTAssertEqual(store.count(.get), 1, "small: a GET, whose bytes the next open reads")
        _ = try fs.lookup(parent: Self.root, name: "large")
        XCTAssertEqual(store.count(.head), 1, "larger than 64 KiB: a HEAD")
        XCTAssertEqual(store.total, 2)
        // Replaced by a directory: seen as one.
        try base.delete("f")
        try put(base, "f/inner", "x")
        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "f").kind, .directory)
    }
}
