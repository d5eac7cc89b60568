import Foundation
import Locking
import Logging
import ObjectStore
import Records
import Synchronization

/// The filesystem over an `ObjectStore`, with no kernel dependency: `FuseBridge` calls it from libfuse's
/// worker threads, tests call it directly. Methods block on store I/O, so they never run on Swift's
/// cooperative pool.
///
/// The parts, one concern a file: names and the metadata cache (`+Namespace`), attribute changes (`+Attributes`),
/// creating and removing entries (`+Entries`), `+Rename`, directory listings (`+Directories`), open files and
/// their I/O (`+Handles`), write-back to the store (`+WriteBack`, following `ContentState`), locks (`+Locks`)
/// and the lock documents the `.bucketfs/` control directory shows (`+Control`). The control directory itself is
/// laid over the root by `MountTree`, which the FUSE layer calls.
///
/// Locking, in this order: a file's `FileSerial` (held across its store changes), a `StagedFile`'s content lock
/// (held while its content downloads), then `state`, which guards the inode table and handles and is never held
/// across store I/O.
public final class FileSystem: Sendable {
    public let options: FileSystemOptions
    public let store: any ObjectStore
    let keys: KeyMapping
    let logger: Logger
    let recovery: RecoveryFolder
    let stagingDirectory: String
    let mountTime: FileTime
    let state: Mutex<State>
    /// Read-ahead and the metadata fetches of listings.
    let workers: WorkerPool
    /// Part uploads of streamed files, on threads of their own, with the mount's bound on parts in flight.
    let uploadLane: UploadLane
    /// Bulk copies and deletes of a directory rename, kept apart so that a large rename cannot starve read-ahead.
    let bulkWorkers: WorkerPool
    let prefetchBudget: PrefetchBudget
    /// flock/fcntl locks: POSIX detail within the mount, a strategy lease per locked file across mounts.
    let locks: FileLockCoordinator
    /// Metadata of object versions seen before, so that a LIST needs no HEAD per entry (`MetadataIndex`).
    let metadataIndex: MetadataIndex
    /// Sidecars naming each dirty staged file's key and base, so a crash of the daemon loses none (`StagingJournal`).
    let stagingJournal: StagingJournal?
    /// The mount's event stream: a failed upload is an event naming its recovery copy.
    let events: (any EventSink)?
    /// Notes multipart uploads in flight (the mount's UploadState records), so a crash does not lose them.
    let uploadJournal: (any UploadJournal)?
    /// Drops the kernel's cached attributes and pages of an inode (set by the FUSE layer once mounted).
    let kernelCacheInvalidator = Mutex(KernelCacheInvalidator())
    /// Pushes the block around a random read into the kernel's page cache (nil: no block cache).
    let pageFiller: PageCacheFiller?

    /// The FUSE layer's callback, held in a struct, not as `Mutex<Closure?>`: each `withLock { $0 }` of a bare closure
    /// wrapped it in two more reabstraction thunks and wrote it back, so every call grew slower until the stack
    /// overflowed (a daemon crash after a few million FUSE operations; see docs/DEVELOPMENT.md, "Closures behind a
    /// Mutex").
    struct KernelCacheInvalidator: Sendable {
        var invalidate: (@Sendable (UInt64) -> Void)?
    }

    struct OpenFile {
        var ino: UInt64
        /// Created by the first read of a file that has no local content.
        var prefetcher: ReadPrefetcher?
        /// The whole content of a small file, read by the lookup that preceded the open.
        var content: Data?
        /// The object's version at open: what this handle's reads put in the kernel's page cache (keep_cache).
        var version: String? = nil
        /// Opened for writing: while such a handle exists no pages are pushed (`PageCacheFiller`).
        var writable = false
        /// O_DIRECT: its reads bypass the page cache, so none are pushed for them.
        var direct = false
    }

    struct State {
        var table: InodeTable
        var files: [UInt64: OpenFile] = [:]
        /// Directory handle → the listing taken at its first readdir.
        var listings: [UInt64: [DirectoryEntry]] = [:]
        var nextHandle: UInt64 = 1
        /// Paths known not to exist, until the instant given.
        var negative: ExactPathMap<ContinuousClock.Instant> = [:]
        /// Directories whose complete list of names is known (listed, or made by us), until the instant given:
        /// a name not in it does not exist, with no request (a fresh directory fills up at one PUT per file).
        var listed: ExactPathMap<(names: Set<ExactPath>, until: ContinuousClock.Instant)> = [:]
        /// Directory inode → its last listing, reused by the next readdir for `metadata_ttl` (+Directories).
        var recentListings: [UInt64: RecentListing] = [:]
        /// Counts the calls of `entriesChanged`, `namesChanged` and `noteNameChanged`: a listing whose LIST ran across
        /// one is not kept for reuse (it may show a name removed, or miss one made, while its reply was on the way).
        var namespaceChanges: UInt64 = 0
        /// Directory → its listings whose LIST is on the way, and the names this mount made, removed or renamed there
        /// meanwhile (with `namespaceChanges` then): for those names such a reply is older than the table.
        var listingsUnderway: ExactPathMap<(count: Int, changed: [ExactPath: UInt64])> = [:]

        /// An entry was added to or removed from directory `path`: POSIX moves its mtime and ctime. Kept in
        /// memory (a stored directory keeps the mtime set on it explicitly, see docs/SEMANTICS.md).
        mutating func entriesChanged(in path: String, at time: FileTime) {
            namespaceChanges &+= 1
            guard let ino = table.ino(at: path) else { return }
            recentListings.removeValue(forKey: ino)
            table[ino]?.mtime = time
            table[ino]?.ctime = time
        }

        /// A name in directory `path` appeared or went without this mount changing it (seen by a lookup): its
        /// last listing is not reused.
        mutating func namesChanged(in path: String) {
            namespaceChanges &+= 1
            if let ino = table.ino(at: path) { recentListings.removeValue(forKey: ino) }
        }

        /// This mount made, removed or renamed (from or onto) `path`, in the critical section that changes the table.
        mutating func noteNameChanged(_ path: String) {
            namespaceChanges &+= 1
            let parent = KeyMapping.parent(of: path)
            guard listingsUnderway[parent] != nil else { return }
            listingsUnderway[parent]?.changed[ExactPath(KeyMapping.name(of: path))] = namespaceChanges
        }

        mutating func listingStarted(of path: String) {
            var underway = listingsUnderway[path] ?? (0, [:])
            underway.count += 1
            listingsUnderway[path] = underway
        }

        mutating func listingEnded(of path: String) {
            guard var underway = listingsUnderway[path] else { return }
            underway.count -= 1
            listingsUnderway[path] = underway.count > 0 ? underway : nil
        }

        /// The names of directory `path` this mount changed after `changes` (a listing's `namespaceChanges` when its
        /// LIST was sent).
        func changedNames(in path: String, since changes: UInt64) -> Set<ExactPath> {
            guard let changed = listingsUnderway[path]?.changed else { return [] }
            return Set(changed.lazy.filter { $0.value > changes }.map(\.key))
        }

        /// Records that `path` exists, in its parent's known listing.
        mutating func noteExists(_ path: String) {
            let parent = KeyMapping.parent(of: path)
            if listed[parent] != nil { listed[parent]?.names.insert(ExactPath(KeyMapping.name(of: path))) }
            tailKnowledge.noteExists(name: KeyMapping.name(of: path), in: parent)
        }

        /// Whether `path` is known not to exist because its parent's listing is known and lacks it.
        func listedAbsent(_ path: String, now: ContinuousClock.Instant) -> Bool {
            guard !path.isEmpty, let known = listed[KeyMapping.parent(of: path)], now < known.until else {
                return !path.isEmpty
                    && tailKnowledge.absent(name: KeyMapping.name(of: path), in: KeyMapping.parent(of: path), now: now)
            }
            return !known.names.contains(ExactPath(KeyMapping.name(of: path)))
        }
        /// The ends of directories listed, and removals in progress (FileSystem+Tails).
        var tailKnowledge = TailKnowledge()
        var reportedInvalidKeys: Set<String> = []
        var smallContents = SmallContentCache(capacity: FileSystem.smallContentCapacity)
        /// Sizes of objects (not directories) seen in listings, kept after their nodes are forgotten: a hint of
        /// which question to ask the store first when such a path is looked up again (a HEAD or small GET, not a
        /// LIST). Never trusted for existence. Emptied when it holds `fileHintLimit` paths.
        var fileHints: ExactPathMap<UInt64> = [:]

        mutating func allocateHandle() -> UInt64 {
            defer { nextHandle += 1 }
            return nextHandle
        }
    }

    /// A file known to be at most this big is revalidated with a GET of this range rather than a HEAD: the same
    /// one request, and the content is there for the open that usually follows.
    static let smallObjectLimit: UInt64 = 64 << 10
    /// Bytes of such contents kept for opens to come.
    static let smallContentCapacity = 16 << 20
    static let fileHintLimit = 100_000

    /// The largest file: S3's largest object (5 TiB); a write or truncate beyond it is EFBIG.
    static let maxFileSize: UInt64 = 5 << 40

    /// Largest range fetched at once when a file's existing content is copied into a staging file.
    static let downloadChunk: UInt64 = 8 << 20

    /// `lockManager` makes locks hold across mounts (nil: within this mount only); `lockResource` names a
    /// file's path (relative to the mount root, "" for the root) to its strategy.
    public init(
        store: any ObjectStore, options: FileSystemOptions, logger: Logger, lockManager: LockManager? = nil,
        lockResource: @escaping @Sendable (String) -> String = { $0.isEmpty ? "." : $0 },
        uploadJournal: (any UploadJournal)? = nil,
        stagingJournal: StagingJournal? = nil, events: (any EventSink)? = nil
    ) throws(FSError) {
        self.store = store
        self.stagingJournal = stagingJournal
        self.events = events
        self.uploadJournal = uploadJournal
        self.options = options
        self.keys = KeyMapping(prefix: options.prefix)
        self.logger = logger
        self.stagingDirectory = options.cacheDirectory + "/staging"
        self.recovery = RecoveryFolder(
            directory: options.cacheDirectory + "/recovery", store: store.description,
            context: options.recoveryContext, logger: logger)
        self.mountTime = FileTime.now()
        self.workers = WorkerPool(threads: 16, name: "bucketfs-io")
        self.uploadLane = UploadLane(limit: options.uploadPartsInFlightLimit)
        self.bulkWorkers = WorkerPool(threads: max(1, options.renameParallelism), name: "bucketfs-bulk")
        self.prefetchBudget = PrefetchBudget(
            bytes: options.readAheadBudget,
            // Named by the store (bucket and endpoint) its entries come from: other stores may share the directory.
            cache: options.blockCacheSize > 0
                ? BlockCache(
                    directory: options.cacheDirectory + "/blocks", limit: options.blockCacheSize,
                    store: store.description + " " + (options.recoveryContext["endpoint_url"] ?? "")) : nil,
            logger: logger)
        self.pageFiller = prefetchBudget.cache.map { PageCacheFiller(cache: $0) }
        self.metadataIndex = MetadataIndex(
            directory: options.persistMetadataIndex ? options.cacheDirectory + "/metadata" : nil,
            name: store.description + "\n" + options.prefix)
        self.locks = FileLockCoordinator(manager: lockManager, resourceName: lockResource, logger: logger)
        do {
            try FileManager.default.createDirectory(atPath: stagingDirectory, withIntermediateDirectories: true)
        } catch {
            throw FSError.io("cannot create cache directory \(stagingDirectory): \(error.localizedDescription)")
        }
        let root = Node(
            ino: InodeTable.rootIno, path: "", kind: .directory, size: 0,
            permissions: options.directoryPermissions, uid: options.uid, gid: options.gid,
            mtime: mountTime, ctime: mountTime, version: nil, inStore: false, metadataKnown: false,
            validatedAt: .now, lookups: 1)
        self.state = Mutex(State(table: InodeTable(root: root)))
        loadRootAttributes()
        installLockRetry()
    }

    deinit {
        locks.shutdown()
        workers.stop()
        uploadLane.stop()
        bulkWorkers.stop()
    }

    // MARK: - Helpers shared by the parts of FileSystem

    func isFresh(_ node: Node) -> Bool {
        ContinuousClock.now < node.validatedAt + .seconds(options.metadataTTL)
    }

    func existingNode(_ ino: UInt64) throws(FSError) -> Node {
        guard let node = state.withLock({ $0.table[ino] }) else { throw FSError.notFound }
        return node
    }

    /// The path of `name` in directory `parent`, after the checks every namespace change makes.
    func childPath(parent: UInt64, name: String) throws(FSError) -> String {
        guard name.utf8.count <= 255 else { throw FSError.nameTooLong }
        guard KeyMapping.isValidName(name) else { throw FSError.invalidArgument }
        guard name != DirectoryMarkers.sidecarName else { throw FSError.notPermitted }  // reserved
        let node = try existingNode(parent)
        guard node.kind == .directory else { throw FSError.notDirectory }
        guard parent == InodeTable.rootIno || !node.path.isEmpty else { throw FSError.notFound }
        let path = KeyMapping.join(node.path, name)
        // (+ 1: the marker's `/`, should it be a directory)
        if let limit = options.maxKeyLength, keys.key(for: path).utf8.count + 1 > limit { throw FSError.nameTooLong }
        return path
    }

    /// The key a node's object lives at: the marker for a directory.
    func objectKey(of node: Node) -> String {
        node.kind == .directory ? directoryMetadataKey(for: node.path) : keys.key(for: node.path)
    }

    /// Where a directory's mode, owner and times are kept: its marker `dir/`. The root of a whole bucket has no
    /// marker of its own; its attributes live in `.bucketfs/root/`, beside the mount's other records.
    func markerKey(for path: String) -> String {
        path.isEmpty && options.prefix.isEmpty ? Self.bucketRootMarker : keys.directoryPrefix(for: path)
    }

    static let bucketRootMarker = ".bucketfs/root/"

    /// The object that carries a directory's metadata: its marker, or on stores that drop a marker's metadata the
    /// sidecar inside it (`DirectoryMarkers`).
    func directoryMetadataKey(for path: String) -> String {
        let marker = markerKey(for: path)
        return options.directoryMetadataInSidecar ? DirectoryMarkers.sidecarKey(forMarker: marker) : marker
    }

    /// The root's attributes as last set (chmod, touch, rsync of a tree onto the mount root); a failure to ask
    /// leaves the mount's defaults.
    private func loadRootAttributes() {
        guard let marker = try? store.head(directoryMetadataKey(for: "")), marker.metadata?.isEmpty == false else {
            return
        }
        state.withLock { s in
            guard let root = s.table[InodeTable.rootIno] else { return }
            s.table[InodeTable.rootIno] = apply(observation: .directory(marker: marker), to: root)
        }
    }

    func requireWritable() throws(FSError) {
        if options.readOnly { throw FSError.readOnly }
    }

    func requireAbsent(_ path: String) throws(FSError) {
        do throws(FSError) {
            _ = try resolve(path, retain: false)
            throw FSError.exists
        } catch .notFound {
            return
        }
    }

    /// Adds a node this mount just made (it exists in the store, or will at its first upload).
    func insertNew(_ node: Node, retain: Bool) -> FileAttributes {
        state.withLock { s in
            var node = node
            node.ino = s.table.allocateIno()
            node.lookups = retain ? 1 : 0
            if node.kind == .directory { node.subdirectories = [] }  // new: none yet
            s.table.insert(node)
            s.noteNameChanged(node.path)
            s.negative.removeValue(forKey: node.path)
            s.noteExists(node.path)
            s.entriesChanged(in: KeyMapping.parent(of: node.path), at: node.ctime)
            if node.kind == .directory { s.listed[node.path] = ([], .now + .seconds(options.negativeTTL)) }
            if let version = node.version {
                metadataIndex.wrote(
                    key: objectKey(of: node), version: version, size: node.size,
                    metadata: node.objectMetadata())
            }
            return node.attributes()
        }
    }

    /// Runs `body` holding the `FileSerial` of each inode given (those still known), in ascending inode order.
    func serialised<T>(_ inos: [UInt64], _ body: () throws(FSError) -> T) throws(FSError) -> T {
        let serials = state.withLock { s in Set(inos).sorted().compactMap { s.table[$0]?.serial } }
        return try holding(serials[...], body)
    }

    private func holding<T>(_ serials: ArraySlice<FileSerial>, _ body: () throws(FSError) -> T) throws(FSError) -> T {
        guard let first = serials.first else { return try body() }
        return try first.run { () throws(FSError) -> T in try holding(serials.dropFirst(), body) }
    }

    /// Files whose content has not reached the store yet: written and not uploaded, or an upload running now.
    /// For `bucketfs status`; a snapshot, not a promise.
    public var pendingUploadCount: Int {
        state.withLock { $0.table.pendingUploadCount }
    }

    /// Runs a store call, turning its failure into the errno a program sees.
    func storeCall<T>(_ body: () throws -> T) throws(FSError) -> T {
        do {
            return try body()
        } catch let error as ObjectStoreError {
            logger.debug("store call failed", metadata: ["error": "\(error)"])
            throw FSError(error)
        } catch {
            throw FSError.io("\(error)")
        }
    }
}
