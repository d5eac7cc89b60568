import Foundation

/// How to reach a Google Cloud Storage bucket through the JSON API. Unset fields come from the environment
/// (see `GCSCredentials.resolve`).
public struct GCSConfiguration: Sendable {
    public var bucket: String
    /// A custom endpoint such as `http://127.0.0.1:4443` (an emulator); otherwise `STORAGE_EMULATOR_HOST`, then
    /// `https://storage.googleapis.com`. A custom endpoint or `STORAGE_EMULATOR_HOST` means no authentication
    /// unless `credentialsFile` is given explicitly.
    public var endpointURL: String?
    /// A service-account (or `gcloud auth application-default login`) JSON file; otherwise
    /// `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's well-known file, then the metadata server.
    public var credentialsFile: String?
    /// The project; otherwise the credentials file's `project_id`, then `GOOGLE_CLOUD_PROJECT`.
    public var projectID: String?
    /// Seconds to establish a connection.
    public var connectTimeout: Double
    /// A transfer slower than `lowSpeedLimit` bytes/s for `lowSpeedTime` seconds is aborted (and retried).
    public var lowSpeedLimit: Int
    public var lowSpeedTime: Int
    /// Retries after the first attempt for failures that may pass (429, 5xx, connection errors).
    public var maxRetries: Int
    /// Bodies larger than this go up as a resumable upload; smaller ones (and every part) in one multipart request.
    public var resumableThreshold: Int
    /// Size of each resumable chunk; rounded down to a multiple of 256 KiB (GCS's rule), at least 256 KiB.
    public var resumableChunkSize: Int
    /// Where the parts of multipart uploads wait, as temporary objects, until they are composed.
    public var uploadsPrefix: String
    /// Environment to read `STORAGE_EMULATOR_HOST`, `GOOGLE_*` and `GCE_METADATA_HOST` from; `nil` means the
    /// process environment. Tests pass their own.
    public var environment: [String: String]?

    public init(
        bucket: String, endpointURL: String? = nil, credentialsFile: String? = nil, projectID: String? = nil,
        connectTimeout: Double = 10, lowSpeedLimit: Int = 1024, lowSpeedTime: Int = 30, maxRetries: Int = 5,
        resumableThreshold: Int = 8 << 20, resumableChunkSize: Int = 8 << 20,
        uploadsPrefix: String = ".bucketfs/multipart/", environment: [String: String]? = nil
    ) {
        self.bucket = bucket
        self.endpointURL = endpointURL
        self.credentialsFile = credentialsFile
        self.projectID = projectID
        self.connectTimeout = connectTimeout
        self.lowSpeedLimit = lowSpeedLimit
        self.lowSpeedTime = lowSpeedTime
        self.maxRetries = maxRetries
        self.resumableThreshold = resumableThreshold
        self.resumableChunkSize = resumableChunkSize
        self.uploadsPrefix = uploadsPrefix
        self.environment = environment
    }
}
