import Foundation

/// Seed 004's bidirectional registry chain ↔ uuid, with a TTL (`nil`: never expires). The uuid record is the
/// truth; the chain index is checked against it, so a stale index entry never answers.
public struct ThreadRegistry: Sendable {
    let table: RecordTable<RegistryEntry>
    public let ttl: Double?
    let clock: @Sendable () -> Date

    init(backend: any RecordBackend, ttl: Double?, clock: @escaping @Sendable () -> Date = { Date() }) {
        table = RecordTable(backend: backend)
        self.ttl = ttl
        self.clock = clock
    }

    /// Maps `chain` ↔ `uuid`, replacing an older mapping of either.
    public func set(chain: String, uuid: String) throws(RecordError) {
        try RecordKey.validate(chain, "chain")
        try RecordKey.validate(uuid, "uuid")
        if let old = try table.get(RecordKey.registryEntry(uuid)), old.chain != chain {
            try table.backend.remove(RecordKey.registryChain(old.chain))
        }
        if let oldUUID = try self.uuid(for: chain), oldUUID != uuid {
            try table.backend.remove(RecordKey.registryEntry(oldUUID))
        }
        let now = RecordCoding.truncated(clock())
        let entry = RegistryEntry(
            schemaVersion: RecordCoding.schemaVersion, uuid: uuid, chain: chain, createdAt: now,
            expiresAt: ttl.map { now.addingTimeInterval($0) })
        try table.put(RecordKey.registryEntry(uuid), entry)
        try table.put(RecordKey.registryChain(chain), entry)
    }

    public func uuid(for chain: String) throws(RecordError) -> String? {
        try RecordKey.validate(chain, "chain")
        guard let index = try live(RecordKey.registryChain(chain)),
            let entry = try live(RecordKey.registryEntry(index.uuid)), entry.chain == chain
        else { return nil }
        return entry.uuid
    }

    public func chain(for uuid: String) throws(RecordError) -> String? {
        try RecordKey.validate(uuid, "uuid")
        return try live(RecordKey.registryEntry(uuid))?.chain
    }

    /// Removes both directions; `true` if the mapping existed.
    @discardableResult
    public func delete(uuid: String) throws(RecordError) -> Bool {
        try RecordKey.validate(uuid, "uuid")
        guard let entry = try table.get(RecordKey.registryEntry(uuid)) else { return false }
        if let index = try table.get(RecordKey.registryChain(entry.chain)), index.uuid == uuid {
            try table.backend.remove(RecordKey.registryChain(entry.chain))
        }
        try table.backend.remove(RecordKey.registryEntry(uuid))
        return !entry.isExpired(at: clock())
    }

    /// uuid → chain for every live mapping.
    public func all() throws(RecordError) -> [String: String] {
        let now = clock()
        var out: [String: String] = [:]
        for (_, entry) in try table.all(under: "registry/", include: Self.isEntryKey) where !entry.isExpired(at: now) {
            out[entry.uuid] = entry.chain
        }
        return out
    }

    /// Deletes expired mappings; returns how many.
    @discardableResult
    public func purgeExpired(now: Date? = nil) throws(RecordError) -> Int {
        let now = now ?? clock()
        var removed = 0
        for (_, entry) in try table.all(under: "registry/", include: Self.isEntryKey) where entry.isExpired(at: now) {
            try table.backend.remove(RecordKey.registryChain(entry.chain))
            try table.backend.remove(RecordKey.registryEntry(entry.uuid))
            removed += 1
        }
        return removed
    }

    private func live(_ key: String) throws(RecordError) -> RegistryEntry? {
        guard let entry = try table.get(key), !entry.isExpired(at: clock()) else { return nil }
        return entry
    }

    private static func isEntryKey(_ key: String) -> Bool {
        key.hasSuffix(".json") && !key.dropFirst("registry/".count).contains("/")
    }
}
