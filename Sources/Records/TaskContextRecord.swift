import Foundation

/// A session's task context (seed 001), `tasks/<session>.json`.
public struct TaskContextRecord: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var sessionID: String
    public var updatedAt: Date
    public var context: JSONValue

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case sessionID = "session_id"
        case updatedAt = "updated_at"
        case context
    }
}
