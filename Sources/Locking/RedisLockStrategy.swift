import Foundation
import RedisClient
import Synchronization

/// Locks in Redis: the hash `bucketfs:lock:<resource>` has one field per holder, `<owner id>:<token>` →
/// `<s|x>:<expiry ms, Redis clock>:<nonce>`; shared holders coexist, an exclusive one is alone.
///
/// Every operation is one Lua script, so it is atomic and one round trip:
/// - acquire: drops expired holders, checks the mode against the others and the waiting line, takes a token
///   from `INCR <key>:fence` and adds the field (expiry of the hash: the latest holder's). `<key>:info` keeps
///   each holder's host and pid for listings.
/// - waiting line: a refused request that will be retried (`queue`) keeps its place in `<key>:queue` (owner →
///   first refusal, expiry 3 s, mode) by retrying; a request behind an earlier conflicting one is refused, so
///   mounts are served in the order they asked and one mount cannot starve another; shared requests queued
///   together pass each other.
/// - renew / release / convert act only on our own field, so a lease that ran out and was taken over cannot be
///   touched by its former holder. Release and downgrade add an entry to the stream `bucketfs:lockevents`
///   that waiters block on (`XREAD BLOCK`), so a waiter hears of it within a round trip.
///
/// Guarantees are those of the Redis deployment: one primary is consistent; with asynchronous replicas a
/// failover can lose a fresh lock (the fencing token is the defence). The fence counter has no expiry, so
/// tokens keep growing as long as Redis keeps its data (a restart without persistence resets them).
public final class RedisLockStrategy: LockStrategy {
    public let endpoint: RedisEndpoint
    public var name: String { "redis" }
    private let connection: RedisConnection

    static let keyPrefix = "bucketfs:lock:"
    /// Outside `keyPrefix`, so listings never take it for a lock.
    static let eventStream = "bucketfs:lockevents"
    static let reservedSuffixes = [":fence", ":info", ":queue"]
    /// How long a refused waiter keeps its place in line without asking again.
    static let queueMilliseconds = 3000

    private static let clock = """
        local t = redis.call('time')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

        """

    /// KEYS: lock, fence, info, queue. ARGV: owner, mode, lease ms, info, nonce, queue (1/0), queue ms.
    private static let acquireScript =
        clock + """
            local owner, mode = ARGV[1], ARGV[2]
            local blocked, latest = false, now
            local held = redis.call('hgetall', KEYS[1])
            for i = 1, #held, 2 do
                local m, exp, nonce = string.match(held[i + 1], '^(%a):(%d+):(.*)$')
                local o, token = string.match(held[i], '^(.*):(%d+)$')
                exp = tonumber(exp)
                if exp == nil or exp <= now then
                    redis.call('hdel', KEYS[1], held[i])
                    redis.call('hdel', KEYS[3], held[i])
                else
                    if o == owner and nonce == ARGV[5] then return {tonumber(token), exp} end
                    if m == 'x' or mode == 'x' or o == owner then blocked = true end
                    if exp > latest then latest = exp end
                end
            end
            local queue = redis.call('hgetall', KEYS[4])
            local mine = nil
            for i = 1, #queue, 2 do
                if queue[i] == owner then mine = tonumber(string.match(queue[i + 1], '^(%d+)')) end
            end
            for i = 1, #queue, 2 do
                local first, exp, m = string.match(queue[i + 1], '^(%d+):(%d+):(%a)$')
                if tonumber(exp) <= now then
                    redis.call('hdel', KEYS[4], queue[i])
                elseif queue[i] ~= owner and (mine == nil or tonumber(first) < mine) and (m == 'x' or mode == 'x') then
                    blocked = true
                end
            end
            if blocked then
                if ARGV[6] == '1' then
                    redis.call('hset', KEYS[4], owner, (mine or now) .. ':' .. (now + tonumber(ARGV[7])) .. ':' .. mode)
                    redis.call('pexpire', KEYS[4], ARGV[7])
                end
                return 0
            end
            redis.call('hdel', KEYS[4], owner)
            local token = redis.call('incr', KEYS[2])
            local field = owner .. ':' .. token
            local exp = now + tonumber(ARGV[3])
            redis.call('hset', KEYS[1], field, mode .. ':' .. exp .. ':' .. ARGV[5])
            redis.call('hset', KEYS[3], field, ARGV[4])
            if exp > latest then latest = exp end
            redis.call('pexpireat', KEYS[1], latest)
            redis.call('pexpireat', KEYS[3], latest)
            return {token, exp}
            """

    /// KEYS: lock, info. ARGV: field, lease ms. Returns the new expiry, 0 when the field is gone.
    private static let renewScript =
        clock + """
            local v = redis.call('hget', KEYS[1], ARGV[1])
            if not v then return 0 end
            local m, exp, nonce = string.match(v, '^(%a):(%d+):(.*)$')
            if tonumber(exp) <= now then return 0 end
            local renewed = now + tonumber(ARGV[2])
            redis.call('hset', KEYS[1], ARGV[1], m .. ':' .. renewed .. ':' .. nonce)
            if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then
                redis.call('pexpireat', KEYS[1], renewed)
                redis.call('pexpireat', KEYS[2], renewed)
            end
            return renewed
            """

    /// KEYS: lock, info, stream. ARGV: field, resource.
    private static let releaseScript = """
        local removed = redis.call('hdel', KEYS[1], ARGV[1])
        redis.call('hdel', KEYS[2], ARGV[1])
        if removed == 1 then redis.call('xadd', KEYS[3], 'MAXLEN', '~', '1000', '*', 'r', ARGV[2]) end
        return removed
        """

    /// KEYS: lock, fence, info, stream. ARGV: field, mode, lease ms, owner, resource.
    /// Returns {token, expiry}, 0 when others share it (upgrade), -1 when the field is gone.
    private static let convertScript =
        clock + """
            local v = redis.call('hget', KEYS[1], ARGV[1])
            if not v then return -1 end
            local m, exp, nonce = string.match(v, '^(%a):(%d+):(.*)$')
            if tonumber(exp) <= now then return -1 end
            local token = tonumber(string.match(ARGV[1], ':(%d+)$'))
            local renewed = now + tonumber(ARGV[3])
            if ARGV[2] == 's' then
                redis.call('hset', KEYS[1], ARGV[1], 's:' .. renewed .. ':' .. nonce)
                redis.call('xadd', KEYS[4], 'MAXLEN', '~', '1000', '*', 'r', ARGV[5])
            else
                local held = redis.call('hgetall', KEYS[1])
                for i = 1, #held, 2 do
                    local e = tonumber(string.match(held[i + 1], '^%a:(%d+):'))
                    if held[i] ~= ARGV[1] and e and e > now then return 0 end
                end
                token = redis.call('incr', KEYS[2])
                local field = ARGV[4] .. ':' .. token
                local info = redis.call('hget', KEYS[3], ARGV[1]) or ''
                redis.call('hdel', KEYS[1], ARGV[1])
                redis.call('hdel', KEYS[3], ARGV[1])
                redis.call('hset', KEYS[1], field, 'x:' .. renewed .. ':' .. nonce)
                redis.call('hset', KEYS[3], field, info)
            end
            if redis.call('pttl', KEYS[1]) < tonumber(ARGV[3]) then
                redis.call('pexpireat', KEYS[1], renewed)
                redis.call('pexpireat', KEYS[3], renewed)
            end
            return {token, renewed}
            """

    /// KEYS: lock, info. The holders, their infos and Redis' clock.
    private static let peekScript =
        clock + """
            return {redis.call('hgetall', KEYS[1]), redis.call('hgetall', KEYS[2]), now}
            """

    /// Connects lazily, on the first call.
    public init(endpoint: RedisEndpoint, connectTimeout: Double = 2, commandTimeout: Double = 5) {
        self.endpoint = endpoint
        connection = RedisConnection(endpoint: endpoint, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
    }

    public func tryAcquire(
        _ resource: String, owner: LockOwner, lease: Double,
        mode: LeaseMode
    ) throws(LockError) -> Lease? {
        try tryAcquire(resource, owner: owner, lease: lease, mode: mode, queue: false)
    }

    /// `queue`: if refused, keep this owner's place in line (it will ask again within 3 s).
    public func tryAcquire(
        _ resource: String, owner: LockOwner, lease: Double, mode: LeaseMode,
        queue: Bool
    ) throws(LockError) -> Lease? {
        try validate(resource)
        try validateLease(lease)
        let key = Self.keyPrefix + resource
        let now = Date()
        let info = "\(owner.host)\t\(owner.pid)\t\(Int64((now.timeIntervalSince1970 * 1000).rounded()))"
        let nonce = UUID().uuidString.prefix(13).lowercased()
        let reply = try run([
            "EVALSHA_OR_EVAL", Self.acquireScript, "4", key, key + ":fence", key + ":info",
            key + ":queue", owner.id, Self.code(mode), String(Self.milliseconds(lease)), info,
            String(nonce), queue ? "1" : "0", String(Self.queueMilliseconds),
        ])
        if case .integer(0) = reply { return nil }
        guard case .array(let parts) = reply, parts.count == 2, case .integer(let token) = parts[0], token > 0 else {
            throw .unavailable("unexpected reply to the acquire script: \(reply)")
        }
        let value = "\(owner.id):\(token)"
        return Lease(
            resource: resource, owner: owner, token: UInt64(token), acquired: now,
            expires: now.addingTimeInterval(lease), duration: lease, version: value, mode: mode)
    }

    public func renew(_ lease: Lease) throws(LockError) -> Lease {
        let key = Self.keyPrefix + lease.resource
        guard let field = lease.version else { throw .invalid("lease of \(lease.resource) has no Redis value") }
        let now = Date()
        let reply = try run([
            "EVALSHA_OR_EVAL", Self.renewScript, "2", key, key + ":info", field,
            String(Self.milliseconds(lease.duration)),
        ])
        guard case .integer(let expiry) = reply, expiry > 0 else { throw .lost(lease.resource) }
        var renewed = lease
        renewed.expires = now.addingTimeInterval(lease.duration).lockPrecision
        return renewed
    }

    public func release(_ lease: Lease) throws(LockError) {
        let key = Self.keyPrefix + lease.resource
        guard let field = lease.version else { throw .invalid("lease of \(lease.resource) has no Redis value") }
        let reconnections = connection.reconnections
        let reply = try run([
            "EVALSHA_OR_EVAL", Self.releaseScript, "3", key, key + ":info", Self.eventStream,
            field, lease.resource,
        ])
        // 0 after a reconnect may mean our first attempt deleted it already: gone either way.
        guard case .integer(let deleted) = reply, deleted == 1 || connection.reconnections != reconnections else {
            throw .lost(lease.resource)
        }
    }

    public func convert(_ lease: Lease, to mode: LeaseMode) throws(LockError) -> Lease? {
        guard mode != lease.mode else { return lease }
        let key = Self.keyPrefix + lease.resource
        guard let field = lease.version else { throw .invalid("lease of \(lease.resource) has no Redis value") }
        let now = Date()
        let reply = try run([
            "EVALSHA_OR_EVAL", Self.convertScript, "4", key, key + ":fence", key + ":info",
            Self.eventStream, field, Self.code(mode), String(Self.milliseconds(lease.duration)),
            lease.owner.id, lease.resource,
        ])
        switch reply {
        case .integer(0): return nil
        case .array(let parts) where parts.count == 2:
            guard case .integer(let token) = parts[0] else { break }
            var converted = lease
            converted.mode = mode
            converted.token = UInt64(token)
            converted.version = "\(lease.owner.id):\(token)"
            converted.expires = now.addingTimeInterval(lease.duration).lockPrecision
            return converted
        default:
            // A duplicate upgrade after a reconnect finds its field renamed: the new field is ours, but we cannot
            // know its token; treat the lease as lost (the field expires with the lease).
            break
        }
        throw .lost(lease.resource)
    }

    public func holders() throws(LockError) -> [LockRecord] {
        var keys: [String] = []
        var cursor = "0"
        repeat {
            guard case .array(let parts) = try run(["SCAN", cursor, "MATCH", Self.keyPrefix + "*", "COUNT", "500"]),
                parts.count == 2, let next = parts[0].text, case .array(let found) = parts[1]
            else {
                throw .unavailable("unexpected reply to SCAN")
            }
            keys += found.compactMap(\.text)
            cursor = next
        } while cursor != "0"
        var records: [LockRecord] = []
        for key in Set(keys).sorted() where !Self.reservedSuffixes.contains(where: { key.hasSuffix($0) }) {
            records += try holders(of: String(key.dropFirst(Self.keyPrefix.count)))
        }
        return records
    }

    /// One script: the hash of holders and their infos.
    public func holders(of resource: String) throws(LockError) -> [LockRecord] {
        let key = Self.keyPrefix + resource
        let reply = try run(["EVALSHA_OR_EVAL", Self.peekScript, "2", key, key + ":info"])
        guard case .array(let parts) = reply, parts.count == 3, case .array(let held) = parts[0],
            case .array(let infos) = parts[1], case .integer(let redisNow) = parts[2]
        else {
            // A key of another type (an older bucketfs's string lock) cannot be read as a hash.
            return []
        }
        var info: [String: [Substring]] = [:]
        for index in stride(from: 0, to: infos.count - 1, by: 2) {
            if let field = infos[index].text, let value = infos[index + 1].text {
                info[field] = value.split(separator: "\t", omittingEmptySubsequences: false)
            }
        }
        let skew = Date().timeIntervalSince1970 - Double(redisNow) / 1000
        var records: [LockRecord] = []
        for index in stride(from: 0, to: held.count - 1, by: 2) {
            guard let field = held[index].text, let value = held[index + 1].text,
                let separator = field.lastIndex(of: ":"), let token = UInt64(field[field.index(after: separator)...])
            else { continue }
            let parts = value.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count >= 2, let expiry = Double(parts[1]), expiry > Double(redisNow) else { continue }
            let details = info[field] ?? []
            let acquired = details.count > 2 ? Double(details[2]).map { $0 / 1000 + skew } : nil
            records.append(
                LockRecord(
                    owner: String(field[..<separator]), host: details.first.map(String.init) ?? "",
                    pid: details.count > 1 ? Int32(details[1]) ?? 0 : 0,
                    acquired: Date(timeIntervalSince1970: acquired ?? Date().timeIntervalSince1970),
                    expires: Date(timeIntervalSince1970: expiry / 1000 + skew), token: token,
                    resource: resource, mode: parts[0] == "s" ? .shared : nil))
        }
        return records.sorted { $0.token < $1.token }
    }

    public func makeReleaseFeed() -> any LockReleaseFeed {
        RedisReleaseFeed(endpoint: endpoint)
    }

    /// Drops the connection (tests, shutdown); the next call reconnects.
    public func disconnect() {
        connection.disconnect()
    }

    // MARK: Helpers

    /// A command whose error reply becomes `.unavailable` (the server refused to work: OOM, NOAUTH, READONLY…).
    /// `EVALSHA_OR_EVAL script …` sends the script's SHA1 and, the first time a server lacks it, the script.
    private func run(_ arguments: [String]) throws(LockError) -> RedisValue {
        var arguments = arguments
        if arguments[0] == "EVALSHA_OR_EVAL" {
            let script = arguments[1]
            arguments[0] = "EVALSHA"
            for _ in 0..<2 {
                var hash = scriptHashes.withLock { $0[script] }
                if hash == nil {
                    let loaded = try connection.lockCommand(["SCRIPT", "LOAD", script])
                    if case .error(let message) = loaded { throw .unavailable("\(endpoint): SCRIPT LOAD: \(message)") }
                    hash = loaded.text
                    guard let hash else { throw .unavailable("\(endpoint): unexpected reply to SCRIPT LOAD") }
                    scriptHashes.withLock { $0[script] = hash }
                }
                arguments[1] = hash!
                let reply = try connection.lockCommand(arguments)
                // A restarted server has forgotten the script: load it again.
                if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
                    scriptHashes.withLock { $0[script] = nil }
                    continue
                }
                if case .error(let message) = reply { throw .unavailable("\(endpoint): EVALSHA: \(message)") }
                return reply
            }
            arguments[0] = "EVAL"
            arguments[1] = script
        }
        let reply = try connection.lockCommand(arguments)
        if case .error(let message) = reply { throw .unavailable("\(endpoint): \(arguments[0]): \(message)") }
        return reply
    }

    private let scriptHashes = Mutex<[String: String]>([:])

    private static func code(_ mode: LeaseMode) -> String {
        mode == .shared ? "s" : "x"
    }

    private func validate(_ resource: String) throws(LockError) {
        try validateResource(resource)
        // These suffixes name the companion keys of every lock.
        if Self.reservedSuffixes.contains(where: { resource.hasSuffix($0) }) {
            throw .invalid(
                "resource names ending in :fence, :info or :queue are reserved by the redis strategy: \(resource)")
        }
    }

    private static func milliseconds(_ seconds: Double) -> Int {
        max(1, Int((seconds * 1000).rounded(.up)))
    }
}
