import Foundation

/// Conversations (seed 001): one object per message, so appending never rewrites history. The next sequence
/// number is the count of messages; two appenders racing for it both win — the loser of the create takes the
/// next number.
public struct ConversationStore: Sendable {
    let table: RecordTable<ConversationMessage>

    init(backend: any RecordBackend) { table = RecordTable(backend: backend) }

    @discardableResult
    public func append(
        session: String, role: String, content: String,
        metadata: [String: JSONValue] = [:]
    ) throws(RecordError) -> ConversationMessage {
        try RecordKey.validate(session, "session id")
        var sequence = try table.backend.keys(under: RecordKey.conversation(session)).count
        for _ in 0..<RecordTable<ConversationMessage>.maxAttempts {
            let message = ConversationMessage(
                schemaVersion: RecordCoding.schemaVersion, sessionID: session, sequence: sequence,
                role: role, content: content, timestamp: RecordCoding.now(), metadata: metadata)
            if try table.create(RecordKey.message(session, sequence: sequence), message) { return message }
            sequence += 1
        }
        throw .contended(RecordKey.conversation(session))
    }

    /// The last `limit` messages, oldest first.
    public func history(session: String, limit: Int = 50) throws(RecordError) -> [ConversationMessage] {
        try RecordKey.validate(session, "session id")
        let keys = try table.backend.keys(under: RecordKey.conversation(session)).suffix(max(limit, 0))
        var messages: [ConversationMessage] = []
        for key in keys { if let message = try table.get(key) { messages.append(message) } }
        return messages.sorted { $0.sequence < $1.sequence }
    }

    func delete(session: String) throws(RecordError) {
        for key in try table.backend.keys(under: RecordKey.conversation(session)) { try table.backend.remove(key) }
    }
}
