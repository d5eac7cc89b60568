import Foundation
import ObjectStore

/// Names and the metadata cache: what a path is, from the inode table while fresh, else from the store.
extension FileSystem {
    public func lookup(parent: UInt64, name: String) throws(FSError) -> FileAttributes {
        if name == DirectoryMarkers.sidecarName { throw FSError.notFound }  // a directory's metadata, never listed
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
        let (attributes, path): (FileAttributes?, String) = try state.withLock { s throws(FSError) in
            guard let node = s.table[ino] else { throw FSError.notFound }
            let trusted =
                ino == InodeTable.rootIno || node.path.isEmpty || node.staged != nil || node.dirty
                || (isFresh(node) && isComplete(node))
            return (trusted ? node.attributes() : nil, node.path)
        }
        if let attributes { return attributes }
        if let fetched = fetchIncompleteSiblings(of: path, retain: false) { return fetched }  // ls -l: +Directories
        return try resolve(path, retain: false, force: true)
    }

    /// Whether the node's attributes are all known: an object's metadata was seen (a LIST entry on S3 carries
    /// none). Directories and local-only files are.
    func isComplete(_ node: Node) -> Bool {
        node.metadataKnown || node.kind == .directory || !node.inStore
    }

    public func readlink(_ ino: UInt64) throws(FSError) -> String {
        let node = try existingNode(ino)
        guard node.kind == .symlink else { throw FSError.invalidArgument }
        if let target = node.symlinkTarget { return target }
        // Too long for metadata (or written by s3fs): the target is the object's body, read once per version.
        guard node.inStore, !node.path.isEmpty else { throw FSError.io("symlink \(node.path) has no target") }
        let data = try storeCall { try store.get(keys.key(for: node.path), range: 0..<UInt64(PATH_MAX)) }
        guard !data.body.isEmpty, let target = String(data: data.body, encoding: .utf8) else {
            throw FSError.io("symlink \(node.path): its body is not a target")
        }
        state.withLock { s in
            if s.table[ino]?.version == data.info.version { s.table[ino]?.symlinkTarget = target }
        }
        return target
    }

    public func statfs() -> FileSystemStats {
        // Buckets have no fixed size: report a large, constant capacity so that tools checking free space proceed.
        FileSystemStats(
            blockSize: 4096, totalBlocks: 1 << 40, freeBlocks: 1 << 40, totalFiles: 1 << 32,
            freeFiles: 1 << 32, maxNameLength: 255)
    }

    // MARK: - Resolving paths against the store

    enum TailAnswer {
        case known(FileAttributes)
        case absent
        case ask
    }

    enum Observation {
        case object(ObjectInfo)
        case implicitDirectory
        case directory(marker: ObjectInfo)
    }

    /// The attributes of `path`: from the table while fresh, else from the store (a LIST for a directory,
    /// then a HEAD). `retain` counts a kernel lookup on the node.
    func resolve(_ path: String, retain: Bool, force: Bool = false) throws(FSError) -> FileAttributes {
        // The cached answer, or whether the store must be asked about what was known to be an object.
        typealias Known = (
            cached: FileAttributes?, object: Bool, small: Bool, marker: Bool, tail: (after: String, keys: Int)?,
            changes: UInt64
        )
        let parent = KeyMapping.parent(of: path)
        let known: Known = try state.withLock { s throws(FSError) -> Known in
            let node = s.table.node(at: path)
            if let node,
                path.isEmpty || node.staged != nil || node.dirty || (!force && isFresh(node) && isComplete(node))
            {
                if retain { s.table[node.ino]?.lookups += 1 }
                return (node.attributes(), false, false, false, nil, 0)
            }
            if !force, let until = s.negative[path] {
                if ContinuousClock.now < until { throw FSError.notFound }
                s.negative.removeValue(forKey: path)
            }
            if !force && node == nil && s.listedAbsent(path, now: .now) { throw FSError.notFound }
            // The store is asked: a name this mount changes meanwhile is newer in the table than the reply.
            s.listingStarted(of: parent)
            if let node {
                let object = node.kind != .directory && node.inStore
                return (
                    nil, object,
                    node.kind == .file && node.inStore && node.size > 0 && node.size <= Self.smallObjectLimit,
                    node.kind == .directory && node.inStore && node.version != nil,
                    object ? removalStart(forStale: path, in: s) : nil, s.namespaceChanges
                )
            }
            let hint = s.fileHints[path]
            let tail = hint == nil && !force ? tailStart(forMissing: path, in: &s) : nil
            return (
                nil, hint != nil, hint.map { $0 > 0 && $0 <= Self.smallObjectLimit } ?? false, false,
                tail.map { ($0, Self.tailListingKeys) }, s.namespaceChanges
            )
        }
        if let cached = known.cached { return cached }
        defer { state.withLock { $0.listingEnded(of: parent) } }
        /// Made, removed or renamed here while the question was on the way (a `stat` takes no directory lock, so
        /// an unlink or a create can run beside it): the table's answer, not the reply's, which would bring back a
        /// name removed, or detach a new file's node (never to be uploaded).
        func answeredLocally(_ s: inout State) -> FileAttributes?? {
            guard s.changedNames(in: parent, since: known.changes).contains(ExactPath(KeyMapping.name(of: path)))
            else { return nil }
            guard let node = s.table.node(at: path) else { return .some(nil) }
            if retain { s.table[node.ino]?.lookups += 1 }
            return node.attributes()
        }
        if let tail = known.tail {
            // FileSystem+Tails: one LIST of the directory's end answers for this name and those after it.
            try listTail(of: KeyMapping.parent(of: path), after: tail.after, maxKeys: tail.keys)
            let answer = state.withLock { s -> TailAnswer in
                if let node = s.table.node(at: path) {
                    guard isFresh(node) && isComplete(node) else { return .ask }
                    if retain { s.table[node.ino]?.lookups += 1 }
                    return .known(node.attributes())
                }
                return s.listedAbsent(path, now: .now) ? .absent : .ask
            }
            switch answer {
            case .known(let attributes): return attributes
            case .absent: throw FSError.notFound
            case .ask: break
            }
        }
        if known.object, let fetched = fetchIncompleteSiblings(of: path, retain: retain) { return fetched }  // ls -l
        var content: Data?
        guard
            let observation = try observe(
                path, knownObject: known.object, fetchSmall: known.small,
                knownMarker: known.marker, content: &content)
        else {
            let local = state.withLock { s -> FileAttributes?? in
                if let local = answeredLocally(&s) { return local }
                if s.table.node(at: path) != nil { s.namesChanged(in: KeyMapping.parent(of: path)) }
                s.table.detach(path: path)
                s.negative[path] = .now + .seconds(options.negativeTTL)
                return nil
            }
            if let local, let attributes = local { return attributes }
            throw FSError.notFound
        }
        return try state.withLock { s throws(FSError) in
            if let local = answeredLocally(&s) {
                guard let attributes = local else { throw FSError.notFound }
                return attributes
            }
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
    /// that is all of it, hand the bytes back in `content`. `knownMarker`: it was a directory with a marker;
    /// revalidate with one HEAD of the marker.
    func observe(
        _ path: String, knownObject: Bool = false, fetchSmall: Bool = false, knownMarker: Bool = false,
        content: inout Data?
    ) throws(FSError) -> Observation? {
        let key = keys.key(for: path)
        let marker = key + "/"
        if knownObject {
            // Revalidating what was a file: one HEAD, or one GET. (A directory appearing under the same name is
            // seen once the object goes, or by a listing.)
            do throws(ObjectStoreError) {
                guard fetchSmall else { return .object(learnt(try store.head(key))) }
                let data = try store.get(key, range: 0..<Self.smallObjectLimit)
                if UInt64(data.body.count) == data.info.size { content = data.body }
                return .object(learnt(data.info))
            } catch .notFound, .invalidKey {
                // gone, or now a directory: ask the full question below
            } catch {
                throw FSError(error)
            }
        }
        if knownMarker && !options.directoryMetadataInSidecar {
            // Revalidating a directory: its marker still there is all it takes (one request, with the metadata);
            // only a marker gone needs the LIST below (an implicit directory now, or nothing).
            do throws(ObjectStoreError) {
                return .directory(marker: learnt(try store.head(marker)))
            } catch .notFound, .invalidKey {
            } catch {
                throw FSError(error)
            }
        }
        if let answer = try observeWithOneListing(path, content: &content) { return answer }  // +Directories
        let page: ListPage
        do throws(ObjectStoreError) {
            page = try store.list(ListRequest(prefix: marker, delimiter: "/", maxKeys: 1))
        } catch .invalidKey {
            return nil  // a name this backend cannot hold (e.g. its own state folder) does not exist
        } catch {
            throw FSError(error)
        }
        if options.directoryMetadataInSidecar, !page.objects.isEmpty || !page.commonPrefixes.isEmpty {
            // A marker may not even be listed there (SeaweedFS): the sidecar says what the directory is.
            do throws(ObjectStoreError) {
                return .directory(marker: learnt(try store.head(DirectoryMarkers.sidecarKey(forMarker: marker))))
            } catch .notFound {
                return .implicitDirectory
            } catch {
                throw FSError(error)
            }
        }
        if let first = page.objects.first, first.key == marker {
            let info = first.metadata != nil ? first : try storeCall { try store.head(marker) }
            return .directory(marker: learnt(info))
        }
        if !page.objects.isEmpty || !page.commonPrefixes.isEmpty { return .implicitDirectory }
        do throws(ObjectStoreError) {
            return .object(learnt(try store.head(key)))
        } catch .notFound, .invalidKey {
            return nil
        } catch {
            throw FSError(error)
        }
    }

    /// `info`, after the metadata index learnt its metadata.
    func learnt(_ info: ObjectInfo) -> ObjectInfo {
        metadataIndex.learn(info)
        return info
    }

    /// Records what the store said about `path` and returns the node's attributes. Keeps the inode number when
    /// the kind is unchanged; local content being written wins over the store's idea of size and mtime.
    func upsert(_ path: String, _ observation: Observation, in s: inout State) -> FileAttributes {
        let kind: NodeKind
        switch observation {
        case .implicitDirectory, .directory: kind = .directory
        case .object(let info):
            if let metadata = info.metadata ?? metadataIndex.metadata(for: info) {
                let named = PosixMetadata(metadata).kind ?? .file
                kind = named == .directory ? .file : named  // an object is never a directory: its marker is
            } else if let known = s.table.node(at: path), known.kind != .directory, known.version == info.version {
                kind = known.kind  // a LIST entry cannot tell a symlink from a file; a HEAD did
            } else {
                kind = .file
            }
        }
        s.negative.removeValue(forKey: path)
        if let existing = s.table.node(at: path), existing.kind == kind {
            if existing.staged != nil || existing.dirty { return existing.attributes() }
            let updated = apply(observation: observation, to: existing)
            s.table[existing.ino] = updated
            return updated.attributes()
        }
        let now = FileTime.now()
        let blank = Node(
            ino: s.table.ino(reusedFor: path, kind: kind), path: path, kind: kind, size: 0,
            permissions: kind == .directory ? options.directoryPermissions : options.filePermissions,
            uid: options.uid, gid: options.gid, mtime: mountTime, ctime: now, version: nil,
            inStore: false, metadataKnown: false, validatedAt: .now)
        let node = apply(observation: observation, to: blank)
        s.table.insert(node)
        s.namesChanged(in: KeyMapping.parent(of: path))
        return node.attributes()
    }

    /// The node as the store describes it. The same version (and Last-Modified second) as the node already
    /// has keeps the node's own attributes: they are what this mount last wrote, plus what it changed since in
    /// memory (a directory's mtime when entries come and go). Metadata missing from a LIST entry comes from the
    /// metadata index when it knows this exact version, else the mount's defaults and Last-Modified apply.
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
        let modified = Int64(info.lastModified.timeIntervalSince1970.rounded(.down))
        let sameVersion = node.version == info.version && (node.storedModified ?? modified) == modified
        let ours =
            info.metadata != nil
            && node.writtenMetadata.map { PosixMetadata($0) == PosixMetadata(info.metadata!) } == true
        // Under the state lock: a page push of the old version in flight is outdated (PageCacheFiller).
        if let old = node.version, old != info.version { pageFiller?.versionTaken(node.ino) }
        node.inStore = true
        node.version = info.version
        node.storedModified = modified
        node.storedSize = info.size
        if node.kind != .directory { node.size = info.size }
        if (sameVersion || ours) && node.metadataKnown { return node }
        if let metadata = info.metadata ?? metadataIndex.metadata(for: info) {
            let posix = PosixMetadata(metadata)
            node.permissions =
                posix.mode.map { $0 & 0o7777 }
                ?? (node.kind == .directory ? options.directoryPermissions : options.filePermissions)
            node.uid = posix.uid ?? options.uid
            node.gid = posix.gid ?? options.gid
            node.mtime = posix.mtime ?? FileTime(info.lastModified)
            node.ctime = posix.ctime ?? node.mtime
            node.atime = posix.atime
            node.rdev = posix.rdev ?? 0
            node.symlinkTarget = posix.symlinkTarget
            node.metadataKnown = true
            node.foreignMetadata = PosixMetadata.foreign(metadata)
            node.contentType = info.contentType ?? node.contentType
        } else {
            // A LIST entry of a version never seen with its metadata: the defaults, and Last-Modified.
            node.mtime = FileTime(info.lastModified)
            node.ctime = node.mtime
            node.metadataKnown = false
        }
        return node
    }
}
