import Foundation

/// A session (seed 001): who, when, status, free-form metadata and request metrics. A bucketfs mount is one,
/// with its mount details in `metadata`.
public struct SessionRecord: Codable, Sendable, Equatable {
    public struct Metrics: Codable, Sendable, Equatable {
        public var requestCount: Int
        public var totalProcessingTime: Double
        public var errorCount: Int

        public init(requestCount: Int = 0, totalProcessingTime: Double = 0, errorCount: Int = 0) {
            self.requestCount = requestCount
            self.totalProcessingTime = totalProcessingTime
            self.errorCount = errorCount
        }

        enum CodingKeys: String, CodingKey {
            case requestCount = "request_count"
            case totalProcessingTime = "total_processing_time"
            case errorCount = "error_count"
        }
    }

    public var schemaVersion: Int
    public var sessionID: String
    public var userID: String
    public var createdAt: Date
    public var updatedAt: Date
    /// `active` until ended; then the status given to `end` (`completed`, `unmounted`, `failed`…).
    public var status: String
    public var endedAt: Date?
    public var metadata: [String: JSONValue]
    public var metrics: Metrics

    public init(sessionID: String, userID: String, metadata: [String: JSONValue] = [:], now: Date = RecordCoding.now())
    {
        schemaVersion = RecordCoding.schemaVersion
        self.sessionID = sessionID
        self.userID = userID
        createdAt = now
        updatedAt = now
        status = "active"
        endedAt = nil
        self.metadata = metadata
        metrics = Metrics()
    }

    public var isActive: Bool { status == "active" }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case sessionID = "session_id"
        case userID = "user_id"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
        case status
        case endedAt = "ended_at"
        case metadata, metrics
    }
}
