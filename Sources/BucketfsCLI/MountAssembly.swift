import FileSystem
import Foundation
import Locking
import Logging
import ObjectStore
import Prometheus
import Records

/// Turns a configuration and a source into the parts of a mount: the store (checked that it answers), the lock
/// setup, the records, and — for `bucketfs mount` — the event stream, the journals and the file system
/// (`assemble`). The other commands take the parts they need from here, so that they open a source exactly as a
/// mount of it would.
struct MountAssembly {
    let configuration: Configuration
    let location: StoreLocation
    let store: any ObjectStore

    /// Seconds `health.json` keeps its probes: it is rendered at every stat of it.
    static let healthTTL: Double = 2

    init(source: String, configuration: Configuration) throws(CLIError) {
        let location: StoreLocation
        do { location = try StoreLocation(parsing: source) } catch { throw CLIError("\(error)") }
        try self.init(location: location, configuration: configuration)
    }

    init(location: StoreLocation, configuration: Configuration) throws(CLIError) {
        self.configuration = configuration
        self.location = location
        self.store = try Self.openStore(location, configuration: configuration)
    }

    /// Opens the store and checks that it answers, so that a missing bucket, wrong credentials or an
    /// unreachable endpoint end here with one line, before anything is mounted.
    static func openStore(_ location: StoreLocation, configuration: Configuration) throws(CLIError) -> any ObjectStore {
        do {
            let store: any ObjectStore
            switch location.kind {
            case .s3(let bucket, _):
                store = try location.makeStore(s3: configuration.s3Configuration(bucket: bucket))
            case .gcs(let bucket, _):
                store = try location.makeStore(s3: nil, gcs: configuration.gcsConfiguration(bucket: bucket))
            default:
                store = try location.makeStore()
            }
            try store.validate()
            return store
        } catch {
            throw CLIError("cannot open \(location): \(error)")
        }
    }

    func lockSetup() throws(CLIError) -> LockSetup {
        try LockSetup(configuration: configuration, location: location, store: store)
    }

    /// The records backend: `records_url` if set, else the mounted store under `<prefix><records_prefix>`.
    func recordStores() throws(CLIError) -> RecordStores {
        let m = configuration.mount
        guard let url = m.recordsURL else {
            return RecordStores(store: store, mountPrefix: location.prefix, recordsPrefix: m.recordsPrefix)
        }
        do {
            let backend = try RecordStores.backend(url: url, recordsPrefix: m.recordsPrefix) { [configuration] other in
                try Self.openStore(other, configuration: configuration)
            }
            // A bad URL, wrong password or missing database ends here, before anything is mounted (PostgreSQL:
            // the first connection also creates or migrates the schema).
            try backend.ping()
            return RecordStores(backend: backend)
        } catch {
            throw CLIError("records_url \(Configuration.redactedURL(url)): \(error)")
        }
    }

    /// Streaming multipart pays on remote stores; on the local backend assembling parts is only an extra copy.
    var streamsUploads: Bool {
        switch location.kind {
        case .s3, .gcs: return true
        default: return false
        }
    }

    var fileSystemOptions: FileSystemOptions {
        let m = configuration.mount
        return FileSystemOptions(
            prefix: location.prefix, uid: m.uid, gid: m.gid, filePermissions: m.fileMode,
            directoryPermissions: m.dirMode, readOnly: m.readOnly,
            metadataTTL: m.metadataTTL, negativeTTL: m.negativeTTL,
            cacheDirectory: m.cacheDir, readAheadBudget: m.readAheadMiB << 20,
            multipartPartSize: streamsUploads && m.partSizeMiB > 0 ? m.partSizeMiB << 20 : nil,
            multipartMaxInFlight: m.partsInFlight,
            renameParallelism: m.renameParallelism,
            stagingLimit: UInt64(m.stagingMaxMiB) << 20,
            recoveryContext: configuration.storeContext(for: location),
            blockCacheSize: UInt64(m.blockCacheMiB) << 20)
    }

    /// The parts of a running mount, before it is mounted.
    struct Parts {
        /// Names the session record and the event stream (`events/<id>/`).
        let id: String
        let meter: MeteredStore
        let records: RecordStores
        let events: MountEvents
        let health: MountHealth
        /// Its lock marks this run's staged files as owned: keep it alive until the mount ends.
        let staging: StagingJournal
        let fileSystem: FileSystem
        /// The file system with the control directory over its root: what the FUSE layer serves.
        let tree: MountTree
    }

    /// Builds the file system with its records, events, journals and control directory, and recovers what a
    /// killed daemon left: staged files (uploaded conditionally or kept in the recovery folder), then the
    /// multipart uploads in flight. `registry` must exist before the lock manager, so its metrics land there.
    func assemble(locking: LockSetup, registry: PrometheusCollectorRegistry, logger: Logger) throws(CLIError) -> Parts {
        let m = configuration.mount
        let meter = MeteredStore(store)
        let records = try recordStores()
        let health = MountHealth(meter: meter, records: records.backend, locking: locking, ttl: Self.healthTTL)
        let control = controlSettings(records: records, registry: registry, meter: meter, health: health)
        var options = fileSystemOptions
        options.directoryMetadataInSidecar = directoryMetadataInSidecar(logger: logger)
        switch location.kind {
        case .s3, .gcs: options.maxKeyLength = 1024  // both limit a key to 1,024 bytes of UTF-8
        default: break
        }
        // Staged data and recovery copies: real directories of ours, 0700 — never a link planted in the cache
        // directory, nor an older version's 0755 directory left as it was.
        for sub in ["staging", "recovery"] {
            do { try PrivateDirectory.makeOrCheck(m.cacheDir + "/" + sub) } catch {
                throw CLIError("cache directory: \(error)")
            }
        }
        let recovery = RecoveryFolder(
            directory: m.cacheDir + "/recovery", store: meter.description,
            context: options.recoveryContext, logger: logger)
        let staging: StagingJournal
        do {
            staging = try StagingJournal(
                directory: m.cacheDir + "/staging", store: meter.description,
                context: options.recoveryContext, logger: logger)
        } catch {
            throw CLIError("\(error)")
        }
        let id = LiveSession.newMountID()
        let events = MountEvents(stream: id, log: records.events, logger: logger)
        events.stagingRecovered(staging.recover(store: store, recovery: recovery))
        let journal = UploadStateJournal(
            uploads: records.uploads, logger: logger,
            stagingDirectory: m.cacheDir + "/staging", mountID: staging.mountID,
            events: events, isAlive: MountRegistry.isAlive)
        let fileSystem: FileSystem
        do {
            fileSystem = try FileSystem(
                store: meter, options: options, logger: logger,
                lockManager: locking.makeManager(logger: logger, onLost: events.lockLost),
                lockResource: locking.resourceName,
                uploadJournal: journal, stagingJournal: staging, events: events)
        } catch {
            throw CLIError("\(error)")
        }
        health.attach { fileSystem.heldLockLeases }
        DaemonMetrics.shared.watch(fileSystem: fileSystem, cacheDirectory: m.cacheDir, store: store)
        // Uploads a crashed daemon on this host left behind: content to the recovery folder, upload aborted.
        journal.recoverInterrupted(store: store, recovery: recovery)
        return Parts(
            id: id, meter: meter, records: records, events: events, health: health, staging: staging,
            fileSystem: fileSystem, tree: MountTree(files: fileSystem, control: control))
    }
}

extension MountAssembly.Parts {
    /// The mount's session record, its counters from the store meter; nil (logged) when the backend refuses.
    func startSession(metadata: [String: JSONValue], logger: Logger) -> LiveSession? {
        let meter = meter
        do {
            let session = try LiveSession(
                id: id, sessions: records.sessions, userID: String(getuid()), metadata: metadata,
                counters: {
                    let c = meter.snapshot
                    return SessionRecord.Metrics(
                        requestCount: c.requests,
                        totalProcessingTime: (c.seconds * 1000).rounded() / 1000,
                        errorCount: c.errors)
                },
                warn: { message, error in logger.warning("\(message)", metadata: ["error": "\(error)"]) })
            session.refresh(every: 5)
            return session
        } catch {
            logger.warning("cannot record the mount's session", metadata: ["error": "\(error)"])
            return nil
        }
    }
}
