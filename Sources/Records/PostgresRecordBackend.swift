import Foundation

/// Records in PostgreSQL (`records_url: postgres://user@host/db`): one row per record in `bucketfs_records`
/// (key, the JSON text as written, a version, the time modified); the schema is created and migrated on the
/// first connection (`PostgresSchema`).
///
/// Create is `INSERT … ON CONFLICT DO NOTHING`, replace an `UPDATE … WHERE version = $expected`: each one
/// statement, atomic on the server, so compare-and-swap holds under any number of writers. Versions are fresh
/// UUIDs, so a statement sent again after a broken connection recognises its own write and reports success.
public final class PostgresRecordBackend: RecordBackend {
    public let endpoint: PostgresEndpoint
    /// Prepended to every key (e.g. for tests sharing a database); empty by default.
    public let namespace: String
    private let pool: PostgresPool

    public init(endpoint: PostgresEndpoint, namespace: String = "", connections: Int = 8) {
        self.endpoint = endpoint
        self.namespace = namespace
        pool = PostgresPool(endpoint: endpoint, size: connections) { pool, connection throws(RecordError) in
            try PostgresSchema.migrate(pool, connection)
        }
    }

    public convenience init(url: String, namespace: String = "") throws(RecordError) {
        self.init(endpoint: try PostgresEndpoint(url: url), namespace: namespace)
    }

    public var description: String { namespace.isEmpty ? endpoint.description : "\(endpoint) \(namespace)" }

    public func read(_ key: String) throws(RecordError) -> StoredRecord? {
        let result = try pool.execute(
            "SELECT data, version, extract(epoch FROM modified)::text FROM bucketfs_records WHERE key = $1",
            [namespace + key])
        guard let row = result.rows.first, let data = row[0], let version = row[1] else { return nil }
        let modified = row[2].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) }
        return StoredRecord(data: Data(data.utf8), version: version, modified: modified)
    }

    public func create(_ key: String, data: Data) throws(RecordError) -> String? {
        let version = UUID().uuidString
        let result = try pool.execute(
            """
            INSERT INTO bucketfs_records (key, data, version, modified) VALUES ($1, $2, $3, now())
            ON CONFLICT (key) DO NOTHING
            """, [namespace + key, try Self.text(data), version])
        return try settled(result, key: key, version: version)
    }

    public func replace(_ key: String, data: Data, ifVersion expected: String) throws(RecordError) -> String? {
        let version = UUID().uuidString
        let result = try pool.execute(
            "UPDATE bucketfs_records SET data = $2, version = $3, modified = now() WHERE key = $1 AND version = $4",
            [namespace + key, try Self.text(data), version, expected])
        return try settled(result, key: key, version: version)
    }

    public func write(_ key: String, data: Data) throws(RecordError) -> String {
        let version = UUID().uuidString
        _ = try pool.execute(
            """
            INSERT INTO bucketfs_records (key, data, version, modified) VALUES ($1, $2, $3, now())
            ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, version = EXCLUDED.version, \
            modified = EXCLUDED.modified
            """, [namespace + key, try Self.text(data), version])
        return version
    }

    public func remove(_ key: String) throws(RecordError) -> Bool {
        try pool.execute("DELETE FROM bucketfs_records WHERE key = $1", [namespace + key]).affected == 1
    }

    public func keys(under prefix: String) throws(RecordError) -> [String] {
        let result = try pool.execute(
            "SELECT key FROM bucketfs_records WHERE key LIKE $1 ESCAPE '\\' ORDER BY key",
            [Self.likeEscaped(namespace + prefix) + "%"])
        return result.rows.compactMap { $0.first.flatMap { $0 }.map { String($0.dropFirst(namespace.count)) } }
    }

    /// Connects (creating or migrating the schema on a first connection) and asks the server.
    public func ping() throws(RecordError) {
        guard try pool.execute("SELECT 1").rows.first?.first == "1" else {
            throw .unavailable("\(endpoint): no answer")
        }
    }

    /// The schema version of the database (after connecting, so after any migration).
    public func schemaVersion() throws(RecordError) -> Int {
        let result = try pool.execute("SELECT coalesce(max(version), 0) FROM bucketfs_schema")
        return result.rows.first?.first.flatMap { $0 }.flatMap { Int($0) } ?? 0
    }

    /// One row touched: ours. None, on a statement sent twice: ours if the record now has our version.
    private func settled(_ result: PostgresResult, key: String, version: String) throws(RecordError) -> String? {
        if result.affected == 1 { return version }
        if result.retried, try read(key)?.version == version { return version }
        return nil
    }

    /// Records are JSON, so UTF-8 text (and PostgreSQL text holds no NUL).
    private static func text(_ data: Data) throws(RecordError) -> String {
        guard let text = String(data: data, encoding: .utf8), !text.utf8.contains(0) else {
            throw .invalid("record is not UTF-8 text without NUL")
        }
        return text
    }

    private static func likeEscaped(_ text: String) -> String {
        var out = ""
        for c in text {
            if "%_\\".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }
}
