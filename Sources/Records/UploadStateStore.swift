import Foundation

/// Multipart-upload states (seed 002).
public struct UploadStateStore: Sendable {
    let table: RecordTable<UploadStateRecord>

    init(backend: any RecordBackend) { table = RecordTable(backend: backend) }

    public func get(_ id: String) throws(RecordError) -> UploadStateRecord? {
        try RecordKey.validate(id, "upload job id")
        return try table.get(RecordKey.upload(id))
    }

    /// Saves the state; `last_updated` is set to now.
    public func save(_ state: UploadStateRecord) throws(RecordError) {
        try RecordKey.validate(state.id, "upload job id")
        var state = state
        state.lastUpdated = RecordCoding.now()
        try table.put(RecordKey.upload(state.id), state)
    }

    /// Adds one part by compare-and-swap, so parts finishing on several threads are all kept.
    @discardableResult
    public func addPart(_ id: String, _ part: UploadStateRecord.Part) throws(RecordError) -> UploadStateRecord? {
        try RecordKey.validate(id, "upload job id")
        return try table.update(RecordKey.upload(id)) { (state: inout UploadStateRecord) throws(RecordError) in
            state.parts.removeAll { $0.partNumber == part.partNumber }
            state.parts.append(part)
            state.parts.sort { $0.partNumber < $1.partNumber }
            state.lastUpdated = RecordCoding.now()
        }
    }

    public func delete(_ id: String) throws(RecordError) {
        try RecordKey.validate(id, "upload job id")
        try table.backend.remove(RecordKey.upload(id))
    }

    /// The states of every upload not yet completed or aborted, oldest first.
    public func listActive() throws(RecordError) -> [UploadStateRecord] {
        try table.all(under: "uploads/").map(\.record).sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
    }

    /// Like `listActive`, but a record that cannot be read or decoded is returned by key with its error instead of
    /// failing the whole listing: crash recovery must go on for the others.
    public func listActiveTolerating() throws(RecordError) -> (
        states: [UploadStateRecord],
        unreadable: [(key: String, error: RecordError)]
    ) {
        var states: [UploadStateRecord] = []
        var unreadable: [(key: String, error: RecordError)] = []
        for key in try table.backend.keys(under: "uploads/") where key.hasSuffix(".json") {
            do {
                if let state = try table.get(key) { states.append(state) }
            } catch {
                unreadable.append((key, error))
            }
        }
        return (states.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }, unreadable)
    }

    /// Deletes states not updated for `maxAgeHours` and returns them (the caller aborts their uploads).
    @discardableResult
    public func cleanupStale(maxAgeHours: Double = 24, now: Date = Date()) throws(RecordError) -> [UploadStateRecord] {
        let cutoff = now.addingTimeInterval(-maxAgeHours * 3600)
        let stale = try listActive().filter { $0.lastUpdated < cutoff }
        for state in stale { try table.backend.remove(RecordKey.upload(state.id)) }
        return stale
    }
}
