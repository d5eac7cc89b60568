import FileSystem
import Foundation
import Glibc
import Logging
import ObjectStore
import XCTest

/// Shared set-up for the behaviour tests: a fresh store and a temporary cache directory per filesystem,
/// removed after the test, and small helpers that talk to `FileSystem` the way the FUSE bridge does.
class FileSystemTestCase: XCTestCase {
    static let root: UInt64 = 1
    let caller = Caller(uid: 1234, gid: 5678)
    private var cacheDirectories: [String] = []

    override func tearDown() {
        for directory in cacheDirectories { try? FileManager.default.removeItem(atPath: directory) }
        cacheDirectories = []
        super.tearDown()
    }

    func makeCacheDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("bucketfs-fs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        cacheDirectories.append(path)
        return path
    }

    /// A filesystem over `store` with its own cache directory. A long TTL by default, so that no test depends
    /// on timing unless it asks for a TTL of 0.
    func makeFileSystem(
        _ store: any ObjectStore, prefix: String = "", readOnly: Bool = false, metadataTTL: Double = 60,
        negativeTTL: Double = 60, cacheDirectory: String? = nil
    ) throws -> FileSystem {
        let options = FileSystemOptions(
            prefix: prefix, uid: 100, gid: 200, readOnly: readOnly, metadataTTL: metadataTTL,
            negativeTTL: negativeTTL, cacheDirectory: try cacheDirectory ?? makeCacheDirectory())
        return try FileSystem(store: store, options: options, logger: Logger(label: "bucketfs.tests"))
    }

    // MARK: Store helpers

    func put(_ store: any ObjectStore, _ key: String, _ text: String = "", metadata: ObjectMetadata = [:]) throws {
        try store.put(key, data: Data(text.utf8), options: PutOptions(metadata: metadata))
    }

    func body(_ store: any ObjectStore, _ key: String) throws -> String {
        String(decoding: try store.get(key).body, as: UTF8.self)
    }

    func keys(_ store: any ObjectStore, prefix: String = "") throws -> [String] {
        try store.listAll(prefix: prefix).objects.map(\.key)
    }

    // MARK: Filesystem helpers

    @discardableResult
    func write(_ fs: FileSystem, _ ino: UInt64, handle: UInt64, at offset: UInt64, _ text: String) throws(FSError)
        -> Int
    {
        let bytes = Array(text.utf8)
        var result: Result<Int, FSError> = .success(0)
        bytes.withUnsafeBytes { buffer in
            result = Result { () throws(FSError) -> Int in
                try fs.write(ino, handle: handle, offset: offset, data: buffer)
            }
        }
        return try result.get()
    }

    func readAll(_ fs: FileSystem, _ ino: UInt64, handle: UInt64) throws(FSError) -> String {
        String(decoding: try fs.read(ino, handle: handle, offset: 0, size: 1 << 20), as: UTF8.self)
    }

    /// Every entry of directory `ino`, read through one directory handle with an unbounded reply buffer (`plus`:
    /// as READDIRPLUS, each entry a lookup).
    func entries(_ fs: FileSystem, _ ino: UInt64, plus: Bool = false) throws(FSError) -> [DirectoryEntry] {
        let handle = try fs.openDirectory(ino)
        defer { fs.releaseDirectory(handle: handle) }
        var all: [DirectoryEntry] = []
        try fs.readDirectory(ino, handle: handle, offset: 0, plus: plus) {
            all.append($0)
            return true
        }
        return all
    }

    func names(_ fs: FileSystem, _ ino: UInt64) throws(FSError) -> [String] {
        try entries(fs, ino).map(\.name)
    }

    /// The `.data` and `.json` files in the cache's recovery folder.
    func recoveryFiles(_ fs: FileSystem) -> (data: [String], json: [String]) {
        let directory = fs.options.cacheDirectory + "/recovery"
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
            .map { directory + "/" + $0 }
        return (files.filter { $0.hasSuffix(".data") }, files.filter { $0.hasSuffix(".json") })
    }

    // MARK: Assertions

    /// Tests of behaviour the code gets wrong today are skipped (with the reason shown) unless
    /// `BUCKETFS_KNOWN_BUGS=1` is set; remove the call once the bug is fixed.
    func skipKnownBug(_ reason: String) throws {
        try XCTSkipUnless(ProcessInfo.processInfo.environment["BUCKETFS_KNOWN_BUGS"] == "1", "known bug: \(reason)")
    }

    /// Asserts that `body` throws an `FSError` with the errno of `expected` (`.stale` and `.io` carry details
    /// that tests do not pin down, so errors are compared by errno).
    func assertFails<T>(
        _ expected: FSError, file: StaticString = #filePath, line: UInt = #line,
        _ body: () throws(FSError) -> T
    ) {
        do {
            let value = try body()
            XCTFail("expected \(expected) (errno \(expected.errno)), got \(value)", file: file, line: line)
        } catch {
            XCTAssertEqual(error.errno, expected.errno, "expected \(expected), got \(error)", file: file, line: line)
        }
    }
}
