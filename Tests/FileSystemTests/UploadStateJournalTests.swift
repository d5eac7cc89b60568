import Foundation
import Glibc
import Logging
import ObjectStore
import Records
import XCTest

@testable import FileSystem

/// Recovery of interrupted multipart uploads from records read from the store: nothing in a record is trusted as
/// a local path, one bad record does not stop the others, and a daemon that is pid 1 in a container recovers the
/// records of the run before it.
final class UploadStateJournalTests: XCTestCase {
    private var paths: [String] = []
    private let logger = Logger(label: "test")

    override func tearDown() {
        for path in paths { try? FileManager.default.removeItem(atPath: path) }
        super.tearDown()
    }

    private func makeDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("bucketfs-upj-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        paths.append(path)
        return path
    }

    private func record(
        _ id: String, key: String, uploadID: String, staged: String, pid: Int64,
        mountID: String = "an-earlier-run"
    ) -> UploadStateRecord {
        UploadStateRecord(
            id: id, key: key, uploadID: uploadID, stagedPath: staged,
            metadata: [
                "host": .string(UploadStateJournal.host), "pid": .integer(pid), "mount_id": .string(mountID),
                "boot_id": .string(UploadStateJournal.bootID),
            ])
    }

    func testForgedBadAndEarlierRunRecords() throws {
        let store = MemoryObjectStore()
        let records = RecordStores(store: store, mountPrefix: "")
        let cache = try makeDirectory()
        let staging = cache + "/staging"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        let outside = try makeDirectory()
        let victim = outside + "/victim"
        try Data("precious".utf8).write(to: URL(fileURLWithPath: victim))
        try FileManager.default.createSymbolicLink(atPath: staging + "/staged-LINK01", withDestinationPath: victim)
        let dead = Int64(Int32.max)
        let forged = [
            victim, "\(staging)/../\(URL(fileURLWithPath: outside).lastPathComponent)/victim",
            staging + "/staged-LINK01", "relative/staged-ABCDEF",
        ]
        for (n, path) in forged.enumerated() {
            try records.uploads.save(record("forged-\(n)", key: "k\(n)", uploadID: "u\(n)", staged: path, pid: dead))
        }
        _ = try records.backend.write("uploads/corrupt.json", data: Data("{ not a record".utf8))
        // The run before ours had the same pid (pid 1 in a container): its upload is an orphan.
        let upload = try store.createMultipartUpload("big", options: PutOptions())
        try Data("half written".utf8).write(to: URL(fileURLWithPath: staging + "/staged-EARLY1"))
        try records.uploads.save(
            record(
                "earlier", key: "big", uploadID: upload, staged: staging + "/staged-EARLY1",
                pid: Int64(getpid())))
        let journal = UploadStateJournal(
            uploads: records.uploads, logger: logger, stagingDirectory: staging,
            mountID: "this-run")
        try records.uploads.save(
            record(
                "mine", key: "live", uploadID: "u-live", staged: staging + "/staged-MINE01",
                pid: Int64(getpid()), mountID: "this-run"))

        let recovery = RecoveryFolder(
            directory: cache + "/recovery", store: store.description, context: [:],
            logger: logger)
        XCTAssertEqual(journal.recoverInterrupted(store: store, recovery: recovery), 1)

        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "precious", "never touched")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: staging + "/staged-LINK01"), victim)
        XCTAssertFalse(FileManager.default.fileExists(atPath: staging + "/staged-EARLY1"), "moved to recovery")
        let saved = try FileManager.default.contentsOfDirectory(atPath: cache + "/recovery")
            .filter { $0.hasSuffix(".data") }
        XCTAssertEqual(saved.count, 1)
        XCTAssertEqual(try String(contentsOfFile: "\(cache)/recovery/\(saved[0])", encoding: .utf8), "half written")
        XCTAssertEqual(try store.listMultipartUploads(prefix: ""), [], "the earlier run's upload is aborted")
        let left = Set(try records.uploads.listActiveTolerating().states.map(\.id))
        XCTAssertEqual(left, Set(["forged-0", "forged-1", "forged-2", "forged-3", "mine"]))
    }

    func testOrphanRules() throws {
        let journal = UploadStateJournal(
            uploads: RecordStores(store: MemoryObjectStore(), mountPrefix: "").uploads,
            logger: logger, stagingDirectory: "/nonexistent", mountID: "this-run")
        let me = Int64(getpid())
        XCTAssertFalse(journal.isOrphan(record("a", key: "k", uploadID: "u", staged: "", pid: me, mountID: "this-run")))
        XCTAssertTrue(journal.isOrphan(record("b", key: "k", uploadID: "u", staged: "", pid: me)))
        XCTAssertTrue(journal.isOrphan(record("c", key: "k", uploadID: "u", staged: "", pid: Int64(Int32.max))))
        var rebooted = record("d", key: "k", uploadID: "u", staged: "", pid: me, mountID: "this-run")
        rebooted.metadata["boot_id"] = .string("another-boot")
        XCTAssertEqual(journal.isOrphan(rebooted), !UploadStateJournal.bootID.isEmpty)
        var elsewhere = record("e", key: "k", uploadID: "u", staged: "", pid: Int64(Int32.max))
        elsewhere.metadata["host"] = .string("another-host")
        XCTAssertFalse(journal.isOrphan(elsewhere))
    }

    /// Whether a pid is a live daemon is the caller's to say (the CLI checks that it is a bucketfs): a record of a
    /// pid said alive is left alone, the same record of a pid said gone is recovered, with its event.
    func testLivenessIsInjectedAndRecoveryIsReported() throws {
        let store = MemoryObjectStore()
        let records = RecordStores(store: store, mountPrefix: "")
        let cache = try makeDirectory()
        let staging = cache + "/staging"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        let upload = try store.createMultipartUpload("big", options: PutOptions())
        try Data("partial".utf8).write(to: URL(fileURLWithPath: staging + "/staged-OTHER1"))
        try records.uploads.save(
            record(
                "other", key: "big", uploadID: upload, staged: staging + "/staged-OTHER1",
                pid: 4242))
        let recovery = RecoveryFolder(
            directory: cache + "/recovery", store: store.description, context: [:],
            logger: logger)
        let events = CollectedEvents()
        let alive = UploadStateJournal(
            uploads: records.uploads, logger: logger, stagingDirectory: staging,
            mountID: "this-run", events: events, isAlive: { $0 == 4242 })
        XCTAssertEqual(alive.recoverInterrupted(store: store, recovery: recovery), 0, "pid 4242 said alive")
        XCTAssertEqual(try store.listMultipartUploads(prefix: "").count, 1)
        XCTAssertTrue(events.all.isEmpty)

        let gone = UploadStateJournal(
            uploads: records.uploads, logger: logger, stagingDirectory: staging,
            mountID: "this-run", events: events, isAlive: { _ in false })
        XCTAssertEqual(gone.recoverInterrupted(store: store, recovery: recovery), 1)
        XCTAssertEqual(try store.listMultipartUploads(prefix: ""), [])
        XCTAssertEqual(try records.uploads.listActiveTolerating().states.map(\.id), [])
        let emitted = events.all
        XCTAssertEqual(emitted.map(\.type), [MountEventType.uploadRecovered])
        XCTAssertEqual(emitted.first?.data["key"], .string("big"))
        XCTAssertEqual(emitted.first?.data["action"], .string("aborted"))
        guard case .string(let path)? = emitted.first?.data["recovery_path"] else {
            return XCTFail("no recovery path in \(emitted)")
        }
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "partial")
    }

    func testDefaultLivenessCheck() {
        XCTAssertTrue(UploadStateJournal.processExists(getpid()))
        XCTAssertFalse(UploadStateJournal.processExists(pid_t(Int32.max)))
    }
}

/// An `EventSink` that keeps what it is given.
private final class CollectedEvents: EventSink, @unchecked Sendable {
    private let lock = NSLock()
    private var events: [(type: String, data: [String: JSONValue])] = []

    func emit(_ type: String, _ data: [String: JSONValue]) {
        lock.withLock { events.append((type, data)) }
    }

    var all: [(type: String, data: [String: JSONValue])] { lock.withLock { events } }
}
