import Foundation
import Glibc
@testable import Records
import XCTest

/// A throwaway PostgreSQL server (Debian's `postgresql`) for one test class: `initdb` into a temp dir, then
/// `postgres` on a free loopback port with password (SCRAM) authentication. PostgreSQL refuses to run as root,
/// so as root both run as the `postgres` user (`runuser`). Skipped where PostgreSQL is not installed, except
/// under CI, where it must be.
final class PostgresServer: @unchecked Sendable {
    static let user = "bucketfs"
    static let password = "s3cret-pw"
    let port: Int
    private let directory: String
    private let process = Process()

    init() throws {
        guard let bin = Self.binDirectory() else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw Failure("PostgreSQL is not installed") }
            throw XCTSkip("PostgreSQL (initdb, postgres) is not installed: skipping its record backend")
        }
        directory = NSTemporaryDirectory() + "bucketfs-pg-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.password.write(toFile: directory + "/pw", atomically: true, encoding: .utf8)
        let owner = getuid() == 0 ? getpwnam("postgres")?.pointee : nil
        if getuid() == 0 {
            guard let owner else { throw Failure("running as root and there is no postgres user to run PostgreSQL") }
            for path in [directory, directory + "/pw"] { chown(path, owner.pw_uid, owner.pw_gid) }
        }
        port = RecordServer.freePort()
        try Self.runToEnd(bin + "/initdb", ["-D", directory + "/data", "-U", Self.user, "--pwfile=" + directory + "/pw",
                                           "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
        process.executableURL = URL(fileURLWithPath: getuid() == 0 ? "/usr/sbin/runuser" : bin + "/postgres")
        let server = ["-D", directory + "/data", "-p", String(port), "-k", directory, "-c", "listen_addresses=127.0.0.1",
                      "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                      "-c", "max_connections=200"]
        process.arguments = getuid() == 0 ? ["-u", "postgres", "--", bin + "/postgres"] + server : server
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while (try? admin("postgres").execute("SELECT 1")) == nil {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw Failure("postgres did not start on port \(port)")
            }
            usleep(100_000)
        }
    }

    /// `postgres://bucketfs:…@127.0.0.1:PORT/<database>`.
    func url(_ database: String, password: String = PostgresServer.password) -> String {
        "postgres://\(Self.user):\(password)@127.0.0.1:\(port)/\(database)"
    }

    /// A new, empty database; returns its URL.
    func createDatabase(_ name: String = "db_\(UUID().uuidString.prefix(8).lowercased())") throws -> String {
        _ = try admin("postgres").execute("CREATE DATABASE \(name)")
        return url(name)
    }

    /// A pool without the schema step, for setting up and inspecting databases.
    func admin(_ database: String) throws -> PostgresPool {
        PostgresPool(endpoint: try PostgresEndpoint(url: url(database)), size: 2)
    }

    func stop() {
        // SIGINT is PostgreSQL's fast shutdown; the postmaster's pid is the first line of postmaster.pid.
        if let text = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
           let pid = text.split(separator: "\n").first.flatMap({ pid_t($0) }) {
            kill(pid, SIGINT)
        }
        if process.isRunning { process.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func binDirectory() -> String? {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        let candidates = versions.compactMap(Int.init).sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") }
    }

    private static func runToEnd(_ program: String, _ arguments: [String]) throws {
        let tool = Process()
        tool.executableURL = URL(fileURLWithPath: getuid() == 0 ? "/usr/sbin/runuser" : program)
        tool.arguments = getuid() == 0 ? ["-u", "postgres", "--", program] + arguments : arguments
        let pipe = Pipe()
        tool.standardOutput = pipe
        tool.standardError = pipe
        try tool.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        tool.waitUntilExit()
        guard tool.terminationStatus == 0 else { throw Failure("\(program) failed: \(output)") }
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
