import ArgumentParser
import CLibc
import FileSystem
import Foundation
import FuseBridge
import Logging
import ObjectStore
import Prometheus
import Records
import CoreMetrics

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount SOURCE on MOUNTPOINT.",
        discussion: """
        Without --foreground the command returns once the mount is ready (exit 0) or has failed (one line on
        stderr, non-zero exit); the daemon keeps running in the background and logs to CACHE_DIR/logs/.
        """)

    @Argument(help: "file:///dir/, memory://, s3://bucket/prefix/ or gs://bucket/prefix/")
    var source: String

    @Argument(help: "An existing, empty directory that is not already a mount point.")
    var mountpoint: String

    @OptionGroup var settings: ConfigurationOptions

    @Flag(name: [.customShort("f"), .long], help: "Stay in the foreground (for systemd, containers, debugging).")
    var foreground = false

    func run() throws {
        let configuration = try settings.resolve()
        DaemonLogHandler.bootstrap(level: configuration.mount.logLevel)
        let location: StoreLocation
        do { location = try StoreLocation(parsing: source) } catch { throw CLIError("\(error)") }
        let target = try MountPointCheck.validate(mountpoint)
        try MountPointCheck.requireFuseDevice()
        try FuseConfiguration.requireAllowOtherPermitted(allowOther: configuration.mount.allowOther)
        try DaemonLauncher.prepareCacheDirectory(configuration.mount.cacheDir)
        // Open the store here as well, so that a missing bucket or directory is reported before forking off.
        let store = try Self.openStore(location, configuration: configuration)
        let locking = try LockSetup(configuration: configuration, location: location, store: store)
        try locking.validate()

        if foreground {
            try serve(store: store, locking: locking, location: location, mountpoint: target,
                      configuration: configuration)
        } else {
            try DaemonLauncher.launch(source: location.description, mountpoint: target,
                                      arguments: Array(CommandLine.arguments.dropFirst()),
                                      logDirectory: configuration.mount.cacheDir + "/logs")
        }
    }

    /// Opens the store and checks that it answers, so that a missing bucket, wrong credentials or an
    /// unreachable endpoint end here with one line, before anything is mounted.
    static func openStore(_ location: StoreLocation, configuration: Configuration) throws(CLIError) -> any ObjectStore {
        do {
            switch location.kind {
            case .s3(let bucket, _):
                let store = try location.makeStore(s3: configuration.s3Configuration(bucket: bucket))
                if let s3 = store as? S3ObjectStore { try s3.validateBucket() }
                return store
            case .gcs(let bucket, _):
                let store = try location.makeStore(s3: nil, gcs: configuration.gcsConfiguration(bucket: bucket))
                if let gcs = store as? GCSObjectStore { try gcs.validateBucket() }
                return store
            default:
                return try location.makeStore()
            }
        } catch {
            throw CLIError("cannot open \(location): \(error)")
        }
    }

    /// glibc keeps freed memory in per-thread arenas and, after large buffers are freed, raises its mmap
    /// threshold so that later ones come from those arenas too: with read-ahead and part buffers of several MiB
    /// on many threads the daemon's RSS grew to twice what it used (measured: 543 → 292 MiB, bench peak-rss).
    /// Large buffers are mmapped and returned at once, and arenas are few.
    static func boundMallocRetention() {
        _ = mallopt(M_MMAP_THRESHOLD, 1 << 20)
        _ = mallopt(M_ARENA_MAX, 2)
    }

    /// The daemon proper: build the filesystem, mount, tell the launcher we're ready, serve until unmounted.
    private func serve(store: any ObjectStore, locking: LockSetup, location: StoreLocation, mountpoint: String,
                       configuration: Configuration) throws {
        let readiness = ReadinessPipe.fromEnvironment()
        let systemd = SystemdNotifier.fromEnvironment()
        Self.boundMallocRetention()
        do {
            var logger = Logger(label: "bucketfs")
            logger.logLevel = Logger.Level(rawValue: configuration.mount.logLevel) ?? .info
            let m = configuration.mount
            try Self.checkConditionalWrites(store: store, location: location, configuration: configuration,
                                            locking: locking, logger: logger)
            let registry = try Self.startMetrics(address: m.metricsAddress)
            // Records: the mount's session (counters from the store meter) and the control directory.
            let meter = MeteredStore(store)
            let records = try Self.recordStores(configuration: configuration, location: location, store: store)
            let control = Self.controlSettings(configuration: configuration, source: location.description, records: records,
                                               separateRecords: m.recordsURL != nil, registry: registry, meter: meter,
                                               locking: locking)
            var options = FileSystemOptions(prefix: location.prefix, uid: m.uid, gid: m.gid, filePermissions: m.fileMode,
                                            directoryPermissions: m.dirMode, readOnly: m.readOnly,
                                            metadataTTL: m.metadataTTL, negativeTTL: m.negativeTTL,
                                            cacheDirectory: m.cacheDir, readAheadBudget: m.readAheadMiB << 20,
                                            multipartPartSize: Self.streamsUploads(location) && m.partSizeMiB > 0
                                                ? m.partSizeMiB << 20 : nil,
                                            multipartMaxInFlight: m.partsInFlight,
                                            renameParallelism: m.renameParallelism,
                                            stagingLimit: UInt64(m.stagingMaxMiB) << 20,
                                            recoveryContext: configuration.storeContext(for: location),
                                            blockCacheSize: UInt64(m.blockCacheMiB) << 20)
            options.directoryMetadataInSidecar = Self.directoryMetadataInSidecar(
                store: store, location: location, configuration: configuration, logger: logger)
            // Staged files a killed daemon left: uploaded conditionally or kept in the recovery folder.
            let recovery = RecoveryFolder(directory: m.cacheDir + "/recovery", store: meter.description,
                                          context: options.recoveryContext, logger: logger)
            let staging: StagingJournal
            do {
                staging = try StagingJournal(directory: m.cacheDir + "/staging", store: meter.description,
                                             context: options.recoveryContext, logger: logger)
            } catch {
                throw CLIError("\(error)")
            }
            // The mount's id names its session record and its event stream (events/<id>/).
            let mountID = MountSession.newID()
            let events = MountEvents(stream: mountID, log: records.events, logger: logger)
            events.stagingRecovered(staging.recover(store: store, recovery: recovery))
            let fileSystem: FileSystem
            let journal = MountUploadJournal(uploads: records.uploads, logger: logger,
                                             stagingDirectory: m.cacheDir + "/staging", mountID: staging.mountID,
                                             events: events)
            do {
                fileSystem = try FileSystem(store: meter, options: options, logger: logger,
                                            lockManager: locking.makeManager(logger: logger, onLost: events.lockLost),
                                            lockResource: locking.resourceName, control: control,
                                            uploadJournal: journal, stagingJournal: staging, events: events)
            } catch {
                throw CLIError("\(error)")
            }
            DaemonMetrics.shared.watch(fileSystem: fileSystem, cacheDirectory: m.cacheDir, store: store)
            // Uploads a crashed daemon on this host left behind: content to the recovery folder, upload aborted.
            journal.recoverInterrupted(store: store, recovery: recovery)
            let session = try FuseSession(
                fileSystem: fileSystem, mountpoint: mountpoint,
                options: FuseMountOptions(fsName: location.description, readOnly: m.readOnly, allowOther: m.allowOther,
                                          debug: m.logLevel == "trace"),
                logger: logger)
            do { try session.mount() } catch {
                throw CLIError("\(error)\(m.allowOther && getuid() != 0 ? " (allow_other needs user_allow_other in /etc/fuse.conf)" : "")")
            }
            let registration = MountRegistry.register(source: location.description, mountpoint: mountpoint)
            registration?.refresh(every: 2, pendingUploads: { fileSystem.pendingUploadCount },
                                  heldLocks: { fileSystem.heldLockLeases.map(\.resource) })
            let mountMetadata: [String: JSONValue] = [
                "host": .string(ProcessInfo.processInfo.hostName), "uid": .integer(Int64(getuid())), "pid": .integer(Int64(getpid())),
                "source": .string(location.description), "mount_point": .string(mountpoint), "version": .string(BucketfsCommand.version),
            ]
            let mountSession = MountSession(id: mountID, stores: records, meter: meter, logger: logger, metadata: mountMetadata)
            mountSession?.refresh(every: 5)
            events.emit(MountEventType.mounted, mountMetadata)
            logger.info("mounted", metadata: ["source": "\(location)", "mountpoint": "\(mountpoint)", "pid": "\(getpid())"])
            readiness?.signalReady()
            systemd?.ready(status: "serving \(location) at \(mountpoint)")
            let signal = session.run()
            withExtendedLifetime(staging) {}    // its lock marks this run's staged files as owned until here
            systemd?.stopping()
            registration?.remove()
            mountSession?.end(status: signal == 0 ? "unmounted" : "stopped")
            events.emit(MountEventType.unmounted, ["status": .string(signal == 0 ? "unmounted" : "stopped"),
                                                   "signal": .integer(Int64(signal))])
            logger.info("unmounted", metadata: ["mountpoint": "\(mountpoint)", "signal": "\(signal)"])
        } catch {
            readiness?.signalFailure("\(error)")
            throw error
        }
    }
}

extension MountCommand {
    /// Metrics go to a Prometheus registry (before any lock manager exists, so every metric lands there);
    /// with an address, it is served as text there.
    @discardableResult
    static func startMetrics(address: String?) throws(CLIError) -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        DaemonMetrics.shared.installFuseObserver()
        guard let address else { return registry }
        try MetricsEndpoint(address: address, registry: registry).start()
        return registry
    }

    /// Streaming multipart pays on remote stores; on the local backend assembling parts is only an extra copy.
    static func streamsUploads(_ location: StoreLocation) -> Bool {
        switch location.kind {
        case .s3, .gcs: return true
        default: return false
        }
    }
}

struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount", abstract: "Unmount a bucketfs mount after its pending writes are uploaded.")

    @Argument(help: "The mount point.")
    var mountpoint: String

    @Option(help: "Seconds to wait for the daemon to finish uploading and exit.")
    var timeout: Double = 120

    func run() throws {
        let path = MountPointCheck.absolute(mountpoint)
        guard MountPointCheck.mountType(at: path) == "fuse.bucketfs" else {
            throw CLIError("not a bucketfs mount: \(path)")
        }
        let daemon = MountRegistry.daemonPID(mountpoint: path)
        let tool = Process()
        tool.executableURL = URL(fileURLWithPath: "/bin/sh")
        tool.arguments = ["-c", "exec fusermount3 -u \"$0\" 2>&1", path]
        let pipe = Pipe()
        tool.standardOutput = pipe
        try tool.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        tool.waitUntilExit()
        guard tool.terminationStatus == 0 else {
            let reason = output.split(whereSeparator: \.isNewline).last.map(String.init) ?? "fusermount3 failed"
            throw CLIError("cannot unmount \(path): \(reason)")
        }
        if let daemon, !MountRegistry.wait(forExitOf: daemon, seconds: timeout) {
            throw CLIError("unmounted \(path), but the daemon (pid \(daemon)) is still running after \(Int(timeout))s")
        }
    }
}
