import Foundation
import Glibc

/// `redis-server` speaking TLS only, on a free loopback port, with throwaway certificates made by `openssl`:
/// a CA, a server certificate it signs for IP 127.0.0.1, a client certificate it signs, and a second CA that
/// signed nothing here (to test that a certificate from the wrong CA is refused).
public final class TLSRedisServer: ServerProcess, @unchecked Sendable {
    public let directory: URL
    public var caFile: String { directory.appendingPathComponent("ca.pem").path }
    public var otherCAFile: String { directory.appendingPathComponent("other-ca.pem").path }
    public var clientCertFile: String { directory.appendingPathComponent("client.pem").path }
    public var clientKeyFile: String { directory.appendingPathComponent("client.key").path }

    /// `clientCertificates`: the server asks for one (`tls-auth-clients yes`). `password`: `requirepass`.
    public init(clientCertificates: Bool = false, password: String? = nil) throws {
        let redis = try Loopback.require("redis-server", install: "apt-get install redis-server")
        let openssl = try Loopback.require("openssl", install: "apt-get install openssl")
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("bucketfs-tls-\(UUID().uuidString)")
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.makeCertificates(openssl: openssl, in: directory)
        let dir = directory.path
        do {
            try super.init(
                name: "redis-server (TLS)", executable: redis,
                arguments: { port in
                    [
                        "--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", dir, "--tls-cert-file", "\(dir)/server.pem",
                        "--tls-key-file", "\(dir)/server.key", "--tls-ca-cert-file", "\(dir)/ca.pem",
                        "--tls-auth-clients", clientCertificates ? "yes" : "no",
                    ] + (password == nil ? [] : ["-"])
                }, timeout: 30,
                prepare: { process in
                    process.currentDirectoryURL = directory
                    guard let password else { return }
                    // Through the config on stdin, not argv: the habit the daemon keeps too.
                    let input = Pipe()
                    process.standardInput = input
                    try input.fileHandleForWriting.write(contentsOf: Data("requirepass \(password)\n".utf8))
                    try input.fileHandleForWriting.close()
                })
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    public override func stop() {
        super.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// `rediss://[:password@]127.0.0.1:PORT/db?ca=…` trusting `ca` (default: the CA that signed the server).
    public func url(
        ca: String? = nil, password: String? = nil, db: Int = 0, clientCertificate: Bool = false,
        host: String = "127.0.0.1"
    ) -> String {
        var url = "rediss://\(password.map { ":\($0)@" } ?? "")\(host):\(port)/\(db)?ca=\(ca ?? caFile)"
        if clientCertificate { url += "&cert=\(clientCertFile)&key=\(clientKeyFile)" }
        return url
    }

    private static func makeCertificates(openssl: String, in directory: URL) throws {
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _ = FileManager.default.createFile(
            atPath: directory.appendingPathComponent("san.cnf").path,
            contents: Data("subjectAltName=IP:127.0.0.1\n".utf8))
        let steps: [[String]] = [
            ["req", "-x509"] + key + [
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=bucketfs test CA",
            ],
            ["req", "-x509"] + key + [
                "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2",
                "-subj", "/CN=another CA",
            ],
            ["req"] + key + ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
            [
                "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.pem", "-days", "2", "-extfile", "san.cnf",
            ],
            ["req"] + key + ["-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=bucketfs client"],
            [
                "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "client.pem", "-days", "2",
            ],
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
                throw ServerFailure("openssl \(step.prefix(2).joined(separator: " ")) failed")
            }
        }
        // Keys readable by their owner only, as a deployment would keep them.
        for name in ["ca.key", "other-ca.key", "server.key", "client.key"] {
            chmod(directory.appendingPathComponent(name).path, 0o600)
        }
    }
}
