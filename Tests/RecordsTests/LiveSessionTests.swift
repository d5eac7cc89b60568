import Foundation
import ObjectStore
import Records
import Synchronization
import TestSupport
import XCTest

/// The mount's session record over its life: created with the mount's metadata, counters refreshed from the
/// meter while it lives, ended with a status; a backend that refuses is reported, never fatal.
final class LiveSessionTests: XCTestCase {
    private let meter = Meter()

    private func makeSession(
        _ stores: RecordStores, id: String = LiveSession.newMountID(),
        warnings: Warnings? = nil
    ) throws -> LiveSession {
        try LiveSession(
            id: id, sessions: stores.sessions, userID: "1000", metadata: ["host": "h1"],
            counters: { [meter] in meter.value },
            warn: { message, _ in warnings?.add(message) })
    }

    func testLifecycle() throws {
        let stores = RecordStores(store: MemoryObjectStore(), mountPrefix: "p/")
        let session = try makeSession(stores)
        XCTAssertTrue(session.id.hasPrefix("mount-"))
        var record = try XCTUnwrap(stores.sessions.get(session.id))
        XCTAssertEqual(record.metadata["mount_id"], JSONValue.string(session.id))
        XCTAssertEqual(record.metadata["host"], JSONValue.string("h1"))
        XCTAssertEqual(record.userID, "1000")
        XCTAssertEqual(record.metrics, SessionRecord.Metrics())

        meter.value = SessionRecord.Metrics(requestCount: 7, totalProcessingTime: 0.5, errorCount: 1)
        session.update()
        record = try XCTUnwrap(stores.sessions.get(session.id))
        XCTAssertEqual(record.metrics.requestCount, 7)
        XCTAssertEqual(record.metrics.errorCount, 1)
        XCTAssertNil(record.endedAt)

        meter.value.requestCount = 9
        session.end(status: "unmounted")
        record = try XCTUnwrap(stores.sessions.get(session.id))
        XCTAssertEqual(record.status, "unmounted")
        XCTAssertNotNil(record.endedAt)
        XCTAssertEqual(record.metrics.requestCount, 9, "the last counters are written at the end")
    }

    /// The refresh thread writes the counters without being asked; polled with a deadline, then stopped by `end`.
    func testPeriodicRefresh() throws {
        let stores = RecordStores(store: MemoryObjectStore(), mountPrefix: "")
        let session = try makeSession(stores)
        meter.value.requestCount = 3
        session.refresh(every: 0.01)
        let deadline = Date().addingTimeInterval(10)
        while try stores.sessions.get(session.id)?.metrics.requestCount != 3, Date() < deadline {
            usleep(5_000)
        }
        XCTAssertEqual(try stores.sessions.get(session.id)?.metrics.requestCount, 3)
        session.end(status: "stopped")
        XCTAssertEqual(try stores.sessions.get(session.id)?.status, "stopped")
    }

    /// A refresh is one PUT conditional on the version this session wrote last: no GET before it. A record changed
    /// by someone else meanwhile makes it read once and keep their change.
    func testRefreshIsOneConditionalWriteAndKeepsOthersChanges() throws {
        let store = CountingStore(MemoryObjectStore())
        let stores = RecordStores(store: store, mountPrefix: "p/")
        let session = try makeSession(stores)
        store.reset()
        meter.value.requestCount = 4
        session.update()
        meter.value.requestCount = 5
        session.update()
        XCTAssertEqual(store.count(.put), 2)
        XCTAssertEqual(store.count(.get) + store.count(.head), 0, "no read before each write")
        XCTAssertEqual(try stores.sessions.get(session.id)?.metrics.requestCount, 5)

        try stores.sessions.update(session.id, metadata: ["note": .string("by hand")])
        meter.value.requestCount = 6
        session.update()
        var record = try XCTUnwrap(stores.sessions.get(session.id))
        XCTAssertEqual(record.metrics.requestCount, 6)
        XCTAssertEqual(record.metadata["note"], JSONValue.string("by hand"), "the other writer's change is kept")
        store.reset()
        session.end(status: "unmounted")
        XCTAssertEqual(store.total, 1, "the end is one write too, after the re-read")
        record = try XCTUnwrap(stores.sessions.get(session.id))
        XCTAssertEqual(record.status, "unmounted")
        XCTAssertEqual(record.metadata["note"], JSONValue.string("by hand"))
    }

    func testTakenIDIsRefusedAndFailuresAreReported() throws {
        let backend = SwitchableBackend(ObjectStoreRecordBackend(store: MemoryObjectStore(), prefix: ".bucketfs/"))
        let stores = RecordStores(backend: backend)
        let warnings = Warnings()
        let session = try makeSession(stores, id: "mount-abc", warnings: warnings)
        XCTAssertThrowsError(try makeSession(stores, id: "mount-abc"), "an id is taken once")
        backend.failing.store(true, ordering: .relaxed)
        XCTAssertThrowsError(try makeSession(stores), "a backend that refuses the record fails the start")
        session.update()
        session.end(status: "unmounted")
        XCTAssertEqual(
            warnings.all,
            [
                "cannot refresh the mount's session record",
                "cannot end the mount's session record",
            ])
        backend.failing.store(false, ordering: .relaxed)
        XCTAssertNil(try stores.sessions.get("mount-abc")?.endedAt, "nothing was written while it failed")
    }
}

/// Counters the test sets.
private final class Meter: @unchecked Sendable {
    private let lock = NSLock()
    private var metrics = SessionRecord.Metrics()

    var value: SessionRecord.Metrics {
        get { lock.withLock { metrics } }
        set { lock.withLock { metrics = newValue } }
    }
}

/// The warnings a session reported.
private final class Warnings: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []

    func add(_ message: String) { lock.withLock { messages.append(message) } }
    var all: [String] { lock.withLock { messages } }
}

/// A record backend that fails every call while `failing` is set.
private final class SwitchableBackend: RecordBackend {
    let base: any RecordBackend
    let failing = Atomic(false)

    init(_ base: any RecordBackend) { self.base = base }

    var description: String { base.description }

    private func check() throws(RecordError) {
        if failing.load(ordering: .relaxed) { throw .unavailable("switched off") }
    }

    func read(_ key: String) throws(RecordError) -> StoredRecord? {
        try check()
        return try base.read(key)
    }
    func create(_ key: String, data: Data) throws(RecordError) -> String? {
        try check()
        return try base.create(key, data: data)
    }
    func replace(_ key: String, data: Data, ifVersion version: String) throws(RecordError) -> String? {
        try check()
        return try base.replace(key, data: data, ifVersion: version)
    }
    func write(_ key: String, data: Data) throws(RecordError) -> String {
        try check()
        return try base.write(key, data: data)
    }
    func remove(_ key: String) throws(RecordError) -> Bool {
        try check()
        return try base.remove(key)
    }
    func keys(under prefix: String) throws(RecordError) -> [String] {
        try check()
        return try base.keys(under: prefix)
    }
    func ping() throws(RecordError) { try check() }
}
