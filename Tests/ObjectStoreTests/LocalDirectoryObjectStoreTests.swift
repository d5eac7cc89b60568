import Foundation
import Glibc
import ObjectStore
import Synchronization
import XCTest

final class LocalDirectoryObjectStoreTests: XCTestCase {
    private var directories: [String] = []

    override func tearDown() {
        for directory in directories { try? FileManager.default.removeItem(atPath: directory) }
        directories = []
        super.tearDown()
    }

    /// A new empty backing directory, removed after the test.
    private func makeRoot() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bucketfs-local-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        directories.append(path)
        return path
    }

    private func makeStore() throws -> (LocalDirectoryObjectStore, String) {
        let root = try makeRoot()
        return (try LocalDirectoryObjectStore(root: root), root)
    }

    func testConformance() throws {
        ObjectStoreConformance(partSize: 64 << 10, makeStore: { try LocalDirectoryObjectStore(root: self.makeRoot()) })
            .run()
    }

    func testConformanceUnderAKeyPrefix() throws {
        let store = try LocalDirectoryObjectStore(root: makeRoot())
        ObjectStoreConformance(keyPrefix: "some/prefix/", partSize: 64 << 10, makeStore: { store }).run()
    }

    func testObjectsAreFilesUnderTheRoot() throws {
        let (store, root) = try makeStore()
        try store.put("a/b.txt", data: Data("hello".utf8))
        XCTAssertEqual(FileManager.default.contents(atPath: "\(root)/a/b.txt"), Data("hello".utf8))
        XCTAssertEqual(store.description, "file://\(root)/")

        // Files written by other programs are objects too.
        try Data("outside".utf8).write(to: URL(fileURLWithPath: "\(root)/a/c.txt"))
        XCTAssertEqual(try store.get("a/c.txt").body, Data("outside".utf8))
        XCTAssertEqual(try store.head("a/c.txt").metadata, [:])
        XCTAssertEqual(
            try store.list(ListRequest(prefix: "a/", delimiter: "/")).objects.map(\.key),
            ["a/", "a/b.txt", "a/c.txt"])
    }

    func testMetadataLivesInAnExtendedAttribute() throws {
        let (store, root) = try makeStore()
        try store.put("m", data: Data("x".utf8), options: PutOptions(contentType: "text/csv", metadata: ["uid": "7"]))
        let raw = try XCTUnwrap(readXattr("\(root)/m", "user.bucketfs"))
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: raw) as? [String: Any])
        XCTAssertEqual(json["contentType"] as? String, "text/csv")
        XCTAssertEqual(json["metadata"] as? [String: String], ["uid": "7"])

        // A second instance on the same directory reads it back.
        let again = try LocalDirectoryObjectStore(root: root)
        XCTAssertEqual(try again.head("m").metadata, ["uid": "7"])
        XCTAssertEqual(try again.head("m").contentType, "text/csv")
    }

    func testStateFolderIsNeverListed() throws {
        let (store, root) = try makeStore()
        try store.put("f", data: Data())
        let upload = try store.createMultipartUpload("big", options: PutOptions())
        _ = try store.uploadPart("big", uploadID: upload, number: 1, body: .data(Data("p".utf8)))
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(root)/.bucketfs-local/multipart/\(upload)"))

        let flat = try store.listAll(prefix: "")
        XCTAssertEqual(flat.objects.map(\.key), ["f"])
        let top = try store.listAll(prefix: "", delimiter: "/")
        XCTAssertEqual(top.objects.map(\.key), ["f"])
        XCTAssertEqual(top.commonPrefixes, [])
        XCTAssertEqual(try store.listAll(prefix: ".bucketfs-local/").objects.map(\.key), [])
        XCTAssertEqual(try store.listAll(prefix: ".bucketfs").objects.map(\.key), [])
    }

    func testInvalidKeysAreRejected() throws {
        let (store, _) = try makeStore()
        for key in [
            "", "/abs", "a//b", "./a", "a/./b", "a/../b", "..", "a\u{0}b", ".bucketfs-local/lock", ".bucketfs-local/",
        ] {
            expectInvalidKey { try store.put(key, data: Data()) }
        }
        expectInvalidKey { try store.head(".bucketfs-local/lock") }

        try store.put("file", data: Data("x".utf8))
        expectInvalidKey { try store.put("file/child", data: Data()) }
        expectInvalidKey { try store.put("file/", data: Data()) }

        try store.put("dir/child", data: Data("x".utf8))
        expectInvalidKey { try store.put("dir", data: Data("y".utf8)) }
        XCTAssertEqual(try store.get("dir/child").body, Data("x".utf8))

        XCTAssertThrowsError(try store.put("marker/", data: Data("not empty".utf8))) { error in
            guard case ObjectStoreError.invalidRequest = error else { return XCTFail("got \(error)") }
        }
    }

    func testFileReplacesAnEmptyDirectory() throws {
        let (store, root) = try makeStore()
        try store.put("x/", data: Data())
        try store.put("x", data: Data("file".utf8))
        XCTAssertEqual(try store.get("x").body, Data("file".utf8))
        var isDirectory: ObjCBool = true
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(root)/x", isDirectory: &isDirectory))
        XCTAssertFalse(isDirectory.boolValue)
    }

    func testDirectoriesAreMarkers() throws {
        let (store, root) = try makeStore()
        try FileManager.default.createDirectory(atPath: "\(root)/x/sub/deeper", withIntermediateDirectories: true)
        try store.put("x/sub/f", data: Data("f".utf8))

        XCTAssertEqual(try store.head("x/sub/").size, 0)
        XCTAssertEqual(
            try store.listAll(prefix: "x/").objects.map(\.key),
            ["x/", "x/sub/", "x/sub/deeper/", "x/sub/f"])
        let delimited = try store.listAll(prefix: "x/", delimiter: "/")
        XCTAssertEqual(delimited.objects.map(\.key), ["x/"])
        XCTAssertEqual(delimited.commonPrefixes, ["x/sub/"])

        // An empty directory goes away with its marker; one with content stays.
        try store.delete("x/sub/deeper/")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(root)/x/sub/deeper"))
        try store.delete("x/sub/")
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(root)/x/sub/f"))
        XCTAssertThrowsError(try store.head("x/sub")) {
            XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "x/sub"))
        }
    }

    func testOddEntriesInTheBackingDirectory() throws {
        let (store, root) = try makeStore()
        try store.put("real", data: Data("data".utf8))
        XCTAssertEqual(mkfifo("\(root)/fifo", 0o644), 0)
        try FileManager.default.createSymbolicLink(atPath: "\(root)/link", withDestinationPath: "\(root)/real")
        try FileManager.default.createDirectory(atPath: "\(root)/d", withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: "\(root)/dirlink", withDestinationPath: "\(root)/d")

        let page = try store.listAll(prefix: "", delimiter: "/")
        XCTAssertEqual(page.objects.map(\.key), ["link", "real"], "FIFOs and links to directories are skipped")
        XCTAssertEqual(page.commonPrefixes, ["d/"])
        XCTAssertEqual(try store.get("link").body, Data("data".utf8), "links to files are followed")
        XCTAssertThrowsError(try store.head("fifo")) { XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "fifo")) }
    }

    func testTwoInstancesOnOneRootHaveOneWinner() throws {
        let root = try makeRoot()
        let stores = try (0..<4).map { _ in try LocalDirectoryObjectStore(root: root) }
        for round in 0..<5 {
            let winners = Mutex<Int>(0)
            DispatchQueue.concurrentPerform(iterations: 16) { writer in
                let store = stores[writer % stores.count]
                if (try? store.put(
                    "race-\(round)", data: Data("\(writer)".utf8),
                    options: PutOptions(condition: .ifAbsent))) != nil
                {
                    winners.withLock { $0 += 1 }
                }
            }
            XCTAssertEqual(winners.withLock { $0 }, 1, "round \(round)")
        }

        // Compare-and-swap from several instances: every successful swap saw the previous one's result.
        let counter = "counter"
        try stores[0].put(counter, data: Data("0".utf8))
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            let store = stores[worker % stores.count]
            var done = 0
            while done < 10 {
                guard let current = try? store.get(counter),
                    let value = Int(String(decoding: current.body, as: UTF8.self))
                else { continue }
                let next = Data("\(value + 1)".utf8)
                if (try? store.put(
                    counter, data: next, options: PutOptions(condition: .ifVersionMatches(current.info.version))))
                    != nil
                {
                    done += 1
                }
            }
        }
        XCTAssertEqual(String(decoding: try stores[1].get(counter).body, as: UTF8.self), "80")
    }

    func testMissingRootIsNoSuchBucket() throws {
        let missing = "/nonexistent-\(UUID().uuidString)"
        XCTAssertThrowsError(try LocalDirectoryObjectStore(root: missing)) {
            XCTAssertEqual($0 as? ObjectStoreError, .noSuchBucket(missing))
        }
        let root = try makeRoot()
        try Data().write(to: URL(fileURLWithPath: "\(root)/plain-file"))
        XCTAssertThrowsError(try LocalDirectoryObjectStore(root: "\(root)/plain-file")) {
            XCTAssertEqual($0 as? ObjectStoreError, .noSuchBucket("\(root)/plain-file"))
        }
    }

    /// `validate()` looks again: a root removed after the store was opened is reported as the missing bucket.
    func testValidateReportsARootRemovedSinceOpening() throws {
        let (store, root) = try makeStore()
        XCTAssertNoThrow(try store.validate())
        try FileManager.default.removeItem(atPath: root)
        XCTAssertThrowsError(try store.validate()) {
            XCTAssertEqual($0 as? ObjectStoreError, .noSuchBucket(root))
        }
    }

    func testAbortRemovesStaging() throws {
        let (store, root) = try makeStore()
        let upload = try store.createMultipartUpload("k", options: PutOptions())
        _ = try store.uploadPart("k", uploadID: upload, number: 1, body: .data(Data("p".utf8)))
        try store.abortMultipartUpload("k", uploadID: upload)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(root)/.bucketfs-local/multipart/\(upload)"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "\(root)/.bucketfs-local/tmp"), [])
    }

    /// A sparse body (a file truncated up, or written past its end) stays sparse: `truncate -s 10G` on a `file://`
    /// mount costs neither 10 GiB of disk nor the time to write them. So do a copy (rename) and a multipart upload
    /// whose parts are sparse.
    func testSparseBodiesStaySparse() throws {
        let (store, root) = try makeStore()
        let path = try makeRoot() + "/sparse"
        let fd = open(path, O_CREAT | O_RDWR, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let hole: off_t = 256 << 20
        XCTAssertEqual(pwrite(fd, "head", 4, 0), 4)
        XCTAssertEqual(pwrite(fd, "middle", 6, hole), 6)
        XCTAssertEqual(ftruncate(fd, 2 * hole), 0)
        close(fd)
        func blocks(_ file: String) -> Int {
            var status = stat()
            XCTAssertEqual(stat(file, &status), 0)
            return status.st_blocks
        }
        func check(_ key: String, file: StaticString = #filePath, line: UInt = #line) throws {
            XCTAssertEqual(try store.head(key).size, UInt64(2 * hole), file: file, line: line)
            XCTAssertLessThan(blocks("\(root)/\(key)"), 1 << 12, "holes stay holes", file: file, line: line)
            XCTAssertEqual(try store.get(key, range: 0..<4).body, Data("head".utf8), file: file, line: line)
            let middle = UInt64(hole)
            XCTAssertEqual(
                try store.get(key, range: middle - 2..<middle + 6).body, Data([0, 0] + Array("middle".utf8)))
            let end = UInt64(2 * hole)
            XCTAssertEqual(try store.get(key, range: end - 3..<end).body, Data([0, 0, 0]), file: file, line: line)
        }
        try store.put("big", body: .file(path: path), options: PutOptions())
        try check("big")
        try store.copy(from: "big", to: "copied", metadata: nil, condition: .none)
        try check("copied")

        let upload = try store.createMultipartUpload("parts", options: PutOptions())
        let first = try store.uploadPart("parts", uploadID: upload, number: 1, body: .file(path: path))
        let second = try store.uploadPart("parts", uploadID: upload, number: 2, body: .file(path: path))
        let parts = [CompletedPart(number: 1, etag: first), CompletedPart(number: 2, etag: second)]
        try store.completeMultipartUpload("parts", uploadID: upload, parts: parts, condition: .none)
        XCTAssertEqual(try store.head("parts").size, UInt64(4 * hole))
        XCTAssertLessThan(blocks("\(root)/parts"), 1 << 12)
        let second0 = UInt64(2 * hole)
        XCTAssertEqual(try store.get("parts", range: second0 - 1..<second0 + 4).body, Data([0] + Array("head".utf8)))
    }

    // MARK: Helpers

    private func expectInvalidKey<T>(file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard case ObjectStoreError.invalidKey = error else {
                return XCTFail("expected invalidKey, got \(error)", file: file, line: line)
            }
        }
    }

    private func readXattr(_ path: String, _ name: String) -> Data? {
        typealias Get =
            @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeMutableRawPointer?, Int) -> Int
        guard let symbol = dlsym(nil, "getxattr") else { return nil }
        let getxattr = unsafeBitCast(symbol, to: Get.self)
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = getxattr(path, name, &buffer, buffer.count)
        return n >= 0 ? Data(buffer[..<n]) : nil
    }
}
