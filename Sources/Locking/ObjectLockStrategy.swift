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

    /// Records this strategy released, by resource: version and token, so the next acquire can skip the read.
    private let released = Mutex<[String: (version: String, token: UInt64)]>([:])
    /// How many released records are remembered (one per file locked recently); beyond, the map starts over.
    static let rememberedLimit = 4096

    /// The folder every lock object lives under.
    public var locksPrefix: String { "\(prefix).bucketfs/locks/" }

    /// `bestEffort` defaults to whatever the store cannot guarantee.
    public init(store: any ObjectStore, prefix: String = "", bestEffort: Bool? = nil) {
        self.store = store
        self.prefix = prefix
        self.bestEffort = bestEffort ?? !store.supportsConditionalWrites
    }

    public func key(for resource: String) -> String {
        "\(locksPrefix)\(resource).lock"
    }

    // MARK: Acquire

    public func tryAcquire(_ resource: String, owner: LockOwner, lease: Double) throws(LockError) -> Lease? {
        try validateResource(resource)
        try validateLease(lease)
        if bestEffort { return try bestEffortAcquire(resource, owner: owner, lease: lease) }
        let key = key(for: resource)

        if let known = released.withLock({ $0.removeValue(forKey: resource) }) {
            // Our own released record, if nobody wrote since: one conditional PUT takes it.
            if let granted = try write(resource, owner: owner, lease: lease, token: known.token + 1, key: key,
                                       condition: .ifVersionMatches(known.version)) {
                return granted
            }
        } else if let granted = try write(resource, owner: owner, lease: lease, token: 1, key: key, condition: .ifAbsent) {
            return granted
        }
        // It exists. Read it: still held, or stale and ours to take over with a write conditional on that version.
        let current: ObjectData
        do {
            current = try store.get(key)
        } catch .notFound {
            return nil  // deleted under us (by hand): someone else is busy with it; the caller retries
        } catch {
            throw Self.map(error)
        }
        // A foreign or damaged object is left for a person to look at (`bucketfs lock list` names no holder for it):
        // taking it over would have to guess the token.
        guard let existing = try? LockRecord.decode(current.body) else {
            throw .invalid("\(key) does not hold a lock record; remove it to free \(resource)")
        }
        guard !existing.isHeld() else { return nil }
        return try write(resource, owner: owner, lease: lease, token: existing.token + 1, key: key,
                         condition: .ifVersionMatches(current.info.version))
    }

    /// A new record for `owner`; `nil` when the condition failed (someone else wrote first).
    private func write(_ resource: String, owner: LockOwner, lease: Double, token: UInt64, key: String,
                       condition: PutCondition) throws(LockError) -> Lease? {
        let now = Date()
        var granted = Lease(resource: resource, owner: owner, token: token, acquired: now,
                            expires: now.addingTimeInterval(lease), duration: lease)
        do {
            let info = try store.put(key, data: granted.record.encoded(), options: Self.options(condition))
            granted.version = info.version
            return granted
        } catch .preconditionFailed, .notFound {
            return nil
        } catch {
            throw Self.map(error)
        }
    }

    // MARK: Renew, release

    public func renew(_ lease: Lease) throws(LockError) -> Lease {
        var renewed = lease
        renewed.expires = Date().addingTimeInterval(lease.duration).lockPrecision
        renewed.version = try replace(lease, with: renewed.record)
        return renewed
    }

    public func release(_ lease: Lease) throws(LockError) {
        var record = lease.record
        record.expires = Date().addingTimeInterval(-0.001).lockPrecision  // in the past, after rounding
        record.released = true
        let version = try replace(lease, with: record)
        guard !bestEffort else { return }
        released.withLock { known in
            if known.count >= Self.rememberedLimit { known.removeAll() }
            known[lease.resource] = (version, lease.token)
        }
    }

    /// Overwrites our lock object, only if it is still the version we wrote. Returns the new version.
    private func replace(_ lease: Lease, with record: LockRecord) throws(LockError) -> String {
        let key = key(for: lease.resource)
        if bestEffort { return try bestEffortReplace(lease, with: record, key: key) }
        guard let version = lease.version else { throw .invalid("lease of \(lease.resource) has no object version") }
        do {
            return try store.put(key, data: record.encoded(), options: Self.options(.ifVersionMatches(version))).version
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
        let now = Date()
        var records: [LockRecord] = []
        for object in objects where object.key.hasSuffix(".lock") {
            let body: Data
            do {
                body = try store.get(object.key).body
            } catch .notFound {
                continue
            } catch {
                throw Self.map(error)
            }
            // A stray object under locks/ is not worth failing the whole listing for.
            if let record = try? LockRecord.decode(body), record.isHeld(at: now) { records.append(record) }
        }
        return records
    }

    // MARK: Best effort (no conditional writes)

    private func bestEffortAcquire(_ resource: String, owner: LockOwner, lease: Double) throws(LockError) -> Lease? {
        let key = key(for: resource)
        var token: UInt64 = 1
        if let existing = try readRecord(key) {
            guard !existing.record.isHeld() else { return nil }
            token = existing.record.token + 1
        }
        guard let granted = try write(resource, owner: owner, lease: lease, token: token, key: key, condition: .none) else {
            return nil
        }
        // GET-after-PUT: if a racer's PUT landed after ours, the body is theirs and they win.
        guard let check = try readRecord(key), check.record == granted.record else { return nil }
        var verified = granted
        verified.version = check.version
        return verified
    }

    private func bestEffortReplace(_ lease: Lease, with record: LockRecord, key: String) throws(LockError) -> String {
        guard let current = try readRecord(key), current.record.owner == lease.owner.id,
              current.record.token == lease.token, current.record.released != true else {
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

    private func readRecord(_ key: String) throws(LockError) -> (record: LockRecord, version: String)? {
        let data: ObjectData
        do {
            data = try store.get(key)
        } catch .notFound {
            return nil
        } catch {
            throw Self.map(error)
        }
        return (try LockRecord.decode(data.body), data.info.version)
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
