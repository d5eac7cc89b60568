import Foundation

/// Task context per session (seed 001): the last one put wins.
public struct TaskContextStore: Sendable {
    let table: RecordTable<TaskContextRecord>

    init(backend: any RecordBackend) { table = RecordTable(backend: backend) }

    public func get(session: String) throws(RecordError) -> JSONValue? {
        try RecordKey.validate(session, "session id")
        return try table.get(RecordKey.task(session))?.context
    }

    public func put(session: String, context: JSONValue) throws(RecordError) {
        try RecordKey.validate(session, "session id")
        try table.put(
            RecordKey.task(session),
            TaskContextRecord(
                schemaVersion: RecordCoding.schemaVersion, sessionID: session,
                updatedAt: RecordCoding.now(), context: context))
    }

    func delete(_ session: String) throws(RecordError) {
        try table.backend.remove(RecordKey.task(session))
    }
}
