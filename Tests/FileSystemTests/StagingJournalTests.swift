import FileSystem
import Foundation
import Glibc
import Logging
import ObjectStore
import XCTest

/// Crash-safe staging: a killed daemon's staged files are found at the next mount and either uploaded
/// conditionally or kept in the recovery folder; the recovery folder keeps one copy per failing file.
final class StagingJournalTests: XCTestCase {
    private var directories: [String] = []
    private let logger = Logger(label: "test")

    override func tearDown() {
        for directory in directories { try? FileManager.default.removeItem(atPath: directory) }
        directories = []
        super.tearDown()
    }

    private func makeDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "bucketfs-journal-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        directories.append(path)
        return path
    }

    /// The stores every scenario runs over.
    private func stores() throws -> [any ObjectStore] {
        [MemoryObjectStore(), try LocalDirectoryObjectStore(root: try makeDirectory())]
    }

    /// A staged file with `content` and its sidecar, as a daemon killed with `kill -9` leaves them: the sidecar
    /// written by a real journal, then the journal's lock file left behind unlocked.
    @discardableResult
    private func leaveBehind(
        _ content: String, key: String, base: StagingJournal.Base, in staging: String,
        store: any ObjectStore, closed: Bool = true
    ) throws -> String {
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        var template = Array((staging + "/staged-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = content.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        let path = String(cString: template)
        // The journal is released when the closure returns, as if its process had died.
        let id: String = try {
            let dead = try StagingJournal(directory: staging, store: store.description, context: [:], logger: logger)
            XCTAssertTrue(
                dead.record(
                    stagedPath: path, key: key, base: base, contentType: "text/plain",
                    metadata: ["mode": "33188"], closed: closed))
            return dead.mountID
        }()
        let lock = "\(staging)/mount-\(id).lock"
        XCTAssertTrue(FileManager.default.createFile(atPath: lock, contents: nil), "the killed daemon's lock file")
        return path
    }

    private func recoveryFolder(_ cache: String, _ store: any ObjectStore) -> RecoveryFolder {
        RecoveryFolder(directory: cache + "/recovery", store: store.description, context: [:], logger: logger)
    }

    private func savedEntries(_ cache: String) throws -> [[String: String]] {
        let folder = cache + "/recovery"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return try names.filter { $0.hasSuffix(".json") }.sorted().map { name in
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(name)"))
            return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: String])
        }
    }

    func testAnUnchangedObjectGetsTheStagedContent() throws {
        for store in try stores() {
            let cache = try makeDirectory()
            let before = try store.put("doc.txt", data: Data("old".utf8))
            let staged = try leaveBehind(
                "new content", key: "doc.txt", base: .version(before.version),
                in: cache + "/staging", store: store)
            let journal = try StagingJournal(
                directory: cache + "/staging", store: store.description, context: [:],
                logger: logger)
            let report = journal.recover(store: store, recovery: recoveryFolder(cache, store))
            XCTAssertEqual(report.uploaded, ["doc.txt"], "\(store)")
            XCTAssertEqual(try store.get("doc.txt").body, Data("new content".utf8))
            XCTAssertEqual(try store.head("doc.txt").metadata?["mode"], "33188")
            XCTAssertFalse(FileManager.default.fileExists(atPath: staged))
            XCTAssertEqual(try savedEntries(cache).count, 0)
            let left = try FileManager.default.contentsOfDirectory(atPath: cache + "/staging")
            XCTAssertEqual(left, ["mount-\(journal.mountID).lock"], "sidecar and the dead mount's lock are gone")
        }
    }

    func testAnObjectChangedMeanwhileIsNotOverwritten() throws {
        for store in try stores() {
            let cache = try makeDirectory()
            let before = try store.put("doc.txt", data: Data("old".utf8))
            try leaveBehind(
                "ours", key: "doc.txt", base: .version(before.version), in: cache + "/staging",
                store: store)
            let theirs = try store.put("doc.txt", data: Data("theirs".utf8))
            let journal = try StagingJournal(
                directory: cache + "/staging", store: store.description, context: [:],
                logger: logger)
            let report = journal.recover(store: store, recovery: recoveryFolder(cache, store))
            XCTAssertEqual(report.kept, ["doc.txt"])
            XCTAssertEqual(try store.get("doc.txt").body, Data("theirs".utf8))
            let saved = try savedEntries(cache)
            XCTAssertEqual(saved.count, 1)
            XCTAssertEqual(saved.first?["base"], "version:\(before.version)")
            XCTAssertNotEqual(saved.first?["base"], "version:\(theirs.version)")
            XCTAssertEqual(try String(contentsOfFile: try XCTUnwrap(saved.first?["data"]), encoding: .utf8), "ours")
        }
    }

    func testANewFileIsWrittenOnlyIfTheKeyIsStillAbsent() throws {
        for store in try stores() {
            let cache = try makeDirectory()
            try leaveBehind("fresh", key: "new.txt", base: .absent, in: cache + "/staging", store: store)
            try leaveBehind("mine", key: "taken.txt", base: .absent, in: cache + "/staging", store: store)
            try store.put("taken.txt", data: Data("someone else's".utf8))
            let journal = try StagingJournal(
                directory: cache + "/staging", store: store.description, context: [:],
                logger: logger)
            let report = journal.recover(store: store, recovery: recoveryFolder(cache, store))
            XCTAssertEqual(report.uploaded, ["new.txt"])
            XCTAssertEqual(report.kept, ["taken.txt"])
            XCTAssertEqual(try store.get("new.txt").body, Data("fresh".utf8))
            XCTAssertEqual(try store.get("taken.txt").body, Data("someone else's".utf8))
            XCTAssertEqual(try savedEntries(cache).first?["base"], "absent")
        }
    }

    func testAFileStillOpenForWritingIsKeptNotPublished() throws {
        let store = MemoryObjectStore()
        let cache = try makeDirectory()
        try leaveBehind(
            "half a fi", key: "open.txt", base: .absent, in: cache + "/staging", store: store,
            closed: false)
        let journal = try StagingJournal(
            directory: cache + "/staging", store: store.description, context: [:],
            logger: logger)
        XCTAssertEqual(journal.recover(store: store, recovery: recoveryFolder(cache, store)).kept, ["open.txt"])
        XCTAssertThrowsError(try store.head("open.txt"), "a file cut off mid-write is never published")
        XCTAssertEqual(try savedEntries(cache).first?["base"], "absent")
    }

    func testALiveMountsFilesAreLeftAlone() throws {
        let store = MemoryObjectStore()
        let cache = try makeDirectory()
        let staging = cache + "/staging"
        let live = try StagingJournal(directory: staging, store: store.description, context: [:], logger: logger)
        FileManager.default.createFile(atPath: staging + "/staged-LIVE01", contents: Data("busy".utf8))
        live.record(
            stagedPath: staging + "/staged-LIVE01", key: "busy.txt", base: .absent, contentType: nil,
            metadata: [:], closed: false)
        let other = try StagingJournal(directory: staging, store: store.description, context: [:], logger: logger)
        XCTAssertEqual(
            other.recover(store: store, recovery: recoveryFolder(cache, store)),
            StagingJournal.RecoveryReport())
        XCTAssertThrowsError(try store.head("busy.txt"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: staging + "/staged-LIVE01.journal"))
        live.clear(stagedPath: staging + "/staged-LIVE01")
        XCTAssertFalse(FileManager.default.fileExists(atPath: staging + "/staged-LIVE01.journal"))
    }

    func testAnUnreadableRecordDoesNotStopTheOthers() throws {
        let store = MemoryObjectStore()
        let cache = try makeDirectory()
        let staging = cache + "/staging"
        try leaveBehind("good", key: "a.txt", base: .absent, in: staging, store: store)
        FileManager.default.createFile(atPath: staging + "/staged-BAD001", contents: Data("x".utf8))
        FileManager.default.createFile(atPath: staging + "/staged-BAD001.journal", contents: Data("{not json".utf8))
        FileManager.default.createFile(atPath: staging + "/staged-BAD002.journal", contents: Data("{}".utf8))
        try leaveBehind("also good", key: "z.txt", base: .absent, in: staging, store: store)
        let journal = try StagingJournal(directory: staging, store: store.description, context: [:], logger: logger)
        let report = journal.recover(store: store, recovery: recoveryFolder(cache, store))
        XCTAssertEqual(report.uploaded.sorted(), ["a.txt", "z.txt"])
        XCTAssertEqual(report.unreadable, ["staged-BAD001.journal", "staged-BAD002.journal"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: staging + "/staged-BAD001"), "left for a human")
    }

    func testAFileOfAnotherStoreGoesToTheRecoveryFolderWithItsStore() throws {
        let store = MemoryObjectStore()
        let elsewhere = try LocalDirectoryObjectStore(root: try makeDirectory())
        let cache = try makeDirectory()
        try leaveBehind("other", key: "k", base: .absent, in: cache + "/staging", store: elsewhere)
        let journal = try StagingJournal(
            directory: cache + "/staging", store: store.description, context: [:],
            logger: logger)
        let report = journal.recover(store: store, recovery: recoveryFolder(cache, store))
        XCTAssertEqual(report.kept, ["k"])
        XCTAssertEqual(try savedEntries(cache).first?["store"], elsewhere.description)
        XCTAssertThrowsError(try elsewhere.head("k"), "another store is never written by this mount")
    }

    func testAMissingStagedFileOnlyDropsItsRecord() throws {
        let store = MemoryObjectStore()
        let cache = try makeDirectory()
        let staged = try leaveBehind("gone", key: "k", base: .absent, in: cache + "/staging", store: store)
        unlink(staged)
        let journal = try StagingJournal(
            directory: cache + "/staging", store: store.description, context: [:],
            logger: logger)
        XCTAssertEqual(journal.recover(store: store, recovery: recoveryFolder(cache, store)).missing, ["k"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: staged + ".journal"))
    }

    // MARK: Recovery folder episodes

    func testOneCopyPerFailingFileAndNoneAfterALaterSuccess() throws {
        let cache = try makeDirectory()
        let store = MemoryObjectStore()
        let folder = recoveryFolder(cache, store)
        let staged = cache + "/staged"
        for attempt in 1...5 {
            try Data("attempt \(attempt)".utf8).write(to: URL(fileURLWithPath: staged))
            XCTAssertNotNil(
                folder.save(
                    stagedPath: staged, key: "f", reason: "store down", base: .absent,
                    episode: "ino-7"))
        }
        var saved = try savedEntries(cache)
        XCTAssertEqual(saved.count, 1, "a later failure of the same file replaces its copy")
        XCTAssertEqual(try String(contentsOfFile: try XCTUnwrap(saved.first?["data"]), encoding: .utf8), "attempt 5")
        folder.save(stagedPath: staged, key: "g", reason: "conflict", base: .version("v1"))
        folder.resolved(episode: "ino-7")
        saved = try savedEntries(cache)
        XCTAssertEqual(saved.map { $0["key"] }, ["g"], "the resolved copy is gone; a conflict copy stays")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache + "/recovery").count, 2)
    }

    func testALinkIsNeverCopiedIntoTheFolder() throws {
        let cache = try makeDirectory()
        let folder = recoveryFolder(cache, MemoryObjectStore())
        try FileManager.default.createSymbolicLink(atPath: cache + "/staged", withDestinationPath: "/etc/passwd")
        XCTAssertNil(folder.save(stagedPath: cache + "/staged", key: "f", reason: "x"))
    }
}
