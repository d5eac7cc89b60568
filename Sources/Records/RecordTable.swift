import Foundation

/// Typed access to one kind of record on a backend: decode on read, if-absent create, and compare-and-swap
/// updates that retry until they win, so concurrent updaters lose nothing.
struct RecordTable<Record: Codable & Sendable>: Sendable {
    let backend: any RecordBackend

    /// How often an update re-reads and retries after losing a race before giving up.
    static var maxAttempts: Int { 200 }

    func get(_ key: String) throws(RecordError) -> Record? {
        try load(key)?.record
    }

    func load(_ key: String) throws(RecordError) -> (record: Record, version: String)? {
        guard let stored = try backend.read(key) else { return nil }
        return (try RecordCoding.decode(Record.self, from: stored.data, key: key), stored.version)
    }

    /// `false` when a record is there already.
    func create(_ key: String, _ record: Record) throws(RecordError) -> Bool {
        try backend.create(key, data: try RecordCoding.encode(record)) != nil
    }

    func put(_ key: String, _ record: Record) throws(RecordError) {
        try backend.write(key, data: try RecordCoding.encode(record))
    }

    /// Applies `change` to the current record and writes it only if nobody wrote in between; otherwise reads
    /// again and re-applies. `nil` when there is no record. `change` may run several times.
    func update(_ key: String, _ change: (inout Record) throws(RecordError) -> Void) throws(RecordError) -> Record? {
        var delay: UInt32 = 1_000
        for _ in 0..<Self.maxAttempts {
            guard let (current, version) = try load(key) else { return nil }
            var changed = current
            try change(&changed)
            let data = try RecordCoding.encode(changed)
            if try backend.replace(key, data: data, ifVersion: version) != nil { return changed }
            usleep(delay + UInt32.random(in: 0..<delay))
            delay = min(delay * 2, 50_000)
        }
        throw .contended(key)
    }

    /// Creates with `make()` when absent, else updates: one CAS loop covering both.
    func upsert(_ key: String, make: () -> Record, _ change: (inout Record) throws(RecordError) -> Void)
        throws(RecordError) -> Record
    {
        for _ in 0..<Self.maxAttempts {
            if let updated = try update(key, change) { return updated }
            var fresh = make()
            try change(&fresh)
            if try create(key, fresh) { return fresh }
        }
        throw .contended(key)
    }

    /// Every decodable record under `prefix` whose key passes `include`; unreadable ones are skipped (a record
    /// deleted between list and read) — corrupt ones are reported.
    func all(under prefix: String, include: (String) -> Bool = { $0.hasSuffix(".json") }) throws(RecordError) -> [(
        key: String, record: Record
    )] {
        var out: [(key: String, record: Record)] = []
        for key in try backend.keys(under: prefix) where include(key) {
            if let record = try get(key) { out.append((key, record)) }
        }
        return out
    }
}
