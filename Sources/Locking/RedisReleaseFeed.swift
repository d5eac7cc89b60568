import Foundation
import RedisClient
import Synchronization

/// Waits on the stream `bucketfs:lockevents` to which every release and downgrade of the redis strategy adds
/// the resource's name: `XREAD BLOCK` on a connection of its own (a blocking read ties up its connection).
///
/// A stream rather than pub/sub: a reader resumes from the last entry it saw, so a release that happens between
/// a waiter's refused attempt and its next read is not missed (a PUBLISH with nobody subscribed is gone), and it
/// is an ordinary command on `RedisConnection`. The stream is capped at about 1,000 entries.
final class RedisReleaseFeed: LockReleaseFeed {
    private let connection: RedisConnection
    /// The last entry seen; only the feed's own thread uses it (one caller, see `LockReleaseFeed`).
    private let last = Mutex<String?>(nil)
    private var lastID: String? {
        get { last.withLock { $0 } }
        set { last.withLock { $0 = newValue } }
    }
    /// Blocks at most this long per read, well under the connection's command timeout.
    static let longestBlock = 1.0

    init(endpoint: RedisEndpoint) {
        connection = RedisConnection(endpoint: endpoint, connectTimeout: 2, commandTimeout: Self.longestBlock + 4)
    }

    func waitForReleases(of resources: Set<String>, timeout: Double) -> Set<String> {
        do {
            if lastID == nil { lastID = try newestID() }
            let block = max(1, Int(min(timeout, Self.longestBlock) * 1000))
            let reply = try connection.lockCommand([
                "XREAD", "COUNT", "1000", "BLOCK", String(block), "STREAMS",
                RedisLockStrategy.eventStream, lastID ?? "0-0",
            ])
            if case .error = reply { throw LockError.unavailable("XREAD refused") }
            var released: Set<String> = []
            // [[stream, [[id, [field, value, …]], …]]], or null when nothing came.
            guard case .array(let streams) = reply else { return [] }
            for stream in streams {
                guard case .array(let parts) = stream, parts.count == 2, case .array(let entries) = parts[1] else {
                    continue
                }
                for entry in entries {
                    guard case .array(let fields) = entry, fields.count == 2, let id = fields[0].text,
                        case .array(let values) = fields[1]
                    else { continue }
                    lastID = id
                    if values.count >= 2, let resource = values[1].text, resources.contains(resource) {
                        released.insert(resource)
                    }
                }
            }
            return released
        } catch {
            // Redis is away: the waiters' timed retries carry on (and report the outage); do not spin.
            sleepSeconds(min(timeout, 0.5))
            return []
        }
    }

    /// Where to start: the newest entry now (earlier releases are of no interest to a waiter that starts now).
    private func newestID() throws -> String {
        let reply = try connection.lockCommand(["XREVRANGE", RedisLockStrategy.eventStream, "+", "-", "COUNT", "1"])
        guard case .array(let entries) = reply, case .array(let entry)? = entries.first, let id = entry.first?.text
        else { return "0-0" }
        return id
    }
}
