import Foundation
import RedisClient

/// Records in Redis: each key is a hash `<namespace><key>` with fields `data` (the JSON bytes) and `version`
/// (a fresh UUID per write). Create and replace are Lua scripts, so each is one atomic step on the server.
///
/// The connection is RedisClient's `RedisConnection`: a command may be sent twice when the connection broke after
/// the server ran it, so the scripts treat "the version is already the one I was writing" as success.
public final class RedisRecordBackend: RecordBackend {
    public let endpoint: RedisEndpoint
    /// Prepended to every key, e.g. `bucketfs:records:`.
    public let namespace: String
    private let connection: RedisConnection

    public init(endpoint: RedisEndpoint, namespace: String = "bucketfs:records:") {
        self.endpoint = endpoint
        self.namespace = namespace
        connection = RedisConnection(endpoint: endpoint)
    }

    public var description: String { "\(endpoint) \(namespace)" }

    // KEYS[1] = record; ARGV = data, new version.
    private static let createScript = """
        local current = redis.call('hget', KEYS[1], 'version')
        if current == ARGV[2] then return 1 end
        if current then return 0 end
        redis.call('hset', KEYS[1], 'data', ARGV[1], 'version', ARGV[2], 'modified', ARGV[3])
        return 1
        """

    // KEYS[1] = record; ARGV = data, new version, modified, expected version.
    private static let replaceScript = """
        local current = redis.call('hget', KEYS[1], 'version')
        if current == ARGV[2] then return 1 end
        if current ~= ARGV[4] then return 0 end
        redis.call('hset', KEYS[1], 'data', ARGV[1], 'version', ARGV[2], 'modified', ARGV[3])
        return 1
        """

    public func read(_ key: String) throws(RecordError) -> StoredRecord? {
        let reply = try command(["HMGET", namespace + key, "data", "version", "modified"])
        guard case .array(let fields) = reply, fields.count == 3, let data = fields[0].text,
            let version = fields[1].text
        else {
            return nil
        }
        let modified = fields[2].text.flatMap(Double.init).map { Date(timeIntervalSince1970: $0) }
        return StoredRecord(data: Data(data.utf8), version: version, modified: modified)
    }

    public func create(_ key: String, data: Data) throws(RecordError) -> String? {
        let version = UUID().uuidString
        let reply = try command([
            "EVAL", Self.createScript, "1", namespace + key, try Self.text(data), version, Self.stamp(),
        ])
        return reply == .integer(1) ? version : nil
    }

    public func replace(_ key: String, data: Data, ifVersion expected: String) throws(RecordError) -> String? {
        let version = UUID().uuidString
        let reply = try command([
            "EVAL", Self.replaceScript, "1", namespace + key, try Self.text(data), version,
            Self.stamp(), expected,
        ])
        return reply == .integer(1) ? version : nil
    }

    public func write(_ key: String, data: Data) throws(RecordError) -> String {
        let version = UUID().uuidString
        _ = try command([
            "HSET", namespace + key, "data", try Self.text(data), "version", version, "modified", Self.stamp(),
        ])
        return version
    }

    public func remove(_ key: String) throws(RecordError) -> Bool {
        try command(["DEL", namespace + key]) == .integer(1)
    }

    public func keys(under prefix: String) throws(RecordError) -> [String] {
        let pattern = Self.globEscaped(namespace + prefix) + "*"
        var found: [String] = []
        var cursor = "0"
        repeat {
            let reply = try command(["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"])
            guard case .array(let parts) = reply, parts.count == 2, let next = parts[0].text,
                case .array(let names) = parts[1]
            else {
                throw .unavailable("\(endpoint): unexpected SCAN reply")
            }
            found += names.compactMap { $0.text.map { String($0.dropFirst(namespace.count)) } }
            cursor = next
        } while cursor != "0"
        return Set(found).sorted()
    }

    public func ping() throws(RecordError) {
        guard case .status("PONG") = try command(["PING"]) else { throw .unavailable("\(endpoint): no PONG") }
    }

    private func command(_ arguments: [String]) throws(RecordError) -> RedisValue {
        let reply: RedisValue
        do {
            reply = try connection.command(arguments)
        } catch .invalid(let detail) {
            throw .invalid(detail)
        } catch {
            throw .unavailable(error.description)
        }
        if case .error(let message) = reply { throw .unavailable("\(endpoint): \(arguments[0]): \(message)") }
        return reply
    }

    /// Records are JSON, so UTF-8 text.
    private static func text(_ data: Data) throws(RecordError) -> String {
        guard let text = String(data: data, encoding: .utf8) else { throw .invalid("record is not UTF-8") }
        return text
    }

    private static func stamp() -> String { String(Date().timeIntervalSince1970) }

    private static func globEscaped(_ text: String) -> String {
        var out = ""
        for c in text {
            if "*?[]\\".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }
}
