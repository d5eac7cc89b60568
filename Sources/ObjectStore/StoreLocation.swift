/// Where a mount's objects live, parsed from the mount source URL:
/// `file:///abs/dir/`, `memory://` or `memory://name`, `s3://bucket/prefix/`, `gs://bucket/prefix/`.
///
/// Paths and keys are taken literally (no percent-decoding), as people type them on a command line.
public struct StoreLocation: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// An absolute directory path, without a trailing slash (except `/`).
        case file(path: String)
        case memory(name: String)
        /// `prefix` is empty or ends with `/`; it never starts with `/`.
        case s3(bucket: String, prefix: String)
        case gcs(bucket: String, prefix: String)
    }

    public var kind: Kind

    public init(_ kind: Kind) {
        self.kind = kind
    }

    public init(parsing source: String) throws(StoreLocationError) {
        guard let separator = source.firstRange(of: "://") else { throw .notAURL(source) }
        let scheme = source[..<separator.lowerBound].lowercased()
        let rest = String(source[separator.upperBound...])
        switch scheme {
        case "file":
            guard rest.hasPrefix("/") else { throw .relativePath(source) }
            var path = rest
            while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
            kind = .file(path: path)
        case "memory":
            var name = rest
            while name.hasSuffix("/") { name.removeLast() }
            guard !name.contains("/") else { throw .invalidMemoryName(source) }
            kind = .memory(name: name)
        case "s3", "gs":
            let bucket = String(rest.prefix { $0 != "/" })
            guard !bucket.isEmpty else { throw .missingBucket(scheme: scheme, source: source) }
            var prefix = String(rest.dropFirst(bucket.count).drop { $0 == "/" })
            if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }
            kind = scheme == "s3" ? .s3(bucket: bucket, prefix: prefix) : .gcs(bucket: bucket, prefix: prefix)
        default:
            throw .unknownScheme(scheme: scheme, source: source)
        }
    }

    /// The key prefix every path of the mount is placed under; empty for `file://` and `memory://`.
    public var prefix: String {
        switch kind {
        case .file, .memory: return ""
        case .s3(_, let prefix), .gcs(_, let prefix): return prefix
        }
    }

    /// The canonical URL; parsing it gives back an equal location.
    public var description: String {
        switch kind {
        case .file(let path): return path == "/" ? "file:///" : "file://\(path)/"
        case .memory(let name): return "memory://\(name)"
        case .s3(let bucket, let prefix): return "s3://\(bucket)/\(prefix)"
        case .gcs(let bucket, let prefix): return "gs://\(bucket)/\(prefix)"
        }
    }

    /// The store for this location. Memory stores are shared per name within the process, so two users of
    /// `memory://x` see the same objects. An S3 store is configured from the environment and `~/.aws`, a GCS store
    /// from the environment (`STORAGE_EMULATOR_HOST`, `GOOGLE_APPLICATION_CREDENTIALS`, the metadata server).
    public func makeStore() throws(ObjectStoreError) -> any ObjectStore {
        try makeStore(s3: nil, gcs: nil)
    }

    /// As `makeStore()`, with S3 settings (region, endpoint, credentials, path-style…) from the configuration;
    /// its `bucket` is replaced by the URL's. Other kinds ignore `s3`. The store takes full keys: the prefix is
    /// applied by its user.
    public func makeStore(s3: S3Configuration?) throws(ObjectStoreError) -> any ObjectStore {
        try makeStore(s3: s3, gcs: nil)
    }

    /// As `makeStore()`, with S3 or GCS settings from the configuration (each used for its own kind only; its
    /// `bucket` is replaced by the URL's).
    public func makeStore(s3: S3Configuration?, gcs: GCSConfiguration?) throws(ObjectStoreError) -> any ObjectStore {
        switch kind {
        case .file(let path): return try LocalDirectoryObjectStore(root: path)
        case .memory(let name): return MemoryObjectStore.shared(named: name)
        case .s3(let bucket, _):
            var configuration = s3 ?? S3Configuration(bucket: bucket)
            configuration.bucket = bucket
            return try S3ObjectStore(configuration: configuration)
        case .gcs(let bucket, _):
            var configuration = gcs ?? GCSConfiguration(bucket: bucket)
            configuration.bucket = bucket
            return try GCSObjectStore(configuration: configuration)
        }
    }
}

/// Why a mount source could not be parsed; `description` is one line for the user.
public enum StoreLocationError: Error, Sendable, Equatable, CustomStringConvertible {
    case notAURL(String)
    case unknownScheme(scheme: String, source: String)
    case relativePath(String)
    case missingBucket(scheme: String, source: String)
    case invalidMemoryName(String)

    public var description: String {
        switch self {
        case .notAURL(let source):
            return "source \"\(source)\" is not a URL (expected file://, memory://, s3:// or gs://)"
        case .unknownScheme(let scheme, let source):
            return "unknown source scheme \"\(scheme)\" in \"\(source)\" (expected file://, memory://, s3:// or gs://)"
        case .relativePath(let source):
            return "file:// source needs an absolute path: \(source)"
        case .missingBucket(let scheme, let source):
            return "\(scheme):// source needs a bucket name: \(source)"
        case .invalidMemoryName(let source):
            return "memory:// source takes a name without slashes: \(source)"
        }
    }
}
