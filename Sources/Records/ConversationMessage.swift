import Foundation

/// One message of a session's conversation (seed 001), `conversations/<session>/<sequence>.json`.
public struct ConversationMessage: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var sessionID: String
    /// 0-based position in the conversation.
    public var sequence: Int
    public var role: String
    public var content: String
    public var timestamp: Date
    public var metadata: [String: JSONValue]

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case sessionID = "session_id"
        case sequence, role, content, timestamp, metadata
    }
}
