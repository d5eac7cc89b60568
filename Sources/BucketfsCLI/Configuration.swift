import Foundation
import ObjectStore
import Yams

/// The effective configuration of a mount. Precedence: defaults < YAML file < CLI flags < `-o` options.
public struct Configuration: Equatable, Sendable {
    public struct Lock: Equatable, Sendable {
        public var strategy: String?
        public var leaseDurationSeconds = 60
        public var retryAttempts = 3
        public var retryDelaySeconds = 1.0
        public var redisHost: String?
        public var redisPort: Int?
        public var redisPassword: String?
        public var redisDB = 0
        /// `redis://[user:password@]host[:port][/db]`, instead of the four keys above.
        public var redisURL: String?
        public var fileLockDir: String?
        /// `best_effort`: mount with the object strategy even on a store found to ignore conditional writes.
        public var mode: String?
    }

    public struct Storage: Equatable, Sendable {
        public var type: String?
        public var bucket: String?
        public var prefix: String?
        public var baseDir: String?
        public var regionName: String?
        public var endpointURL: String?
        public var accessKeyID: String?
        public var secretAccessKey: String?
        public var sessionToken: String?
        public var profile: String?
        /// Path-style addressing; nil lets the S3 backend choose (path-style for custom endpoints).
        public var pathStyle: Bool?
        public var noSignRequest = false
        public var projectID: String?
        public var credentialsFile: String?
        public var lock = Lock()
    }

    public struct Mount: Equatable, Sendable {
        public var uid: UInt32 = getuid()
        public var gid: UInt32 = getgid()
        public var fileMode: UInt32 = 0o644
        public var dirMode: UInt32 = 0o755
        public var readOnly = false
        public var allowOther = false
        public var metadataTTL = 1.0
        public var negativeTTL = 1.0
        public var cacheDir: String = Configuration.defaultCacheDirectory()
        /// Part size of streamed multipart uploads (S3); 0 turns streaming off.
        public var partSizeMiB = 8
        public var partsInFlight = 4
        public var readAheadMiB = 128
        public var blockCacheMiB = 1024
        public var renameParallelism = 16
        /// Bound of the staging area in MiB; 0: only the disk's.
        public var stagingMaxMiB = 0
        public var logLevel = "info"
        /// HOST:PORT of the Prometheus text endpoint; nil: none.
        public var metricsAddress: String?
        /// Name of the read-only control directory at the mount root; "" shows none.
        public var controlDir = ".bucketfs"
        /// Read bits of the control directory's files (0400: the mount's owner only; 0444: every local user).
        public var controlDirMode: UInt32 = 0o400
        /// Where records (the mount's session, upload states) go: nil is the mounted store itself, else a
        /// redis:// URL or another source URL.
        public var recordsURL: String?
        /// Folder of records under the records store's prefix.
        public var recordsPrefix = ".bucketfs/"
    }

    public var storage = Storage()
    public var mount = Mount()

    public init() {}

    public static func defaultCacheDirectory() -> String {
        if getuid() == 0 { return "/var/cache/bucketfs" }
        if let xdg = ProcessInfo.processInfo.environment["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/bucketfs" }
        return NSHomeDirectory() + "/.cache/bucketfs"
    }

    // MARK: - YAML

    /// Reads a YAML file of seed 000's shape (`storage: {…, lock: {…}}`) plus a `mount:` section.
    /// Unknown keys and values of the wrong type are errors naming the key.
    public mutating func apply(yamlFile path: String) throws(CLIError) {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw CLIError("cannot read config file \(path): \(error.localizedDescription)")
        }
        try apply(yamlText: text, path: path)
    }

    /// The YAML of a config file; `path` names it in errors. (Also what the fuzz target feeds arbitrary text.)
    public mutating func apply(yamlText text: String, path: String) throws(CLIError) {
        let document: Node?
        do { document = try Yams.compose(yaml: text) } catch {
            throw CLIError("config file \(path) is not valid YAML: \(Self.oneLine(error))")
        }
        guard let document else { return }
        guard let root = Self.plain(document) as? [String: Any] else {
            throw CLIError("config file \(path): expected a mapping at the top")
        }
        try apply(root, path: path)
    }

    /// The document with every scalar as the text written, so that `file_mode: 0644` stays the digits "0644"
    /// (YAML 1.1 would read an octal number, 1.2 a decimal one) and each key is parsed by its own rule.
    /// A plain `null`, `~` or empty value becomes NSNull: the key is left at its default.
    static func plain(_ node: Node) -> Any {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string) { return NSNull() }
            return scalar.string
        case .mapping(let mapping):
            var result: [String: Any] = [:]
            for (key, value) in mapping { result[key.string ?? "\(key)"] = plain(value) }
            return result
        case .sequence(let sequence):
            return sequence.map(plain)
        case .alias:
            return NSNull()
        }
    }

    mutating func apply(_ root: [String: Any], path: String) throws(CLIError) {
        var reader = YAMLReader(file: path)
        for (key, value) in root {
            switch key {
            case "storage":
                let section = try reader.mapping(value, key: "storage")
                for (k, v) in section where !(v is NSNull) {
                    let name = "storage.\(k)"
                    switch k {
                    case "type": storage.type = try reader.string(v, key: name)
                    case "bucket": storage.bucket = try reader.string(v, key: name)
                    case "prefix": storage.prefix = try reader.string(v, key: name)
                    case "base_dir": storage.baseDir = try reader.string(v, key: name)
                    case "region_name": storage.regionName = try reader.string(v, key: name)
                    case "endpoint_url": storage.endpointURL = try reader.string(v, key: name)
                    case "aws_access_key_id": storage.accessKeyID = try reader.string(v, key: name)
                    case "aws_secret_access_key": storage.secretAccessKey = try reader.string(v, key: name)
                    case "aws_session_token": storage.sessionToken = try reader.string(v, key: name)
                    case "profile": storage.profile = try reader.string(v, key: name)
                    case "path_style": storage.pathStyle = try reader.bool(v, key: name)
                    case "no_sign_request": storage.noSignRequest = try reader.bool(v, key: name)
                    case "project_id": storage.projectID = try reader.string(v, key: name)
                    case "credentials_file": storage.credentialsFile = try reader.string(v, key: name)
                    case "lock": try applyLock(try reader.mapping(v, key: name), reader: &reader)
                    default: throw CLIError("unknown config key \"\(name)\" in \(path)")
                    }
                }
            case "mount":
                for (k, v) in try reader.mapping(value, key: "mount") where !(v is NSNull) {
                    try setMountOption(
                        k, value: v, reader: &reader, label: "mount.\(k)",
                        origin: "config key \"mount.\(k)\" in \(path)")
                }
            default:
                throw CLIError("unknown config key \"\(key)\" in \(path)")
            }
        }
    }

    private mutating func applyLock(_ section: [String: Any], reader: inout YAMLReader) throws(CLIError) {
        for (k, v) in section where !(v is NSNull) {
            let name = "storage.lock.\(k)"
            switch k {
            case "strategy", "lease_duration_seconds", "redis_url", "file_lock_dir", "mode":
                try setLockOption(k, value: v, reader: &reader, label: name)
            case "retry_attempts": storage.lock.retryAttempts = try reader.int(v, key: name, in: Bounds.retryAttempts)
            case "retry_delay_seconds":
                storage.lock.retryDelaySeconds = try reader.double(v, key: name, in: Bounds.retryDelaySeconds)
            case "redis_host": storage.lock.redisHost = try reader.string(v, key: name)
            case "redis_port": storage.lock.redisPort = try reader.int(v, key: name, in: Bounds.port)
            case "redis_password": storage.lock.redisPassword = try reader.string(v, key: name)
            case "redis_db": storage.lock.redisDB = try reader.int(v, key: name, in: Bounds.redisDB)
            default: throw CLIError("unknown config key \"\(name)\" in \(reader.file)")
            }
        }
    }

    /// Lock settings that YAML (`storage.lock.*`) and `-o` (`lock_strategy=`, …) share.
    private mutating func setLockOption(_ key: String, value: Any, reader: inout YAMLReader, label: String)
        throws(CLIError)
    {
        switch key {
        case "strategy", "lock_strategy":
            let s = try reader.string(value, key: label)
            guard Self.lockStrategies.contains(s) else {
                throw CLIError("bad value for \(label): \"\(s)\" (expected object, redis, file or none)")
            }
            storage.lock.strategy = s
        case "lease_duration_seconds", "lock_lease_seconds":
            storage.lock.leaseDurationSeconds = try reader.int(value, key: label, in: Bounds.leaseSeconds)
        case "redis_url": storage.lock.redisURL = try reader.string(value, key: label)
        case "mode", "lock_mode":
            let mode = try reader.string(value, key: label)
            guard ["strict", "best_effort"].contains(mode) else {
                throw CLIError("bad value for \(label): \"\(mode)\" (expected strict or best_effort)")
            }
            storage.lock.mode = mode
        default: storage.lock.fileLockDir = try reader.string(value, key: label)  // file_lock_dir
        }
    }

    /// `none`: locks hold within the mount only (what other bucket mounts offer).
    static let lockStrategies = ["object", "redis", "file", "none"]

    /// A URL with its password (if any) replaced, for printing. A URL that does not parse may hide a password
    /// anywhere before its last '@': then all of it is hidden.
    static func redactedURL(_ url: String) -> String {
        guard var components = URLComponents(string: url) else {
            return url.contains("@") ? URLRedaction.placeholder : url
        }
        guard components.password != nil else { return url }
        components.password = URLRedaction.placeholder
        return components.string ?? URLRedaction.placeholder
    }

    // MARK: - Mount options (YAML `mount:` keys and `-o` options share names and parsing)

    /// Applies `-o a,b=c,…`. Returns nothing; unknown options are errors.
    public mutating func apply(mountOptions: String) throws(CLIError) {
        var reader = YAMLReader(file: "-o")
        for item in mountOptions.split(separator: ",") where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1)
            let key = String(parts[0])
            let value: Any = parts.count == 2 ? String(parts[1]) : true
            switch key {
            case "rw": mount.readOnly = false
            case "debug": mount.logLevel = "debug"
            case "config": continue  // read before everything else by the caller
            case _ where Self.isMountCommandOption(key): continue
            default:
                try setMountOption(key, value: value, reader: &reader, label: key, origin: "mount option \"\(key)\"")
            }
        }
    }

    /// Options that mount(8), mount.fuse3 and fstab add for every filesystem, which mean nothing to bucketfs
    /// (or are the kernel's business, such as nosuid/nodev, which FUSE mounts get anyway): accepted and ignored.
    static let mountCommandOptions: Set<String> = [
        "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "_netdev", "nofail",
        "exec", "noexec", "suid", "nosuid", "dev", "nodev", "async", "atime", "noatime", "relatime", "norelatime",
        "strictatime", "nostrictatime", "diratime", "nodiratime", "lazytime", "nolazytime", "loud", "silent",
    ]

    /// `x-systemd.*` and other `x-*` options are for userspace tools (systemd's fstab generator, udisks);
    /// `comment=` is fstab's old spelling of the same.
    static func isMountCommandOption(_ key: String) -> Bool {
        mountCommandOptions.contains(key) || key.hasPrefix("x-") || key == "comment"
    }

    private mutating func setMountOption(
        _ key: String, value: Any, reader: inout YAMLReader, label: String,
        origin: String
    ) throws(CLIError) {
        switch key {
        case "uid": mount.uid = UInt32(try reader.int(value, key: label, in: Bounds.id))
        case "gid": mount.gid = UInt32(try reader.int(value, key: label, in: Bounds.id))
        case "file_mode": mount.fileMode = try reader.mode(value, key: label)
        case "dir_mode": mount.dirMode = try reader.mode(value, key: label)
        case "ro", "read_only": mount.readOnly = try reader.bool(value, key: label)
        case "allow_other": mount.allowOther = try reader.bool(value, key: label)
        case "metadata_ttl": mount.metadataTTL = try reader.double(value, key: label, in: Bounds.ttl)
        case "negative_ttl": mount.negativeTTL = try reader.double(value, key: label, in: Bounds.ttl)
        case "cache_dir": mount.cacheDir = try reader.string(value, key: label)
        case "part_size_mib":
            let size = try reader.int(value, key: label, in: 0...5120)
            guard size == 0 || (5...5120).contains(size) else {
                throw CLIError("bad value for \(label): \(size) (S3 parts are 5 to 5120 MiB; 0 turns streaming off)")
            }
            mount.partSizeMiB = size
        case "parts_in_flight": mount.partsInFlight = try reader.int(value, key: label, in: Bounds.partsInFlight)
        case "read_ahead_mib": mount.readAheadMiB = try reader.int(value, key: label, in: Bounds.readAheadMiB)
        case "block_cache_mib": mount.blockCacheMiB = try reader.int(value, key: label, in: Bounds.blockCacheMiB)
        case "rename_parallelism":
            mount.renameParallelism = try reader.int(value, key: label, in: Bounds.renameParallelism)
        case "staging_max_mib": mount.stagingMaxMiB = try reader.int(value, key: label, in: Bounds.stagingMaxMiB)
        case "lock_strategy", "lock_lease_seconds", "redis_url", "file_lock_dir", "lock_mode":
            try setLockOption(key, value: value, reader: &reader, label: label)
        case "metrics_addr": mount.metricsAddress = try reader.string(value, key: label)
        case "control_dir":
            let name = try reader.string(value, key: label)
            guard !name.contains("/"), name != ".", name != ".." else {
                throw CLIError("bad value for \(label): \"\(name)\" (a single name)")
            }
            mount.controlDir = name
        case "control_dir_mode":
            let mode = try reader.mode(value, key: label)
            guard mode & ~0o444 == 0 else {
                throw CLIError(
                    "bad value for \(label): 0\(String(mode, radix: 8)) (read bits only: 0400, 0440 or 0444)")
            }
            mount.controlDirMode = mode
        case "records_url": mount.recordsURL = try reader.string(value, key: label)
        case "records_prefix": mount.recordsPrefix = try reader.string(value, key: label)
        case "log_level":
            let level = try reader.string(value, key: label)
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) else {
                throw CLIError("bad value for \(label): \"\(level)\" (expected trace, debug, info, warning or error)")
            }
            mount.logLevel = level
        default: throw CLIError("unknown \(origin)")
        }
    }

    // MARK: - Output

    /// YAML of the effective configuration, secrets replaced by `<redacted>`.
    public func redactedYAML(source: String?) -> String {
        func quoted(_ s: String?) -> String {
            s.map {
                "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                    + "\""
            }
                ?? "null"
        }
        func secret(_ s: String?) -> String { s == nil ? "null" : "\"<redacted>\"" }
        var lines: [String] = []
        if let source { lines.append("source: \(quoted(source))") }
        lines += [
            "storage:",
            "  type: \(quoted(storage.type))",
            "  bucket: \(quoted(storage.bucket))",
            "  prefix: \(quoted(storage.prefix))",
            "  base_dir: \(quoted(storage.baseDir))",
            "  region_name: \(quoted(storage.regionName))",
            "  endpoint_url: \(quoted(storage.endpointURL.map { Self.redactedURL($0) }))",
            "  aws_access_key_id: \(quoted(storage.accessKeyID))",
            "  aws_secret_access_key: \(secret(storage.secretAccessKey))",
            "  aws_session_token: \(secret(storage.sessionToken))",
            "  profile: \(quoted(storage.profile))",
            "  path_style: \(storage.pathStyle.map { "\($0)" } ?? "null")",
            "  no_sign_request: \(storage.noSignRequest)",
            "  project_id: \(quoted(storage.projectID))",
            "  credentials_file: \(quoted(storage.credentialsFile))",
            "  lock:",
            "    strategy: \(quoted(storage.lock.strategy))",
            "    lease_duration_seconds: \(storage.lock.leaseDurationSeconds)",
            "    retry_attempts: \(storage.lock.retryAttempts)",
            "    mode: \(quoted(storage.lock.mode))",
            "    retry_delay_seconds: \(storage.lock.retryDelaySeconds)",
            "    redis_host: \(quoted(storage.lock.redisHost))",
            "    redis_port: \(storage.lock.redisPort.map(String.init) ?? "null")",
            "    redis_password: \(secret(storage.lock.redisPassword))",
            "    redis_db: \(storage.lock.redisDB)",
            "    redis_url: \(storage.lock.redisURL.map { Self.redactedURL($0) }.map { quoted($0) } ?? "null")",
            "    file_lock_dir: \(quoted(storage.lock.fileLockDir))",
            "mount:",
            "  uid: \(mount.uid)",
            "  gid: \(mount.gid)",
            "  file_mode: \"0\(String(mount.fileMode, radix: 8))\"",
            "  dir_mode: \"0\(String(mount.dirMode, radix: 8))\"",
            "  read_only: \(mount.readOnly)",
            "  allow_other: \(mount.allowOther)",
            "  metadata_ttl: \(mount.metadataTTL)",
            "  negative_ttl: \(mount.negativeTTL)",
            "  cache_dir: \(quoted(mount.cacheDir))",
            "  part_size_mib: \(mount.partSizeMiB)",
            "  parts_in_flight: \(mount.partsInFlight)",
            "  read_ahead_mib: \(mount.readAheadMiB)",
            "  block_cache_mib: \(mount.blockCacheMiB)",
            "  rename_parallelism: \(mount.renameParallelism)",
            "  staging_max_mib: \(mount.stagingMaxMiB)",
            "  log_level: \(quoted(mount.logLevel))",
            "  metrics_addr: \(quoted(mount.metricsAddress))",
            "  control_dir: \(quoted(mount.controlDir))",
            "  control_dir_mode: \"0\(String(mount.controlDirMode, radix: 8))\"",
            "  records_url: \(quoted(mount.recordsURL.map { Self.redactedURL($0) }))",
            "  records_prefix: \(quoted(mount.recordsPrefix))",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// The source URL described by the YAML `storage` section, when no SOURCE argument is given.
    public func sourceFromStorage() -> String? {
        switch storage.type {
        case "file": return storage.baseDir.map { "file://" + $0 }
        case "memory": return "memory://"
        case "s3": return storage.bucket.map { "s3://\($0)/\(storage.prefix ?? "")" }
        case "gcs": return storage.bucket.map { "gs://\($0)/\(storage.prefix ?? "")" }
        default: return nil
        }
    }

    /// S3 settings for `bucket`; what is unset here comes from the environment and `~/.aws`.
    public func s3Configuration(bucket: String) -> S3Configuration {
        S3Configuration(
            bucket: bucket, region: storage.regionName, endpointURL: storage.endpointURL,
            pathStyle: storage.pathStyle, accessKeyID: storage.accessKeyID,
            secretAccessKey: storage.secretAccessKey, sessionToken: storage.sessionToken,
            profile: storage.profile, noSignRequest: storage.noSignRequest)
    }

    /// GCS settings for `bucket`; what is unset here comes from the environment (`STORAGE_EMULATOR_HOST`,
    /// `GOOGLE_APPLICATION_CREDENTIALS`, the metadata server). `endpoint_url` serves both kinds of store.
    public func gcsConfiguration(bucket: String) -> GCSConfiguration {
        GCSConfiguration(
            bucket: bucket, endpointURL: storage.endpointURL, credentialsFile: storage.credentialsFile,
            projectID: storage.projectID)
    }

    /// How the store is reached, beside saved uploads: endpoint, region, path style (no secrets).
    public func storeContext(for location: StoreLocation? = nil) -> [String: String] {
        let environment = ProcessInfo.processInfo.environment
        var context: [String: String] = [:]
        if case .gcs = location?.kind {
            // AWS variables say nothing about GCS: an emulator's endpoint and the credentials file do.
            let emulator = environment["STORAGE_EMULATOR_HOST"].map { $0.contains("://") ? $0 : "http://" + $0 }
            context["endpoint_url"] = storage.endpointURL ?? emulator
            context["credentials_file"] = storage.credentialsFile ?? environment["GOOGLE_APPLICATION_CREDENTIALS"]
            context["project_id"] = storage.projectID
            return context
        }
        context["endpoint_url"] =
            storage.endpointURL ?? environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"]
        context["region"] = storage.regionName ?? environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"]
        context["path_style"] = storage.pathStyle.map { String($0) }
        context["profile"] = storage.profile
        return context
    }

    /// Fills what this configuration leaves unset from a saved `storeContext()`.
    public mutating func adopt(storeContext context: [String: String]) {
        storage.endpointURL = storage.endpointURL ?? context["endpoint_url"]
        storage.regionName = storage.regionName ?? context["region"]
        storage.pathStyle = storage.pathStyle ?? context["path_style"].flatMap { Bool($0) }
        storage.profile = storage.profile ?? context["profile"]
        storage.credentialsFile = storage.credentialsFile ?? context["credentials_file"]
        storage.projectID = storage.projectID ?? context["project_id"]
    }

    static func oneLine(_ error: Error) -> String {
        "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}

/// The allowed range of every numeric option: a value outside is one clear error, never a trap or a thread per
/// unit of an absurd number.
enum Bounds {
    /// uid/gid: 32 bits, less (uid_t)-1, which chown(2) reads as "leave unchanged".
    static let id = 0...Int(UInt32.max - 1)
    /// Seconds; a day is already far longer than any sensible cache lifetime.
    static let ttl = 0.0...86_400
    static let leaseSeconds = 1...86_400
    static let retryAttempts = 0...1_000
    static let retryDelaySeconds = 0.0...3_600
    static let port = 1...65_535
    static let redisDB = 0...1_000_000
    static let partsInFlight = 1...64
    /// MiB of read-ahead memory (64 GiB).
    static let readAheadMiB = 0...65_536
    static let blockCacheMiB = 0...16_777_216
    /// Threads copying objects at once.
    static let renameParallelism = 1...256
    /// MiB (1 PiB): the byte count (MiB << 20) stays far inside 64 bits.
    static let stagingMaxMiB = 0...(1 << 30)

    static func text(_ number: Double) -> String {
        number == number.rounded() ? String(Int(number)) : String(number)
    }
}

/// Typed reads of YAML / `-o` values, each failure naming the key.
struct YAMLReader {
    let file: String

    func mapping(_ value: Any, key: String) throws(CLIError) -> [String: Any] {
        if value is NSNull { return [:] }
        guard let m = value as? [String: Any] else { throw bad(key, "a mapping") }
        return m
    }

    func string(_ value: Any, key: String) throws(CLIError) -> String {
        guard let s = value as? String else { throw bad(key, "a string") }
        return s
    }

    /// An integer inside `range`; the error names the key and the range.
    func int(_ value: Any, key: String, in range: ClosedRange<Int>) throws(CLIError) -> Int {
        guard let parsed = (value as? String).flatMap({ Int($0) }), range.contains(parsed) else {
            throw bad(key, "an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return parsed
    }

    /// A finite number inside `range` (`inf` and `nan` trap in Duration arithmetic).
    func double(_ value: Any, key: String, in range: ClosedRange<Double>) throws(CLIError) -> Double {
        guard let parsed = (value as? String).flatMap({ Double($0) }), parsed.isFinite, range.contains(parsed) else {
            throw bad(key, "a number from \(Bounds.text(range.lowerBound)) to \(Bounds.text(range.upperBound))")
        }
        return parsed
    }

    func bool(_ value: Any, key: String) throws(CLIError) -> Bool {
        if let b = value as? Bool { return b }
        switch (value as? String)?.lowercased() {
        case "true", "yes", "1", "on": return true
        case "false", "no", "0", "off": return false
        default: throw bad(key, "true or false")
        }
    }

    /// An octal permission mode such as `0644` or `644`.
    func mode(_ value: Any, key: String) throws(CLIError) -> UInt32 {
        let text = value as? String ?? ""
        guard let parsed = UInt32(text, radix: 8), parsed <= 0o7777 else {
            throw bad(key, "an octal mode such as 0644")
        }
        return parsed
    }

    private func bad(_ key: String, _ expected: String) -> CLIError {
        CLIError("bad value for \(key) in \(file): expected \(expected)")
    }
}
