import Foundation
import Glibc
import TestSupport
import XCTest

@testable import Records

/// A throwaway PostgreSQL server (Debian's `postgresql`) for one test class: `initdb` into a temp dir, then
/// `postgres` on a free loopback port with password (SCRAM) authentication. PostgreSQL refuses to run as root,
/// so as root both run as the `postgres` user (`runuser`). Skipped where PostgreSQL is not installed, except
/// under CI, where it must be.
final class PostgresServer: ServerProcess, @unchecked Sendable {
    static let user = "bucketfs"
    static let password = "s3cret-pw"
    private let directory: String

    init() throws {
        guard let bin = Self.binDirectory() else {
            throw Loopback.missing("PostgreSQL (initdb, postgres) is not installed: skipping its record backend")
        }
        let directory = NSTemporaryDirectory() + "bucketfs-pg-\(UUID().uuidString.prefix(8))"
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.password.write(toFile: directory + "/pw", atomically: true, encoding: .utf8)
        let asRoot = getuid() == 0
        if asRoot {
            guard let owner = getpwnam("postgres")?.pointee else {
                throw ServerFailure("running as root and there is no postgres user to run PostgreSQL")
            }
            for path in [directory, directory + "/pw"] { chown(path, owner.pw_uid, owner.pw_gid) }
        }
        try Self.runToEnd(
            bin + "/initdb",
            [
                "-D", directory + "/data", "-U", Self.user, "--pwfile=" + directory + "/pw",
                "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
            ])
        let executable = asRoot ? "/usr/sbin/runuser" : bin + "/postgres"
        try super.init(
            name: "postgres", executable: executable,
            arguments: { port in
                let server = [
                    "-D", directory + "/data", "-p", String(port), "-k", directory,
                    "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=200",
                ]
                return asRoot ? ["-u", "postgres", "--", bin + "/postgres"] + server : server
            }, ready: { port in (try? Self.pool(port: port, database: "postgres").execute("SELECT 1")) != nil })
    }

    /// `postgres://bucketfs:…@127.0.0.1:PORT/<database>`.
    func url(_ database: String, password: String = PostgresServer.password) -> String {
        Self.url(database, password: password, port: port)
    }

    private static func url(_ database: String, password: String = PostgresServer.password, port: Int) -> String {
        "postgres://\(user):\(password)@127.0.0.1:\(port)/\(database)"
    }

    private static func pool(port: Int, database: String) throws -> PostgresPool {
        PostgresPool(endpoint: try PostgresEndpoint(url: url(database, port: port)), size: 2)
    }

    /// A new, empty database; returns its URL.
    func createDatabase(_ name: String = "db_\(UUID().uuidString.prefix(8).lowercased())") throws -> String {
        _ = try admin("postgres").execute("CREATE DATABASE \(name)")
        return url(name)
    }

    /// A pool without the schema step, for setting up and inspecting databases.
    func admin(_ database: String) throws -> PostgresPool {
        try Self.pool(port: port, database: database)
    }

    override func stop() {
        // SIGINT is PostgreSQL's fast shutdown; the postmaster's pid is the first line of postmaster.pid.
        if let text = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
            let pid = text.split(separator: "\n").first.flatMap({ pid_t($0) })
        {
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
        guard tool.terminationStatus == 0 else { throw ServerFailure("\(program) failed: \(output)") }
    }
}
