import Foundation
import ObjectStore

/// What the daemon knows about one inode. Lives in `InodeTable`, always accessed under `FileSystem`'s state lock.
struct Node {
    var ino: UInt64
    /// Path under the mount root; empty for the root. Empty too once the node is detached (unlinked, replaced).
    var path: String
    var kind: NodeKind
    var size: UInt64
    var permissions: UInt32
    var uid: UInt32
    var gid: UInt32
    var mtime: FileTime
    var ctime: FileTime
    /// Directory: the names of its subdirectories, when this mount knows them all (it listed the directory or
    /// made it); nil until then. `st_nlink` is 2 plus their number, as on ext4. Byte for byte: `caf\u{e9}` and
    /// `cafe\u{301}` are two.
    var subdirectories: Set<ExactPath>?
    /// The store's version of the object (file, symlink) or marker (directory) this node was read from.
    var version: String?
    /// File/symlink: the object exists. Directory: an explicit marker `dir/` exists.
    var inStore: Bool
    /// Whether mode/uid/gid/mtime came from the object's metadata (a LIST on S3 does not return it).
    var metadataKnown: Bool
    /// When the attributes were last confirmed by the store (or set by our own write).
    var validatedAt: ContinuousClock.Instant
    /// The kernel's lookup count (lookup, create, mkdir, readdirplus add one; forget subtracts).
    var lookups: UInt64 = 0
    /// Directory listings currently holding this node in their snapshot.
    var listingPins: Int = 0
    var openHandles: Int = 0
    /// Where the content stands against the store (the lifecycle, `FileLifecycle.swift`).
    var content: ContentState = .clean
    /// Orders this file's store changes (uploads, copies, deletes); shared by every copy of this node value.
    let serial = FileSerial()
    /// The store lacks what the descriptors see.
    var dirty: Bool { content.hasUnstoredChanges }
    /// Size of the stored version `version` names.
    var storedSize: UInt64 = 0
    /// Last-Modified (whole seconds) of that version, once the store told it: a copy onto itself with new
    /// metadata keeps an S3 ETag but not this.
    var storedModified: Int64?
    /// Removed from the namespace while still open: never uploaded again.
    var unlinked: Bool { content == .detached }

    /// The fields most nodes never set (a file being written, a symlink, a device, other tools' metadata), out
    /// of line: a listing of 100,000 entries keeps 100,000 nodes, and each would otherwise carry ~130 bytes more
    /// (and a copy of a node as many more references to retain).
    private var rare: RareNodeBox?

    /// Copy on write: a copy of the node shares the box until one of them changes a field.
    private var rareFields: RareNodeFields {
        get { rare?.fields ?? RareNodeFields() }
        set {
            if isKnownUniquelyReferenced(&rare) { rare!.fields = newValue } else { rare = RareNodeBox(newValue) }
        }
    }

    var atime: FileTime? {
        get { rare?.fields.atime }
        set { rareFields.atime = newValue }
    }
    /// Device number of a character or block device.
    var rdev: UInt32 {
        get { rare?.fields.rdev ?? 0 }
        set { rareFields.rdev = newValue }
    }
    var symlinkTarget: String? {
        get { rare?.fields.symlinkTarget }
        set { rareFields.symlinkTarget = newValue }
    }
    /// Local content being written; present from the first write (or O_TRUNC) until the last close.
    var staged: StagedFile? {
        get { rare?.fields.staged }
        set { rareFields.staged = newValue }
    }
    /// Lowest byte offset written or truncated since the staged copy last matched the stored version (nil: none):
    /// the bytes before it, up to `storedSize`, can be copied on the server instead of uploaded again.
    var changedFrom: UInt64? {
        get { rare?.fields.changedFrom }
        set { rareFields.changedFrom = newValue }
    }
    /// The metadata this mount last wrote to the object: seen again on revalidation, the node's own attributes
    /// stand (they may have moved on in memory, e.g. a directory's mtime), even if the store gave the object a
    /// new version meanwhile (the local backend versions a directory by its entries).
    var writtenMetadata: ObjectMetadata? {
        get { rare?.fields.writtenMetadata }
        set { rareFields.writtenMetadata = newValue }
    }
    /// A multipart upload fed while a new or truncated file is written sequentially.
    var stream: StreamingUpload? {
        get { rare?.fields.stream }
        set { rareFields.stream = newValue }
    }
    /// mtime was set by `setattr` (touch, cp -p) rather than by writing.
    var mtimeExplicit: Bool {
        get { rare?.fields.mtimeExplicit ?? false }
        set { rareFields.mtimeExplicit = newValue }
    }
    /// Keep the staged file on discard: it holds data that could not be uploaded nor saved elsewhere.
    var preserveStaged: Bool {
        get { rare?.fields.preserveStaged ?? false }
        set { rareFields.preserveStaged = newValue }
    }
    /// Operations working on the staged copy without a descriptor (truncate(2), unlink's copy for open
    /// descriptors): it is not dropped meanwhile.
    var stagedUsers: Int {
        get { rare?.fields.stagedUsers ?? 0 }
        set { rareFields.stagedUsers = newValue }
    }
    var lastOpenedVersion: String? {
        get { rare?.fields.lastOpenedVersion }
        set { rareFields.lastOpenedVersion = newValue }
    }
    /// Set by other tools: kept so that our uploads and metadata changes do not drop them.
    var contentType: String? {
        get { rare?.fields.contentType }
        set { rareFields.contentType = newValue }
    }
    var foreignMetadata: ObjectMetadata {
        get { rare?.fields.foreignMetadata ?? [:] }
        set { rareFields.foreignMetadata = newValue }
    }

    init(
        ino: UInt64, path: String, kind: NodeKind, size: UInt64, permissions: UInt32, uid: UInt32, gid: UInt32,
        mtime: FileTime, ctime: FileTime, atime: FileTime? = nil, rdev: UInt32 = 0, symlinkTarget: String? = nil,
        version: String?, inStore: Bool, metadataKnown: Bool, validatedAt: ContinuousClock.Instant, lookups: UInt64 = 0
    ) {
        self.ino = ino
        self.path = path
        self.kind = kind
        self.size = size
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.ctime = ctime
        self.version = version
        self.inStore = inStore
        self.metadataKnown = metadataKnown
        self.validatedAt = validatedAt
        self.lookups = lookups
        if atime != nil { self.atime = atime }
        if rdev != 0 { self.rdev = rdev }
        if symlinkTarget != nil { self.symlinkTarget = symlinkTarget }
    }

    mutating func noteChange(from offset: UInt64) {
        changedFrom = min(changedFrom ?? offset, offset)
    }

    func attributes() -> FileAttributes {
        FileAttributes(
            ino: ino, kind: kind, size: kind == .symlink ? symlinkTarget.map { UInt64($0.utf8.count) } ?? size : size,
            permissions: permissions, uid: uid, gid: gid, mtime: mtime, ctime: ctime, atime: atime ?? mtime,
            rdev: rdev, linked: content != .detached, subdirectories: UInt32(clamping: subdirectories?.count ?? 0),
            blocks: allocatedBlocks())
    }

    /// 512-byte blocks of the staged copy while it holds the whole content (holes left by truncate or a write past
    /// the end are not counted); nil otherwise (the store's object counts as fully allocated).
    private func allocatedBlocks() -> UInt64? {
        guard kind == .file, let staged, staged.isLoaded else { return nil }
        return staged.allocatedBlocks()
    }

    /// The metadata that goes with the object on every write.
    func posixMetadata() -> PosixMetadata {
        PosixMetadata(
            mode: attributes().mode, uid: uid, gid: gid, mtime: mtime, symlinkTarget: symlinkTarget,
            atime: atime, ctime: ctime, rdev: rdev, symlinkInBody: kind == .symlink && symlinkTarget == nil)
    }

    /// The content of the object this node is made as (`makeEmptyObject`): a symlink's target when it is too
    /// long for metadata, else nothing.
    var objectBody: Data {
        guard kind == .symlink, let symlinkTarget, PosixMetadata.storesInBody(symlinkTarget) else { return Data() }
        return Data(symlinkTarget.utf8)
    }

    /// Marks a change of the inode itself (chmod, chown, utimes, rename, a write): POSIX moves ctime.
    mutating func touchChange(_ now: FileTime = .now()) {
        ctime = now
    }

    /// Our POSIX metadata over whatever else the object carried.
    func objectMetadata() -> ObjectMetadata {
        foreignMetadata.merging(posixMetadata().objectMetadata) { _, ours in ours }
    }

    var isEvictable: Bool {
        ino != InodeTable.rootIno && lookups == 0 && listingPins == 0 && openHandles == 0 && staged == nil
    }
}

/// Holds a node's `RareNodeFields`; changed only while uniquely referenced (under the state lock).
final class RareNodeBox: @unchecked Sendable {
    var fields: RareNodeFields
    init(_ fields: RareNodeFields) { self.fields = fields }
}

/// `Node`'s rarely set fields, held once per node that sets any.
struct RareNodeFields {
    var atime: FileTime?
    var rdev: UInt32 = 0
    var symlinkTarget: String?
    var staged: StagedFile?
    var changedFrom: UInt64?
    var writtenMetadata: ObjectMetadata?
    var stream: StreamingUpload?
    var mtimeExplicit = false
    var preserveStaged = false
    var stagedUsers = 0
    var lastOpenedVersion: String?
    var contentType: String?
    var foreignMetadata: ObjectMetadata = [:]
}

/// Inodes by number and by path. Not thread-safe by itself: `FileSystem` keeps it inside its state lock.
struct InodeTable {
    static let rootIno: UInt64 = 1

    private(set) var nodes: [UInt64: Node] = [:]
    /// Byte for byte (`ExactPath`): two keys that are canonically equivalent strings are two names.
    private var byPath: [ExactPath: UInt64] = [:]
    private var nextIno: UInt64 = 2
    /// Nodes that have a staged file, kept so that the staged total is cheap to add up.
    private var stagedInos: Set<UInt64> = []
    /// Nodes that were seen with unstored changes or an upload stream: a superset of the pending uploads, so that
    /// counting them (every 2 s, for `bucketfs status`) does not copy every node of a table of 100,000.
    private var unstoredInos: Set<UInt64> = []
    /// The numbers of nodes evicted while still named (the kernel forgot them, e.g. its dentry cache shrank), by
    /// path: the same path seen again as the same kind gets its number back, so `st_ino` stays stable for as
    /// long as the name does (pjdfstest compares it across steps). Dropped when the name goes.
    private var retired: [ExactPath: (ino: UInt64, kind: NodeKind)] = [:]
    static let retiredLimit = 100_000

    /// The entry names of the directories listed last, each in listing order (the order `ls -l` stats them in):
    /// the next entries awaiting metadata are found there without a pass over every node.
    private var listingOrders: [String: [String]] = [:]
    static let listingOrderLimit = 16

    init(root: Node) {
        nodes[root.ino] = root
        byPath[ExactPath("")] = root.ino
    }

    subscript(ino: UInt64) -> Node? {
        get { nodes[ino] }
        set {
            nodes[ino] = newValue
            noteStaging(ino)
        }
    }

    /// Bytes held by staged files: each staged file is as large as its node.
    var stagedBytes: UInt64 {
        stagedInos.reduce(0) { $0 + (nodes[$1]?.size ?? 0) }
    }

    /// Files whose content has not reached the store yet: written and not uploaded, or an upload running now.
    var pendingUploadCount: Int {
        unstoredInos.count { ino in
            nodes[ino].map { $0.dirty || ($0.stream?.hasStarted == true && !$0.unlinked) } ?? false
        }
    }

    private mutating func noteStaging(_ ino: UInt64) {
        if nodes[ino]?.staged != nil { stagedInos.insert(ino) } else { stagedInos.remove(ino) }
        if let node = nodes[ino], node.dirty || node.stream != nil {
            unstoredInos.insert(ino)
        } else {
            unstoredInos.remove(ino)
        }
    }

    func ino(at path: String) -> UInt64? { byPath[ExactPath(path)] }

    func node(at path: String) -> Node? { byPath[ExactPath(path)].flatMap { nodes[$0] } }

    mutating func allocateIno() -> UInt64 {
        defer { nextIno += 1 }
        return nextIno
    }

    /// The number for a node the store shows at `path`: the one it had before it was evicted, else a new one.
    mutating func ino(reusedFor path: String, kind: NodeKind) -> UInt64 {
        if let old = retired.removeValue(forKey: ExactPath(path)), old.kind == kind, nodes[old.ino] == nil {
            return old.ino
        }
        return allocateIno()
    }

    /// Adds `node` at its path, detaching whatever node held the path before.
    mutating func insert(_ node: Node) {
        detach(path: node.path)
        retired.removeValue(forKey: ExactPath(node.path))
        nodes[node.ino] = node
        noteStaging(node.ino)
        byPath[ExactPath(node.path)] = node.ino
        if node.kind == .directory { noteSubdirectory(node.path, present: true) }
    }

    /// The node at `path` leaves the namespace (it stays known by number until the kernel forgets it).
    /// `parentCounts`: a directory leaving is one subdirectory less for its parent.
    mutating func detach(path: String, parentCounts: Bool = true) {
        retired.removeValue(forKey: ExactPath(path))
        guard !path.isEmpty, let ino = byPath.removeValue(forKey: ExactPath(path)) else { return }
        if parentCounts && nodes[ino]?.kind == .directory { noteSubdirectory(path, present: false) }
        nodes[ino]?.path = ""
        nodes[ino]?.content.detach()
        evictIfUnused(ino)
    }

    /// Moves the node at `from` (and, for a directory, every node below it) to `to`.
    mutating func move(from: String, to: String) {
        detach(path: to)
        let isDirectory = node(at: from)?.kind == .directory
        if isDirectory { noteSubdirectory(from, present: false) }
        let below = from + "/"
        let exact = ExactPath(from)
        retired = retired.filter { $0.key != exact && !$0.key.isBelow(below) }  // (evicted below: new numbers)
        let moved = byPath.filter { $0.key == exact || $0.key.isBelow(below) }
        for (path, ino) in moved {
            byPath.removeValue(forKey: path)
            let newPath = to + String(decoding: path.string.utf8.dropFirst(from.utf8.count), as: UTF8.self)
            detach(path: newPath, parentCounts: false)  // a stale node: the moved tree brings its own counts
            byPath[ExactPath(newPath)] = ino
            nodes[ino]?.path = newPath
        }
        if isDirectory { noteSubdirectory(to, present: true) }
    }

    /// The directory at `path` appeared or went: its parent's subdirectory names follow, when they are known.
    private mutating func noteSubdirectory(_ path: String, present: Bool) {
        guard !path.isEmpty, let parent = byPath[ExactPath(KeyMapping.parent(of: path))],
            nodes[parent]?.subdirectories != nil
        else { return }
        let name = ExactPath(KeyMapping.name(of: path))
        if present {
            nodes[parent]?.subdirectories?.insert(name)
        } else {
            nodes[parent]?.subdirectories?.remove(name)
        }
    }

    /// `names`: sorted (`<`), as the listing of `directory` returned them.
    mutating func noteListingOrder(_ names: [String], of directory: String) {
        if listingOrders[directory] == nil && listingOrders.count >= Self.listingOrderLimit { listingOrders = [:] }
        listingOrders[directory] = names
    }

    /// The names after `name` in the last listing of `directory`, in order; nil if it was not listed lately.
    func namesListed(after name: String, in directory: String) -> ArraySlice<String>? {
        guard let names = listingOrders[directory] else { return nil }
        var low = 0
        var high = names.count
        while low < high {
            let middle = (low + high) / 2
            if names[middle] <= name { low = middle + 1 } else { high = middle }
        }
        return names[low...]
    }

    /// Nodes directly inside directory `path` that exist only locally (created, not yet uploaded).
    func pendingChildren(of path: String) -> [Node] {
        nodes.values.filter {
            !$0.inStore && $0.staged != nil && !$0.unlinked && !$0.path.isEmpty
                && $0.kind == .file && ExactPath(KeyMapping.parent(of: $0.path)) == ExactPath(path)
        }
    }

    /// Nodes at `path` or below it (a directory's whole known subtree), by inode.
    func nodes(under path: String) -> [Node] {
        let below = path + "/"
        let exact = ExactPath(path)
        return byPath.compactMap { p, ino in (p == exact || p.isBelow(below)) ? nodes[ino] : nil }
    }

    mutating func evictIfUnused(_ ino: UInt64) {
        guard let node = nodes[ino], node.isEvictable else { return }
        nodes.removeValue(forKey: ino)
        stagedInos.remove(ino)
        unstoredInos.remove(ino)
        if !node.path.isEmpty, byPath[ExactPath(node.path)] == ino {
            byPath.removeValue(forKey: ExactPath(node.path))
            if retired.count >= Self.retiredLimit { retired = [:] }  // bounded: past it, numbers may change
            retired[ExactPath(node.path)] = (node.ino, node.kind)
        }
    }
}
