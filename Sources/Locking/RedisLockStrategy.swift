import Foundation

/// Locks in Redis: the key `bucketfs:lock:<resource>` holds `<owner id>:<token>` with a PX expiry.
///
/// - acquire: `INCR bucketfs:lock:<resource>:fence` for the token, then `SET key value NX PX lease`. Refused
///   attempts use up tokens too, which keeps the order strict and costs nothing. `<key>:info` gets the holder's
///   record (host, pid, acquired) for listings, with the same expiry.
/// - renew / release: one Lua script each that acts only if the key still holds our value, so a lease that ran
///   out and was taken over cannot be extended or deleted by its former holder.
///
/// Guarantees are those of the Redis deployment: one primary is consistent; with asynchronous replicas a
/// failover can lose a fresh lock (the fencing token is the defence). The fence counter has no expiry, so
/// tokens keep growing as long as Redis keeps its data (a restart without persistence resets them).
public final class RedisLockStrategy: LockStrategy {
    public let endpoint: RedisEndpoint
    public var name: String { "redis" }
    private let connection: RedisConnection

    static let keyPrefix = "bucketfs:lock:"

    private static let renewScript = """
        if redis.call('get', KEYS[1]) == ARGV[1] then
            redis.call('pexpire', KEYS[2], ARGV[2])
            return redis.call('pexpire', KEYS[1], ARGV[2])
        else
            return 0
        end
        """

    private static let releaseScript = """
        if redis.call('get', KEYS[1]) == ARGV[1] then
            redis.call('del', KEYS[2])
            return redis.call('del', KEYS[1])
        else
            return 0
        end
        """

    /// Connects lazily, on the first call.
    public init(endpoint: RedisEndpoint, connectTimeout: Double = 2, commandTimeout: Double = 5) {
        self.endpoint = endpoint
        connection = RedisConnection(endpoint: endpoint, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
    }

    public func tryAcquire(_ resource: String, owner: LockOwner, lease: Double) throws(LockError) -> Lease? {
        try validate(resource)
        try validateLease(lease)
        let key = Self.keyPrefix + resource
        guard case .integer(let counter) = try run(["INCR", key + ":fence"]), counter > 0 else {
            throw .invalid("\(key):fence does not hold a counter")
        }
        let token = UInt64(counter)
        let value = "\(owner.id):\(token)"
        let milliseconds = String(Self.milliseconds(lease))
        let reconnections = connection.reconnections
        let now = Date()
        switch try run(["SET", key, value, "NX", "PX", milliseconds]) {
        case .status:
            break
        case .null:
            // Refused. After a reconnect our first SET may have landed before the connection broke: look.
            guard connection.reconnections != reconnections,
                  try run(["GET", key]).text == value else { return nil }
        case let other:
            throw .unavailable("unexpected reply to SET: \(other)")
        }
        let granted = Lease(resource: resource, owner: owner, token: token, acquired: now,
                            expires: now.addingTimeInterval(lease), duration: lease, version: value)
        // Only for listings: the lock is ours even if this write fails.
        _ = try? run(["SET", key + ":info", String(decoding: granted.record.encoded(), as: UTF8.self), "PX", milliseconds])
        return granted
    }

    public func renew(_ lease: Lease) throws(LockError) -> Lease {
        let key = Self.keyPrefix + lease.resource
        guard let value = lease.version else { throw .invalid("lease of \(lease.resource) has no Redis value") }
        let now = Date()
        let reply = try run(["EVAL", Self.renewScript, "2", key, key + ":info", value,
                             String(Self.milliseconds(lease.duration))])
        guard case .integer(1) = reply else { throw .lost(lease.resource) }
        var renewed = lease
        renewed.expires = now.addingTimeInterval(lease.duration).lockPrecision
        return renewed
    }

    public func release(_ lease: Lease) throws(LockError) {
        let key = Self.keyPrefix + lease.resource
        guard let value = lease.version else { throw .invalid("lease of \(lease.resource) has no Redis value") }
        let reconnections = connection.reconnections
        let reply = try run(["EVAL", Self.releaseScript, "2", key, key + ":info", value])
        // 0 after a reconnect may mean our first attempt deleted it already: gone either way.
        guard case .integer(let deleted) = reply, deleted == 1 || connection.reconnections != reconnections else {
            throw .lost(lease.resource)
        }
    }

    public func holders() throws(LockError) -> [LockRecord] {
        var keys: [String] = []
        var cursor = "0"
        repeat {
            guard case .array(let parts) = try run(["SCAN", cursor, "MATCH", Self.keyPrefix + "*", "COUNT", "500"]),
                  parts.count == 2, let next = parts[0].text, case .array(let found) = parts[1] else {
                throw .unavailable("unexpected reply to SCAN")
            }
            keys += found.compactMap(\.text)
            cursor = next
        } while cursor != "0"

        var records: [LockRecord] = []
        for key in Set(keys).sorted() where !key.hasSuffix(":fence") && !key.hasSuffix(":info") {
            // The key may expire between SCAN and here: skip what is gone.
            guard let value = try run(["GET", key]).text, let separator = value.lastIndex(of: ":"),
                  let token = UInt64(value[value.index(after: separator)...]) else { continue }
            guard case .integer(let ttl) = try run(["PTTL", key]), ttl != -2 else { continue }
            let now = Date()
            let expires = ttl < 0 ? Date.distantFuture : now.addingTimeInterval(Double(ttl) / 1000)
            let info = try run(["GET", key + ":info"]).text.flatMap { try? LockRecord.decode(Data($0.utf8)) }
            let resource = String(key.dropFirst(Self.keyPrefix.count))
            records.append(LockRecord(owner: String(value[..<separator]), host: info?.host ?? "", pid: info?.pid ?? 0,
                                      acquired: info?.acquired ?? now, expires: expires, token: token, resource: resource))
        }
        return records
    }

    /// Drops the connection (tests, shutdown); the next call reconnects.
    public func disconnect() {
        connection.disconnect()
    }

    // MARK: Helpers

    /// A command whose error reply becomes `.unavailable` (the server refused to work: OOM, NOAUTH, READONLY…).
    private func run(_ arguments: [String]) throws(LockError) -> RedisValue {
        let reply = try connection.command(arguments)
        if case .error(let message) = reply { throw .unavailable("\(endpoint): \(arguments[0]): \(message)") }
        return reply
    }

    private func validate(_ resource: String) throws(LockError) {
        try validateResource(resource)
        // These suffixes name the companion keys of every lock.
        if resource.hasSuffix(":fence") || resource.hasSuffix(":info") {
            throw .invalid("resource names ending in :fence or :info are reserved by the redis strategy: \(resource)")
        }
    }

    private static func milliseconds(_ seconds: Double) -> Int {
        max(1, Int((seconds * 1000).rounded(.up)))
    }
}
