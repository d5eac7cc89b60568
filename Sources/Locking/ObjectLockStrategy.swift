import Foundation
import ObjectStore
import Synchronization

/// A lock object `<prefix>.bucketfs/locks/<resource>.lock` whose JSON body is the holder's `LockRecord`,
/// kept in the same store as the data, so every mount of the bucket sees it without another service.
///
/// With conditional writes (S3 `If-None-Match`/`If-Match`, local `O_EXCL`-like checks, GCS generations):
/// - acquire creates the object only if absent; if it exists but has expired or was released, it is taken over
///   by a write conditional on the version just read, so of several racers exactly one wins;
/// - renew and release are writes conditional on our own version: if anyone took the lock over, they fail and
///   we learn the lease is lost;
/// - release does not delete the object: it overwrites it with a released record that keeps the token, so the
///   next holder's token is this one + 1 and tokens never go back.
///
/// Clock skew: whether a lease has expired is judged by the *reader's* clock against the `expires` the holder
/// wrote with its own. A reader whose clock runs ahead of the holder's takes over early by the skew; keep hosts
/// NTP-synchronised and leases much longer than any plausible skew (seconds vs the default 60 s).
///
/// Round trips: a first acquire is one conditional PUT; release is one. Re-acquiring a lock this strategy
/// released last is one PUT conditional on the version of that released record (remembered here), so an
/// uncontended acquire+release costs 2; only when someone else wrote the object since does acquire read it (3).
///
/// `bestEffort` (stores without conditional writes): plain PUT, then GET to check the body is ours. Two racers
/// can both read "free", both PUT, and the first can verify before the second's PUT lands: both believe they
/// hold the lock. It narrows the window; it does not close it. Prefer `redis` there.
public final class ObjectLockStrategy: LockStrategy {
    public let store: any ObjectStore
    /// Key prefix of the mount (`""` or ending with `/`).
    public let prefix: String
    public let bestEffort: Bool
    public var name: String { "object" }
    /// This host's clock: it stamps leases and decides whether one read has expired (tests move it).
    let clock: @Sendable () -> Date

    /// Records this strategy released, by resource: version and token, so the next acquire can skip the read.
    private let released = Mutex<[String: (version: String, token: UInt64)]>([:])
    /// How many released records are remembered (one per file locked recently); beyond, the map starts over.
    static let rememberedLimit = 4096

    /// The folder every lock object lives under.
    public var locksPrefix: String { "\(prefix).bucketfs/locks/" }

    /// `bestEffort` defaults to whatever the store cannot guarantee.
    public init(
        store: any ObjectStore, prefix: String = "", bestEffort: Bool? = nil,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.store = store
        self.prefix = prefix
        self.bestEffort = bestEffort ?? !store.supportsConditionalWrites
        self.clock = clock
    }

    public func key(for resource: String) -> String {
        "\(locksPrefix)\(resource).lock"
    }

    // MARK: Acquire

    public func tryAcquire(
        _ resource: String, owner: LockOwner, lease: Double,
        mode: LeaseMode
    ) throws(LockError) -> Lease? {
        try validateResource(resource)
        try validateLease(lease)
        // Without conditional writes two sharers joining at once would overwrite each other: exclusive only.
        if bestEffort { return try bestEffortAcquire(resource, owner: owner, lease: lease) }
        let key = key(for: resource)

        if let known = released.withLock({ $0.removeValue(forKey: resource) }) {
            // Our own released record, if nobody wrote since: one conditional PUT takes it.
            let granted = fresh(resource, owner: owner, lease: lease, token: known.token + 1, mode: mode)
            if let lease = try write(granted, key: key, condition: .ifVersionMatches(known.version)) { return lease }
        } else {
            let granted = fresh(resource, owner: owner, lease: lease, token: 1, mode: mode)
            if let lease = try write(granted, key: key, condition: .ifAbsent) { return lease }
        }
        // It exists. Read it: free (expired, released) → take it over; shared and we want to share → join; each
        // with a write conditional on the version read. Another sharer joining at the same instant makes our
        // write fail: read again (a few times; then the caller's retry takes over).
        for _ in 0..<Self.rounds {
            guard let current = try readRecord(key) else {
                // Deleted under us (by hand): start afresh.
                let granted = fresh(resource, owner: owner, lease: lease, token: 1, mode: mode)
                if let lease = try write(granted, key: key, condition: .ifAbsent) { return lease }
                continue
            }
            let live = current.record.liveHolders(at: clock())
            let granted = fresh(resource, owner: owner, lease: lease, token: current.record.token + 1, mode: mode)
            if live.isEmpty {
                if let lease = try write(granted, key: key, condition: .ifVersionMatches(current.version)) {
                    return lease
                }
                continue
            }
            // Held exclusively, or we want it exclusively, or we share it already (not re-entrant): refused.
            guard mode == .shared, live.allSatisfy({ $0.leaseMode == .shared && $0.owner != owner.id }) else {
                return nil
            }
            let body = sharedObject(resource, holders: live + [granted.record], topToken: granted.token)
            if let lease = try write(
                granted, body: body, key: key,
                condition: .ifVersionMatches(current.version))
            {
                return lease
            }
        }
        return nil
    }

    /// How many read-modify-write rounds a shared change tries before giving up on a busy lock object.
    static let rounds = 8

    private func fresh(
        _ resource: String, owner: LockOwner, lease: Double, token: UInt64,
        mode: LeaseMode
    ) -> Lease {
        let now = clock()
        return Lease(
            resource: resource, owner: owner, token: token, acquired: now,
            expires: now.addingTimeInterval(lease), duration: lease, mode: mode)
    }

    /// Writes `body` (by default the lease's own record, or a one-holder shared object); `nil` when the
    /// condition failed (someone else wrote first).
    private func write(
        _ lease: Lease, body: LockRecord? = nil, key: String,
        condition: PutCondition
    ) throws(LockError) -> Lease? {
        let record =
            body
            ?? (lease.mode == .shared
                ? sharedObject(lease.resource, holders: [lease.record], topToken: lease.token) : lease.record)
        do {
            let info = try store.put(key, data: record.encoded(), options: Self.options(condition))
            var granted = lease
            granted.version = info.version
            remember(lease.resource, version: info.version, body: record)
            return granted
        } catch .preconditionFailed, .notFound {
            return nil
        } catch {
            throw Self.map(error)
        }
    }

    /// The lock object of shared holders: the top-level fields are those of the latest sharer, with the greatest
    /// token issued and the latest expiry, so a reader unaware of sharing sees it held.
    func sharedObject(_ resource: String, holders: [LockRecord], topToken: UInt64) -> LockRecord {
        guard let latest = holders.max(by: { $0.token < $1.token }) else {
            let now = clock().addingTimeInterval(-0.001)
            return LockRecord(
                owner: "", host: "", pid: 0, acquired: now, expires: now, token: topToken,
                resource: resource, released: true)
        }
        let expires = holders.map(\.expires).max() ?? latest.expires
        return LockRecord(
            owner: latest.owner, host: latest.host, pid: latest.pid, acquired: latest.acquired,
            expires: expires, token: max(topToken, latest.token), resource: resource,
            mode: .shared, holders: holders)
    }

    // MARK: Renew, release, convert

    public func renew(_ lease: Lease) throws(LockError) -> Lease {
        var renewed = lease
        renewed.expires = clock().addingTimeInterval(lease.duration).lockPrecision
        if lease.mode == .shared && !bestEffort {
            let record = renewed.record
            renewed.version = try updateShared(lease) { current, live in
                sharedObject(
                    lease.resource, holders: live.map { $0.token == lease.token ? record : $0 },
                    topToken: current.token)
            }!
            return renewed
        }
        renewed.version = try replace(lease, with: renewed.record)
        return renewed
    }

    public func release(_ lease: Lease) throws(LockError) {
        let version: String
        var token = lease.token
        if lease.mode == .shared && !bestEffort {
            var others = 0
            version = try updateShared(lease) { current, live in
                token = current.token
                others = live.count - 1
                return sharedObject(
                    lease.resource, holders: live.filter { $0.token != lease.token },
                    topToken: current.token)
            }!
            // Others still share it: nothing to remember for a quick re-acquire.
            if others > 0 { return }
        } else {
            var record = lease.record
            record.expires = clock().addingTimeInterval(-0.001).lockPrecision  // in the past, after rounding
            record.released = true
            record.mode = nil
            version = try replace(lease, with: record)
        }
        guard !bestEffort else { return }
        released.withLock { known in
            if known.count >= Self.rememberedLimit { known.removeAll() }
            known[lease.resource] = (version, token)
        }
    }

    public func convert(_ lease: Lease, to mode: LeaseMode) throws(LockError) -> Lease? {
        guard mode != lease.mode else { return lease }
        // Best effort holds exclusive leases only, which serve shared needs too.
        if bestEffort { return mode == .shared ? lease : nil }
        var converted = lease
        converted.mode = mode
        converted.expires = clock().addingTimeInterval(lease.duration).lockPrecision
        if mode == .shared {
            let body = sharedObject(lease.resource, holders: [converted.record], topToken: lease.token)
            converted.version = try replace(lease, with: body)
            return converted
        }
        // Shared → exclusive: only as the last sharer, and with a token above every sharer's.
        guard
            let version = try updateShared(
                lease,
                { current, live in
                    guard live.count == 1 else { return nil }
                    converted.token = current.token + 1
                    return converted.record
                })
        else { return nil }
        converted.version = version
        return converted
    }

    /// A change to a shared lock object: `change` gets the object and its live holders (ours among them) and
    /// returns the new body, or `nil` to give up (answered `nil`). Conditional on the version read; a racing
    /// sharer's write makes us read again. Throws `.lost` when we are no longer among the holders.
    private func updateShared(
        _ lease: Lease,
        _ change: (LockRecord, [LockRecord]) throws(LockError) -> LockRecord?
    )
        throws(LockError) -> String?
    {
        let key = key(for: lease.resource)
        // What we wrote last, if it is still the version we know: saves a read when nobody else wrote since.
        var current = sharedBodies.withLock { $0[lease.resource] }.flatMap {
            $0.version == lease.version ? (record: $0.body, version: $0.version) : nil
        }
        var cached = current != nil
        for _ in 0..<Self.rounds {
            if current == nil {
                current = try readRecord(key)
                cached = false
            }
            guard let (record, version) = current else { throw .lost(lease.resource) }
            let live = record.liveHolders(at: clock())
            let ours = live.contains { $0.owner == lease.owner.id && $0.token == lease.token }
            // What we wrote last may be out of date (another sharer left or joined): only a fresh read decides.
            guard let body = ours ? try change(record, live) : nil else {
                if cached {
                    current = nil
                    continue
                }
                if !ours { throw .lost(lease.resource) }
                return nil
            }
            do {
                let info = try store.put(
                    key, data: body.encoded(),
                    options: Self.options(.ifVersionMatches(version)))
                remember(lease.resource, version: info.version, body: body)
                return info.version
            } catch .preconditionFailed, .notFound {
                current = nil
            } catch {
                throw Self.map(error)
            }
        }
        throw .unavailable("lock object of \(lease.resource) kept changing under \(Self.rounds) attempts")
    }

    /// The body and version this strategy wrote last per resource (shared objects only), to skip a read.
    private let sharedBodies = Mutex<[String: (version: String, body: LockRecord)]>([:])

    private func remember(_ resource: String, version: String, body: LockRecord) {
        sharedBodies.withLock { bodies in
            guard body.mode == .shared || bodies[resource] != nil else { return }
            if bodies.count >= Self.rememberedLimit { bodies.removeAll() }
            bodies[resource] = (version, body)
        }
    }

    /// Overwrites our lock object, only if it is still the version we wrote. Returns the new version.
    private func replace(_ lease: Lease, with record: LockRecord) throws(LockError) -> String {
        let key = key(for: lease.resource)
        if bestEffort { return try bestEffortReplace(lease, with: record, key: key) }
        guard let version = lease.version else { throw .invalid("lease of \(lease.resource) has no object version") }
        do {
            let info = try store.put(key, data: record.encoded(), options: Self.options(.ifVersionMatches(version)))
            remember(lease.resource, version: info.version, body: record)
            return info.version
        } catch .preconditionFailed, .notFound {
            throw .lost(lease.resource)
        } catch {
            throw Self.map(error)
        }
    }

    // MARK: Listing

    public func holders() throws(LockError) -> [LockRecord] {
        let objects: [ObjectInfo]
        do {
            objects = try store.listAll(prefix: locksPrefix).objects
        } catch {
            throw Self.map(error)
        }
        var records: [LockRecord] = []
        for object in objects where object.key.hasSuffix(".lock") {
            // A stray object under locks/ is not worth failing the whole listing for.
            guard let found = try? readRecord(object.key) else { continue }
            records += listed(found.record)
        }
        return records
    }

    /// One GET.
    public func holders(of resource: String) throws(LockError) -> [LockRecord] {
        listed(try readRecord(key(for: resource))?.record)
    }

    /// The live holders of a lock object, each as its own record (a sharer's record names the resource).
    private func listed(_ record: LockRecord?) -> [LockRecord] {
        guard let record else { return [] }
        return record.liveHolders(at: clock()).map { holder in
            var shown = holder
            shown.resource = record.resource
            return shown
        }
    }

    /// The release feed saw the lock object free (released or expired) at `version`: the next acquire takes it
    /// over with one PUT conditional on that version instead of trying to create it and then reading it (a
    /// waiter on another mount is served in one round trip after the feed's GET, where it took three).
    func noteFree(_ resource: String, version: String, token: UInt64) {
        released.withLock { known in
            if known.count >= Self.rememberedLimit { known.removeAll() }
            known[resource] = (version, token)
        }
    }

    public func makeReleaseFeed() -> any LockReleaseFeed {
        ObjectReleaseFeed(strategy: self)
    }

    // MARK: Best effort (no conditional writes)

    private func bestEffortAcquire(_ resource: String, owner: LockOwner, lease: Double) throws(LockError) -> Lease? {
        let key = key(for: resource)
        var token: UInt64 = 1
        if let existing = try readRecord(key) {
            guard !existing.record.isHeld(at: clock()) else { return nil }
            token = existing.record.token + 1
        }
        let fresh = fresh(resource, owner: owner, lease: lease, token: token, mode: .exclusive)
        guard let granted = try write(fresh, key: key, condition: .none) else { return nil }
        // GET-after-PUT: if a racer's PUT landed after ours, the body is theirs and they win.
        guard let check = try readRecord(key), check.record == granted.record else { return nil }
        var verified = granted
        verified.version = check.version
        return verified
    }

    private func bestEffortReplace(_ lease: Lease, with record: LockRecord, key: String) throws(LockError) -> String {
        guard let current = try readRecord(key), current.record.owner == lease.owner.id,
            current.record.token == lease.token, current.record.released != true
        else {
            throw .lost(lease.resource)
        }
        do {
            try store.put(key, data: record.encoded(), options: Self.options(.none))
        } catch {
            throw Self.map(error)
        }
        guard let check = try readRecord(key), check.record == record else { throw .lost(lease.resource) }
        return check.version
    }

    /// The lock record at `key` and its version; `nil` when there is none. A foreign or damaged object is left
    /// for a person to look at (`bucketfs lock list` names no holder for it): taking it over would have to guess
    /// the token.
    func readRecord(_ key: String) throws(LockError) -> (record: LockRecord, version: String)? {
        let data: ObjectData
        do {
            data = try store.get(key)
        } catch .notFound {
            return nil
        } catch {
            throw Self.map(error)
        }
        guard let record = try? LockRecord.decode(data.body) else {
            throw .invalid("\(key) does not hold a lock record; remove it to free the lock")
        }
        return (record, data.info.version)
    }

    // MARK: Helpers

    private static func options(_ condition: PutCondition) -> PutOptions {
        PutOptions(contentType: "application/json", condition: condition)
    }

    static func map(_ error: ObjectStoreError) -> LockError {
        switch error {
        case .invalidKey, .invalidRequest: return .invalid(error.description)
        default: return .unavailable(error.description)
        }
    }
}
