import Foundation
import Glibc
@testable import ObjectStore
import XCTest

/// `redis-server` or `moto_server` on a free loopback port for one test class; stopped by `stop()`.
final class RecordServer: @unchecked Sendable {
    let port: Int
    private let process = Process()

    static func redis() throws -> RecordServer {
        try RecordServer(program: "redis-server") { ["--port", String($0), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"] }
    }

    static func moto() throws -> RecordServer {
        try RecordServer(program: "moto_server") { ["-H", "127.0.0.1", "-p", String($0)] }
    }

    private init(program: String, arguments: (Int) -> [String]) throws {
        let searchPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        guard let executable = searchPath.split(separator: ":").map({ "\($0)/\(program)" })
            .first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("\(program) is not installed: skipping its record backend")
        }
        port = Self.freePort()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments(port)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while !accepting() {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw XCTSkip("\(program) did not start on port \(port)")
            }
            usleep(50_000)
        }
    }

    /// Bind to port 0 to learn a free port, then hand it to the server.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.loopback(0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) + getsockname(fd, $0, &length) }
        }
        close(fd)
        return Int(UInt16(bigEndian: address.sin_port))
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// An S3 store on this moto server, with `bucket` created.
    func s3Store(bucket: String) throws -> S3ObjectStore {
        let endpoint = "http://127.0.0.1:\(port)"
        let signer = SigV4Signer(accessKeyID: "testing", secretAccessKey: "testing", sessionToken: nil,
                                 region: "us-east-1", service: "s3")
        var headers = [("host", "127.0.0.1:\(port)")]
        headers += signer.signingHeaders(method: "PUT", path: "/\(bucket)", query: [], headers: headers,
                                         payloadHash: SigV4Signer.emptyPayloadHash, date: Date())
        let response = try HTTPClient(options: HTTPClient.Options())
            .perform(HTTPRequest(method: "PUT", url: "\(endpoint)/\(bucket)", headers: headers))
        guard response.status == 200 else { throw ObjectStoreError.other("creating bucket \(bucket): HTTP \(response.status)") }
        return try S3ObjectStore(configuration: S3Configuration(bucket: bucket, region: "us-east-1", endpointURL: endpoint,
                                                                accessKeyID: "testing", secretAccessKey: "testing",
                                                                environment: [:]))
    }

    private func accepting() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = Self.loopback(port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    private static func loopback(_ port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
