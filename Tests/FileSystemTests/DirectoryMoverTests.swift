import Foundation
import ObjectStore
import Synchronization
import TestSupport
import XCTest

@testable import FileSystem

/// DirectoryMover on a memory store, on the local backend, and behind wrappers that behave as SeaweedFS does
/// (markers cannot be copied) or fail part-way.
final class DirectoryMoverTests: XCTestCase {
    let workers = WorkerPool(threads: 4, name: "test-mover")
    deinit { workers.stop() }

    func fill(_ store: any ObjectStore) throws {
        try store.put("top/d/", data: Data(), options: PutOptions(metadata: ["mode": "40700"]))
        try store.put("top/d/sub/", data: Data(), options: PutOptions(metadata: ["mode": "40750"]))
        try store.put(
            "top/d/" + DirectoryMarkers.sidecarName, data: Data(), options: PutOptions(metadata: ["mode": "40700"]))
        for i in 0..<30 {
            try store.put(
                "top/d/f\(i)", data: Data("file \(i)".utf8), options: PutOptions(metadata: ["mode": "100600"]))
        }
        try store.put("top/d/sub/g", data: Data("g".utf8))
        try store.put("top/d/implicit/deeper/h", data: Data("h".utf8))
        try store.put("top/d-sibling", data: Data("not moved".utf8))
    }

    func keys(_ store: any ObjectStore, _ prefix: String) throws -> [String] {
        try store.listAll(prefix: prefix).objects.map(\.key)
    }

    /// The local backend lists every directory as a marker, and a directory's version changes with its content.
    func checkMoved(_ store: any ObjectStore, versions: ExactPathMap<String>, local: Bool = false) throws {
        XCTAssertEqual(try keys(store, "top/d/").filter { !$0.hasSuffix("/") }, [], "nothing left under the old name")
        XCTAssertEqual(try store.get("top/e/f7").body, Data("file 7".utf8))
        XCTAssertEqual(try store.head("top/e/f7").metadata, ["mode": "100600"])
        XCTAssertEqual(try store.head("top/e/sub/").metadata, ["mode": "40750"], "markers keep their metadata")
        XCTAssertEqual(try store.head("top/e/" + DirectoryMarkers.sidecarName).metadata, ["mode": "40700"])
        XCTAssertEqual(try store.get("top/e/implicit/deeper/h").body, Data("h".utf8))
        XCTAssertEqual(try store.get("top/d-sibling").body, Data("not moved".utf8))
        XCTAssertEqual(versions["f7"], try store.head("top/e/f7").version)
        // 30 files, g, h, the sidecar; the markers of d and sub (and, locally, of implicit/ and implicit/deeper/).
        XCTAssertEqual(versions.count, 33 + (local ? 4 : 2))
        if local { return }
        XCTAssertEqual(versions[""], try store.head("top/e/").version)
        XCTAssertEqual(versions["sub/"], try store.head("top/e/sub/").version)
    }

    func testMovesATreeOnTheMemoryStore() throws {
        let store = MemoryObjectStore()
        try fill(store)
        let versions = try DirectoryMover(store: store, workers: workers, width: 8).move(from: "top/d/", to: "top/e/")
        try checkMoved(store, versions: versions)
        XCTAssertEqual(try keys(store, "top/d/"), [])
    }

    func testMovesATreeOnTheLocalBackend() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("mover-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try LocalDirectoryObjectStore(root: root)
        try fill(store)
        let versions = try DirectoryMover(store: store, workers: workers, width: 8).move(from: "top/d/", to: "top/e/")
        try checkMoved(store, versions: versions, local: true)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/top/d"), "the old directory is gone")
    }

    /// Markers that cannot be copied are recreated with a PUT, as on SeaweedFS.
    func testMarkersAreRecreatedNotCopied() throws {
        let store = QuirkyStore()
        try fill(store)
        let versions = try DirectoryMover(store: store, workers: workers, width: 8).move(from: "top/d/", to: "top/e/")
        try checkMoved(store, versions: versions)
    }

    /// A copy that fails part-way: what was copied is deleted again; the old tree is whole, the new one absent.
    func testAFailedCopyIsUndone() throws {
        let store = QuirkyStore()
        try fill(store)
        let before = try keys(store, "top/")
        store.failCopyOf = "top/d/f17"
        XCTAssertThrowsError(
            try DirectoryMover(store: store, workers: workers, width: 8).move(from: "top/d/", to: "top/e/"))
        XCTAssertEqual(try keys(store, "top/"), before)
        XCTAssertEqual(try keys(store, "top/e/"), [])
    }

    /// Deletes that fail for a while are retried: the rename is finished, not left half-way.
    func testFailedDeletesAreRetried() throws {
        let store = QuirkyStore()
        try fill(store)
        store.failDeletes.withLock { $0 = 5 }
        let versions = try DirectoryMover(store: store, workers: workers, width: 8).move(from: "top/d/", to: "top/e/")
        try checkMoved(store, versions: versions)
        XCTAssertEqual(try keys(store, "top/d/"), [])
    }
}
