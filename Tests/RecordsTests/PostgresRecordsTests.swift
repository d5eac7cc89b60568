import Foundation
import TestSupport
import XCTest

@testable import Records

/// The shared suite on a real PostgreSQL server, plus what only PostgreSQL has: the schema and its migrations,
/// connection errors as one line, reconnection.
final class PostgresRecordsTests: RecordsBackendTestCase {
    /// With a database for the shared suite.
    private static let server = SharedServer<PostgresServer> {
        let server = try PostgresServer()
        _ = try server.createDatabase("suite")
        return server
    }

    override class func tearDown() {
        server.stop()
        super.tearDown()
    }

    private var server: PostgresServer!

    override func setUpWithError() throws {
        server = try Self.server.get()
        let endpoint = try PostgresEndpoint(url: server.url("suite"))
        suite = RecordsSuite { PostgresRecordBackend(endpoint: endpoint, namespace: "test:\($0)") }
    }

    /// A URL selects the backend; a first connection creates the schema with its version table.
    func testBackendFromURLCreatesTheSchema() throws {
        let url = try server.createDatabase()
        let backend = try XCTUnwrap(try RecordStores.backend(url: url) as? PostgresRecordBackend)
        try backend.ping()
        XCTAssertEqual(try backend.schemaVersion(), PostgresSchema.latest)
        let applied = try server.admin(url.components(separatedBy: "/").last!)
            .execute("SELECT version, description FROM bucketfs_schema ORDER BY version")
        XCTAssertEqual(applied.rows.map { $0[0] }, PostgresSchema.migrations.map { String($0.version) })
        XCTAssertEqual(
            backend.description, "postgres://bucketfs@127.0.0.1:\(server.port)/\(url.split(separator: "/").last!)")
        XCTAssertFalse(backend.description.contains(PostgresServer.password))
    }

    /// A database an older version left at schema 1 is migrated to the latest, its records kept; one a newer
    /// version left is refused with one line.
    func testSchemaIsMigratedFromAnOlderVersionAndANewerOneIsRefused() throws {
        let name = "old_\(UUID().uuidString.prefix(6).lowercased())"
        _ = try server.createDatabase(name)
        let admin = try server.admin(name)
        _ = try admin.execute(
            "CREATE TABLE bucketfs_schema (version integer PRIMARY KEY, description text NOT NULL, "
                + "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for statement in PostgresSchema.migrations[0].statements { _ = try admin.execute(statement) }
        _ = try admin.execute("INSERT INTO bucketfs_schema (version, description) VALUES (1, 'records table')")
        _ = try admin.execute(
            "INSERT INTO bucketfs_records (key, data, version) VALUES ('tasks/s.json', $1, 'v0')",
            [#"{"context":1,"schema_version":1,"session_id":"s","updated_at":"2025-01-01T00:00:00.000Z"}"#])

        let stores = RecordStores(backend: try PostgresRecordBackend(url: server.url(name)))
        XCTAssertEqual(try stores.tasks.get(session: "s"), 1)
        XCTAssertEqual(try (stores.backend as! PostgresRecordBackend).schemaVersion(), PostgresSchema.latest)
        let viaView = try admin.execute(
            "SELECT record->>'session_id' FROM bucketfs_records_json WHERE key = 'tasks/s.json'")
        XCTAssertEqual(viaView.rows.first?.first, "s")

        _ = try admin.execute("INSERT INTO bucketfs_schema (version, description) VALUES (99, 'from the future')")
        XCTAssertThrowsError(try PostgresRecordBackend(url: server.url(name)).ping()) { error in
            XCTAssertTrue("\(error)".contains("schema version 99 is newer"), "\(error)")
        }
    }

    /// Daemons starting together on a fresh database migrate it once (advisory lock), and all work.
    func testConcurrentFirstConnectionsMigrateOnce() throws {
        let url = try server.createDatabase()
        let errors = Locked<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 6) { n in
            do {
                let backend = try PostgresRecordBackend(url: url)
                _ = try backend.create("sessions/s\(n).json", data: Data("{}".utf8))
            } catch { errors.update { $0.append("\(error)") } }
        }
        XCTAssertEqual(errors.value, [])
        let backend = try PostgresRecordBackend(url: url)
        XCTAssertEqual(try backend.keys(under: "sessions/").count, 6)
        XCTAssertEqual(try backend.schemaVersion(), PostgresSchema.latest)
    }

    /// A bad URL, a wrong password, a missing database and a dead server: each one line, no password in it.
    func testConnectionErrorsAreOneClearLine() throws {
        XCTAssertThrowsError(try RecordStores.backend(url: "postgres://u@127.0.0.1:\(server.port)/db?bogus=1")) {
            XCTAssertTrue("\($0)".contains("bogus"), "\($0)")
        }
        let cases: [(String, String)] = [
            (server.url("suite", password: "wrong-pw"), "password authentication failed"),
            (server.url("no_such_db"), "does not exist"),
            ("postgres://\(PostgresServer.user):\(PostgresServer.password)@127.0.0.1:1/db", "unavailable"),
        ]
        for (url, expected) in cases {
            let backend = try RecordStores.backend(url: url)
            XCTAssertThrowsError(try backend.ping()) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(expected), text)
                XCTAssertFalse(text.contains("\n"), text)
                XCTAssertFalse(text.contains(PostgresServer.password) || text.contains("wrong-pw"), text)
            }
        }
    }

    /// Connections the server dropped are replaced; the next command succeeds.
    func testReconnectsAfterTheServerDropsConnections() throws {
        let url = try server.createDatabase()
        let stores = RecordStores(backend: try PostgresRecordBackend(url: url))
        try stores.sessions.create(id: "s", userID: "u")
        let database = String(url.split(separator: "/").last!)
        let killed = try server.admin(database).execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                + "WHERE application_name = 'bucketfs' AND datname = $1 AND pid <> pg_backend_pid()",
            [database])
        XCTAssertGreaterThan(killed.rows.count, 0)
        XCTAssertTrue(try stores.sessions.update("s", incrementRequests: 1))
        XCTAssertEqual(try stores.sessions.get("s")?.metrics.requestCount, 1)
    }

    /// Keys with LIKE's own characters (`%` from escaped ids, `_`) list exactly.
    func testKeysWithLikeCharacters() throws {
        let backend = try suite.makeBackend("like/")
        _ = try backend.write("checkpoints/a%2Fb/c_1.json", data: Data("{}".utf8))
        _ = try backend.write("checkpoints/aX2Fb/c.json", data: Data("{}".utf8))
        XCTAssertEqual(try backend.keys(under: "checkpoints/a%2Fb/"), ["checkpoints/a%2Fb/c_1.json"])
        XCTAssertEqual(try backend.keys(under: "checkpoints/a_"), [])
    }
}
