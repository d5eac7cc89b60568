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
/// - Conditional writes are atomic across threads and processes sharing the root: the check and the rename happen
///   under an exclusive `flock` on `<root>/.bucketfs-local/lock`, opened anew for every mutation.
/// - Keys that cannot be paths (empty segments, `.`/`..`, NUL) and keys under `.bucketfs-local/` are `.invalidKey`
///   for every operation, so that no key can reach outside its own file.
/// - Symbolic links in the backing directory are followed when they point to files; links to directories are
///   not followed (no loops, no escaping the root) and do not list.
public final class LocalDirectoryObjectStore: ObjectStore {
    /// The backing directory, absolute, without a trailing slash (except for `/`).
    public let root: String
    private let stateDirectory: String
    private let tempDirectory: String
    private let multipartDirectory: String
    private let lockPath: String

    /// The hidden folder for backend state; never listed, and reserved as a key.
    static let stateFolderName = ".bucketfs-local"
    private static let attributeName = "user.bucketfs"
    private static let partETagAttributeName = "user.bucketfs.etag"

    public var description: String { root == "/" ? "file:///" : "file://\(root)/" }
    public var supportsConditionalWrites: Bool { true }

    /// Opens the store on an existing directory; `.noSuchBucket` when `root` is missing or not a directory.
    public init(root: String) throws(ObjectStoreError) {
        var path = root.hasPrefix("/") ? root : FileManager.default.currentDirectoryPath + "/" + root
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        var status = stat()
        guard stat(path, &status) == 0, Self.isDirectory(status) else { throw .noSuchBucket(path) }
        self.root = path
        let base = path == "/" ? "" : path
        stateDirectory = "\(base)/\(Self.stateFolderName)"
        tempDirectory = "\(stateDirectory)/tmp"
        multipartDirectory = "\(stateDirectory)/multipart"
        lockPath = "\(stateDirectory)/lock"
        // Best effort: a read-only root still serves reads; writes will report the error when they happen.
        createStateDirectories()
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

    /// Walks only what the request needs: with delimiter `/` one directory, otherwise the subtree under the prefix,
    /// in key order, stopping when the page is full.
    public func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage {
        var builder = ListPageBuilder(request)
        let prefix = request.prefix
        // The deepest directory the prefix names: only it and what lies below can hold matching keys.
        var startDirectory = ""
        if let slash = prefix.utf8.lastIndex(of: UInt8(ascii: "/")) {
            startDirectory = String(prefix[..<slash])
        }
        if !startDirectory.isEmpty {
            guard Self.problem(withPath: startDirectory) == nil,
                  let status = statusFollowingLinks(absolutePath(startDirectory)), Self.isDirectory(status)
            else { return builder.page }
            // The start directory is itself the marker `dir/`, listed when the prefix is exactly `dir/`.
            let markerKey = startDirectory + "/"
            guard builder.add(key: markerKey, info: { listEntry(key: markerKey, directory: true) }) else {
                return builder.page
            }
        }
        _ = try walk(startDirectory, into: &builder)
        return builder.page
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
            if location.isMarker {
                if rmdir(location.path) != 0 && errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT {
                    throw failure("rmdir", location.path, key: key)
                }
            } else if unlink(location.path) != 0 && errno != ENOENT {
                throw failure("unlink", location.path, key: key)
            }
        }
    }

    @discardableResult
    public func copy(from source: String, to destination: String, metadata: ObjectMetadata?,
                     condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
        let from = try locate(source)
        let to = try locate(destination)
        if source == destination {
            guard let metadata else {
                throw .invalidRequest("copying \(source) onto itself requires new metadata")
            }
            return try rewriteMetadata(to, metadata: metadata, condition: condition)
        }
        guard let original = try openObject(from) else { throw .notFound(key: source) }
        defer { close(original.fd) }
        let sourceAttributes = readAttributes(fd: original.fd)
        // Replacing the metadata keeps the content type: the contract has no way to pass a new one.
        let attributes = StoredAttributes(contentType: sourceAttributes?.contentType,
                                          metadata: metadata ?? sourceAttributes?.metadata ?? [:])
        let isEmpty = from.isMarker || original.status.st_size == 0
        if to.isMarker {
            guard isEmpty else { throw .invalidRequest("cannot copy non-empty \(source) onto directory marker \(destination)") }
            return try writeMarker(to, attributes: attributes, condition: condition)
        }
        let temp = try stageTempFile(attributes: attributes) { (fd) throws(ObjectStoreError) in
            if !from.isMarker { try copyAll(from: original.fd, to: fd, describing: from.path) }
        }
        return try commit(temp, to: to, condition: condition)
    }

    // MARK: Multipart uploads

    /// Staged in `<root>/.bucketfs-local/multipart/<uploadID>/`: `upload.json` plus one `part-<n>` file per part.
    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        let location = try locate(key)
        guard !location.isMarker else {
            throw .invalidKey(key: key, reason: "a directory marker cannot be uploaded in parts")
        }
        let uploadID = UUID().uuidString.lowercased()
        let directory = uploadDirectory(uploadID)
        if mkdir(directory, 0o777) != 0 {
            createStateDirectories()
            guard mkdir(directory, 0o777) == 0 else { throw failure("mkdir", directory, key: key) }
        }
        let record = UploadRecord(key: key, initiated: Date(), contentType: options.contentType,
                                  metadata: options.metadata)
        do {
            try JSONEncoder().encode(record).write(to: URL(fileURLWithPath: "\(directory)/upload.json"), options: .atomic)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw .other("create multipart upload for \(key): \(error.localizedDescription)")
        }
        return uploadID
    }

    /// The ETag is a random token per part write (not a content hash); `complete` checks it so that a part
    /// re-uploaded meanwhile is not silently mixed in.
    public func uploadPart(_ key: String, uploadID: String, number: Int, body: PutBody) throws(ObjectStoreError) -> String {
        guard (1...10_000).contains(number) else {
            throw .invalidRequest("part number \(number) is outside 1...10000")
        }
        _ = try loadUpload(key, uploadID: uploadID)
        let etag = UUID().uuidString.lowercased()
        let partPath = "\(uploadDirectory(uploadID))/part-\(number)"
        let temp = "\(partPath).tmp-\(etag)"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            throw errno == ENOENT ? .notFound(key: key) : failure("create", temp, key: key)
        }
        do throws(ObjectStoreError) {
            defer { close(fd) }
            try write(body, to: fd)
            try setAttribute(Self.partETagAttributeName, Data(etag.utf8), fd: fd, key: key)
            guard rename(temp, partPath) == 0 else { throw failure("rename", partPath, key: key) }
        } catch {
            unlink(temp)
            throw error
        }
        return etag
    }

    @discardableResult
    public func completeMultipartUpload(_ key: String, uploadID: String, parts: [CompletedPart],
                                        condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
        let record = try loadUpload(key, uploadID: uploadID)
        try validatePartList(parts)
        let location = try locate(key)
        let directory = uploadDirectory(uploadID)
        let attributes = StoredAttributes(contentType: record.contentType, metadata: record.metadata)
        let temp = try stageTempFile(attributes: attributes) { (fd) throws(ObjectStoreError) in
            for part in parts {
                let partPath = "\(directory)/part-\(part.number)"
                let partFD = open(partPath, O_RDONLY | O_CLOEXEC)
                guard partFD >= 0 else {
                    throw .invalidRequest("part \(part.number) was not uploaded to \(uploadID)")
                }
                defer { close(partFD) }
                guard readAttribute(Self.partETagAttributeName, fd: partFD) == Data(part.etag.utf8) else {
                    throw .invalidRequest("part \(part.number) of \(uploadID) does not have etag \(part.etag)")
                }
                try copyAll(from: partFD, to: fd, describing: partPath)
            }
        }
        // A failed condition leaves the upload in place, as S3 does: the caller may retry or abort.
        let info = try commit(temp, to: location, condition: condition)
        try? FileManager.default.removeItem(atPath: directory)
        return info
    }

    public func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        _ = try loadUpload(key, uploadID: uploadID)
        do {
            try FileManager.default.removeItem(atPath: uploadDirectory(uploadID))
        } catch {
            throw .other("abort multipart upload \(uploadID): \(error.localizedDescription)")
        }
    }

    public func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        guard let ids = try? FileManager.default.contentsOfDirectory(atPath: multipartDirectory) else { return [] }
        let uploads = ids.compactMap { id -> MultipartUploadInfo? in
            guard let record = readUploadRecord(id), record.key.hasKeyPrefix(prefix) else { return nil }
            return MultipartUploadInfo(key: record.key, uploadID: id, initiated: record.initiated)
        }
        return uploads.sorted(by: MultipartUploadInfo.listOrder)
    }

    // MARK: - Keys and paths

    /// Where a key lives: a file, or for a marker (`a/`) the directory itself.
    private struct Location {
        var key: String
        /// Relative to the root, without a trailing slash.
        var relativePath: String
        var path: String
        var isMarker: Bool
    }

    private func locate(_ key: String) throws(ObjectStoreError) -> Location {
        let isMarker = key.hasSuffix("/")
        let relative = isMarker ? String(key.dropLast()) : key
        if let reason = Self.problem(withPath: relative) { throw .invalidKey(key: key, reason: reason) }
        return Location(key: key, relativePath: relative, path: absolutePath(relative), isMarker: isMarker)
    }

    /// Why a relative path cannot name a file under the root, or nil when it can.
    private static func problem(withPath relative: String) -> String? {
        if relative.isEmpty { return "an empty key (or `/`) names no file" }
        if relative.utf8.contains(0) { return "contains a NUL byte" }
        let segments = relative.split(separator: "/", omittingEmptySubsequences: false)
        if segments.contains(where: \.isEmpty) { return "empty path segment (`//`, or a leading `/`)" }
        if segments.contains(where: { $0 == "." || $0 == ".." }) { return "`.` and `..` segments are not allowed" }
        if segments[0] == stateFolderName { return "\(stateFolderName)/ is reserved for the local backend's state" }
        return nil
    }

    private func absolutePath(_ relative: String) -> String {
        if relative.isEmpty { return root }
        return root == "/" ? "/\(relative)" : "\(root)/\(relative)"
    }

    private func uploadDirectory(_ uploadID: String) -> String {
        "\(multipartDirectory)/\(uploadID)"
    }

    // MARK: - Objects on disk

    private struct OpenObject {
        var fd: Int32
        var status: stat
    }

    /// Opens the file (or the marker's directory) read-only; nil when there is no such object.
    private func openObject(_ location: Location) throws(ObjectStoreError) -> OpenObject? {
        // O_NONBLOCK: opening a FIFO that sits where a file should be must not hang.
        let flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (location.isMarker ? O_DIRECTORY : 0)
        let fd = open(location.path, flags)
        if fd < 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
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

    /// The object's current info, or nil when absent.
    private func inspect(_ location: Location) throws(ObjectStoreError) -> ObjectInfo? {
        guard let object = try openObject(location) else { return nil }
        defer { close(object.fd) }
        return info(key: location.key, status: object.status, attributes: readAttributes(fd: object.fd),
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
        return ObjectInfo(key: key, size: size, lastModified: Date(timeIntervalSince1970: mtime), version: version,
                          contentType: withMetadata ? attributes?.contentType : nil,
                          metadata: withMetadata ? (attributes?.metadata ?? [:]) : nil)
    }

    /// A listing entry, with its metadata (read anyway for the version); nil if the entry vanished or changed kind since the directory was read.
    private func listEntry(key: String, directory: Bool) -> ObjectInfo? {
        let path = absolutePath(directory ? String(key.dropLast()) : key)
        guard let status = statusFollowingLinks(path),
              directory ? Self.isDirectory(status) : Self.isRegularFile(status) else { return nil }
        let attributes = Self.decodeAttributes(readAttribute(Self.attributeName, path: path))
        return info(key: key, status: status, attributes: attributes, withMetadata: true)
    }

    private func statusFollowingLinks(_ path: String) -> stat? {
        var status = stat()
        return stat(path, &status) == 0 ? status : nil
    }

    private static func isDirectory(_ status: stat) -> Bool { status.st_mode & S_IFMT == S_IFDIR }
    private static func isRegularFile(_ status: stat) -> Bool { status.st_mode & S_IFMT == S_IFREG }

    // MARK: - Listing

    private struct DirectoryEntry {
        var key: String
        var isDirectory: Bool
        /// What the entry contributes to key order: its key, plus `/` for a directory (its keys all start so).
        var sortKey: String { isDirectory ? key + "/" : key }
    }

    /// Feeds the directory's entries, and recursively their contents, to the builder in key order.
    /// Returns false once the page is full.
    private func walk(_ directory: String, into builder: inout ListPageBuilder) throws(ObjectStoreError) -> Bool {
        for entry in try readDirectory(directory) {
            guard entry.isDirectory else {
                guard builder.add(key: entry.key, info: { listEntry(key: entry.key, directory: false) }) else {
                    return false
                }
                continue
            }
            let markerKey = entry.key + "/"
            if markerKey.hasKeyPrefix(builder.prefix) {
                guard builder.add(key: markerKey, info: { listEntry(key: markerKey, directory: true) }) else {
                    return false
                }
                // With `/` as delimiter everything below rolls into the common prefix just added.
                if builder.delimiter == "/" { continue }
            } else if !builder.prefix.hasKeyPrefix(markerKey) {
                continue
            }
            if builder.skipsEverything(under: markerKey) { continue }
            guard try walk(entry.key, into: &builder) else { return false }
        }
        return true
    }

    /// Files and directories in `directory` (relative; "" for the root), sorted in key order. Skips the state folder,
    /// names that are not UTF-8, links to anything but files, and everything that is neither file nor directory.
    private func readDirectory(_ directory: String) throws(ObjectStoreError) -> [DirectoryEntry] {
        let path = absolutePath(directory)
        guard let stream = opendir(path) else {
            if errno == ENOENT || errno == ENOTDIR { return [] }
            throw failure("opendir", path, key: directory + "/")
        }
        defer { closedir(stream) }
        var entries: [DirectoryEntry] = []
        while let dirent = readdir(stream) {
            var rawName = dirent.pointee.d_name
            let type = dirent.pointee.d_type
            guard let name = withUnsafeBytes(of: &rawName, { bytes in
                String(validatingCString: bytes.baseAddress!.assumingMemoryBound(to: CChar.self))
            }) else { continue }
            if name == "." || name == ".." { continue }
            if directory.isEmpty && name == Self.stateFolderName { continue }
            let key = directory.isEmpty ? name : "\(directory)/\(name)"
            var isDirectory: Bool
            switch Int32(type) {
            case Int32(DT_REG): isDirectory = false
            case Int32(DT_DIR): isDirectory = true
            case Int32(DT_LNK), Int32(DT_UNKNOWN):
                var status = stat()
                guard lstat("\(path)/\(name)", &status) == 0 else { continue }
                if status.st_mode & S_IFMT == S_IFLNK {
                    // Follow links to files only.
                    guard let target = statusFollowingLinks("\(path)/\(name)"), Self.isRegularFile(target) else {
                        continue
                    }
                    isDirectory = false
                } else if Self.isRegularFile(status) || Self.isDirectory(status) {
                    isDirectory = Self.isDirectory(status)
                } else {
                    continue
                }
            default:
                continue
            }
            entries.append(DirectoryEntry(key: key, isDirectory: isDirectory))
        }
        return entries.sorted { $0.sortKey.precedesInKeyOrder($1.sortKey) }
    }

    // MARK: - Writing files

    /// Writes a new temp file (data through `fill`, then the attribute) and returns its path.
    private func stageTempFile(attributes: StoredAttributes,
                               fill: (Int32) throws(ObjectStoreError) -> Void) throws(ObjectStoreError) -> String {
        let temp = "\(tempDirectory)/\(UUID().uuidString.lowercased())"
        var fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        if fd < 0 && errno == ENOENT {
            // The state folder was removed behind our back: recreate it once.
            createStateDirectories()
            fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        }
        guard fd >= 0 else { throw failure("create", temp, key: temp) }
        do throws(ObjectStoreError) {
            defer { close(fd) }
            try fill(fd)
            try writeAttributes(attributes, fd: fd, key: temp)
        } catch {
            unlink(temp)
            throw error
        }
        return temp
    }

    /// Renames a staged temp file into place under the store lock, once the condition holds.
    private func commit(_ temp: String, to location: Location, condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
        do throws(ObjectStoreError) {
            return try withStoreLock { () throws(ObjectStoreError) -> ObjectInfo in
                try condition.check(key: location.key, currentVersion: try inspect(location)?.version)
                try createParents(of: location)
                if rename(temp, location.path) != 0 {
                    guard errno == EISDIR else { throw failure("rename", location.path, key: location.key) }
                    // A directory stands at the path. An empty one (a bare marker) gives way; one with content cannot.
                    guard rmdir(location.path) == 0 else {
                        throw .invalidKey(key: location.key, reason: "\(location.key)/ is a directory with content")
                    }
                    guard rename(temp, location.path) == 0 else {
                        throw failure("rename", location.path, key: location.key)
                    }
                }
                guard let info = try inspect(location) else { throw .notFound(key: location.key) }
                return info
            }
        } catch {
            unlink(temp)
            throw error
        }
    }

    /// Creates (or re-labels) the directory behind a marker key, under the store lock.
    private func writeMarker(_ location: Location, attributes: StoredAttributes,
                             condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
        try withStoreLock { () throws(ObjectStoreError) -> ObjectInfo in
            try condition.check(key: location.key, currentVersion: try inspect(location)?.version)
            try createParents(of: location)
            if mkdir(location.path, 0o777) != 0 && errno != EEXIST {
                throw failure("mkdir", location.path, key: location.key)
            }
            guard let directory = try openObject(location) else {
                throw .invalidKey(key: location.key, reason: "\(location.relativePath) is a file, not a directory")
            }
            defer { close(directory.fd) }
            try writeAttributes(attributes, fd: directory.fd, key: location.key)
            guard let info = try inspect(location) else { throw .notFound(key: location.key) }
            return info
        }
    }

    /// Copy onto itself: only the attribute changes (new write ID, hence new version), under the lock.
    private func rewriteMetadata(_ location: Location, metadata: ObjectMetadata,
                                 condition: PutCondition) throws(ObjectStoreError) -> ObjectInfo {
        try withStoreLock { () throws(ObjectStoreError) -> ObjectInfo in
            guard let object = try openObject(location) else { throw .notFound(key: location.key) }
            defer { close(object.fd) }
            let current = readAttributes(fd: object.fd)
            let version = info(key: location.key, status: object.status, attributes: current, withMetadata: false).version
            try condition.check(key: location.key, currentVersion: version)
            try writeAttributes(StoredAttributes(contentType: current?.contentType, metadata: metadata),
                                fd: object.fd, key: location.key)
            guard let info = try inspect(location) else { throw .notFound(key: location.key) }
            return info
        }
    }

    /// Creates the directories above the key's path; a file in the way makes the key invalid.
    private func createParents(of location: Location) throws(ObjectStoreError) {
        let segments = location.relativePath.split(separator: "/").dropLast()
        guard !segments.isEmpty else { return }
        if let status = statusFollowingLinks(absolutePath(segments.joined(separator: "/"))), Self.isDirectory(status) {
            return
        }
        var relative = ""
        for segment in segments {
            relative = relative.isEmpty ? String(segment) : "\(relative)/\(segment)"
            let path = absolutePath(relative)
            if mkdir(path, 0o777) == 0 { continue }
            guard errno == EEXIST else { throw failure("mkdir", path, key: location.key) }
            guard let status = statusFollowingLinks(path), Self.isDirectory(status) else {
                throw .invalidKey(key: location.key, reason: "\(relative) is a file, so it cannot contain other keys")
            }
        }
    }

    /// Serialises mutations across threads and processes sharing the root. Each call opens its own descriptor, so
    /// the `flock` excludes other threads of this process too; closing it releases the lock.
    private func withStoreLock<T>(_ body: () throws(ObjectStoreError) -> T) throws(ObjectStoreError) -> T {
        var fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o666)
        if fd < 0 && errno == ENOENT {
            createStateDirectories()
            fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o666)
        }
        guard fd >= 0 else { throw failure("open", lockPath, key: lockPath) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw failure("flock", lockPath, key: lockPath) }
        }
        return try body()
    }

    private func createStateDirectories() {
        for directory in [stateDirectory, tempDirectory, multipartDirectory] {
            _ = mkdir(directory, 0o777)
        }
    }

    // MARK: - Bytes

    private func write(_ body: PutBody, to fd: Int32) throws(ObjectStoreError) {
        switch body {
        case .data(let data):
            // withUnsafeBytes only rethrows untyped errors, hence the Result.
            try data.withUnsafeBytes { buffer -> Result<Void, ObjectStoreError> in
                guard let base = buffer.baseAddress else { return .success(()) }
                return Result { () throws(ObjectStoreError) in try writeAll(fd, base, buffer.count) }
            }.get()
        case .file(let path):
            let source = open(path, O_RDONLY | O_CLOEXEC)
            guard source >= 0 else {
                throw .invalidRequest("cannot read body file \(path): \(String(cString: strerror(errno)))")
            }
            defer { close(source) }
            try copyAll(from: source, to: fd, describing: path)
        }
    }

    private func copyAll(from input: Int32, to output: Int32, describing source: String) throws(ObjectStoreError) {
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(input, buffer, size)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw failure("read", source, key: source) }
            if n == 0 { return }
            try writeAll(output, buffer, n)
        }
    }

    private func writeAll(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) throws(ObjectStoreError) {
        var done = 0
        while done < count {
            let n = Glibc.write(fd, bytes + done, count - done)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw failure("write", tempDirectory, key: tempDirectory) }
            done += n
        }
    }

    private static func isEmpty(_ body: PutBody) throws(ObjectStoreError) -> Bool {
        switch body {
        case .data(let data):
            return data.isEmpty
        case .file(let path):
            var status = stat()
            guard stat(path, &status) == 0 else {
                throw .invalidRequest("cannot read body file \(path): \(String(cString: strerror(errno)))")
            }
            return status.st_size == 0
        }
    }

    // MARK: - Extended attributes

    /// What `user.bucketfs` holds. `writeID` is new on every write by this backend and feeds the version.
    private struct StoredAttributes: Codable {
        var contentType: String?
        var metadata: ObjectMetadata?
        var writeID: String?

        init(contentType: String?, metadata: ObjectMetadata) {
            self.contentType = contentType
            self.metadata = metadata
            self.writeID = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        }
    }

    private func readAttributes(fd: Int32) -> StoredAttributes? {
        Self.decodeAttributes(readAttribute(Self.attributeName, fd: fd))
    }

    /// Attributes written by someone else, or garbled, count as none.
    private static func decodeAttributes(_ data: Data?) -> StoredAttributes? {
        guard let data else { return nil }
        return try? JSONDecoder().decode(StoredAttributes.self, from: data)
    }

    private func writeAttributes(_ attributes: StoredAttributes, fd: Int32, key: String) throws(ObjectStoreError) {
        let data: Data
        do {
            data = try JSONEncoder().encode(attributes)
        } catch {
            throw .other("encode metadata of \(key): \(error)")
        }
        try setAttribute(Self.attributeName, data, fd: fd, key: key)
    }

    private func setAttribute(_ name: String, _ value: Data, fd: Int32, key: String) throws(ObjectStoreError) {
        let result = value.withUnsafeBytes { fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
        guard result != 0 else { return }
        switch errno {
        case ENOTSUP: throw unsupportedAttributes()
        case E2BIG: throw .invalidRequest("metadata of \(key) is too large for an extended attribute")
        default: throw failure("fsetxattr", key, key: key)
        }
    }

    private func readAttribute(_ name: String, fd: Int32) -> Data? {
        return Self.readAttribute { fgetxattr(fd, name, $0, $1) }
    }

    private func readAttribute(_ name: String, path: String) -> Data? {
        return Self.readAttribute { getxattr(path, name, $0, $1) }
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

    // MARK: - Multipart records

    private struct UploadRecord: Codable {
        var key: String
        var initiated: Date
        var contentType: String?
        var metadata: ObjectMetadata
    }

    private func readUploadRecord(_ uploadID: String) -> UploadRecord? {
        guard let data = FileManager.default.contents(atPath: "\(uploadDirectory(uploadID))/upload.json") else {
            return nil
        }
        return try? JSONDecoder().decode(UploadRecord.self, from: data)
    }

    /// The upload's record; `.notFound(key)` for an unknown ID or one that belongs to another key.
    private func loadUpload(_ key: String, uploadID: String) throws(ObjectStoreError) -> UploadRecord {
        guard !uploadID.isEmpty, !uploadID.contains("/"), uploadID != ".", uploadID != "..",
              let record = readUploadRecord(uploadID), record.key == key
        else { throw .notFound(key: key) }
        return record
    }

    // MARK: - Errors

    /// The one place errno becomes an `ObjectStoreError`.
    private func failure(_ operation: String, _ path: String, key: String, errno code: Int32 = errno) -> ObjectStoreError {
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
