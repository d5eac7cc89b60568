import Foundation

/// The PostgreSQL record backend's schema, created and migrated by whoever connects first (the daemon, or a CLI
/// command): `bucketfs_schema` lists the versions applied; each migration runs once, in order, in a
/// transaction under an advisory lock, so two daemons starting together migrate once.
enum PostgresSchema {
    struct Migration {
        let version: Int
        let description: String
        let statements: [String]
    }

    /// Never edit a migration that has shipped: add the next one.
    static let migrations: [Migration] = [
        Migration(
            version: 1, description: "records table",
            statements: [
                // key: the record's key (`sessions/<id>.json`…), in byte order ("C") so prefix scans use the index.
                // data: the JSON exactly as written (text, not jsonb, which would reformat it).
                """
                CREATE TABLE bucketfs_records (
                    key text COLLATE "C" PRIMARY KEY,
                    data text NOT NULL,
                    version text NOT NULL,
                    modified timestamptz NOT NULL DEFAULT now()
                )
                """
            ]),
        Migration(
            version: 2, description: "bucketfs_records_json view",
            statements: [
                // For SQL readers: `SELECT record->>'status' FROM bucketfs_records_json WHERE key LIKE 'sessions/%'`.
                """
                CREATE VIEW bucketfs_records_json AS
                    SELECT key, data::jsonb AS record, version, modified FROM bucketfs_records
                """
            ]),
    ]

    static var latest: Int { migrations.last?.version ?? 0 }

    /// `pg_advisory_xact_lock` key: "bkfs".
    static let lockKey = "1651205747"

    /// Brings the database to `latest`; throws `.invalid` when it is newer than this version knows.
    static func migrate(_ pool: PostgresPool, _ connection: PostgresPool.Connection) throws(RecordError) {
        // Fast path: one query when the schema is current.
        if let current = try? version(pool, connection), current == latest { return }
        _ = try pool.run(connection, "BEGIN")
        do throws(RecordError) {
            _ = try pool.run(connection, "SELECT pg_advisory_xact_lock(\(lockKey))")
            _ = try pool.run(
                connection,
                """
                CREATE TABLE IF NOT EXISTS bucketfs_schema (
                    version integer PRIMARY KEY,
                    description text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """)
            let current = try version(pool, connection) ?? 0
            guard current <= latest else {
                throw .invalid(
                    "\(pool.endpoint): schema version \(current) is newer than this bucketfs knows (\(latest))")
            }
            for migration in migrations where migration.version > current {
                for statement in migration.statements { _ = try pool.run(connection, statement) }
                _ = try pool.run(
                    connection, "INSERT INTO bucketfs_schema (version, description) VALUES ($1, $2)",
                    [String(migration.version), migration.description])
            }
            _ = try pool.run(connection, "COMMIT")
        } catch {
            _ = try? pool.run(connection, "ROLLBACK")
            throw error
        }
    }

    /// nil when there is no version table yet.
    static func version(_ pool: PostgresPool, _ connection: PostgresPool.Connection) throws(RecordError) -> Int? {
        let exists = try pool.run(connection, "SELECT to_regclass('bucketfs_schema') IS NOT NULL")
        guard exists.rows.first?.first == "t" else { return nil }
        let result = try pool.run(connection, "SELECT coalesce(max(version), 0) FROM bucketfs_schema")
        return result.rows.first?.first.flatMap { $0 }.flatMap { Int($0) }
    }
}
