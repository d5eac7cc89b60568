import Foundation

/// Sessions (seed 001): `sessions/<id>.json`.
public struct SessionStore: Sendable {
    let table: RecordTable<SessionRecord>
    let conversations: ConversationStore
    let tasks: TaskContextStore

    init(backend: any RecordBackend) {
        table = RecordTable(backend: backend)
        conversations = ConversationStore(backend: backend)
        tasks = TaskContextStore(backend: backend)
    }

    /// Creates the session; fails with `.invalid` if the id is taken.
    @discardableResult
    public func create(id: String, userID: String, metadata: [String: JSONValue] = [:]) throws(RecordError)
        -> SessionRecord
    {
        try RecordKey.validate(id, "session id")
        let record = SessionRecord(sessionID: id, userID: userID, metadata: metadata)
        guard try table.create(RecordKey.session(id), record) else { throw .invalid("session \(id) exists already") }
        return record
    }

    public func get(_ id: String) throws(RecordError) -> SessionRecord? {
        try RecordKey.validate(id, "session id")
        return try table.get(RecordKey.session(id))
    }

    /// Seed 001's `update_session`: merges `metadata`, adds to the counters; `false` if there is no such session.
    @discardableResult
    public func update(
        _ id: String, metadata: [String: JSONValue] = [:], incrementRequests: Int = 0,
        addProcessingTime: Double = 0, markErrors: Int = 0
    ) throws(RecordError) -> Bool {
        try modify(id) { record in
            record.metadata.merge(metadata) { _, new in new }
            record.metrics.requestCount += incrementRequests
            record.metrics.totalProcessingTime += addProcessingTime
            record.metrics.errorCount += markErrors
        } != nil
    }

    /// Any change, applied by compare-and-swap (`change` may run more than once); `updated_at` is set.
    @discardableResult
    public func modify(_ id: String, _ change: (inout SessionRecord) -> Void) throws(RecordError) -> SessionRecord? {
        try RecordKey.validate(id, "session id")
        return try table.update(RecordKey.session(id)) { (record: inout SessionRecord) throws(RecordError) in
            change(&record)
            record.updatedAt = max(RecordCoding.now(), record.updatedAt)
        }
    }

    /// Ends the session with `status`; `false` if there is no such session.
    @discardableResult
    public func end(_ id: String, status: String = "completed") throws(RecordError) -> Bool {
        try modify(id) { record in
            record.status = status
            record.endedAt = RecordCoding.now()
        } != nil
    }

    /// Every session, oldest first.
    public func list() throws(RecordError) -> [SessionRecord] {
        try table.all(under: "sessions/").map(\.record).sorted {
            ($0.createdAt, $0.sessionID) < ($1.createdAt, $1.sessionID)
        }
    }

    /// Removes sessions not updated for `maxIdleHours` (with their conversation and task context); returns
    /// their ids. Active sessions are removed too when idle that long: a live mount refreshes its own.
    @discardableResult
    public func cleanupExpired(maxIdleHours: Double = 24, now: Date = Date()) throws(RecordError) -> [String] {
        let cutoff = now.addingTimeInterval(-maxIdleHours * 3600)
        var removed: [String] = []
        for session in try list() where session.updatedAt < cutoff {
            try conversations.delete(session: session.sessionID)
            try tasks.delete(session.sessionID)
            try table.backend.remove(RecordKey.session(session.sessionID))
            removed.append(session.sessionID)
        }
        return removed
    }
}
