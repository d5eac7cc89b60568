import Foundation
import Glibc
@testable import ObjectStore
import XCTest

/// Helpers to run throwaway servers on free loopback ports.
enum Loopback {
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw XCTSkip("socket: errno \(errno)") }
        defer { close(fd) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw XCTSkip("bind: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// The full path of `program` on `PATH`, or `nil`.
    static func find(_ program: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}

/// A server subprocess listening on a free loopback port, stopped by `stop()`.
class ServerProcess: @unchecked Sendable {
    let port: Int
    let process = Process()

    init(name: String, executable: String, arguments: (Int) -> [String]) throws {
        port = try Loopback.freePort()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments(port)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while !Loopback.accepts(port: port) {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw XCTSkip("\(name) did not start on port \(port)")
            }
            usleep(50_000)
        }
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}

/// `redis-server` without persistence.
final class RedisServer: ServerProcess, @unchecked Sendable {
    init() throws {
        guard let executable = Loopback.find("redis-server") else {
            throw XCTSkip("redis-server is not installed (apt-get install redis-server): skipping the redis strategy")
        }
        try super.init(name: "redis-server", executable: executable) { port in
            ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        }
    }
}

/// `moto_server` (S3 on loopback; PyPI `moto[server]`).
final class MotoServer: ServerProcess, @unchecked Sendable {
    var endpoint: String { "http://127.0.0.1:\(port)" }

    init() throws {
        guard let executable = Loopback.find("moto_server") else {
            throw XCTSkip("moto_server is not installed (pip install 'moto[server]'): skipping the object strategy on S3")
        }
        try super.init(name: "moto_server", executable: executable) { port in ["-H", "127.0.0.1", "-p", String(port)] }
    }

    /// moto wants signed requests, even to create a bucket.
    func createBucket(_ name: String) throws {
        let host = "127.0.0.1:\(port)"
        let signer = SigV4Signer(accessKeyID: "testing", secretAccessKey: "testing", sessionToken: nil,
                                 region: "us-east-1", service: "s3")
        var headers = [("host", host)]
        headers += signer.signingHeaders(method: "PUT", path: "/\(name)", query: [], headers: headers,
                                         payloadHash: SigV4Signer.emptyPayloadHash, date: Date())
        let response = try HTTPClient(options: HTTPClient.Options())
            .perform(HTTPRequest(method: "PUT", url: endpoint + "/\(name)", headers: headers))
        guard response.status == 200 else { throw ObjectStoreError.other("creating bucket \(name): HTTP \(response.status)") }
    }

    func makeStore(bucket: String) throws -> S3ObjectStore {
        try S3ObjectStore(configuration: S3Configuration(bucket: bucket, region: "us-east-1", endpointURL: endpoint,
                                                         accessKeyID: "testing", secretAccessKey: "testing",
                                                         environment: [:]))
    }
}
