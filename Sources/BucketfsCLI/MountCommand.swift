import ArgumentParser
import CLibc
import CoreMetrics
import FileSystem
import Foundation
import FuseBridge
import Logging
import ObjectStore
import Prometheus
import Records

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
        let assembly = try MountAssembly(location: location, configuration: configuration)
        let locking = try assembly.lockSetup()
        try locking.validate()

        if foreground {
            try serve(assembly, locking: locking, mountpoint: target)
        } else {
            try DaemonLauncher.launch(
                source: location.description, mountpoint: target,
                arguments: Array(CommandLine.arguments.dropFirst()),
                logDirectory: configuration.mount.cacheDir + "/logs")
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

    /// Raises the soft limit on open files to the hard one (at most 65,536): the block cache keeps up to 512 block
    /// files open for random readers, beside connections and staged files, and a service's soft limit is often
    /// 1,024.
    static func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let wanted = min(limit.rlim_max, 65_536)
        guard limit.rlim_cur < wanted else { return }
        limit.rlim_cur = wanted
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// The daemon proper: build the filesystem, mount, tell the launcher we're ready, serve until unmounted.
    private func serve(_ assembly: MountAssembly, locking: LockSetup, mountpoint: String) throws {
        let readiness = ReadinessPipe.fromEnvironment()
        let systemd = SystemdNotifier.fromEnvironment()
        Self.boundMallocRetention()
        Self.raiseOpenFileLimit()
        let location = assembly.location
        do {
            var logger = Logger(label: "bucketfs")
            logger.logLevel = Logger.Level(rawValue: assembly.configuration.mount.logLevel) ?? .info
            let m = assembly.configuration.mount
            try assembly.checkConditionalWrites(locking: locking, logger: logger)
            let registry = try Self.startMetrics(address: m.metricsAddress)
            let parts = try assembly.assemble(locking: locking, registry: registry, logger: logger)
            let fileSystem = parts.fileSystem
            let session = try FuseSession(
                tree: parts.tree, mountpoint: mountpoint,
                options: FuseMountOptions(
                    fsName: location.description, readOnly: m.readOnly, allowOther: m.allowOther,
                    debug: m.logLevel == "trace"),
                logger: logger)
            do { try session.mount() } catch {
                let needsFuseConf = m.allowOther && getuid() != 0
                let hint = needsFuseConf ? " (allow_other needs user_allow_other in /etc/fuse.conf)" : ""
                throw CLIError("\(error)\(hint)")
            }
            let registration = MountRegistry.register(source: location.description, mountpoint: mountpoint)
            registration?.refresh(
                every: 2, pendingUploads: { fileSystem.pendingUploadCount },
                heldLocks: { fileSystem.heldLockLeases.map(\.resource) })
            let mountMetadata: [String: JSONValue] = [
                "host": .string(ProcessInfo.processInfo.hostName), "uid": .integer(Int64(getuid())),
                "pid": .integer(Int64(getpid())), "source": .string(location.description),
                "mount_point": .string(mountpoint), "version": .string(BucketfsCommand.version),
            ]
            let mountSession = parts.startSession(metadata: mountMetadata, logger: logger)
            parts.events.emit(MountEventType.mounted, mountMetadata)
            logger.info(
                "mounted",
                metadata: ["source": "\(location)", "mountpoint": "\(mountpoint)", "pid": "\(getpid())"])
            readiness?.signalReady()
            systemd?.ready(status: "serving \(location) at \(mountpoint)")
            let signal = session.run()
            withExtendedLifetime(parts.staging) {}  // its lock marks this run's staged files as owned until here
            systemd?.stopping()
            registration?.remove()
            mountSession?.end(status: signal == 0 ? "unmounted" : "stopped")
            parts.events.emit(
                MountEventType.unmounted,
                [
                    "status": .string(signal == 0 ? "unmounted" : "stopped"),
                    "signal": .integer(Int64(signal)),
                ])
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
}

struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount", abstract: "Unmount a bucketfs mount after its pending writes are uploaded.")

    @Argument(help: "The mount point.")
    var mountpoint: String

    @Option(help: "Seconds to wait for the daemon to finish uploading and exit.")
    var timeout: Double = 120

    func validate() throws {
        try FlagBounds.check(timeout, flag: "--timeout", in: FlagBounds.unmountTimeout, unit: "seconds")
    }

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
