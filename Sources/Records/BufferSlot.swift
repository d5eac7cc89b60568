import Foundation

/// One slot of a thread's append-only buffer (seed 004), `buffers/<thread>/<index>.json`.
public struct BufferSlot: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var threadID: String
    /// 0-based; slot `n` is the `n`th appended.
    public var index: Int
    public var createdAt: Date
    /// After this the slot counts as gone (seed 004's TTL garbage collection).
    public var expiresAt: Date?
    public var data: JSONValue

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case threadID = "thread_id"
        case index
        case createdAt = "created_at"
        case expiresAt = "expires_at"
        case data
    }

    func isExpired(at now: Date) -> Bool { expiresAt.map { $0 <= now } ?? false }
}
