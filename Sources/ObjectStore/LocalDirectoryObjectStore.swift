import CLibc
import Foundation
import Glibc

/// An object store kept in a local directory (`file:///srv/data/`): the key `a/b.txt` is the file `<root>/a/b.txt`.
///
/// - Directories are markers: the key `a/` is the directory `<root>/a` itself, and every directory under the root
///   lists as a marker object (as on S3 with explicit markers).
/// - Content type and user metadata live in the extended attribute `user.bucketfs` (JSON). Every write builds a
///   temp file in `<root>/.bucketfs-local/tmp/` with its attribute set, then renames it in, so data and metadata
///   appear together.
/// - Durable when acknowledged: the temp file is fsynced before the rename and the directory after it (likewise
///   for created and removed entries), so a write that returned survives a crash or power cut, as on S3.
/// - Conditional writes are atomic across threads and processes sharing the root: the check and the rename happen
///   under an exclusive `flock` on `<root>/.bucketfs-local/lock`, opened anew for every mutation.
/// - Keys that cannot be paths (empty segments, `.`/`..`, NUL) and keys under `.bucketfs-local/` are `.invalidKey`
///   for every operation, so that no key can reach outside its own file.
/// - Symbolic links in the backing directory never lead outside it (see `LocalRoot`): every directory is opened
///   without following links, so a key below a link to a directory is absent (and cannot be written); a link as
///   the last component of a file's key is followed only to a file beneath the root. Links to directories do not
///   list.
public final class LocalDirectoryObjectStore: ObjectStore {
    /// The backing directory, absolute, without a trailing slash (except for `/`).
    public let root: String
    let paths: LocalRoot

    /// The hidden folder for backend state; never listed, and reserved as a key.
    static let stateFolderName = ".bucketfs-local"
    static let attributeName = "user.bucketfs"
    static let partETagAttributeName = "user.bucketfs.etag"

    public var description: String { root == "/" ? "file:///" : "file://\(root)/" }
    public var supportsConditionalWrites: Bool { true }

    /// Opens the store on an existing directory; `.noSuchBucket` when `root` is missing or not a directory.
    /// `trace` hears of every fsync and rename (for tests of durability).
    public init(root: String, trace: (@Sendable (String) -> Void)? = nil) throws(ObjectStoreError) {
        var path = root.hasPrefix("/") ? root : FileManager.default.currentDirectoryPath + "/" + root
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        var status = stat()
        guard stat(path, &status) == 0, Self.isDirectory(status) else { throw .noSuchBucket(path) }
        self.root = path
        paths = LocalRoot(path: path, trace: trace)
        // Best effort: a read-only root still serves reads; writes will report the error when they happen.
        for folder in ["tmp", "multipart"] {
            if let fd = try? openStateDirectory(folder) { close(fd) }
        }
    }

    /// The root is still a directory (it was at `init`; a mount may start long after).
    public func validate() throws(ObjectStoreError) {
        var status = stat()
        guard stat(root, &status) == 0, Self.isDirectory(status) else { throw .noSuchBucket(root) }
    }

    // MARK: Reading

    public func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo {
        let location = try locate(key)
        guard let object = try openObject(location) else { throw .notFound(key: key) }
        defer { close(object.fd) }
        return info(key: key, status: object.status, attributes: readAttributes(fd: object.fd), withMetadata: true)
    }

    /// A range starting at or past the end gives an empty body (S3 would answer 416; the S3 backend maps that to
    /// empty too). Version and bytes come from the same open file, so they always match.
    public func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        let location = try locate(key)
        guard let object = try openObject(location) else { throw .notFound(key: key) }
        defer { close(object.fd) }
        let info = info(key: key, status: object.status, attributes: readAttributes(fd: object.fd), withMetadata: true)
        let wanted = range ?? 0..<info.size
        let lower = min(wanted.lowerBound, info.size)
        let upper = min(wanted.upperBound, info.size)
        guard lower < upper else { return ObjectData(info: info, body: Data()) }
        var body = Data(count: Int(upper - lower))
        // withUnsafeMutableBytes only rethrows untyped errors, hence the Result.
        let filled = try body.withUnsafeMutableBytes { buffer -> Result<Int, ObjectStoreError> in
            var done = 0
            while done < buffer.count {
                let n = pread(object.fd, buffer.baseAddress! + done, buffer.count - done, off_t(lower) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                if n < 0 { return .failure(failure("read", location.path, key: key)) }
                if n == 0 { break }  // shrunk by someone writing in place
                done += n
            }
            return .success(done)
        }.get()
        if filled < body.count { body.count = filled }
        return ObjectData(info: info, body: body)
    }

    // MARK: Writing

    @discardableResult
    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        let location = try locate(key)
        let attributes = StoredAttributes(contentType: options.contentType, metadata: options.metadata)
        if location.isMarker {
            guard try Self.isEmpty(body) else {
                throw .invalidRequest("directory marker \(key) must have an empty body")
            }
            return try writeMarker(location, attributes: attributes, condition: options.condition)
        }
        let temp = try stageTempFile(attributes: attributes) { (fd) throws(ObjectStoreError) in
            try write(body, to: fd)
        }
        return try commit(temp, to: location, condition: options.condition)
    }

    /// Deleting the marker `a/` of a directory that still has entries succeeds and leaves the directory: its
    /// children keep it alive, as they keep an implicit directory alive on S3.
    public func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        let location = try locate(key)
        try withStoreLock { () throws(ObjectStoreError) in
            guard let current = try inspect(location) else {
                if case .ifVersionMatches = condition { throw .notFound(key: key) }
                return
            }
            if case .ifVersionMatches(let expected) = condition, current.version != expected {
                throw .preconditionFailed(key: key)
            }
            let parent = try openParent(of: location, create: false)
            defer { close(parent) }
            if location.isMarker {
                if unlinkat(parent, location.name, AT_REMOVEDIR) != 0 {
                    guard [ENOTEMPTY, EEXIST, ENOENT].contains(errno) else {
                        throw failure("rmdir", location.path, key: key)
                    }
                    return
                }
            } else if unlinkat(parent, location.name, 0) != 0 {
                guard errno == ENOENT else { throw failure("unlink", location.path, key: key) }
                return
            }
            try sync(parent, location.path)
        }
    }

    @discardableResult
    public func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        let from = try locate(source)
        let to = try locate(destination)
        if source.utf8.elementsEqual(destination.utf8) {  // bytes: `caf\u{e9}` and `cafe\u{301}` are two keys
            guard let metadata else {
                throw .invalidRequest("copying \(source) onto itself requires new metadata")
            }
            return try rewriteMetadata(to, metadata: metadata, condition: condition)
        }
        guard let original = try openObject(from) else { throw .notFound(key: source) }
        defer { close(original.fd) }
        let sourceAttributes = readAttributes(fd: original.fd)
        // Replacing the metadata keeps the content type: the contract has no way to pass a new one.
        let attributes = StoredAttributes(
            contentType: sourceAttributes?.contentType,
            metadata: metadata ?? sourceAttributes?.metadata ?? [:])
        let isEmpty = from.isMarker || original.status.st_size == 0
        if to.isMarker {
            guard isEmpty else {
                throw .invalidRequest("cannot copy non-empty \(source) onto directory marker \(destination)")
            }
            return try writeMarker(to, attributes: attributes, condition: condition)
        }
        let temp = try stageTempFile(attributes: attributes) { (fd) throws(ObjectStoreError) in
            if !from.isMarker { try copyAll(from: original.fd, to: fd, describing: from.path) }
        }
        return try commit(temp, to: to, condition: condition)
    }

    // MARK: - Keys and paths

    /// Where a key lives: a file, or for a marker (`a/`) the directory itself.
    struct Location {
        var key: String
        /// The directories above it, below the root.
        var parent: [Substring]
        /// Its own name in the parent directory.
        var name: String
        /// Absolute, for messages only: every access goes component by component (`LocalRoot`).
        var path: String
        var isMarker: Bool
    }

    func locate(_ key: String) throws(ObjectStoreError) -> Location {
        let isMarker = key.hasSuffix("/")
        let relative = isMarker ? String(key.dropLast()) : key
        if let reason = Self.problem(withPath: relative) { throw .invalidKey(key: key, reason: reason) }
        var segments = LocalRoot.segments(of: relative)
        let name = String(segments.removeLast())
        return Location(key: key, parent: segments, name: name, path: absolutePath(relative), isMarker: isMarker)
    }

    /// Why a relative path cannot name a file under the root, or nil when it can.
    static func problem(withPath relative: String) -> String? {
        if relative.isEmpty { return "an empty key (or `/`) names no file" }
        if relative.utf8.contains(0) { return "contains a NUL byte" }
        let segments = LocalRoot.segments(of: relative, omittingEmpty: false)
        if segments.contains(where: \.isEmpty) { return "empty path segment (`//`, or a leading `/`)" }
        if segments.contains(where: { $0 == "." || $0 == ".." }) { return "`.` and `..` segments are not allowed" }
        if segments[0] == stateFolderName { return "\(stateFolderName)/ is reserved for the local backend's state" }
        return nil
    }

    func absolutePath(_ relative: String) -> String {
        if relative.isEmpty { return root }
        return root == "/" ? "/\(relative)" : "\(root)/\(relative)"
    }

    // MARK: - Descriptors beneath the root

    /// Runs `body` with the root directory open.
    func withRoot<T>(_ body: (Int32) throws(ObjectStoreError) -> T) throws(ObjectStoreError) -> T {
        let fd = paths.open()
        guard fd >= 0 else { throw failure("open", root, key: "") }
        defer { close(fd) }
        return try body(fd)
    }

    /// The directory above the key, opened without following links; with `create`, made as needed. A file or a
    /// symbolic link in the way makes the key invalid.
    private func openParent(of location: Location, create: Bool) throws(ObjectStoreError) -> Int32 {
        try withRoot { (rootFD) throws(ObjectStoreError) -> Int32 in
            let fd = paths.openDirectory(location.parent, at: rootFD, create: create)
            guard fd < 0 else { return fd }
            let above = location.parent.joined(separator: "/")
            switch errno {
            case ENOTDIR, EEXIST:
                throw .invalidKey(key: location.key, reason: "\(above) is a file, so it cannot contain other keys")
            case ELOOP:
                throw .invalidKey(key: location.key, reason: "\(above) goes through a symbolic link")
            default:
                throw failure(create ? "mkdir" : "open", absolutePath(above), key: location.key)
            }
        }
    }

    /// `<root>/.bucketfs-local/<folder>`, created as needed, never through a link.
    func openStateDirectory(_ folder: String) throws(ObjectStoreError) -> Int32 {
        try withRoot { (rootFD) throws(ObjectStoreError) -> Int32 in
            let fd = paths.openDirectory(
                [Substring(Self.stateFolderName), Substring(folder)], at: rootFD, create: true)
            guard fd >= 0 else { throw failure("open", "\(root)/\(Self.stateFolderName)/\(folder)", key: folder) }
            return fd
        }
    }

    func sync(_ fd: Int32, _ what: String) throws(ObjectStoreError) {
        guard paths.sync(fd, what) else { throw failure("fsync", what, key: what) }
    }

    // MARK: - Objects on disk

    struct OpenObject {
        var fd: Int32
        var status: stat
    }

    /// Opens the file (or the marker's directory) read-only; nil when there is no such object (also when a
    /// directory on the way is a symbolic link: the key does not lead anywhere the store owns).
    func openObject(_ location: Location) throws(ObjectStoreError) -> OpenObject? {
        try withRoot { (rootFD) throws(ObjectStoreError) -> OpenObject? in
            let parent = paths.openDirectory(location.parent, at: rootFD)
            if parent < 0 {
                if [ENOENT, ENOTDIR, ELOOP].contains(errno) { return nil }
                throw failure("open", location.path, key: location.key)
            }
            defer { close(parent) }
            // O_NONBLOCK: opening a FIFO that sits where a file should be must not hang.
            let fd =
                location.isMarker
                ? openat(parent, location.name, LocalRoot.directoryFlags | O_NONBLOCK)
                : paths.openFile(
                    location.name, in: parent, parent: location.parent, root: rootFD,
                    flags: O_RDONLY | O_NONBLOCK, reserved: Self.stateFolderName)
            if fd < 0 {
                if [ENOENT, ENOTDIR, ELOOP].contains(errno) { return nil }
                throw failure("open", location.path, key: location.key)
            }
            var status = stat()
            guard fstat(fd, &status) == 0 else {
                let error = failure("stat", location.path, key: location.key)
                close(fd)
                throw error
            }
            guard location.isMarker ? Self.isDirectory(status) : Self.isRegularFile(status) else {
                close(fd)
                return nil
            }
            return OpenObject(fd: fd, status: status)
        }
    }

    /// The object's current info, or nil when absent.
    func inspect(_ location: Location) throws(ObjectStoreError) -> ObjectInfo? {
        guard let object = try openObject(location) else { return nil }
        defer { close(object.fd) }
        return info(
            key: location.key, status: object.status, attributes: readAttributes(fd: object.fd),
            withMetadata: true)
    }

    /// The version combines the inode, ctime and size with the write ID kept in the attribute. Every write by this
    /// backend renames a new inode in with a new write ID, so the version changes even when a freed inode number is
    /// reused within one clock tick; edits made in place by other programs change ctime or size.
    /// A directory's ctime also changes when entries are added or removed directly in it, so a marker's version
    /// changes then too.
    private func info(key: String, status: stat, attributes: StoredAttributes?, withMetadata: Bool) -> ObjectInfo {
        let size = Self.isDirectory(status) ? 0 : UInt64(status.st_size)
        let ctime = UInt64(status.st_ctim.tv_sec) &* 1_000_000_000 &+ UInt64(status.st_ctim.tv_nsec)
        var version = "\(String(status.st_ino, radix: 16))-\(String(ctime, radix: 16))-\(String(size, radix: 16))"
        if let writeID = attributes?.writeID { version += "-\(writeID)" }
        let mtime = Double(status.st_mtim.tv_sec) + Double(status.st_mtim.tv_nsec) / 1e9
        return ObjectInfo(
            key: key, size: size, lastModified: Date(timeIntervalSince1970: mtime), version: version,
            contentType: withMetadata ? attributes?.contentType : nil,
            metadata: withMetadata ? (attributes?.metadata ?? [:]) : nil)
    }

    static func isDirectory(_ status: stat) -> Bool { status.st_mode & S_IFMT == S_IFDIR }
    static func isRegularFile(_ status: stat) -> Bool { status.st_mode & S_IFMT == S_IFREG }

    // MARK: - Writing files

    /// A temp file written and synced, waiting to be renamed in; `directory` is the open temp folder.
    struct TempFile {
        var directory: Int32
        var name: String

        func discard() {
            unlinkat(directory, name, 0)
            close(directory)
        }
    }

    /// Writes a new temp file (data through `fill`, then the attribute), syncs it, and returns it.
    func stageTempFile(
        attributes: StoredAttributes,
        fill: (Int32) throws(ObjectStoreError) -> Void
    ) throws(ObjectStoreError) -> TempFile {
        let directory = try openStateDirectory("tmp")
        let temp = TempFile(directory: directory, name: UUID().uuidString.lowercased())
        let fd = openat(directory, temp.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            let error = failure("create", "\(Self.stateFolderName)/tmp/\(temp.name)", key: temp.name)
            close(directory)
            throw error
        }
        do throws(ObjectStoreError) {
            defer { close(fd) }
            try fill(fd)
            try writeAttributes(attributes, fd: fd, key: temp.name)
            try sync(fd, "temp file")
        } catch {
            temp.discard()
            throw error
        }
        return temp
    }

    /// Renames a staged temp file into place under the store lock, once the condition holds, and syncs the
    /// directory so that the new entry is durable.
    func commit(_ temp: TempFile, to location: Location, condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo
    {
        do throws(ObjectStoreError) {
            let info = try withStoreLock { () throws(ObjectStoreError) -> ObjectInfo in
                try condition.check(key: location.key, currentVersion: try inspect(location)?.version)
                let parent = try openParent(of: location, create: true)
                defer { close(parent) }
                // renameat replaces a link standing at the name; it never writes through it.
                if renameat(temp.directory, temp.name, parent, location.name) != 0 {
                    guard errno == EISDIR else { throw failure("rename", location.path, key: location.key) }
                    // A directory stands at the path. An empty one (a bare marker) gives way; one with content cannot.
                    guard unlinkat(parent, location.name, AT_REMOVEDIR) == 0 else {
                        throw .invalidKey(key: location.key, reason: "\(location.key)/ is a directory with content")
                    }
                    guard renameat(temp.directory, temp.name, parent, location.name) == 0 else {
                        throw failure("rename", location.path, key: location.key)
                    }
                }
                paths.noteRename(location.key)
                try sync(parent, "directory of \(location.key)")
                guard let info = try inspect(location) else { throw .notFound(key: location.key) }
                return info
            }
            close(temp.directory)
            return info
        } catch {
            temp.discard()
            throw error
        }
    }

    /// Creates (or re-labels) the directory behind a marker key, under the store lock.
    private func writeMarker(
        _ location: Location, attributes: StoredAttributes,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try withStoreLock { () throws(ObjectStoreError) -> ObjectInfo in
            try condition.check(key: location.key, currentVersion: try inspect(location)?.version)
            let parent = try openParent(of: location, create: true)
            defer { close(parent) }
            if mkdirat(parent, location.name, 0o777) == 0 {
                try sync(parent, "directory of \(location.key)")
            } else if errno != EEXIST {
                throw failure("mkdir", location.path, key: location.key)
            }
            guard let directory = try openObject(location) else {
                throw .invalidKey(key: location.key, reason: "\(location.key.dropLast()) is a file, not a directory")
            }
            defer { close(directory.fd) }
            try writeAttributes(attributes, fd: directory.fd, key: location.key)
            try sync(directory.fd, location.key)
            guard let info = try inspect(location) else { throw .notFound(key: location.key) }
            return info
        }
    }

    /// Copy onto itself: only the attribute changes (new write ID, hence new version), under the lock.
    private func rewriteMetadata(
        _ location: Location, metadata: ObjectMetadata,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try withStoreLock { () throws(ObjectStoreError) -> ObjectInfo in
            guard let object = try openObject(location) else { throw .notFound(key: location.key) }
            defer { close(object.fd) }
            let current = readAttributes(fd: object.fd)
            let version = info(key: location.key, status: object.status, attributes: current, withMetadata: false)
                .version
            try condition.check(key: location.key, currentVersion: version)
            try writeAttributes(
                StoredAttributes(contentType: current?.contentType, metadata: metadata),
                fd: object.fd, key: location.key)
            try sync(object.fd, location.key)
            guard let info = try inspect(location) else { throw .notFound(key: location.key) }
            return info
        }
    }

    /// Serialises mutations across threads and processes sharing the root. Each call opens its own descriptor, so
    /// the `flock` excludes other threads of this process too; closing it releases the lock.
    func withStoreLock<T>(_ body: () throws(ObjectStoreError) -> T) throws(ObjectStoreError) -> T {
        let state = try withRoot { (rootFD) throws(ObjectStoreError) -> Int32 in
            let fd = paths.openDirectory([Substring(Self.stateFolderName)], at: rootFD, create: true)
            guard fd >= 0 else { throw failure("open", "\(root)/\(Self.stateFolderName)", key: "lock") }
            return fd
        }
        let fd = openat(state, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o666)
        close(state)
        guard fd >= 0 else { throw failure("open", "\(root)/\(Self.stateFolderName)/lock", key: "lock") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw failure("flock", "\(root)/\(Self.stateFolderName)/lock", key: "lock") }
        }
        return try body()
    }

    // MARK: - Extended attributes

    /// What `user.bucketfs` holds. `writeID` is new on every write by this backend and feeds the version.
    struct StoredAttributes: Codable {
        var contentType: String?
        var metadata: ObjectMetadata?
        var writeID: String?

        init(contentType: String?, metadata: ObjectMetadata) {
            self.contentType = contentType
            self.metadata = metadata
            self.writeID = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        }
    }

    func readAttributes(fd: Int32) -> StoredAttributes? {
        Self.decodeAttributes(readAttribute(Self.attributeName, fd: fd))
    }

    /// Attributes written by someone else, or garbled, count as none.
    private static func decodeAttributes(_ data: Data?) -> StoredAttributes? {
        guard let data else { return nil }
        return try? JSONDecoder().decode(StoredAttributes.self, from: data)
    }

    func writeAttributes(_ attributes: StoredAttributes, fd: Int32, key: String) throws(ObjectStoreError) {
        let data: Data
        do {
            data = try JSONEncoder().encode(attributes)
        } catch {
            throw .other("encode metadata of \(key): \(error)")
        }
        try setAttribute(Self.attributeName, data, fd: fd, key: key)
    }

    func setAttribute(_ name: String, _ value: Data, fd: Int32, key: String) throws(ObjectStoreError) {
        let result = value.withUnsafeBytes { fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
        guard result != 0 else { return }
        switch errno {
        case ENOTSUP: throw unsupportedAttributes()
        case E2BIG: throw .invalidRequest("metadata of \(key) is too large for an extended attribute")
        default: throw failure("fsetxattr", key, key: key)
        }
    }

    func readAttribute(_ name: String, fd: Int32) -> Data? {
        return Self.readAttribute { fgetxattr(fd, name, $0, $1) }
    }

    /// Reads an attribute value with a first guess at its size; nil when absent or unreadable.
    private static func readAttribute(_ call: (UnsafeMutableRawPointer?, Int) -> Int) -> Data? {
        var capacity = 1024
        while true {
            var buffer = Data(count: capacity)
            let n = buffer.withUnsafeMutableBytes { call($0.baseAddress, capacity) }
            if n >= 0 {
                buffer.count = n
                return buffer
            }
            guard errno == ERANGE else { return nil }
            let needed = call(nil, 0)
            guard needed > 0 else { return nil }
            capacity = needed
        }
    }

    private func unsupportedAttributes() -> ObjectStoreError {
        .other("backing filesystem does not support user extended attributes: \(root)")
    }

    // MARK: - Errors

    /// The one place errno becomes an `ObjectStoreError`.
    func failure(_ operation: String, _ path: String, key: String, errno code: Int32 = errno) -> ObjectStoreError {
        let message = String(cString: strerror(code))
        switch code {
        case ENOENT: return .notFound(key: key)
        case ENOSPC, EDQUOT: return .noSpace("\(operation) \(path): \(message)")
        case EACCES, EPERM, EROFS: return .accessDenied("\(operation) \(path): \(message)")
        case ENOTDIR, EISDIR, ENAMETOOLONG: return .invalidKey(key: key, reason: message)
        default: return .other("\(operation) \(path): \(message)")
        }
    }
}
