import Foundation
import ObjectStore
import Records
import RedisClient
import TestSupport
import XCTest

/// The shared suite, once per backend: each subclass says how to reach its backend.
class RecordsBackendTestCase: XCTestCase {
    var suite: RecordsSuite!

    override func setUpWithError() throws {
        if type(of: self) == RecordsBackendTestCase.self { throw XCTSkip("abstract") }
    }

    func testSessionLifecycle() throws { try suite.sessionLifecycle() }
    func testConcurrentIncrementsLoseNothing() throws { try suite.concurrentIncrements() }
    func testCleanupExpiredSessions() throws { try suite.cleanupExpiredSessions() }
    func testConversations() throws { try suite.conversations() }
    func testCheckpoints() throws { try suite.checkpoints() }
    func testTaskContexts() throws { try suite.taskContexts() }
    func testUploadStates() throws { try suite.uploadStates() }
    func testThreadBuffers() throws { try suite.threadBuffers() }
    func testRegistry() throws { try suite.registry() }
    func testEvents() throws { try suite.events() }
    func testMigrationRoundTrip() throws {
        try suite.migrationRoundTrip(
            via: ObjectStoreRecordBackend(store: MemoryObjectStore(), prefix: "elsewhere/.bucketfs/"))
    }
}

final class MemoryRecordsTests: RecordsBackendTestCase {
    override func setUpWithError() throws {
        let store = MemoryObjectStore()
        suite = RecordsSuite { ObjectStoreRecordBackend(store: store, prefix: "mount/\($0).bucketfs/") }
    }

    /// Through a counting store: an uncontended update is one GET and one conditional PUT.
    func testUpdateCostsOneReadAndOneWrite() throws {
        let store = CountingStore(MemoryObjectStore())
        let stores = RecordStores(store: store, mountPrefix: "p/")
        try stores.sessions.create(id: "s", userID: "u")
        store.reset()
        try stores.sessions.update("s", incrementRequests: 1)
        XCTAssertEqual(store.count(.get), 1)
        XCTAssertEqual(store.count(.put), 1)
        XCTAssertEqual(store.total, 2)
        XCTAssertNotNil(try store.head("p/.bucketfs/sessions/s.json"))
    }
}

final class FileRecordsTests: RecordsBackendTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "records-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let store = try LocalDirectoryObjectStore(root: directory)
        suite = RecordsSuite { ObjectStoreRecordBackend(store: store, prefix: "\($0).bucketfs/") }
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
        super.tearDown()
    }

    /// Records are plain files a person can read.
    func testRecordsAreFiles() throws {
        let stores = RecordStores(store: try LocalDirectoryObjectStore(root: directory), mountPrefix: "")
        try stores.sessions.create(id: "visible", userID: "u")
        let text = try String(contentsOfFile: directory + "/.bucketfs/sessions/visible.json", encoding: .utf8)
        XCTAssertTrue(text.contains("\"session_id\" : \"visible\""), text)
    }
}

final class S3RecordsTests: RecordsBackendTestCase {
    private static let moto = SharedServer<MotoServer> {
        let server = try MotoServer()
        try server.createBucket("records")
        return server
    }

    override class func tearDown() {
        moto.stop()
        super.tearDown()
    }

    private var store: S3ObjectStore!

    override func setUpWithError() throws {
        let store = try Self.moto.get().makeStore(bucket: "records")
        self.store = store
        suite = RecordsSuite(racesAreAtomic: false) {
            ObjectStoreRecordBackend(store: store, prefix: "team/\($0).bucketfs/")
        }
    }

    /// moto checks a PUT's If-Match (and If-None-Match) and then writes, in two unlocked steps: two racing
    /// conditional writes can both win there (797–799 of 800 increments; a lost message or event under load),
    /// which says nothing of bucketfs. So its writers take turns (`racesAreAtomic: false`); the races run on
    /// SeaweedFS (`SeaweedRecordsTests`, a real S3 server) and on every other backend.
    override func testConcurrentIncrementsLoseNothing() throws {
        throw XCTSkip("moto's conditional PUT is not atomic under concurrency")
    }

    /// memory → file → s3: every record arrives byte for byte.
    func testMigrationMemoryFileS3() throws {
        let memory = RecordStores(store: MemoryObjectStore(), mountPrefix: "")
        try memory.sessions.create(id: "mig", userID: "u", metadata: ["x": 1.5])
        try memory.checkpoints.store(thread: "th", id: "c1", data: ["deep": ["a": [1, 2, nil]]])
        try memory.uploads.save(
            UploadStateRecord(id: "up", key: "k", uploadID: "U", parts: [.init(partNumber: 1, etag: "e")]))
        let directory = NSTemporaryDirectory() + "records-mig-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let file = ObjectStoreRecordBackend(store: try LocalDirectoryObjectStore(root: directory), prefix: ".bucketfs/")
        let s3 = ObjectStoreRecordBackend(store: store, prefix: "mig-\(UUID().uuidString.prefix(6))/.bucketfs/")
        try RecordMigration(from: memory.backend, to: file).run()
        try RecordMigration(from: file, to: s3).run()
        XCTAssertEqual(try suite.snapshot(s3), try suite.snapshot(memory.backend))
        XCTAssertEqual(try suite.snapshot(s3).count, 3)
    }
}

/// The whole suite, races included, on a real S3 server whose conditional writes are atomic.
final class SeaweedRecordsTests: RecordsBackendTestCase {
    private static let server = SharedServer { try SeaweedServer() }

    override class func tearDown() {
        server.stop()
        super.tearDown()
    }

    override func setUpWithError() throws {
        let server = try Self.server.get()
        let bucket = "records-\(UUID().uuidString.prefix(8).lowercased())"
        try server.createBucket(bucket)
        let store = try server.makeStore(bucket: bucket)
        suite = RecordsSuite { ObjectStoreRecordBackend(store: store, prefix: "team/\($0).bucketfs/") }
    }
}

final class RedisRecordsTests: RecordsBackendTestCase {
    private static let redis = SharedServer { try RedisServer() }

    override class func tearDown() {
        redis.stop()
        super.tearDown()
    }

    override func setUpWithError() throws {
        let port = try Self.redis.get().port
        suite = RecordsSuite { RedisRecordBackend(endpoint: RedisEndpoint(port: port), namespace: "test:\($0)") }
    }

    /// A URL selects the Redis backend; an unreachable one is reported as unavailable.
    func testBackendFromURL() throws {
        let port = try Self.redis.get().port
        let backend = try RecordStores.backend(url: "redis://127.0.0.1:\(port)/0")
        XCTAssertTrue(backend is RedisRecordBackend)
        try backend.ping()
        let dead = try RecordStores.backend(url: "redis://127.0.0.1:1/0")
        XCTAssertThrowsError(try dead.ping()) { XCTAssertTrue("\($0)".contains("unavailable"), "\($0)") }
    }
}

/// Records (events included) on GCS, through fake-gcs-server: create is `ifGenerationMatch=0`, update a write
/// conditional on the generation read.
final class GCSRecordsTests: RecordsBackendTestCase {
    private static let server = SharedServer { try FakeGCSServer() }

    override class func tearDown() {
        server.stop()
        super.tearDown()
    }

    private var bucket = ""

    override func setUpWithError() throws {
        let server = try Self.server.get()
        bucket = "records-\(UUID().uuidString.prefix(8).lowercased())"
        try server.createBucket(bucket)
        let store = try server.makeStore(bucket: bucket)
        suite = RecordsSuite { ObjectStoreRecordBackend(store: store, prefix: "team/\($0).bucketfs/") }
    }

    /// An event is an object any GCS client reads, at the documented key, as the JSON the library wrote.
    func testEventIsAnObjectOfTheBucket() throws {
        let server = try Self.server.get()
        let stores = RecordStores(
            backend: ObjectStoreRecordBackend(
                store: try server.makeStore(bucket: bucket),
                prefix: "team/.bucketfs/"))
        try stores.events.append(stream: "mount-1", type: "mounted", data: ["host": "h"])
        let raw = try server.request(
            "GET", "/storage/v1/b/\(bucket)/o/team%2F.bucketfs%2Fevents%2Fmount-1%2F0000000000.json?alt=media")
        XCTAssertEqual(raw.status, 200)
        XCTAssertEqual(raw.body, try XCTUnwrap(try stores.backend.read("events/mount-1/0000000000.json")).data)
        XCTAssertEqual(try stores.events.read(stream: "mount-1").map(\.type), ["mounted"])
    }
}
