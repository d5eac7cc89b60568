import Foundation

/// The environment layer: every option also as `BUCKETFS_<NAME>`, between the YAML file and the flags.
///
/// NAME is the `-o` name upper-cased (`BUCKETFS_LOCK_STRATEGY`, `BUCKETFS_METADATA_TTL`) or, for keys that only
/// YAML has, the key of the `storage:` section (`BUCKETFS_REGION_NAME`, `BUCKETFS_ENDPOINT_URL`; lock keys with
/// `LOCK_` in front: `BUCKETFS_LOCK_RETRY_ATTEMPTS`). Each value is parsed by its YAML key's rule, so a bad one is
/// the same one line, naming the variable. An empty value counts as unset (what `FOO=` in an env file means).
extension Configuration {
    /// Where a variable goes in the YAML document: (section path, key).
    struct EnvironmentKey: Sendable {
        var path: [String]
        var key: String
    }

    static let environmentPrefix = "BUCKETFS_"

    /// `BUCKETFS_CONFIG`: the YAML file, when neither `--config` nor `-o config=` names one.
    static let configFileVariable = "BUCKETFS_CONFIG"

    /// Variables with the prefix that are not options: the source (expanded by the shell or the systemd unit),
    /// the unit's `-o` string, the install script's and tests' settings, the launcher's readiness pipe.
    static let nonOptionVariables: Set<String> = [
        "BUCKETFS_SOURCE", "BUCKETFS_OPTIONS", "BUCKETFS_CONFIG", "BUCKETFS_READY_FD", "BUCKETFS_BIN",
        "BUCKETFS_BUCKET_DIR", "BUCKETFS_MOUNTPOINT", "BUCKETFS_SKIP_MOUNT", "BUCKETFS_ROOT",
        "BUCKETFS_TEST_BACKENDS", "BUCKETFS_KNOWN_BUGS",
    ]

    static let environmentKeys: [String: EnvironmentKey] = {
        var keys: [String: EnvironmentKey] = [:]
        let mountKeys = [
            "uid", "gid", "file_mode", "dir_mode", "read_only", "allow_other", "metadata_ttl", "negative_ttl",
            "cache_dir", "part_size_mib", "parts_in_flight", "read_ahead_mib", "block_cache_mib", "rename_parallelism",
            "staging_max_mib", "log_level", "metrics_addr", "control_dir", "records_url", "records_prefix",
            "control_dir_mode",
            "lock_strategy", "lock_lease_seconds", "redis_url", "file_lock_dir", "lock_mode",
        ]
        for key in mountKeys { keys[environmentPrefix + key.uppercased()] = EnvironmentKey(path: ["mount"], key: key) }
        let storageKeys = [
            "type", "bucket", "prefix", "base_dir", "region_name", "endpoint_url", "aws_access_key_id",
            "aws_secret_access_key", "aws_session_token", "profile", "path_style", "no_sign_request", "project_id",
            "credentials_file",
        ]
        for key in storageKeys {
            keys[environmentPrefix + key.uppercased()] = EnvironmentKey(path: ["storage"], key: key)
        }
        for key in ["retry_attempts", "retry_delay_seconds"] {
            keys[environmentPrefix + "LOCK_" + key.uppercased()] = EnvironmentKey(path: ["storage", "lock"], key: key)
        }
        for key in ["redis_host", "redis_port", "redis_password", "redis_db"] {
            keys[environmentPrefix + key.uppercased()] = EnvironmentKey(path: ["storage", "lock"], key: key)
        }
        return keys
    }()

    /// The option variables set (non-empty) in `environment`, in a stable order.
    static func optionVariables(in environment: [String: String]) -> [(name: String, value: String)] {
        environment.filter { environmentKeys[$0.key] != nil && !$0.value.isEmpty }
            .sorted { $0.key < $1.key }
            .map { (name: $0.key, value: $0.value) }
    }

    /// `BUCKETFS_*` variables that are neither options nor known to bucketfs (a typo, most likely).
    static func unknownVariables(in environment: [String: String]) -> [String] {
        environment.keys.filter {
            $0.hasPrefix(environmentPrefix) && environmentKeys[$0] == nil && !nonOptionVariables.contains($0)
        }.sorted()
    }

    /// Applies one option variable, parsed as its YAML key.
    mutating func apply(environmentVariable name: String, value: String) throws(CLIError) {
        guard let target = Self.environmentKeys[name] else { throw CLIError("\(name) is not a bucketfs option") }
        var node: Any = [target.key: value]
        for section in target.path.reversed() { node = [section: node] }
        do {
            try apply(node as! [String: Any], path: "environment variable \(name)")
        } catch {
            // Some checks name only the key; the reader's say where the value came from already.
            if error.description.contains(name) { throw error }
            throw CLIError("\(error.description) (from environment variable \(name))")
        }
    }

    /// Applies every option variable of `environment`.
    public mutating func apply(environment: [String: String]) throws(CLIError) {
        for (name, value) in Self.optionVariables(in: environment) {
            try apply(environmentVariable: name, value: value)
        }
    }
}
