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
/// Locking: `state` guards the inode table and handles and is never held across store I/O. A
/// `StagedFile`'s own lock (held while its content downloads) is taken without `state` held.
public final class FileSystem: Sendable {
    public let options: FileSystemOptions
    public let store: any ObjectStore
    let keys: KeyMapping
    let logger: Logger
    let recovery: RecoveryFolder
    let stagingDirectory: String
    let mountTime: FileTime
    let state: Mutex<State>
    /// Read-ahead and part uploads.
    let workers: WorkerPool
    /// Bulk copies and deletes of a directory rename, kept apart so that a large rename cannot starve read-ahead.
    let bulkWorkers: WorkerPool
    let prefetchBudget: PrefetchBudget
    /// flock/fcntl locks: POSIX detail within the mount, a strategy lease per locked file across mounts.
    let locks: FileLockCoordinator
    /// The read-only `.bucketfs/` directory (ControlDirectory), if the mount shows one.
    public let control: ControlDirectory?
    /// Notes multipart uploads in flight (the mount's UploadState records), so a crash does not lose them.
    let uploadJournal: (any UploadJournal)?
    /// Drops the kernel's cached attributes and pages of an inode (set by the FUSE layer once mounted).
    let kernelCacheInvalidator = Mutex<(@Sendable (UInt64) -> Void)?>(nil)

    struct OpenFile {
        var ino: UInt64
        /// Created by the first read of a file that has no local content.
        var prefetcher: ReadPrefetcher?
        /// The whole content of a small file, read by the lookup that preceded the open.
        var content: Data?
        /// A streaming GET ahead of a reader that started at byte 0 of a large file.
        var stream: SequentialStream?
        var streamTried = false
    }

    struct State {
        var table: InodeTable
        var files: [UInt64: OpenFile] = [:]
        /// Directory handle → the listing taken at its first readdir.
        var listings: [UInt64: [DirectoryEntry]] = [:]
        var nextHandle: UInt64 = 1
        /// Paths known not to exist, until the instant given.
        var negative: [String: ContinuousClock.Instant] = [:]
        /// Directories whose complete list of names is known (listed, or made by us), until the instant given:
        /// a name not in it does not exist, with no request (a fresh directory fills up at one PUT per file).
        var listed: [String: (names: Set<String>, until: ContinuousClock.Instant)] = [:]

        /// Records that `path` exists, in its parent's known listing.
        mutating func noteExists(_ path: String) {
            let parent = KeyMapping.parent(of: path)
            if listed[parent] != nil { listed[parent]?.names.insert(KeyMapping.name(of: path)) }
        }

        /// Whether `path` is known not to exist because its parent's listing is known and lacks it.
        func listedAbsent(_ path: String, now: ContinuousClock.Instant) -> Bool {
            guard !path.isEmpty, let known = listed[KeyMapping.parent(of: path)], now < known.until else { return false }
            return !known.names.contains(KeyMapping.name(of: path))
        }
        var reportedInvalidKeys: Set<String> = []
        var smallContents = SmallContentCache(capacity: FileSystem.smallContentCapacity)
        /// Sizes of objects (not directories) seen in listings, kept after their nodes are forgotten: a hint of
        /// which question to ask the store first when such a path is looked up again (a HEAD or small GET, not a
        /// LIST). Never trusted for existence. Emptied when it holds `fileHintLimit` paths.
        var fileHints: [String: UInt64] = [:]

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
    /// A file at least this big, read from its first byte, is read through one streaming GET.
    static let streamThreshold: UInt64 = 8 << 20

    /// Largest range fetched at once when a file's existing content is copied into a staging file.
    static let downloadChunk: UInt64 = 8 << 20

    /// `lockManager` makes locks hold across mounts (nil: within this mount only); `lockResource` names a
    /// file's path (relative to the mount root, "" for the root) to its strategy.
    public init(store: any ObjectStore, options: FileSystemOptions, logger: Logger, lockManager: LockManager? = nil,
                lockResource: @escaping @Sendable (String) -> String = { $0.isEmpty ? "." : $0 },
                control: ControlDirectory.Settings? = nil, uploadJournal: (any UploadJournal)? = nil) throws(FSError) {
        self.store = store
        self.uploadJournal = uploadJournal
        self.options = options
        self.keys = KeyMapping(prefix: options.prefix)
        self.logger = logger
        self.stagingDirectory = options.cacheDirectory + "/staging"
        self.recovery = RecoveryFolder(directory: options.cacheDirectory + "/recovery", store: store.description,
                                       context: options.recoveryContext, logger: logger)
        self.mountTime = FileTime.now()
        self.workers = WorkerPool(threads: 16, name: "bucketfs-io")
        self.bulkWorkers = WorkerPool(threads: max(1, options.renameParallelism), name: "bucketfs-bulk")
        self.prefetchBudget = PrefetchBudget(bytes: options.readAheadBudget)
        self.locks = FileLockCoordinator(manager: lockManager, resourceName: lockResource, logger: logger)
        self.control = control.map {
            ControlDirectory(settings: $0, storeFolder: ObjectStoreRecordBackend(store: store, prefix: options.prefix + $0.name + "/"),
                             uid: options.uid, gid: options.gid)
        }
        do {
            try FileManager.default.createDirectory(atPath: stagingDirectory, withIntermediateDirectories: true)
        } catch {
            throw FSError.io("cannot create cache directory \(stagingDirectory): \(error.localizedDescription)")
        }
        let root = Node(ino: InodeTable.rootIno, path: "", kind: .directory, size: 0,
                        permissions: options.directoryPermissions, uid: options.uid, gid: options.gid,
                        mtime: mountTime, ctime: mountTime, version: nil, inStore: false, metadataKnown: false,
                        validatedAt: .now, lookups: 1)
        self.state = Mutex(State(table: InodeTable(root: root)))
        installLockRetry()
        installControlDirectory()
    }

    deinit {
        locks.shutdown()
        workers.stop()
        bulkWorkers.stop()
    }

    // MARK: - Names and attributes

    public func lookup(parent: UInt64, name: String) throws(FSError) -> FileAttributes {
        if let attributes = try controlLookup(parent: parent, name: name) { return attributes }    // control dir
        let path = try childPath(parent: parent, name: name)
        return try resolve(path, retain: true)
    }

    public func forget(_ ino: UInt64, count: UInt64) {
        state.withLock { s in
            guard var node = s.table[ino] else { return }
            node.lookups -= min(node.lookups, count)
            s.table[ino] = node
            s.table.evictIfUnused(ino)
        }
    }

    public func getattr(_ ino: UInt64) throws(FSError) -> FileAttributes {
        if let control, control.owns(ino) { return try control.getattr(ino) }    // control dir
        let (attributes, path): (FileAttributes?, String) = try state.withLock { s throws(FSError) in
            guard let node = s.table[ino] else { throw FSError.notFound }
            let trusted = ino == InodeTable.rootIno || node.path.isEmpty || node.staged != nil || isFresh(node)
            return (trusted ? node.attributes() : nil, node.path)
        }
        if let attributes { return attributes }
        return try resolve(path, retain: false, force: true)
    }

    public func setattr(_ ino: UInt64, _ changes: AttributeChanges) throws(FSError) -> FileAttributes {
        try requireWritable()
        if control?.owns(ino) == true { throw FSError.readOnly }    // control dir
        if let size = changes.size {
            if let stream = state.withLock({ $0.table[ino]?.stream }), !stream.allowsTruncate(to: size) {
                dropStream(stream, of: ino)
            }
            let staged = try stage(ino, keepContent: size > 0)
            try staged.truncate(to: size)
            state.withLock { s in
                s.table[ino]?.size = size
                s.table[ino]?.dirty = true
                s.table[ino]?.noteChange(from: size)
                s.table[ino]?.mtime = changes.mtime ?? .now()
            }
        }
        let now = FileTime.now()
        let (before, node, uploadNow): (Node, Node, Bool) = try state.withLock { s throws(FSError) in
            guard var node = s.table[ino] else { throw FSError.notFound }
            let before = node
            if let p = changes.permissions { node.permissions = p & 0o7777 }
            if let u = changes.uid { node.uid = u }
            if let g = changes.gid { node.gid = g }
            if let m = changes.mtime {
                node.mtime = m
                node.mtimeExplicit = true
            }
            if changes.changesMetadata {
                node.ctime = now
                node.metadataKnown = true
                // Open with local content: the new metadata travels with the upload at close.
                if node.staged != nil { node.dirty = true }
            }
            s.table[ino] = node
            return (before, node, node.staged != nil && node.openHandles == 0)
        }
        if uploadNow {
            // truncate(2) on a file nobody has open: nothing will close it, so upload now.
            defer { dropStagedIfIdle(ino) }
            try upload(ino)
        } else if changes.changesMetadata && node.staged == nil && !node.path.isEmpty {
            do {
                try storeMetadata(of: node)
            } catch {
                state.withLock { s in
                    guard var current = s.table[ino] else { return }
                    (current.permissions, current.uid, current.gid) = (before.permissions, before.uid, before.gid)
                    (current.mtime, current.ctime, current.metadataKnown) = (before.mtime, before.ctime, before.metadataKnown)
                    s.table[ino] = current
                }
                throw error
            }
        }
        return try getattr(ino)
    }

    public func readlink(_ ino: UInt64) throws(FSError) -> String {
        let node = try existingNode(ino)
        guard node.kind == .symlink, let target = node.symlinkTarget else { throw FSError.invalidArgument }
        return target
    }

    public func statfs() -> FileSystemStats {
        // Buckets have no fixed size: report a large, constant capacity so that tools checking free space proceed.
        FileSystemStats(blockSize: 4096, totalBlocks: 1 << 40, freeBlocks: 1 << 40, totalFiles: 1 << 32,
                        freeFiles: 1 << 32, maxNameLength: 255)
    }

    // MARK: - Namespace changes

    public func mkdir(parent: UInt64, name: String, permissions: UInt32, caller: Caller) throws(FSError) -> FileAttributes {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        try requireAbsent(path)
        let now = FileTime.now()
        var node = Node(ino: 0, path: path, kind: .directory, size: 0, permissions: permissions & 0o7777,
                        uid: caller.uid, gid: caller.gid, mtime: now, ctime: now, version: nil, inStore: true,
                        metadataKnown: true, validatedAt: .now)
        let info = try storeCall {
            try store.put(keys.directoryPrefix(for: path), body: .data(Data()),
                          options: PutOptions(metadata: node.posixMetadata().objectMetadata))
        }
        node.version = info.version
        return insertNew(node, retain: true)
    }

    public func symlink(parent: UInt64, name: String, target: String, caller: Caller) throws(FSError) -> FileAttributes {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        try requireAbsent(path)
        let now = FileTime.now()
        var node = Node(ino: 0, path: path, kind: .symlink, size: 0, permissions: 0o777, uid: caller.uid,
                        gid: caller.gid, mtime: now, ctime: now, symlinkTarget: target, version: nil, inStore: true,
                        metadataKnown: true, validatedAt: .now)
        let info = try storeCall {
            try store.put(keys.key(for: path), body: .data(Data()),
                          options: PutOptions(metadata: node.posixMetadata().objectMetadata, condition: .ifAbsent))
        }
        node.version = info.version
        return insertNew(node, retain: true)
    }

    /// Creates a file that exists only locally until its first flush uploads it (one PUT for create+write+close).
    public func create(parent: UInt64, name: String, permissions: UInt32, flags: Int32,
                       caller: Caller) throws(FSError) -> (attributes: FileAttributes, handle: UInt64) {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        let staged = try StagedFile(directory: stagingDirectory, loaded: true)
        let now = FileTime.now()
        var node = Node(ino: 0, path: path, kind: .file, size: 0, permissions: permissions & 0o7777,
                        uid: caller.uid, gid: caller.gid, mtime: now, ctime: now, version: nil, inStore: false,
                        metadataKnown: true, validatedAt: .now)
        node.staged = staged
        node.dirty = true
        node.openHandles = 1
        node.stream = makeStream(for: node)
        let attributes = insertNew(node, retain: true)
        let handle = state.withLock { s in
            let h = s.allocateHandle()
            s.files[h] = OpenFile(ino: attributes.ino)
            return h
        }
        return (attributes, handle)
    }

    public func unlink(parent: UInt64, name: String) throws(FSError) {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        let attributes = try resolve(path, retain: false)
        guard attributes.kind != .directory else { throw FSError.isDirectory }
        let node = try existingNode(attributes.ino)
        if node.kind == .file && node.openHandles > 0 && node.inStore {
            // POSIX keeps an unlinked file readable through descriptors still open: keep a local copy.
            _ = try stage(node.ino, keepContent: true)
        }
        if node.inStore {
            try storeCall { try store.delete(keys.key(for: path)) }
        }
        if let stream = node.stream { dropStream(stream, of: node.ino) }
        state.withLock { s in
            s.table[node.ino]?.unlinked = true
            s.table[node.ino]?.dirty = false
            s.table.detach(path: path)
            s.negative[path] = .now + .seconds(options.negativeTTL)
        }
    }

    public func rmdir(parent: UInt64, name: String) throws(FSError) {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        let attributes = try resolve(path, retain: false)
        guard attributes.kind == .directory else { throw FSError.notDirectory }
        let marker = keys.directoryPrefix(for: path)
        let page = try storeCall { try store.list(ListRequest(prefix: marker, maxKeys: 2)) }
        let hasPending = state.withLock { !$0.table.pendingChildren(of: path).isEmpty }
        if hasPending || page.objects.contains(where: { $0.key != marker }) || !page.commonPrefixes.isEmpty {
            throw FSError.notEmpty
        }
        if page.objects.contains(where: { $0.key == marker }) {
            try storeCall { try store.delete(marker) }
        }
        state.withLock { s in
            s.table.detach(path: path)
            s.negative[path] = .now + .seconds(options.negativeTTL)
        }
    }

    /// File: server-side copy, then delete. Directory: object by object — not atomic (see docs/SEMANTICS.md).
    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String,
                       noReplace: Bool) throws(FSError) {
        try requireWritable()
        let from = try childPath(parent: parent, name: name)
        let to = try childPath(parent: newParent, name: newName)
        let source = try resolve(from, retain: false)
        guard from != to else { return }
        if source.kind == .directory && (to + "/").hasPrefix(from + "/") { throw FSError.invalidArgument }
        var destination: FileAttributes?
        do throws(FSError) { destination = try resolve(to, retain: false) } catch .notFound { destination = nil }
        if let destination {
            if noReplace { throw FSError.exists }
            if source.kind == .directory && destination.kind != .directory { throw FSError.notDirectory }
            if source.kind != .directory && destination.kind == .directory { throw FSError.isDirectory }
            if destination.kind == .directory {
                try rmdir(parent: newParent, name: newName)
            }
        }
        if source.kind == .directory {
            try renameDirectory(from: from, to: to)
        } else {
            try renameObject(ino: source.ino, from: from, to: to)
        }
    }

    private func renameObject(ino: UInt64, from: String, to: String) throws(FSError) {
        let inStore = state.withLock { $0.table[ino]?.inStore ?? false }
        var newVersion: String?
        if inStore {
            let info = try storeCall { try store.copy(from: keys.key(for: from), to: keys.key(for: to), metadata: nil,
                                                      condition: .none) }
            newVersion = info.version
            try storeCall { try store.delete(keys.key(for: from)) }
        }
        state.withLock { s in
            if !inStore, let replaced = s.table.node(at: to), replaced.inStore, replaced.kind != .directory {
                // Not uploaded yet: its upload now replaces the object that was there.
                s.table[ino]?.inStore = true
                s.table[ino]?.version = replaced.version
            }
            s.table.move(from: from, to: to)
            s.noteExists(to)
            if let newVersion { s.table[ino]?.version = newVersion }
            s.negative.removeValue(forKey: to)
            s.negative[from] = .now + .seconds(options.negativeTTL)
        }
    }

    private func renameDirectory(from: String, to: String) throws(FSError) {
        let oldPrefix = keys.directoryPrefix(for: from)
        let newPrefix = keys.directoryPrefix(for: to)
        let objects = try storeCall { try store.listAll(prefix: oldPrefix).objects }
        let backend = store
        let objectKeys = objects.map(\.key)
        // Copies in parallel; every copy must succeed before anything is deleted.
        let copies = bulkWorkers.map(objectKeys.count, width: options.renameParallelism) { i in
            Self.copy(backend, from: objectKeys[i], to: newPrefix + objectKeys[i].dropFirst(oldPrefix.count))
        }
        var versions: [String: String] = [:]
        for (key, result) in zip(objectKeys, copies) {
            switch result {
            case .success(let version): versions[String(key.dropFirst(oldPrefix.count))] = version
            case .failure(let error): throw FSError(error)
            }
        }
        // Then the deletes: objects in parallel, then the directory markers deepest first (the local backend
        // removes a directory when its marker goes, which it can only do once the directory is empty).
        let files = objectKeys.filter { !$0.hasSuffix("/") }
        let deletes = bulkWorkers.map(files.count, width: options.renameParallelism) { i in Self.delete(backend, files[i]) }
        for case .failure(let error) in deletes { throw FSError(error) }
        for marker in objectKeys.filter({ $0.hasSuffix("/") }).sorted(by: >) {
            if case .failure(let error) = Self.delete(backend, marker) { throw FSError(error) }
        }
        state.withLock { s in
            s.table.move(from: from, to: to)
            s.noteExists(to)
            s.listed = s.listed.filter { !($0.key == from || $0.key.hasPrefix(from + "/")) }
            for (rest, version) in versions where !rest.isEmpty && !rest.hasSuffix("/") {
                if let ino = s.table.ino(at: to + "/" + rest) { s.table[ino]?.version = version }
            }
            if let marker = versions[""], let ino = s.table.ino(at: to) { s.table[ino]?.version = marker }
            s.negative.removeValue(forKey: to)
            s.negative[from] = .now + .seconds(options.negativeTTL)
        }
    }

    private static func copy(_ store: any ObjectStore, from: String, to: String) -> Result<String, ObjectStoreError> {
        do throws(ObjectStoreError) {
            return .success(try store.copy(from: from, to: to, metadata: nil, condition: .none).version)
        } catch {
            return .failure(error)
        }
    }

    private static func delete(_ store: any ObjectStore, _ key: String) -> Result<Void, ObjectStoreError> {
        do throws(ObjectStoreError) {
            try store.delete(key)
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    // MARK: - Directory listing

    public func openDirectory(_ ino: UInt64) throws(FSError) -> UInt64 {
        if let control, control.owns(ino) { return state.withLock { $0.allocateHandle() } }    // control dir
        let node = try existingNode(ino)
        guard node.kind == .directory else { throw FSError.notDirectory }
        return state.withLock { $0.allocateHandle() }
    }

    /// Calls `add` for each entry from `offset` on until it returns false (the reply buffer is full).
    /// With `plus`, each entry that `add` accepts (other than `.` and `..`) counts as a kernel lookup.
    public func readDirectory(_ ino: UInt64, handle: UInt64, offset: UInt64, plus: Bool,
                              add: (DirectoryEntry) -> Bool) throws(FSError) {
        if let control, control.owns(ino) { return try control.readDirectory(ino, offset: offset, add: add) }    // control dir
        var listing = state.withLock { $0.listings[handle] }
        if listing == nil || offset == 0 {
            let fresh = try list(directory: ino)
            state.withLock { s in
                if let old = s.listings[handle] { unpin(old, in: &s) }
                s.listings[handle] = fresh
            }
            listing = fresh
        }
        guard let listing, offset < UInt64(listing.count) else { return }
        for entry in listing[Int(offset)...] {
            guard add(entry) else { break }
            if plus && entry.name != "." && entry.name != ".." {
                state.withLock { $0.table[entry.attributes.ino]?.lookups += 1 }
            }
        }
    }

    public func releaseDirectory(handle: UInt64) {
        state.withLock { s in
            if let listing = s.listings.removeValue(forKey: handle) { unpin(listing, in: &s) }
        }
    }

    private func unpin(_ listing: [DirectoryEntry], in s: inout State) {
        for entry in listing where entry.name != "." && entry.name != ".." {
            s.table[entry.attributes.ino]?.listingPins -= 1
            s.table.evictIfUnused(entry.attributes.ino)
        }
    }

    /// One LIST (per 1,000 keys) of the directory; every entry's attributes come from it, with no HEAD.
    private func list(directory ino: UInt64) throws(FSError) -> [DirectoryEntry] {
        let controlEntry = ino == InodeTable.rootIno ? control.map { ($0.name, $0.rootEntryAttributes()) } : nil
        let node = try existingNode(ino)
        guard node.kind == .directory else { throw FSError.notDirectory }
        let prefix = keys.directoryPrefix(for: node.path)
        let page = try storeCall { try store.listAll(prefix: prefix, delimiter: "/") }

        var directories: [String] = []
        var objects: [String: ObjectInfo] = [:]
        var marker: ObjectInfo?
        for commonPrefix in page.commonPrefixes {
            let name = String(commonPrefix.dropFirst(prefix.count).dropLast())
            if acceptName(name, key: commonPrefix) && !controlShadows(node.path, name) { directories.append(name) }
        }
        for object in page.objects {
            let name = String(object.key.dropFirst(prefix.count))
            if name.isEmpty { marker = object; continue }
            if acceptName(name, key: object.key) && !controlShadows(node.path, name) { objects[name] = object }
        }
        let directoryNames = Set(directories)
        // A symlink is a zero-byte object that only its metadata tells apart from an empty file: HEAD the
        // zero-byte entries a LIST gave without metadata, unless this version was seen already.
        let unknownEmpty = state.withLock { s in
            objects.filter { name, object in
                guard object.metadata == nil, object.size == 0, !directoryNames.contains(name) else { return false }
                let known = s.table.node(at: KeyMapping.join(node.path, name))
                return !(known?.version == object.version && known?.metadataKnown == true)
            }.map(\.key)
        }
        for name in unknownEmpty {
            if let full = try? store.head(objects[name]!.key) { objects[name] = full }
        }
        return state.withLock { s in
            if let marker { s.table[ino].map { s.table[ino] = apply(observation: .object(marker), to: $0) } }
            let parentIno = node.path.isEmpty ? ino : (s.table.ino(at: KeyMapping.parent(of: node.path)) ?? ino)
            var entries: [(String, FileAttributes)] = []
            for name in directories {
                entries.append((name, upsert(KeyMapping.join(node.path, name), .implicitDirectory, in: &s)))
            }
            // A directory shadows an object of the same name.
            if s.fileHints.count + objects.count > Self.fileHintLimit { s.fileHints = [:] }
            for (name, object) in objects where !directoryNames.contains(name) {
                s.fileHints[KeyMapping.join(node.path, name)] = object.size
                entries.append((name, upsert(KeyMapping.join(node.path, name), .object(object), in: &s)))
            }
            for pending in s.table.pendingChildren(of: node.path) {
                let name = KeyMapping.name(of: pending.path)
                if objects[name] == nil && !directoryNames.contains(name) { entries.append((name, pending.attributes())) }
            }
            entries.sort { $0.0 < $1.0 }
            for (_, attributes) in entries { s.table[attributes.ino]?.listingPins += 1 }
            s.listed[node.path] = (Set(entries.map(\.0)), .now + .seconds(options.negativeTTL))
            let dots = [(".", s.table[ino]?.attributes()), ("..", s.table[parentIno]?.attributes())]
            let all = dots.compactMap { name, attributes in attributes.map { (name, $0) } } + entries + (controlEntry.map { [$0] } ?? [])
            return all.enumerated().map { index, item in
                DirectoryEntry(name: item.0, attributes: item.1, nextOffset: UInt64(index + 1))
            }
        }
    }

    private func acceptName(_ name: String, key: String) -> Bool {
        if KeyMapping.isValidName(name) { return true }
        let first = state.withLock { $0.reportedInvalidKeys.insert(key).inserted }
        if first { logger.warning("skipping key that is not a valid path", metadata: ["key": "\(key)"]) }
        return false
    }

    // MARK: - File content

    public struct OpenResult: Sendable {
        public var handle: UInt64
        /// The object has not changed since the last open: the kernel may keep its cached pages.
        public var keepCache: Bool
    }

    public func open(_ ino: UInt64, flags: Int32) throws(FSError) -> OpenResult {
        if let control, control.owns(ino) { return OpenResult(handle: try control.open(ino, flags: flags), keepCache: false) }    // control dir
        let writable = flags & O_ACCMODE != O_RDONLY
        if writable { try requireWritable() }
        var node = try existingNode(ino)
        guard node.kind == .file else { throw node.kind == .directory ? FSError.isDirectory : FSError.invalidArgument }
        if node.staged == nil && !node.path.isEmpty && !isFresh(node) {
            _ = try resolve(node.path, retain: false, force: true)    // close-to-open: see other hosts' writes
            node = try existingNode(ino)
        }
        if writable && flags & O_TRUNC != 0 {
            let staged = try stage(ino, keepContent: false)
            try staged.truncate(to: 0)
            let abandoned: StreamingUpload? = state.withLock { s in
                guard var node = s.table[ino] else { return nil }
                let old = node.stream
                node.size = 0
                node.dirty = true
                node.noteChange(from: 0)
                node.mtime = .now()
                node.stream = makeStream(for: node)
                s.table[ino] = node
                return old
            }
            abandoned?.abort()
        }
        return state.withLock { s in
            let handle = s.allocateHandle()
            let version = s.table[ino]?.version
            let content = s.table[ino]?.staged == nil ? s.smallContents.take(ino, version: version) : nil
            s.files[handle] = OpenFile(ino: ino, content: content)
            s.table[ino]?.openHandles += 1
            let keep = version != nil && version == s.table[ino]?.lastOpenedVersion
            s.table[ino]?.lastOpenedVersion = version
            return OpenResult(handle: handle, keepCache: keep)
        }
    }

    public func read(_ ino: UInt64, handle: UInt64, offset: UInt64, size: Int) throws(FSError) -> Data {
        if let control, control.owns(ino) { return try control.read(handle: handle, offset: offset, size: size) }    // control dir
        let node = try existingNode(ino)
        if let staged = node.staged {
            try staged.prepare { fd throws(FSError) in try download(path: node.path, into: fd, ino: ino) }
            return try staged.read(at: offset, count: size)
        }
        guard offset < node.size, size > 0 else { return Data() }
        if let content = state.withLock({ $0.files[handle]?.content }), UInt64(content.count) == node.size {
            let end = min(content.count, Int(offset) + size)
            return content.subdata(in: Int(offset)..<end)
        }
        if let data = try readStreaming(node, handle: handle, offset: offset, size: size) { return data }
        let prefetcher = state.withLock { s -> ReadPrefetcher? in
            guard var file = s.files[handle] else { return nil }
            if file.prefetcher == nil {
                file.prefetcher = ReadPrefetcher(store: store, key: keys.key(for: node.path), size: node.size,
                                                 settings: ReadPrefetcher.Settings(), budget: prefetchBudget,
                                                 workers: workers)
                s.files[handle] = file
            }
            return file.prefetcher
        }
        guard let prefetcher else { throw FSError.badHandle }
        return try storeCall { try prefetcher.read(offset: offset, count: size) }
    }

    /// Serves a read from the handle's streaming GET, starting one for a first read at byte 0 of a large file;
    /// nil when there is no stream (any more): a seek ends it and ranged read-ahead takes over.
    private func readStreaming(_ node: Node, handle: UInt64, offset: UInt64, size: Int) throws(FSError) -> Data? {
        let (existing, start) = state.withLock { s -> (SequentialStream?, Bool) in
            guard var file = s.files[handle] else { return (nil, false) }
            if file.stream == nil && !file.streamTried && file.prefetcher == nil && offset == 0
                && node.size >= Self.streamThreshold && store.prefersStreamingReads {
                file.streamTried = true
                s.files[handle] = file
                return (nil, true)
            }
            return (file.stream, false)
        }
        var stream = existing
        if start, let started = SequentialStream.start(store: store, key: keys.key(for: node.path), version: node.version,
                                                       from: 0, size: node.size, budget: prefetchBudget) {
            let kept = state.withLock { s -> Bool in
                guard s.files[handle] != nil else { return false }
                s.files[handle]?.stream = started
                return true
            }
            if !kept { started.close() }
            stream = kept ? started : nil
        }
        guard let stream else { return nil }
        if let data = try storeCall({ try stream.read(offset: offset, count: size) }) { return data }
        state.withLock { s in
            if s.files[handle]?.stream === stream { s.files[handle]?.stream = nil }
        }
        stream.close()
        return nil
    }

    public func write(_ ino: UInt64, handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer) throws(FSError) -> Int {
        if options.stagingLimit > 0 {
            let end = offset + UInt64(data.count)
            let over = state.withLock { s in
                s.table.stagedBytes + (end - min(end, s.table[ino]?.size ?? 0)) > options.stagingLimit
            }
            if over { throw FSError.noSpace }    // the staging area is full: ENOSPC, nothing half-written
        }
        let staged = try stage(ino, keepContent: true)
        let stream = state.withLock { $0.table[ino]?.stream }
        if let stream, try stream.write(data, at: offset, into: staged) {
            // Sequential so far: the stream took the write.
        } else {
            if let stream { dropStream(stream, of: ino) }
            try staged.write(data, at: offset)
        }
        let end = offset + UInt64(data.count)
        let size = state.withLock { s -> UInt64 in
            guard var node = s.table[ino] else { return end }
            node.size = max(node.size, end)
            node.noteChange(from: offset)
            node.mtime = .now()
            // An unlinked or replaced file keeps its bytes for its open descriptors only: nothing to upload.
            if !node.unlinked && !node.path.isEmpty { node.dirty = true }
            s.table[ino] = node
            return node.size
        }
        if let stream, state.withLock({ $0.table[ino]?.stream }) === stream {
            stream.advance(staged: staged, contiguousEnd: size)
        }
        return data.count
    }

    /// Every close of a descriptor: upload pending writes so the next open, on any host, sees them.
    ///
    /// One exception: a new file that is still empty is not uploaded by a flush. Shells, `touch` and `dd` open a
    /// file and close a duplicate of the descriptor before writing; uploading then would cost a second PUT for
    /// every file they create. Such a file is uploaded by the flush that follows its first write, or at release.
    public func flush(_ ino: UInt64, handle: UInt64) throws(FSError) {
        let emptyAndNew = state.withLock { s in
            s.table[ino].map { !$0.inStore && $0.size == 0 && !$0.mtimeExplicit } ?? false
        }
        if emptyAndNew { return }
        try upload(ino)
    }

    public func fsync(_ ino: UInt64, handle: UInt64) throws(FSError) {
        try upload(ino)
    }

    public func release(_ ino: UInt64, handle: UInt64) {
        if let control, control.owns(ino) { return control.release(handle: handle) }    // control dir
        let (file, stillDirty) = state.withLock { s -> (OpenFile?, Bool) in
            guard let file = s.files.removeValue(forKey: handle) else { return (nil, false) }
            guard var node = s.table[ino] else { return (file, false) }
            node.openHandles -= 1
            s.table[ino] = node
            return (file, node.openHandles == 0 && node.dirty)
        }
        file?.prefetcher?.close()
        file?.stream?.close()
        if stillDirty {
            // Writes that no flush carried (e.g. through mmap): upload now; a failure is kept for recovery.
            do { try upload(ino) } catch {
                // Nobody is left to report it to: the content is in the recovery folder (logged there).
                logger.error("upload at release failed", metadata: ["error": "\(error)"])
                state.withLock { s in
                    if s.table[ino]?.preserveStaged == false { s.table[ino]?.dirty = false }
                }
            }
        }
        dropStagedIfIdle(ino)
    }

    /// Keeps a staged file of an upload that a crash interrupted in the recovery folder (see `UploadJournal`).
    /// Returns where the content went, or nil if it could not be saved.
    public func keepForRecovery(stagedPath: String, key: String, reason: String) -> String? {
        recovery.save(stagedPath: stagedPath, key: key, reason: reason)
    }

    /// Uploads every file with pending writes; used when the mount shuts down.
    public func flushAll() {
        let dirty = state.withLock { s in s.table.nodes.values.filter { $0.dirty && !$0.unlinked }.map(\.ino) }
        for ino in dirty {
            do { try upload(ino) } catch { logger.error("upload at unmount failed", metadata: ["error": "\(error)"]) }
        }
    }

    // MARK: - Upload and staging

    /// Uploads the staged content if it changed: conditional on absence for a new file, on the version seen
    /// otherwise. On failure the content goes to the recovery folder and the error is returned (to close/fsync).
    func upload(_ ino: UInt64) throws(FSError) {
        guard let staged = state.withLock({ $0.table[ino]?.staged }) else { return }
        try staged.uploading.withLock { _ throws(FSError) in try uploadSerialised(ino) }
    }

    /// `upload`, with the file's upload lock held.
    private func uploadSerialised(_ ino: UInt64) throws(FSError) {
        let job: (staged: StagedFile, node: Node, options: PutOptions)? = state.withLock { s in
            guard var node = s.table[ino], node.dirty, !node.unlinked, let staged = node.staged,
                  !node.path.isEmpty else { return nil }
            var job = node
            node.dirty = false
            node.changedFrom = nil
            if node.stream?.hasStarted == true {
                node.stream = nil    // completed by this upload; later writes go to a plain PUT
            } else {
                job.stream = nil     // not started: a PUT now, and the stream stays for the writes to come
            }
            node.mtimeExplicit = false
            s.table[ino] = node
            let condition: PutCondition = node.inStore ? node.version.map { .ifVersionMatches($0) } ?? .none : .ifAbsent
            return (staged, job, PutOptions(contentType: node.contentType, metadata: node.objectMetadata(),
                                            condition: condition))
        }
        guard let job else { return }
        let key = keys.key(for: job.node.path)
        if let stream = job.node.stream {
            if stream.key == key {
                do throws(ObjectStoreError) {
                    if let info = try completeStream(stream, job: job) { return recordUpload(ino, info) }
                } catch {
                    logger.warning("streamed upload failed; uploading the staged file instead",
                                   metadata: ["key": "\(key)", "error": "\(error)"])
                }
            }
            stream.abort()
        }
        if let info = uploadReusingStoredParts(job, key: key) { return recordUpload(ino, info) }
        let info: ObjectInfo
        do {
            info = try store.put(key, body: .file(path: job.staged.path), options: job.options)
        } catch {
            state.withLock { $0.table[ino]?.noteChange(from: 0) }    // next time: upload it all
            let saved = recovery.save(stagedPath: job.staged.path, key: key, reason: error.description)
            if saved == nil { state.withLock { $0.table[ino]?.preserveStaged = true } }
            switch (error, job.options.condition) {
            case (.preconditionFailed, _), (.notFound, .ifVersionMatches):
                // A conflict stays one: retrying would fail the same way. The user decides (recover push).
                throw FSError.stale("\(key) was changed or deleted by another writer")
            default:
                // The store may come back: the next flush, fsync or release tries again.
                state.withLock { s in s.table[ino]?.dirty = true }
            }
            throw FSError.io("upload of \(key) failed: \(error)")
        }
        recordUpload(ino, info)
    }

    private func recordUpload(_ ino: UInt64, _ info: ObjectInfo) {
        state.withLock { s in
            guard var node = s.table[ino] else { return }
            node.inStore = true
            node.version = info.version
            node.storedSize = info.size
            node.validatedAt = .now
            s.table[ino] = node
        }
    }

    /// Finishes a streamed multipart upload. Metadata set since the stream began (chmod, an explicit mtime)
    /// follows with a metadata-only copy. Returns nil when the file never filled a part (plain PUT instead).
    private func completeStream(_ stream: StreamingUpload, job: (staged: StagedFile, node: Node, options: PutOptions)) throws(ObjectStoreError) -> ObjectInfo? {
        guard var info = try stream.finish(stagedFD: job.staged.fd, size: job.node.size, condition: job.options.condition)
        else { return nil }
        var sent = stream.metadata
        sent["mtime"] = job.options.metadata["mtime"]
        for (key, value) in job.node.foreignMetadata where sent[key] == nil { sent[key] = value }
        if job.node.mtimeExplicit || sent != job.options.metadata {
            // The content is safely in the store now: a failure here costs only the metadata, so log it
            // rather than letting the caller upload the content again.
            do throws(ObjectStoreError) {
                info = try store.copy(from: info.key, to: info.key, metadata: job.options.metadata,
                                      condition: .ifVersionMatches(info.version))
            } catch {
                logger.error("could not store metadata after upload", metadata: ["key": "\(info.key)", "error": "\(error)"])
            }
        }
        return info
    }

    /// A stream for a new or truncated file, when the mount streams uploads.
    private func makeStream(for node: Node) -> StreamingUpload? {
        guard let partSize = options.multipartPartSize else { return nil }
        var metadata = node.posixMetadata().objectMetadata
        metadata["mtime"] = nil
        return StreamingUpload(store: store, key: keys.key(for: node.path), metadata: metadata, partSize: partSize,
                               maxInFlight: options.multipartMaxInFlight, workers: workers, journal: uploadJournal)
    }

    /// The file stopped being a sequential write: abandon its stream; the close uploads the staged file.
    private func dropStream(_ stream: StreamingUpload, of ino: UInt64) {
        state.withLock { s in
            if s.table[ino]?.stream === stream { s.table[ino]?.stream = nil }
        }
        stream.abort()
    }

    /// The node's staged file, created on first use; with `keepContent` the object's content is copied in.
    private func stage(_ ino: UInt64, keepContent: Bool) throws(FSError) -> StagedFile {
        let node = try existingNode(ino)
        guard node.kind == .file else { throw FSError.isDirectory }
        if let staged = node.staged {
            if keepContent {
                try staged.prepare { fd throws(FSError) in try download(path: node.path, into: fd, ino: ino) }
            } else {
                staged.markLoaded()
            }
            return staged
        }
        let needsContent = keepContent && node.inStore && node.size > 0
        if needsContent && options.stagingLimit > 0 {
            let over = state.withLock { $0.table.stagedBytes + node.size > options.stagingLimit }
            if over { throw FSError.noSpace }
        }
        let fresh = try StagedFile(directory: stagingDirectory, loaded: !needsContent)
        let staged = state.withLock { s -> StagedFile in
            if let existing = s.table[ino]?.staged { return existing }
            s.table[ino]?.staged = fresh
            return fresh
        }
        if staged !== fresh { fresh.discard() }
        do {
            try staged.prepare { fd throws(FSError) in try download(path: node.path, into: fd, ino: ino) }
        } catch {
            // Leave no half-filled copy behind: a later O_TRUNC or write starts from a clean slate.
            let dropped = state.withLock { s -> Bool in
                guard let node = s.table[ino], node.staged === staged, !node.dirty else { return false }
                s.table[ino]?.staged = nil
                return true
            }
            if dropped { staged.discard() }
            throw error
        }
        return staged
    }

    /// Copies the object into `fd` in bounded ranges. Later uploads are conditional on the version downloaded.
    private func download(path: String, into fd: Int32, ino: UInt64) throws(FSError) {
        let key = keys.key(for: path)
        // The version seen at open: the content written on top of must be that one.
        var version = state.withLock { $0.table[ino]?.version }
        var offset: UInt64 = 0
        while true {
            let chunk = try storeCall { try store.get(key, range: offset..<(offset + Self.downloadChunk)) }
            if let version, version != chunk.info.version { throw FSError.stale("\(key) was changed by another writer") }
            if version == nil || offset == 0 { keepForeignAttributes(of: chunk.info, ino: ino) }
            version = chunk.info.version
            let written = chunk.body.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard written == chunk.body.count else { throw FSError.io("staging write failed for \(key)") }
            offset += UInt64(chunk.body.count)
            if offset >= chunk.info.size || chunk.body.isEmpty { break }
        }
        state.withLock { s in
            if let version { s.table[ino]?.version = version }
        }
    }

    /// Content type and metadata of other tools, seen when the object is read for writing, go back with the upload.
    private func keepForeignAttributes(of info: ObjectInfo, ino: UInt64) {
        guard let metadata = info.metadata else { return }
        state.withLock { s in
            s.table[ino]?.contentType = info.contentType
            s.table[ino]?.foreignMetadata = PosixMetadata.foreign(metadata)
        }
    }

    private func dropStagedIfIdle(_ ino: UInt64) {
        let staged: StagedFile? = state.withLock { s in
            guard var node = s.table[ino], node.openHandles == 0, let staged = node.staged,
                  !node.dirty || node.unlinked || node.path.isEmpty else { return nil }
            node.dirty = false
            node.staged = nil
            let preserve = node.preserveStaged
            s.table[ino] = node
            s.table.evictIfUnused(ino)
            return preserve ? nil : staged
        }
        staged?.discard()
    }

    /// Writes changed mode/owner/mtime to the store without touching the content.
    private func storeMetadata(of node: Node) throws(FSError) {
        let metadata = node.objectMetadata()
        let info: ObjectInfo
        if node.kind == .directory {
            let marker = keys.directoryPrefix(for: node.path)
            info = try storeCall { try store.put(marker, body: .data(Data()), options: PutOptions(metadata: metadata)) }
        } else if node.inStore {
            let key = keys.key(for: node.path)
            let condition: PutCondition = node.version.map { .ifVersionMatches($0) } ?? .none
            info = try storeCall { try store.copy(from: key, to: key, metadata: metadata, condition: condition) }
        } else {
            return
        }
        state.withLock { s in
            s.table[node.ino]?.version = info.version
            s.table[node.ino]?.inStore = true
            s.table[node.ino]?.validatedAt = .now
        }
    }

    // MARK: - Resolving paths against the store

    enum Observation {
        case object(ObjectInfo)
        case implicitDirectory
        case directory(marker: ObjectInfo)
    }

    /// The attributes of `path`: from the table while fresh, else from the store (a LIST for a directory,
    /// then a HEAD). `retain` counts a kernel lookup on the node.
    func resolve(_ path: String, retain: Bool, force: Bool = false) throws(FSError) -> FileAttributes {
        // The cached answer, or whether the store must be asked about what was known to be an object.
        let (cached, knownObject, knownSmall): (FileAttributes?, Bool, Bool) = try state.withLock { s throws(FSError) in
            let node = s.table.node(at: path)
            if let node, path.isEmpty || node.staged != nil || (!force && isFresh(node)) {
                if retain { s.table[node.ino]?.lookups += 1 }
                return (node.attributes(), false, false)
            }
            if !force, let until = s.negative[path] {
                if ContinuousClock.now < until { throw FSError.notFound }
                s.negative.removeValue(forKey: path)
            }
            if !force && node == nil && s.listedAbsent(path, now: .now) { throw FSError.notFound }
            if let node {
                return (nil, node.kind != .directory && node.inStore,
                        node.kind == .file && node.inStore && node.size <= Self.smallObjectLimit)
            }
            let hint = s.fileHints[path]
            return (nil, hint != nil, hint.map { $0 <= Self.smallObjectLimit } ?? false)
        }
        if let cached { return cached }
        var content: Data?
        guard let observation = try observe(path, knownObject: knownObject, fetchSmall: knownSmall, content: &content)
        else {
            state.withLock { s in
                s.table.detach(path: path)
                s.negative[path] = .now + .seconds(options.negativeTTL)
            }
            throw FSError.notFound
        }
        return state.withLock { s in
            let attributes = upsert(path, observation, in: &s)
            if retain { s.table[attributes.ino]?.lookups += 1 }
            s.noteExists(path)
            if let content, case .object(let info) = observation, s.table[attributes.ino]?.version == info.version {
                s.smallContents.put(attributes.ino, version: info.version, data: content)
            }
            return attributes
        }
    }

    /// Asks the store what `path` is. A directory (any key under `path/`) shadows an object named `path`.
    /// `fetchSmall`: it was a small file; revalidate with a GET of its first `smallObjectLimit` bytes, and if
    /// that is all of it, hand the bytes back in `content`.
    private func observe(_ path: String, knownObject: Bool = false, fetchSmall: Bool = false,
                         content: inout Data?) throws(FSError) -> Observation? {
        let key = keys.key(for: path)
        let marker = key + "/"
        if knownObject {
            // Revalidating what was a file: one HEAD, or one GET. (A directory appearing under the same name is
            // seen once the object goes, or by a listing.)
            do throws(ObjectStoreError) {
                guard fetchSmall else { return .object(try store.head(key)) }
                let data = try store.get(key, range: 0..<Self.smallObjectLimit)
                if UInt64(data.body.count) == data.info.size { content = data.body }
                return .object(data.info)
            } catch .notFound, .invalidKey {
                // gone, or now a directory: ask the full question below
            } catch {
                throw FSError(error)
            }
        }
        let page: ListPage
        do throws(ObjectStoreError) {
            page = try store.list(ListRequest(prefix: marker, delimiter: "/", maxKeys: 1))
        } catch .invalidKey {
            return nil    // a name this backend cannot hold (e.g. its own state folder) does not exist
        } catch {
            throw FSError(error)
        }
        if let first = page.objects.first, first.key == marker {
            let info = first.metadata != nil ? first : try storeCall { try store.head(marker) }
            return .directory(marker: info)
        }
        if !page.objects.isEmpty || !page.commonPrefixes.isEmpty { return .implicitDirectory }
        do throws(ObjectStoreError) {
            return .object(try store.head(key))
        } catch .notFound, .invalidKey {
            return nil
        } catch {
            throw FSError(error)
        }
    }

    /// Records what the store said about `path` and returns the node's attributes. Keeps the inode number when
    /// the kind is unchanged; local content being written wins over the store's idea of size and mtime.
    private func upsert(_ path: String, _ observation: Observation, in s: inout State) -> FileAttributes {
        let kind: NodeKind
        switch observation {
        case .implicitDirectory, .directory: kind = .directory
        case .object(let info):
            if let metadata = info.metadata {
                kind = metadata["symlink"] != nil ? .symlink : .file
            } else if let known = s.table.node(at: path), known.kind != .directory, known.version == info.version {
                kind = known.kind    // a LIST entry cannot tell a symlink from a file; a HEAD did
            } else {
                kind = .file
            }
        }
        s.negative.removeValue(forKey: path)
        if let existing = s.table.node(at: path), existing.kind == kind {
            if existing.staged != nil { return existing.attributes() }
            let updated = apply(observation: observation, to: existing)
            s.table[existing.ino] = updated
            return updated.attributes()
        }
        let now = FileTime.now()
        let blank = Node(ino: s.table.allocateIno(), path: path, kind: kind, size: 0,
                         permissions: kind == .directory ? options.directoryPermissions : options.filePermissions,
                         uid: options.uid, gid: options.gid, mtime: mountTime, ctime: now, version: nil,
                         inStore: false, metadataKnown: false, validatedAt: .now)
        let node = apply(observation: observation, to: blank)
        s.table.insert(node)
        return node.attributes()
    }

    func apply(observation: Observation, to node: Node) -> Node {
        var node = node
        node.validatedAt = .now
        let info: ObjectInfo
        switch observation {
        case .implicitDirectory:
            node.inStore = false
            return node
        case .directory(let marker): info = marker
        case .object(let object): info = object
        }
        let sameVersion = node.version == info.version
        node.inStore = true
        node.version = info.version
        node.storedSize = info.size
        if node.kind != .directory { node.size = info.size }
        if let metadata = info.metadata {
            let posix = PosixMetadata(metadata)
            node.permissions = posix.mode.map { $0 & 0o7777 }
                ?? (node.kind == .directory ? options.directoryPermissions : options.filePermissions)
            node.uid = posix.uid ?? options.uid
            node.gid = posix.gid ?? options.gid
            node.mtime = posix.mtime ?? FileTime(info.lastModified)
            node.symlinkTarget = posix.symlinkTarget
            node.metadataKnown = true
            node.foreignMetadata = PosixMetadata.foreign(metadata)
            node.contentType = info.contentType ?? node.contentType
        } else if !(sameVersion && node.metadataKnown) {
            // A LIST entry: no metadata. Keep what a HEAD told us for this same version, else the defaults.
            node.mtime = FileTime(info.lastModified)
            node.metadataKnown = false
        }
        node.ctime = node.mtime
        return node
    }

    // MARK: - Helpers

    private func isFresh(_ node: Node) -> Bool {
        ContinuousClock.now < node.validatedAt + .seconds(options.metadataTTL)
    }

    private func existingNode(_ ino: UInt64) throws(FSError) -> Node {
        guard let node = state.withLock({ $0.table[ino] }) else { throw FSError.notFound }
        return node
    }

    private func childPath(parent: UInt64, name: String) throws(FSError) -> String {
        guard name.utf8.count <= 255 else { throw FSError.nameTooLong }
        guard KeyMapping.isValidName(name) else { throw FSError.invalidArgument }
        if control?.refusesChange(parent: parent, name: name) == true { throw FSError.readOnly }    // control dir
        let node = try existingNode(parent)
        guard node.kind == .directory else { throw FSError.notDirectory }
        guard parent == InodeTable.rootIno || !node.path.isEmpty else { throw FSError.notFound }
        return KeyMapping.join(node.path, name)
    }

    private func requireWritable() throws(FSError) {
        if options.readOnly { throw FSError.readOnly }
    }

    private func requireAbsent(_ path: String) throws(FSError) {
        do throws(FSError) {
            _ = try resolve(path, retain: false)
            throw FSError.exists
        } catch .notFound {
            return
        }
    }

    private func insertNew(_ node: Node, retain: Bool) -> FileAttributes {
        state.withLock { s in
            var node = node
            node.ino = s.table.allocateIno()
            node.lookups = retain ? 1 : 0
            s.table.insert(node)
            s.negative.removeValue(forKey: node.path)
            s.noteExists(node.path)
            if node.kind == .directory { s.listed[node.path] = ([], .now + .seconds(options.negativeTTL)) }
            return node.attributes()
        }
    }

    /// Files whose content has not reached the store yet: written and not uploaded, a streamed multipart upload
    /// under way, or an upload running now (its lock is held). For `bucketfs status`; a snapshot, not a promise.
    public var pendingUploadCount: Int {
        let (pending, others) = state.withLock { s -> (Int, [StagedFile]) in
            var pending = 0
            var others: [StagedFile] = []
            for node in s.table.nodes.values where !node.unlinked {
                if node.dirty || node.stream?.hasStarted == true { pending += 1 } else if let staged = node.staged {
                    others.append(staged)
                }
            }
            return (pending, others)
        }
        // Outside `state` (lock order: uploading before state); a held upload lock is an upload in progress.
        return pending + others.filter { $0.uploading.withLockIfAvailable { _ in true } == nil }.count
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
