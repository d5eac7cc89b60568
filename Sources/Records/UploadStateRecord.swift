import Foundation

/// The state of one multipart upload (seed 002), `uploads/<id>.json`: enough to complete or abort it after a
/// crash.
public struct UploadStateRecord: Codable, Sendable, Equatable {
    public struct Part: Codable, Sendable, Equatable {
        public var partNumber: Int
        public var etag: String

        public init(partNumber: Int, etag: String) {
            self.partNumber = partNumber
            self.etag = etag
        }

        enum CodingKeys: String, CodingKey {
            case partNumber = "part_number"
            case etag = "ETag"
        }
    }

    public var schemaVersion: Int
    /// The job id of seed 002; bucketfs uses `<mount id>-<upload id prefix>`.
    public var id: String
    /// The object key being written.
    public var key: String
    public var uploadID: String
    public var parts: [Part]
    public var createdAt: Date
    public var lastUpdated: Date
    /// Where the data is kept locally until the upload completes (bucketfs: the staged file), if anywhere.
    public var stagedPath: String?
    /// The session (mount) that owns the upload.
    public var sessionID: String?
    public var metadata: [String: JSONValue]

    public init(
        id: String, key: String, uploadID: String, parts: [Part] = [], stagedPath: String? = nil,
        sessionID: String? = nil, metadata: [String: JSONValue] = [:], now: Date = RecordCoding.now()
    ) {
        schemaVersion = RecordCoding.schemaVersion
        self.id = id
        self.key = key
        self.uploadID = uploadID
        self.parts = parts
        createdAt = now
        lastUpdated = now
        self.stagedPath = stagedPath
        self.sessionID = sessionID
        self.metadata = metadata
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case id = "job_id"
        case key
        case uploadID = "upload_id"
        case parts
        case createdAt = "created_at"
        case lastUpdated = "last_updated"
        case stagedPath = "staged_path"
        case sessionID = "session_id"
        case metadata
    }
}
