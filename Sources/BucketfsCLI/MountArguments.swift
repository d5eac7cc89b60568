import ArgumentParser
import Foundation

/// The options that shape a mount's configuration, shared by `mount` and `config print`.
struct ConfigurationOptions: ParsableArguments {
    @Option(name: .long, help: "YAML config file (storage: {...}, mount: {...}).")
    var config: String?

    @Option(name: .customShort("o"), help: ArgumentHelp(MountOptionCatalog.helpText, valueName: "k=v,..."))
    var options: [String] = []

    @Option(help: "Owner shown for objects without uid metadata (default: the mounting user).")
    var uid: UInt32?
    @Option(help: "Group shown for objects without gid metadata (default: the mounting user's group).")
    var gid: UInt32?
    @Option(help: "Octal mode for files without mode metadata (default 0644).")
    var fileMode: String?
    @Option(help: "Octal mode for directories without mode metadata (default 0755).")
    var dirMode: String?
    @Flag(name: .long, help: "Mount read-only: every change fails with EROFS.")
    var readOnly = false
    @Flag(help: "Let other users access the mount (needs user_allow_other in /etc/fuse.conf for non-root).")
    var allowOther = false
    @Option(help: "Seconds attributes and entries are trusted before asking the store again (default 1).")
    var metadataTTL: Double?
    @Option(help: "Directory for staged writes and the recovery folder.")
    var cacheDir: String?
    @Option(help: "trace, debug, info, warning or error (default info).")
    var logLevel: String?

    @Option(
        help: """
            S3 or GCS endpoint, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL, then AWS; \
            for gs://, STORAGE_EMULATOR_HOST, then Google).
            """
    )
    var endpointURL: String?
    @Option(help: "S3 region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's, us-east-1).")
    var region: String?
    @Option(help: "AWS profile in ~/.aws/credentials and ~/.aws/config (default: AWS_PROFILE, then default).")
    var profile: String?
    @Option(help: "GCS service-account JSON file (default: GOOGLE_APPLICATION_CREDENTIALS, then the metadata server).")
    var credentialsFile: String?
    @Option(help: "GCS project (default: the credentials file's project_id, then GOOGLE_CLOUD_PROJECT).")
    var projectID: String?
    @Flag(help: "S3 path-style addressing (endpoint/bucket/key); the default with --endpoint-url.")
    var pathStyle = false
    @Flag(help: "Anonymous S3 access (public buckets): requests are not signed.")
    var noSignRequest = false

    @Option(
        help: """
            How locks on files hold across mounts: object (a lock object in the bucket; default), \
            redis, file (one host) or none (this mount only).
            """
    )
    var lockStrategy: String?
    @Option(
        help: "Redis for --lock-strategy redis: redis://[user:password@]host[:port][/db]; rediss://…[?ca=FILE] for TLS."
    )
    var redisURL: String?
    @Option(
        help: """
            Serve metrics (locks: attempts, failures, latency, hold time, renewals, lost) \
            as Prometheus text on HOST:PORT.
            """
    )
    var metricsAddr: String?
    @Option(
        help: """
            Lease of a lock held across mounts, renewed at a third of it; \
            how long a crashed mount's locks last (default 60).
            """
    )
    var lockLeaseSeconds: Int?

    /// The numeric flags, named as typed (`-o` values are checked by `Configuration`, named by their key).
    func validate() throws {
        try FlagBounds.check(uid.map(Int.init), flag: "--uid", in: Bounds.id)
        try FlagBounds.check(gid.map(Int.init), flag: "--gid", in: Bounds.id)
        try FlagBounds.check(metadataTTL, flag: "--metadata-ttl", in: Bounds.ttl, unit: "seconds")
        try FlagBounds.check(lockLeaseSeconds, flag: "--lock-lease-seconds", in: Bounds.leaseSeconds)
    }

    /// defaults < YAML < environment (`BUCKETFS_*`) < flags < -o
    func resolve(environment: [String: String] = ProcessInfo.processInfo.environment) throws(CLIError) -> Configuration
    {
        try layers(environment: environment).last!.configuration
    }

    /// The configuration after each layer, in order: the defaults, the YAML file, each `BUCKETFS_*` variable, the
    /// flags, the `-o` options. `config print --sources` names the last layer that changed each value.
    func layers(environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(CLIError) -> [(source: String, configuration: Configuration)]
    {
        var configuration = Configuration()
        var layers = [(source: "default", configuration: configuration)]
        let joined = options.joined(separator: ",")
        let fileFromOptions = joined.split(separator: ",").first { $0.hasPrefix("config=") }.map {
            String($0.dropFirst(7))
        }
        let fileFromEnvironment = environment[Configuration.configFileVariable].flatMap { $0.isEmpty ? nil : $0 }
        if let file = fileFromOptions ?? config ?? fileFromEnvironment {
            try configuration.apply(yamlFile: file)
            layers.append((source: file, configuration: configuration))
        }
        for (name, value) in Configuration.optionVariables(in: environment) {
            try configuration.apply(environmentVariable: name, value: value)
            layers.append((source: name, configuration: configuration))
        }
        var flags: [String] = []
        if let uid { flags.append("uid=\(uid)") }
        if let gid { flags.append("gid=\(gid)") }
        if let fileMode { flags.append("file_mode=\(fileMode)") }
        if let dirMode { flags.append("dir_mode=\(dirMode)") }
        if readOnly { flags.append("ro") }
        if allowOther { flags.append("allow_other") }
        if let metadataTTL { flags.append("metadata_ttl=\(metadataTTL)") }
        if let cacheDir { flags.append("cache_dir=\(cacheDir)") }
        if let logLevel { flags.append("log_level=\(logLevel)") }
        if let lockStrategy { flags.append("lock_strategy=\(lockStrategy)") }
        if let redisURL { flags.append("redis_url=\(redisURL)") }
        if let lockLeaseSeconds { flags.append("lock_lease_seconds=\(lockLeaseSeconds)") }
        if let metricsAddr { flags.append("metrics_addr=\(metricsAddr)") }
        try configuration.apply(mountOptions: flags.joined(separator: ","))
        if let endpointURL { configuration.storage.endpointURL = endpointURL }
        if let region { configuration.storage.regionName = region }
        if let profile { configuration.storage.profile = profile }
        if pathStyle { configuration.storage.pathStyle = true }
        if noSignRequest { configuration.storage.noSignRequest = true }
        if let credentialsFile { configuration.storage.credentialsFile = credentialsFile }
        if let projectID { configuration.storage.projectID = projectID }
        layers.append((source: "flag", configuration: configuration))
        try configuration.apply(mountOptions: joined)
        layers.append((source: "-o", configuration: configuration))
        return layers
    }
}
