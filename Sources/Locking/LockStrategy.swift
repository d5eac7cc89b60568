import Foundation
import Glibc

/// One way of holding a named, leased lock — shared or exclusive — that other mounts (other processes, other
/// hosts) respect. Shared holders coexist; an exclusive holder excludes everyone else.
///
/// Every call is synchronous and may block on I/O (a socket, a store request, a file lock). Callers are libfuse
/// worker threads or threads of their own (`LockManager` renews on its own `Thread`); never call these from
/// Swift's cooperative pool, which has as many threads as cores and must not be blocked.
public protocol LockStrategy: Sendable {
    /// "file", "object" or "redis", for logs and metric labels.
    var name: String { get }
    /// Takes `resource` in `mode` for `owner` for `lease` seconds. Answers at once: `nil` when a holder (or a
    /// waiter ahead in line, where the strategy keeps one) stands in the way, including this same owner through
    /// another exclusive lease: locks are not re-entrant.
    func tryAcquire(_ resource: String, owner: LockOwner, lease: Double, mode: LeaseMode) throws(LockError) -> Lease?
    /// The same, for a caller that will ask again within a few seconds if refused (`queue`): a strategy with a
    /// waiting line (redis) keeps the caller's place in it, so that waiters are served in order.
    func tryAcquire(
        _ resource: String, owner: LockOwner, lease: Double, mode: LeaseMode,
        queue: Bool
    ) throws(LockError) -> Lease?
    /// Changes a held lease's mode in place, never letting go: exclusive → shared always succeeds while the
    /// lease is ours; shared → exclusive answers `nil` while another owner shares it. A lease that becomes
    /// exclusive gets a new, greater token (other sharers may have held later tokens). Throws `.lost`.
    func convert(_ lease: Lease, to mode: LeaseMode) throws(LockError) -> Lease?
    /// Extends the lease by its duration from now. Throws `.lost` when the lock is no longer ours.
    func renew(_ lease: Lease) throws(LockError) -> Lease
    /// Gives the lock up. Throws `.lost` when it was no longer ours (nothing is changed then).
    func release(_ lease: Lease) throws(LockError)
    /// The current, unexpired holders of every resource this strategy knows about.
    func holders() throws(LockError) -> [LockRecord]
    /// The current holders of one resource, in one round trip (`F_GETLK` asks this for other mounts' locks).
    func holders(of resource: String) throws(LockError) -> [LockRecord]
    /// Tells waiters when a resource may have been released (see `LockReleaseFeed`).
    func makeReleaseFeed() -> any LockReleaseFeed
}

extension LockStrategy {
    /// An exclusive lease, as before shared leases existed.
    public func tryAcquire(_ resource: String, owner: LockOwner, lease: Double) throws(LockError) -> Lease? {
        try tryAcquire(resource, owner: owner, lease: lease, mode: .exclusive)
    }

    public func tryAcquire(
        _ resource: String, owner: LockOwner, lease: Double, mode: LeaseMode,
        queue: Bool
    ) throws(LockError) -> Lease? {
        try tryAcquire(resource, owner: owner, lease: lease, mode: mode)
    }

    public func holders(of resource: String) throws(LockError) -> [LockRecord] {
        try holders().filter { $0.resource == resource }
    }

    public func makeReleaseFeed() -> any LockReleaseFeed {
        PollingReleaseFeed(interval: 0.02)
    }
}

/// How a lease is held: shared leases of several owners coexist, an exclusive one excludes all others.
public enum LeaseMode: String, Sendable, Hashable, Codable {
    case shared
    case exclusive

    /// Whether a holder in `self` and one in `other` exclude each other.
    public func conflicts(with other: LeaseMode) -> Bool {
        self == .exclusive || other == .exclusive
    }
}

/// Who holds a lock: `id` is unique per mount (or per process using the library); host and pid are for people.
public struct LockOwner: Sendable, Hashable, Codable {
    public var id: String
    public var host: String
    public var pid: Int32

    public init(id: String, host: String, pid: Int32) {
        self.id = id
        self.host = host
        self.pid = pid
    }

    /// This process on this host, with a fresh random id unless one is given.
    public static func current(id: String? = nil) -> LockOwner {
        LockOwner(id: id ?? UUID().uuidString.lowercased(), host: hostName(), pid: getpid())
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A granted lock. Values only: the strategy keeps whatever else it needs.
public struct Lease: Sendable, Hashable {
    public var resource: String
    public var owner: LockOwner
    /// Fencing token: strictly greater than every earlier grant of this resource, so a store or service that
    /// remembers the highest token it has seen can refuse writes from a holder whose lease has run out.
    public var token: UInt64
    public var acquired: Date
    public var expires: Date
    /// The lease length asked for; each renewal moves `expires` to now + `duration`.
    public var duration: Double
    /// Strategy-specific (the lock object's version, the Redis value); opaque to callers.
    public var version: String?
    public var mode: LeaseMode

    public init(
        resource: String, owner: LockOwner, token: UInt64, acquired: Date, expires: Date, duration: Double,
        version: String? = nil, mode: LeaseMode = .exclusive
    ) {
        self.resource = resource
        self.owner = owner
        self.token = token
        self.acquired = acquired.lockPrecision
        self.expires = expires.lockPrecision
        self.duration = duration
        self.version = version
        self.mode = mode
    }

    /// What `holders()` would show for this lease.
    public var record: LockRecord {
        LockRecord(
            owner: owner.id, host: owner.host, pid: owner.pid, acquired: acquired, expires: expires,
            token: token, resource: resource, mode: mode == .shared ? .shared : nil)
    }
}

/// A lock as stored (object body, lock file content) and as listed (`bucketfs lock list`, `.bucketfs/locks/`).
/// JSON with ISO-8601 dates (fractional seconds, UTC).
public struct LockRecord: Sendable, Equatable, Codable {
    public var owner: String
    public var host: String
    public var pid: Int32
    public var acquired: Date
    public var expires: Date
    public var token: UInt64
    public var resource: String
    /// Set when the holder let go; the record stays so that the next token continues from this one.
    public var released: Bool?
    /// `shared` for a shared holder (or a lock object of shared holders); absent: exclusive.
    public var mode: LeaseMode?
    /// A lock object held shared lists its holders here; the top-level fields then describe the object as a
    /// whole (the greatest token issued, the latest expiry), so a reader that knows nothing of sharing sees it
    /// held and stays out.
    public var holders: [LockRecord]?

    public init(
        owner: String, host: String, pid: Int32, acquired: Date, expires: Date, token: UInt64,
        resource: String, released: Bool? = nil, mode: LeaseMode? = nil, holders: [LockRecord]? = nil
    ) {
        self.owner = owner
        self.host = host
        self.pid = pid
        self.acquired = acquired.lockPrecision
        self.expires = expires.lockPrecision
        self.token = token
        self.resource = resource
        self.released = released
        self.mode = mode == .exclusive ? nil : mode
        self.holders = holders
    }

    /// Held by its owner at `now`, judged by the reader's clock.
    public func isHeld(at now: Date = Date()) -> Bool {
        released != true && expires > now
    }

    /// `shared` or `exclusive`.
    public var leaseMode: LeaseMode { mode ?? .exclusive }

    /// The holders alive at `now`: the listed sharers, or the record itself.
    public func liveHolders(at now: Date = Date()) -> [LockRecord] {
        guard isHeld(at: now) else { return [] }
        guard let holders else { return [self] }
        return holders.filter { $0.isHeld(at: now) }
    }

    public func encoded() -> Data {
        // Encoding a struct of strings, numbers and dates cannot fail.
        (try? Self.encoder.encode(self)) ?? Data()
    }

    public static func decode(_ data: Data) throws(LockError) -> LockRecord {
        do {
            return try decoder.decode(LockRecord.self, from: data)
        } catch {
            throw .invalid("malformed lock record: \(String(decoding: data.prefix(200), as: UTF8.self))")
        }
    }

    public static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(format(date))
        }
        return encoder
    }

    public static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            // Records written by other tools may lack the fraction.
            if let date = (try? withFraction.parse(text)) ?? (try? withoutFraction.parse(text)) {
                return date.lockPrecision
            }
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an ISO-8601 date: \(text)")
        }
        return decoder
    }

    private static let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
    private static let withoutFraction = Date.ISO8601FormatStyle()

    /// `2025-01-31T12:00:00.250Z`, from the whole milliseconds of `date` (rounded, not truncated, so that a
    /// date read back from a record formats to the same text again).
    static func format(_ date: Date) -> String {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded())
        var seconds = time_t(milliseconds.quotientAndRemainder(dividingBy: 1000).quotient)
        var fraction = milliseconds - Int64(seconds) * 1000
        if fraction < 0 {  // before 1970
            seconds -= 1
            fraction += 1000
        }
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(fraction))
    }
}

extension Date {
    /// Whole milliseconds, what a record keeps: leases and records hold dates this way, so a record read back
    /// compares equal to the one written.
    var lockPrecision: Date {
        Date(timeIntervalSince1970: (timeIntervalSince1970 * 1000).rounded() / 1000)
    }
}

public enum LockError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The lock is no longer ours: taken over after expiry, or released already.
    case lost(String)
    /// The backend (Redis, the store, the lock directory) could not be reached or failed.
    case unavailable(String)
    /// A bad resource name, configuration or stored record.
    case invalid(String)

    public var description: String {
        switch self {
        case .lost(let resource): return "lock lost: \(resource)"
        case .unavailable(let detail): return "lock backend unavailable: \(detail)"
        case .invalid(let detail): return "invalid lock request: \(detail)"
        }
    }
}

/// Shared checks on resource names; each strategy adds its own.
func validateResource(_ resource: String) throws(LockError) {
    guard !resource.isEmpty else { throw .invalid("empty resource name") }
    guard !resource.utf8.contains(0) else { throw .invalid("resource name contains NUL") }
}

func validateLease(_ lease: Double) throws(LockError) {
    guard lease.isFinite, lease > 0 else { throw .invalid("lease must be a positive number of seconds, got \(lease)") }
}
