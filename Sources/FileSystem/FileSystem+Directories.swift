import Foundation
import ObjectStore

/// A directory's last listing: its entries' names and inodes in listing order, reused until `until`.
struct RecentListing {
    var path: String
    var parent: UInt64
    var children: [(name: String, ino: UInt64)]
    var until: ContinuousClock.Instant
}

/// Directory handles and listings: one LIST per 1,000 keys. Each entry's metadata comes from the LIST (GCS, the
/// local backend) or the metadata index (what this host wrote or saw of that exact version); zero-byte objects
/// that neither describes (symlink? FIFO?) and subdirectories' markers (their mode and mtime) are asked with
/// HEADs in parallel. Any other entry is shown with the defaults but not cached by the kernel
/// (`DirectoryEntry.complete`), so that a `stat` of it asks the store once (`getattr`).
extension FileSystem {

    public func openDirectory(_ ino: UInt64) throws(FSError) -> UInt64 {
        let node = try existingNode(ino)
        guard node.kind == .directory else { throw FSError.notDirectory }
        return state.withLock { $0.allocateHandle() }
    }

    /// Calls `add` for each entry from `offset` on until it returns false (the reply buffer is full).
    /// With `plus`, each entry that `add` accepts (other than `.` and `..`) counts as a kernel lookup.
    public func readDirectory(
        _ ino: UInt64, handle: UInt64, offset: UInt64, plus: Bool,
        add: (DirectoryEntry) -> Bool
    ) throws(FSError) {
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
            let now = ContinuousClock.now
            if s.recentListings.contains(where: { now >= $0.value.until }) {
                s.recentListings = s.recentListings.filter { now < $0.value.until }
            }
        }
    }

    private func unpin(_ listing: [DirectoryEntry], in s: inout State) {
        for entry in listing where entry.name != "." && entry.name != ".." {
            s.table[entry.attributes.ino]?.listingPins -= 1
            s.table.evictIfUnused(entry.attributes.ino)
        }
    }

    /// At most this many HEADs per listing; beyond, entries show the defaults (a huge foreign directory stays
    /// one LIST per 1,000 keys).
    static let listingHeadLimit = 1_000

    /// Times a listing is taken again because its directory was renamed while its LIST was on the way.
    static let listingAttemptsAcrossRenames = 3

    private func list(directory ino: UInt64, attempt: Int = 1) throws(FSError) -> [DirectoryEntry] {
        let node = try existingNode(ino)
        guard node.kind == .directory else { throw FSError.notDirectory }
        // Removed while open (a detached node has no path): it lists nothing, as the kernel's own check says.
        guard ino == InodeTable.rootIno || !node.path.isEmpty else { throw FSError.notFound }
        let (reused, changesBefore) = state.withLock { s in
            let reused = reuseListing(of: ino, at: node.path, in: &s)
            if reused == nil { s.listingStarted(of: node.path) }
            return (reused, s.namespaceChanges)
        }
        if let reused { return reused }
        defer { state.withLock { $0.listingEnded(of: node.path) } }
        let prefix = keys.directoryPrefix(for: node.path)
        let page = try storeCall { try store.listAll(prefix: prefix, delimiter: "/") }

        var directories: [String] = []
        var objects: [ExactPath: ObjectInfo] = [:]  // byte for byte: `caf\u{e9}` and `cafe\u{301}` are two
        var marker: ObjectInfo?
        for commonPrefix in page.commonPrefixes {
            guard let rest = KeyMapping.relative(commonPrefix, below: prefix) else { continue }
            let name = String(rest.dropLast())
            if acceptName(name, key: commonPrefix) { directories.append(name) }
        }
        for object in page.objects {
            guard let rest = KeyMapping.relative(object.key, below: prefix) else { continue }
            let name = String(rest)
            if name == DirectoryMarkers.sidecarName {
                if options.directoryMetadataInSidecar { marker = object }
                continue
            }
            if name.isEmpty {
                if !options.directoryMetadataInSidecar { marker = object }
                continue
            }
            if acceptName(name, key: object.key) {
                var object = object
                if object.metadata == nil { object.metadata = metadataIndex.metadata(for: object) }
                objects[ExactPath(name)] = object
            }
        }
        let directoryNames = Set(directories.map(ExactPath.init))
        let markers = headUnknownMetadata(in: node.path, objects: &objects, directories: directories)
        let listing = state.withLock { s -> [DirectoryEntry]? in
            // Renamed (or removed) meanwhile, itself or an ancestor: the reply names keys under the old path, and
            // its entries would become nodes there, under a path no directory holds any more. Listed again.
            guard s.table[ino]?.path == node.path else { return nil }
            let keepable = s.namespaceChanges == changesBefore  // (before this listing's own upserts count)
            if let marker { s.table[ino].map { s.table[ino] = apply(observation: .object(marker), to: $0) } }
            let parentIno = node.path.isEmpty ? ino : (s.table.ino(at: KeyMapping.parent(of: node.path)) ?? ino)
            var entries: [(String, FileAttributes)] = []
            // Made, removed or renamed by this mount while the reply was on the way: the reply is older than the table
            // there (it would bring back a name removed), so those names are listed as the table has them.
            let changed = s.changedNames(in: node.path, since: changesBefore)
            for name in directories where changed.isEmpty || !changed.contains(ExactPath(name)) {
                let observation: Observation =
                    markers[ExactPath(name)].map { .directory(marker: $0) } ?? .implicitDirectory
                entries.append((name, upsert(KeyMapping.join(node.path, name), observation, in: &s)))
            }
            // A directory shadows an object of the same name.
            if s.fileHints.count + objects.count > Self.fileHintLimit { s.fileHints = [:] }
            for (exact, object) in objects where !directoryNames.contains(exact) && !changed.contains(exact) {
                let name = exact.string
                s.fileHints[KeyMapping.join(node.path, name)] = object.size
                entries.append((name, upsert(KeyMapping.join(node.path, name), .object(object), in: &s)))
            }
            for pending in s.table.pendingChildren(of: node.path) {
                let name = ExactPath(KeyMapping.name(of: pending.path))
                if objects[name] == nil && !directoryNames.contains(name) && !changed.contains(name) {
                    entries.append((name.string, pending.attributes()))
                }
            }
            for name in changed {
                if let current = s.table.node(at: KeyMapping.join(node.path, name.string)) {
                    entries.append((name.string, current.attributes()))
                }
            }
            s.table[ino]?.subdirectories = Set(entries.filter { $0.1.kind == .directory }.map { ExactPath($0.0) })
            entries.sort { $0.0 < $1.0 }
            s.table.noteListingOrder(entries.map(\.0), of: node.path)
            s.listed[node.path] = (Set(entries.map { ExactPath($0.0) }), .now + .seconds(options.negativeTTL))
            let now = ContinuousClock.now
            s.recentListings = s.recentListings.filter { now < $0.value.until }
            if options.metadataTTL > 0 && keepable {
                s.recentListings[ino] = RecentListing(
                    path: node.path, parent: parentIno, children: entries.map { ($0.0, $0.1.ino) },
                    until: now + .seconds(options.metadataTTL))
            }
            return directoryEntries(ino, parent: parentIno, entries, in: &s)
        }
        if let listing { return listing }
        guard attempt < Self.listingAttemptsAcrossRenames else { throw FSError.notFound }
        return try list(directory: ino, attempt: attempt + 1)
    }

    /// The directory's last listing, if taken less than `metadata_ttl` ago and no entry came or went since, nor
    /// while it was taken (as far as this mount knows: `State.entriesChanged`, a lookup finding a new name or a name
    /// gone), with each entry's attributes as they are now. `rm -rf` reads a directory twice (is it empty? then all of it), and
    /// directory entries are trusted for `metadata_ttl` (docs/SEMANTICS.md): the second read costs no LIST.
    private func reuseListing(of ino: UInt64, at path: String, in s: inout State) -> [DirectoryEntry]? {
        guard let recent = s.recentListings[ino] else { return nil }
        guard recent.path == path, ContinuousClock.now < recent.until else {
            s.recentListings.removeValue(forKey: ino)
            return nil
        }
        var entries: [(String, FileAttributes)] = []
        entries.reserveCapacity(recent.children.count)
        for (name, child) in recent.children {
            guard let node = s.table[child], node.path == KeyMapping.join(path, name) else {
                s.recentListings.removeValue(forKey: ino)  // renamed, or forgotten: list again
                return nil
            }
            entries.append((name, node.attributes()))
        }
        return directoryEntries(ino, parent: recent.parent, entries, in: &s)
    }

    /// `.`, `..` and `entries` (each pinned while the handle keeps the listing) as readdir hands them out.
    private func directoryEntries(
        _ ino: UInt64, parent: UInt64, _ entries: [(String, FileAttributes)], in s: inout State
    ) -> [DirectoryEntry] {
        for (_, attributes) in entries { s.table[attributes.ino]?.listingPins += 1 }
        let dots = [(".", s.table[ino]?.attributes()), ("..", s.table[parent]?.attributes())]
        let named = dots.compactMap { name, attributes in attributes.map { (name, $0) } }
        let all = named + entries
        return all.enumerated().map { index, item in
            let known = s.table[item.1.ino].map(isComplete) ?? true
            return DirectoryEntry(name: item.0, attributes: item.1, nextOffset: UInt64(index + 1), complete: known)
        }
    }

    /// HEADs, in parallel, the zero-byte objects whose metadata neither the LIST nor the index gave (only that
    /// tells a symlink or a FIFO from an empty file), and the markers of subdirectories not known fresh (a
    /// directory's mode and mtime live in its marker). Returns the markers found, by name.
    private func headUnknownMetadata(
        in path: String, objects: inout [ExactPath: ObjectInfo],
        directories: [String]
    ) -> [ExactPath: ObjectInfo] {
        let directoryNames = Set(directories.map(ExactPath.init))
        let (unknownObjects, unknownDirectories) = state.withLock { s -> ([String], [String]) in
            let objectNames = objects.filter { name, object in
                guard object.metadata == nil, object.size == 0, !directoryNames.contains(name) else { return false }
                let known = s.table.node(at: KeyMapping.join(path, name.string))
                return !(known?.version == object.version && known?.metadataKnown == true)
            }.map(\.key.string).sorted()
            let directoryNames = directories.filter { name in
                guard let known = s.table.node(at: KeyMapping.join(path, name)), known.kind == .directory else {
                    return true
                }
                return !isFresh(known)
            }
            return (objectNames, directoryNames)
        }
        let keysToAsk =
            unknownObjects.map { (name: $0, key: keys.key(for: KeyMapping.join(path, $0)), directory: false) }
            + unknownDirectories.map {
                (name: $0, key: directoryMetadataKey(for: KeyMapping.join(path, $0)), directory: true)
            }
        guard !keysToAsk.isEmpty, keysToAsk.count <= Self.listingHeadLimit else { return [:] }
        let backend = store
        let answers = workers.map(keysToAsk.count, width: 16) { i -> ObjectInfo? in
            try? backend.head(keysToAsk[i].key)
        }
        var markers: [ExactPath: ObjectInfo] = [:]
        for (asked, answer) in zip(keysToAsk, answers) {
            guard let answer else { continue }
            metadataIndex.learn(answer)
            if asked.directory {
                markers[ExactPath(asked.name)] = answer
            } else {
                objects[ExactPath(asked.name)] = answer
            }
        }
        return markers
    }

    /// Entries whose metadata one `stat` fetches at once (itself and the next ones of its directory).
    static let siblingFetchBatch = 256

    /// `ls -l` of a directory listed without metadata (an S3 LIST carries none; entries another host wrote, or
    /// another tool): instead of one request per `stat`, one after the other, the first `stat` of such an entry asks
    /// for it and the next incomplete entries of its directory (in name order, the order `ls` asks them in), up to
    /// `siblingFetchBatch`, in parallel (16 at a time, on the worker pool): a HEAD each, or for a small file a GET whose
    /// bytes the next open reads, as one `stat` would. The `stat`s that follow find them known
    /// for `metadata_ttl`. A listing alone (`ls`, `find`) costs no HEAD. Returns the entry's attributes if its HEAD
    /// answered (`retain`: counting a kernel lookup); nil: the caller asks the usual way. (The kernel asks with a
    /// LOOKUP or a GETATTR, depending on how it listed: both come here.)
    func fetchIncompleteSiblings(of path: String, retain: Bool) -> FileAttributes? {
        let batch = state.withLock { s -> [(index: Int, ino: UInt64, path: String, size: UInt64)] in
            guard let node = s.table.node(at: path), Self.awaitsMetadata(node) else { return [] }
            let parent = KeyMapping.parent(of: node.path)
            var next: [Node] = []
            if let after = s.table.namesListed(after: KeyMapping.name(of: node.path), in: parent) {
                // From the listing, in its order: a few name look-ups, not a pass over every node (each stat of
                // `ls -l` in a directory of 100,000 would otherwise cost 100,000 steps).
                for name in after.prefix(Self.siblingFetchBatch * 4) where next.count < Self.siblingFetchBatch - 1 {
                    guard let sibling = s.table.node(at: KeyMapping.join(parent, name)) else { continue }
                    if sibling.ino != node.ino && Self.awaitsMetadata(sibling) { next.append(sibling) }
                }
            } else {
                next = s.table.nodes.values.filter {
                    $0.ino != node.ino && Self.awaitsMetadata($0) && $0.path > node.path
                        && ExactPath(KeyMapping.parent(of: $0.path)) == ExactPath(parent)
                }
                .sorted { $0.path < $1.path }.prefix(Self.siblingFetchBatch - 1).map { $0 }
            }
            return ([node] + next).enumerated().map { ($0, $1.ino, $1.path, $1.size) }
        }
        guard batch.count > 1 else { return nil }  // a lone entry: the usual HEAD (or small GET)
        let backend = store
        let asks = batch.map { (key: keys.key(for: $0.path), small: $0.size > 0 && $0.size <= Self.smallObjectLimit) }
        let answers = workers.map(batch.count, width: 16) { i -> ObjectData? in
            // As a lone stat would: a small file is asked with a GET, whose bytes the next open reads.
            guard asks[i].small else {
                return (try? backend.head(asks[i].key)).map { ObjectData(info: $0, body: Data()) }
            }
            return try? backend.get(asks[i].key, range: 0..<Self.smallObjectLimit)
        }
        return state.withLock { s -> FileAttributes? in
            var asked: FileAttributes?
            for (entry, answer) in zip(batch, answers) {
                guard let answer, let node = s.table[entry.ino], node.path == entry.path, Self.awaitsMetadata(node)
                else { continue }
                metadataIndex.learn(answer.info)
                let attributes = upsert(entry.path, .object(answer.info), in: &s)
                if entry.index == 0 && attributes.ino == entry.ino {
                    asked = attributes
                    if retain { s.table[entry.ino]?.lookups += 1 }
                }
                if asks[entry.index].small, UInt64(answer.body.count) == answer.info.size,
                    s.table[attributes.ino]?.version == answer.info.version
                {
                    s.smallContents.put(attributes.ino, version: answer.info.version, data: answer.body)
                }
            }
            return asked
        }
    }

    /// An object in the store whose metadata is not known, with nothing of it local.
    private static func awaitsMetadata(_ node: Node) -> Bool {
        node.kind != .directory && node.inStore && !node.metadataKnown && node.staged == nil && !node.dirty
    }

    /// Keys asked for by the LIST that looks a name up: enough to see past names that sort between `name` and
    /// `name/` (`name.lock`, `name-1`: the bytes below `/`).
    static let lookupListingKeys = 16

    /// What `path` is, from one LIST of the keys that start with its key (no delimiter): the object `key` itself,
    /// then its neighbours below `/` (`key.lock`), then the keys under `key/`, the marker `key/` first if there is
    /// one. So a missing name costs one request (a LIST of `key/` and a HEAD of `key` before); a file or a marker the
    /// metadata index knows at the listed version costs nothing more; an unknown file then a HEAD (or for a small one
    /// a GET, whose bytes go to `content`), an unknown marker a HEAD; a directory without a marker nothing more.
    /// `nil` when the page cannot tell (full before reaching `key/`, or a key gone between the LIST and the HEAD):
    /// the caller asks the longer way. Not on the local backend, which lists a prefix by reading the whole parent
    /// directory (and whose requests cost no round trip).
    func observeWithOneListing(_ path: String, content: inout Data?) throws(FSError) -> Observation?? {
        guard !store.description.hasPrefix("file://") else { return nil }
        let key = keys.key(for: path)
        let marker = key + "/"
        let page: ListPage
        do throws(ObjectStoreError) {
            page = try store.list(ListRequest(prefix: key, maxKeys: Self.lookupListingKeys))
        } catch .invalidKey {
            return nil
        } catch {
            throw FSError(error)
        }
        // A page is in byte order: the first key under `key/` is the marker when there is one.
        let below = page.objects.first { $0.key.hasPrefix(marker) }
        if below == nil && page.nextContinuationToken != nil
            && !page.objects.contains(where: { marker.utf8.lexicographicallyPrecedes($0.key.utf8) })
        {
            return nil  // full before where `key/` would be
        }
        do throws(ObjectStoreError) {
            if let below {
                let metadataKey = directoryMetadataKey(for: path)
                if let listed = page.objects.first(where: { $0.key == metadataKey }),
                    let metadata = listed.metadata ?? metadataIndex.metadata(for: listed)
                {
                    var known = listed
                    known.metadata = metadata
                    return .directory(marker: known)
                }
                guard options.directoryMetadataInSidecar || below.key == marker else {
                    return .some(.implicitDirectory)
                }
                do throws(ObjectStoreError) {
                    return .directory(marker: learnt(try store.head(metadataKey)))
                } catch .notFound {
                    return .some(.implicitDirectory)
                }
            }
            guard var info = page.objects.first(where: { $0.key == key }) else { return .some(nil) }
            if info.metadata != nil { return .object(learnt(info)) }
            info.metadata = metadataIndex.metadata(for: info)
            if info.metadata != nil { return .object(info) }
            if info.size > 0 && info.size <= Self.smallObjectLimit {
                let data = try store.get(key, range: 0..<Self.smallObjectLimit)
                if UInt64(data.body.count) == data.info.size { content = data.body }
                return .object(learnt(data.info))
            }
            return .object(learnt(try store.head(key)))
        } catch .notFound, .invalidKey {
            return nil  // changed between the LIST and the HEAD: ask again the long way
        } catch {
            throw FSError(error)
        }
    }

    private func acceptName(_ name: String, key: String) -> Bool {
        if KeyMapping.isValidName(name) { return true }
        let first = state.withLock { $0.reportedInvalidKeys.insert(key).inserted }
        if first { logger.warning("skipping key that is not a valid path", metadata: ["key": "\(key)"]) }
        return false
    }
}
