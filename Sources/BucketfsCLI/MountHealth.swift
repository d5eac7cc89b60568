import Foundation
import Locking
import ObjectStore
import Records
import Synchronization

/// `health.json` (in the control directory) and `bucketfs health`: whether the store, the records backend and
/// the lock strategy answer, with the mount's request counters.
///
/// The control directory renders the file at every stat of it, so the probes are cached for `ttl` seconds: at most
/// one LIST of the store and one ping of the records backend per TTL, whatever reads it. The object strategy's
/// locks live in the store the LIST has just reached, so it is not probed apart (listing its holders would GET
/// every lock object in the bucket); the locks this mount holds come from its own lock table (`attach`).
final class MountHealth: Sendable {
    private struct Probe {
        var backend: JSONValue
        var records: JSONValue
        var lock: JSONValue
        var at: Date
    }

    private let meter: MeteredStore
    private let records: any RecordBackend
    private let strategy: (any LockStrategy)?
    private let strategyName: String
    private let ttl: Double
    private let now: @Sendable () -> Date
    private let cached = Mutex<Probe?>(nil)
    /// Lock order: `cached` is never held while probing, so a slow store does not block `heldLocks`.
    private let heldLocks = Mutex(HeldLocks())

    /// The lock table's view, held in a struct, not as `Mutex<Closure?>`: each `withLock { $0 }` of a bare closure
    /// wrapped it in two more reabstraction thunks and wrote it back, so every call grew slower until the stack
    /// overflowed (a daemon crash after a few million FUSE operations; see docs/DEVELOPMENT.md, "Closures behind a
    /// Mutex").
    private struct HeldLocks: Sendable {
        var leases: (@Sendable () -> [Lease])?
    }

    /// `ttl` 0 probes at every call (`bucketfs health`).
    init(
        meter: MeteredStore, records: any RecordBackend, locking: LockSetup, ttl: Double,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.meter = meter
        self.records = records
        self.strategy = locking.strategy
        self.strategyName = locking.strategyName
        self.ttl = ttl
        self.now = now
    }

    /// The mount's lock table, once the file system exists.
    func attach(heldLocks leases: @escaping @Sendable () -> [Lease]) {
        heldLocks.withLock { $0.leases = leases }
    }

    /// The JSON document; `status` is `healthy` when all three answered.
    func document() -> Data {
        let probe = currentProbe()
        let counters = meter.snapshot
        var lock = probe.lock
        if case .object(var fields) = lock {
            fields["strategy"] = .string(strategyName)
            if let leases = heldLocks.withLock({ $0.leases }) {
                fields["held_by_this_mount"] = .integer(Int64(leases().count))
            }
            lock = .object(fields)
        }
        var document: [String: JSONValue] = [
            "schema_version": .integer(Int64(RecordCoding.schemaVersion)),
            "checked_at": .string(RecordCoding.format(probe.at)),
            "backend": probe.backend,
            "records": probe.records,
            "lock_strategy": lock,
            "requests": .integer(Int64(counters.requests)),
            "errors": .integer(Int64(counters.errors)),
            "last_error": counters.lastError.map { .string($0) } ?? .null,
            "last_error_at": counters.lastErrorAt.map { .string(RecordCoding.format($0)) } ?? .null,
        ]
        let healthy = [probe.backend, probe.records, probe.lock].allSatisfy(Self.reachable)
        document["status"] = .string(healthy ? "healthy" : "unhealthy")
        return (try? RecordCoding.encode(JSONValue.object(document))) ?? Data("{}\n".utf8)
    }

    private func currentProbe() -> Probe {
        let time = now()
        if let probe = cached.withLock({ $0 }), time.timeIntervalSince(probe.at) < ttl, time >= probe.at {
            return probe
        }
        let fresh = probe(at: time)
        cached.withLock { $0 = fresh }
        return fresh
    }

    /// One LIST (through the unmetered store: health checks are not the mount's traffic), one records ping and,
    /// for a strategy outside the store (Redis, lock files), one holders query.
    private func probe(at time: Date) -> Probe {
        let backend = Self.check { _ = try meter.base.list(ListRequest(prefix: "", delimiter: "/", maxKeys: 1)) }
        let recordsCheck = Self.check { try self.records.ping() }
        let lock: JSONValue
        switch strategy {
        case nil: lock = ["reachable": true]
        case let strategy? where strategy.name == "object": lock = backend
        case let strategy?: lock = Self.check { _ = try strategy.holders() }
        }
        return Probe(backend: backend, records: recordsCheck, lock: lock, at: time)
    }

    private static func check(_ body: () throws -> Void) -> JSONValue {
        do {
            try body()
            return ["reachable": true]
        } catch {
            return ["reachable": false, "error": .string("\(error)")]
        }
    }

    private static func reachable(_ value: JSONValue) -> Bool {
        if case .object(let fields) = value { return fields["reachable"] == .bool(true) }
        return false
    }
}
