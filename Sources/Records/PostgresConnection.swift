import CPostgres
import Foundation
import Synchronization

/// Where PostgreSQL is: a libpq connection URI, `postgres://[user[:password]@]host[:port]/db[?param=value…]`.
/// The password may also come from `PGPASSWORD` or `~/.pgpass`, as with every libpq program (keeping it out of
/// config files and argv).
public struct PostgresEndpoint: Sendable, Equatable, CustomStringConvertible {
    public let url: String
    /// user@host:port/db, for logs: never the password.
    public let description: String

    /// Checks the URI's syntax (libpq's own parser); a bad one is `.invalid`.
    public init(url: String) throws(RecordError) {
        let lower = url.lowercased()
        guard lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://") else {
            throw .invalid("not a postgres:// URL: \(Self.redacted(url))")
        }
        var message: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(url, &message) else {
            let detail = message.map { String(cString: $0) } ?? "cannot parse"
            if let message { PQfreemem(message) }
            throw .invalid("bad PostgreSQL URL \(Self.redacted(url)): \(Self.oneLine(detail))")
        }
        defer { PQconninfoFree(options) }
        var fields: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val { fields[String(cString: keyword)] = String(cString: value) }
            option += 1
        }
        self.url = url
        let user = fields["user"].map { $0 + "@" } ?? ""
        let port = fields["port"].map { ":" + $0 } ?? ""
        description =
            "postgres://\(user)\(fields["host"] ?? fields["hostaddr"] ?? "localhost")\(port)/\(fields["dbname"] ?? "")"
    }

    /// A URL with any password (user-info or `password=` parameter) replaced, for error messages.
    static func redacted(_ url: String) -> String {
        var out = url
        if let scheme = out.range(of: "://"), let at = out[scheme.upperBound...].firstIndex(of: "@"),
            let colon = out[scheme.upperBound..<at].firstIndex(of: ":")
        {
            out.replaceSubrange(out.index(after: colon)..<at, with: "***")
        }
        if let range = out.range(of: #"password=[^&]*"#, options: [.regularExpression, .caseInsensitive]) {
            out.replaceSubrange(range, with: "password=***")
        }
        return out
    }

    /// libpq's messages span lines ("connection to server … failed: FATAL:  …\n"): one line for the user.
    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: "; ")
            .replacingOccurrences(of: "  ", with: " ")
    }
}

/// The rows of a query (text format) and the count of rows a command touched.
struct PostgresResult: Sendable {
    var rows: [[String?]]
    var affected: Int
    /// The command may have run twice: the first attempt's connection broke and it was sent again.
    var retried: Bool
}

/// A small pool of blocking libpq connections. A caller takes a connection for one command (so commands of
/// several threads run in parallel, each connection used by one thread at a time, as libpq requires) and
/// gives it back. Every call blocks its thread: never call from Swift's cooperative pool — the records code
/// runs on libfuse's threads, the daemon's own threads and the CLI's main thread.
///
/// A connection found broken is dropped and the command sent once more on a new one; the result then says
/// `retried`, since the first attempt may have reached the server (callers keep that harmless).
final class PostgresPool: Sendable {
    let endpoint: PostgresEndpoint
    private let idle = Mutex<[Connection]>([])
    /// Bounds the open connections: one per concurrent caller, at most `size`.
    private let slots: DispatchSemaphore
    /// Runs once on every new connection before its first command (the schema check).
    private let prepare: @Sendable (PostgresPool, Connection) throws(RecordError) -> Void

    struct Connection: @unchecked Sendable {
        let handle: OpaquePointer
    }

    init(
        endpoint: PostgresEndpoint, size: Int = 8,
        prepare: @escaping @Sendable (PostgresPool, Connection) throws(RecordError) -> Void = { _, _ in }
    ) {
        self.endpoint = endpoint
        self.prepare = prepare
        slots = DispatchSemaphore(value: max(size, 1))
    }

    deinit {
        for connection in idle.withLock({ $0 }) { PQfinish(connection.handle) }
    }

    /// One statement with text parameters (`$1`…); `nil` is SQL NULL.
    func execute(_ sql: String, _ parameters: [String?] = []) throws(RecordError) -> PostgresResult {
        try withConnection { (connection, fresh) throws(RecordError) in
            var result = try run(connection, sql, parameters)
            result.retried = !fresh
            return result
        }
    }

    /// Runs `body` on one connection (for a transaction); a broken connection is replaced and `body` run again.
    /// `body`'s second argument is true on the first attempt.
    func withConnection<R>(_ body: (Connection, Bool) throws(RecordError) -> R) throws(RecordError) -> R {
        slots.wait()
        defer { slots.signal() }
        var connection = try take()
        do {
            let value = try body(connection, true)
            give(connection)
            return value
        } catch {
            guard PQstatus(connection.handle) == CONNECTION_BAD else {
                give(connection)
                throw error
            }
            PQfinish(connection.handle)
        }
        connection = try connect()
        do {
            let value = try body(connection, false)
            give(connection)
            return value
        } catch {
            if PQstatus(connection.handle) == CONNECTION_BAD { PQfinish(connection.handle) } else { give(connection) }
            throw error
        }
    }

    /// A statement on a given connection (inside `withConnection`).
    func run(_ connection: Connection, _ sql: String, _ parameters: [String?] = []) throws(RecordError)
        -> PostgresResult
    {
        let values = parameters.map { $0.map { strdup($0) } ?? nil }
        defer { for value in values { free(value) } }
        let constValues = values.map { $0.map { UnsafePointer($0) } }
        let handle = constValues.withUnsafeBufferPointer { buffer in
            PQexecParams(connection.handle, sql, Int32(parameters.count), nil, buffer.baseAddress, nil, nil, 0)
        }
        guard let handle else { throw .unavailable("\(endpoint): \(errorText(connection))") }
        defer { PQclear(handle) }
        switch PQresultStatus(handle) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK:
            var rows: [[String?]] = []
            let columns = PQnfields(handle)
            for row in 0..<PQntuples(handle) {
                rows.append(
                    (0..<columns).map { column in
                        PQgetisnull(handle, row, column) == 1 ? nil : String(cString: PQgetvalue(handle, row, column))
                    })
            }
            let affected = Int(String(cString: PQcmdTuples(handle))) ?? 0
            return PostgresResult(rows: rows, affected: affected, retried: false)
        default:
            let message = PQresultErrorMessage(handle).map { String(cString: $0) } ?? ""
            let detail = PostgresEndpoint.oneLine(message.isEmpty ? errorText(connection) : message)
            throw .unavailable("\(endpoint): \(detail)")
        }
    }

    // MARK: connections

    private func take() throws(RecordError) -> Connection {
        if let connection = idle.withLock({ $0.popLast() }) {
            if PQstatus(connection.handle) == CONNECTION_OK { return connection }
            PQfinish(connection.handle)
        }
        return try connect()
    }

    private func give(_ connection: Connection) {
        idle.withLock { $0.append(connection) }
    }

    /// Defaults first, then the URL (expanded by libpq), so that anything the URL says wins. The timeouts keep a
    /// server that stops answering from hanging a FUSE request for ever.
    private func connect() throws(RecordError) -> Connection {
        let settings: [(String, String)] = [
            ("connect_timeout", "5"), ("application_name", "bucketfs"), ("client_encoding", "UTF8"),
            ("keepalives_idle", "10"), ("keepalives_interval", "5"), ("keepalives_count", "3"),
            ("tcp_user_timeout", "20000"), ("options", "-c statement_timeout=30000"),
            ("dbname", endpoint.url),
        ]
        let keywords = settings.map { strdup($0.0) }
        let values = settings.map { strdup($0.1) }
        defer { for pointer in keywords + values { free(pointer) } }
        let handle: OpaquePointer? = (keywords.map { UnsafePointer($0) } + [nil]).withUnsafeBufferPointer { k in
            (values.map { UnsafePointer($0) } + [nil]).withUnsafeBufferPointer { v in
                PQconnectdbParams(k.baseAddress, v.baseAddress, 1)
            }
        }
        guard let handle else { throw .unavailable("\(endpoint): cannot allocate a connection") }
        let connection = Connection(handle: handle)
        guard PQstatus(handle) == CONNECTION_OK else {
            let detail = errorText(connection)
            PQfinish(handle)
            throw Self.classify(detail, endpoint: endpoint)
        }
        // Notices ("relation … already exists, skipping") would go to stderr.
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
        do {
            try prepare(self, connection)
        } catch {
            PQfinish(handle)
            throw error
        }
        return connection
    }

    /// A refused password or a missing database is a configuration error, not an outage.
    private static func classify(_ detail: String, endpoint: PostgresEndpoint) -> RecordError {
        let configuration = [
            "password authentication failed", "does not exist", "no password supplied",
            "invalid", "role", "no pg_hba.conf entry",
        ]
        if configuration.contains(where: { detail.contains($0) }) { return .invalid("\(endpoint): \(detail)") }
        return .unavailable("\(endpoint): \(detail)")
    }

    private func errorText(_ connection: Connection) -> String {
        let text = PQerrorMessage(connection.handle).map { String(cString: $0) } ?? ""
        return text.isEmpty ? "connection error" : PostgresEndpoint.oneLine(text)
    }
}
