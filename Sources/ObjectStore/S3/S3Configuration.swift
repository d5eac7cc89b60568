import Foundation

/// How to reach an S3 bucket. Unset fields come from the environment and `~/.aws` (see `S3Credentials`).
public struct S3Configuration: Sendable {
    public var bucket: String
    /// Explicit region; otherwise `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, then `us-east-1`.
    public var region: String?
    /// A custom endpoint such as `http://127.0.0.1:5000`; otherwise `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, then
    /// `https://s3.<region>.amazonaws.com`.
    public var endpointURL: String?
    /// Path-style (`endpoint/bucket/key`) instead of virtual-hosted (`bucket.endpoint/key`). Default: path-style
    /// with a custom endpoint (MinIO, moto, Ceph…) or a bucket name with dots (TLS wildcard certificates don't
    /// cover them), virtual-hosted on AWS otherwise.
    public var pathStyle: Bool?
    public var accessKeyID: String?
    public var secretAccessKey: String?
    public var sessionToken: String?
    /// Profile name for `~/.aws/credentials` and `~/.aws/config`; otherwise `AWS_PROFILE`, then `default`.
    public var profile: String?
    /// Anonymous access (public buckets): requests go unsigned.
    public var noSignRequest: Bool
    /// Seconds to establish a connection.
    public var connectTimeout: Double
    /// A transfer slower than `lowSpeedLimit` bytes/s for `lowSpeedTime` seconds is aborted (and retried): a stalled
    /// connection must not hang a filesystem call forever, yet a large body on a slow link must be allowed to finish.
    public var lowSpeedLimit: Int
    public var lowSpeedTime: Int
    /// Retries after the first attempt for failures that may pass (5xx, throttling, connection errors).
    public var maxRetries: Int
    /// Environment to read `AWS_*` variables from; `nil` means the process environment. Tests pass their own.
    public var environment: [String: String]?

    public init(
        bucket: String, region: String? = nil, endpointURL: String? = nil, pathStyle: Bool? = nil,
        accessKeyID: String? = nil, secretAccessKey: String? = nil, sessionToken: String? = nil,
        profile: String? = nil, noSignRequest: Bool = false, connectTimeout: Double = 10,
        lowSpeedLimit: Int = 1024, lowSpeedTime: Int = 30, maxRetries: Int = 5,
        environment: [String: String]? = nil
    ) {
        self.bucket = bucket
        self.region = region
        self.endpointURL = endpointURL
        self.pathStyle = pathStyle
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.profile = profile
        self.noSignRequest = noSignRequest
        self.connectTimeout = connectTimeout
        self.lowSpeedLimit = lowSpeedLimit
        self.lowSpeedTime = lowSpeedTime
        self.maxRetries = maxRetries
        self.environment = environment
    }
}
