import Foundation
import Glibc

/// `redis-server` speaking TLS only, on a free loopback port, with throwaway certificates made by `openssl`:
/// a CA, a server certificate it signs for IP 127.0.0.1, a client certificate it signs, and a second CA that
/// signed nothing here (to test that a certificate from the wrong CA is refused).
public final class TLSRedisServer: @unchecked Sendable {
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    public let port: Int
    public let directory: URL
    public var caFile: String { directory.appendingPathComponent("ca.pem").path }
    public var otherCAFile: String { directory.appendingPathComponent("other-ca.pem").path }
    public var clientCertFile: String { directory.appendingPathComponent("client.pem").path }
    public var clientKeyFile: String { directory.appendingPathComponent("client.key").path }
    private let process = Process()

    /// `clientCertificates`: the server asks for one (`tls-auth-clients yes`). `password`: `requirepass`.
    public init(clientCertificates: Bool = false, password: String? = nil) throws {
        guard let redis = Self.find("redis-server"), let openssl = Self.find("openssl") else {
            throw Unavailable(description: "redis-server or openssl is not installed")
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("bucketfs-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.makeCertificates(openssl: openssl, in: directory)
        port = try Self.freePort()
        process.executableURL = URL(fileURLWithPath: redis)
        process.currentDirectoryURL = directory
        let dir = directory.path
        var arguments = ["--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", dir, "--tls-cert-file", "\(dir)/server.pem",
                         "--tls-key-file", "\(dir)/server.key", "--tls-ca-cert-file", "\(dir)/ca.pem",
                         "--tls-auth-clients", clientCertificates ? "yes" : "no"]
        if let password {
            // Through the config on stdin, not argv: the habit the daemon keeps too.
            arguments.append("-")
            let input = Pipe()
            process.standardInput = input
            try input.fileHandleForWriting.write(contentsOf: Data("requirepass \(password)\n".utf8))
            try input.fileHandleForWriting.close()
        }
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while !Self.accepts(port: port) {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw Unavailable(description: "redis-server did not start with TLS on port \(port)")
            }
            usleep(50_000)
        }
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// `rediss://[:password@]127.0.0.1:PORT/db?ca=…` trusting `ca` (default: the CA that signed the server).
    public func url(ca: String? = nil, password: String? = nil, db: Int = 0, clientCertificate: Bool = false,
                    host: String = "127.0.0.1") -> String {
        var url = "rediss://\(password.map { ":\($0)@" } ?? "")\(host):\(port)/\(db)?ca=\(ca ?? caFile)"
        if clientCertificate { url += "&cert=\(clientCertFile)&key=\(clientKeyFile)" }
        return url
    }

    private static func makeCertificates(openssl: String, in directory: URL) throws {
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent("san.cnf").path,
                                         contents: Data("subjectAltName=IP:127.0.0.1\n".utf8))
        let steps: [[String]] = [
            ["req", "-x509"] + key + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                                      "-subj", "/CN=bucketfs test CA"],
            ["req", "-x509"] + key + ["-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2",
                                      "-subj", "/CN=another CA"],
            ["req"] + key + ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.cnf"],
            ["req"] + key + ["-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=bucketfs client"],
            ["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.pem", "-days", "2"],
        ]
        for step in steps {
            let run = Process()
            run.executableURL = URL(fileURLWithPath: openssl)
            run.arguments = step
            run.currentDirectoryURL = directory
            run.standardOutput = FileHandle.nullDevice
            run.standardError = FileHandle.nullDevice
            try run.run()
            run.waitUntilExit()
            guard run.terminationStatus == 0 else {
                throw Unavailable(description: "openssl \(step.prefix(2).joined(separator: " ")) failed")
            }
        }
        // Keys readable by their owner only, as a deployment would keep them.
        for name in ["ca.key", "other-ca.key", "server.key", "client.key"] {
            chmod(directory.appendingPathComponent(name).path, 0o600)
        }
    }

    private static func find(_ program: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(program)" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Unavailable(description: "socket: errno \(errno)") }
        defer { close(fd) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw Unavailable(description: "bind: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
