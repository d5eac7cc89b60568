/// Every `-o` option the mount takes: the one list that `-o`'s `--help` is made from, and that
/// `MountOptionCatalogTests` holds docs/CONFIGURATION.md's option tables and `Configuration.apply(mountOptions:)`
/// to (a key added to one and not the others fails there).
enum MountOptionCatalog {
    struct Option {
        let name: String
        /// The value's placeholder in `--help`; nil for a flag (`ro`).
        let value: String?
        /// A valid value, for the tests.
        let sample: String?

        var usage: String { value.map { "\(name)=\($0)" } ?? name }
        var example: String { sample.map { "\(name)=\($0)" } ?? name }
    }

    private static func flag(_ name: String) -> Option { Option(name: name, value: nil, sample: nil) }
    private static func key(_ name: String, _ value: String, _ sample: String) -> Option {
        Option(name: name, value: value, sample: sample)
    }

    static let all: [Option] = [
        flag("ro"), flag("read_only"), flag("rw"), flag("allow_other"),
        key("uid", "N", "1000"), key("gid", "N", "1000"), key("file_mode", "0644", "0640"),
        key("dir_mode", "0755", "0750"), key("metadata_ttl", "SECONDS", "5"), key("negative_ttl", "SECONDS", "5"),
        key("cache_dir", "PATH", "/tmp/bucketfs-cache"), key("part_size_mib", "N", "16"),
        key("parts_in_flight", "N", "2"), key("read_ahead_mib", "N", "64"), key("block_cache_mib", "N", "0"),
        key("rename_parallelism", "N", "4"), key("staging_max_mib", "N", "512"),
        key("lock_strategy", "object|redis|file|none", "none"), key("lock_lease_seconds", "N", "30"),
        key("lock_mode", "strict|best_effort", "best_effort"), key("redis_url", "URL", "redis://127.0.0.1:6379/0"),
        key("file_lock_dir", "PATH", "/tmp/bucketfs-locks"), key("metrics_addr", "HOST:PORT", "127.0.0.1:9464"),
        key("control_dir", "NAME", ".bfs"), key("control_dir_mode", "0400", "0444"),
        key("records_url", "URL", "memory://records"), key("records_prefix", "PREFIX", ".records/"),
        key("log_level", "LEVEL", "debug"), flag("debug"), key("config", "FILE", "/etc/bucketfs/a.yaml"),
    ]

    static var helpText: String {
        "Mount options, comma-separated: " + all.map(\.usage).joined(separator: ", ")
            + "; and those mount(8) and fstab add (ignored). See docs/CONFIGURATION.md."
    }
}
