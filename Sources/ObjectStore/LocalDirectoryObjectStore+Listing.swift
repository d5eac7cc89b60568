import Foundation
import Glibc

/// Listing the local backend: a walk of the directories the prefix needs, in key order, never through a link to a
/// directory.
extension LocalDirectoryObjectStore {
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
            guard Self.problem(withPath: startDirectory) == nil, let location = try? locate(startDirectory + "/"),
                let marker = try openObject(location)
            else { return builder.page }
            close(marker.fd)
            // The start directory is itself the marker `dir/`, listed when the prefix is exactly `dir/`.
            let markerKey = startDirectory + "/"
            guard builder.add(key: markerKey, info: { listEntry(key: markerKey) }) else {
                return builder.page
            }
        }
        _ = try walk(startDirectory, into: &builder)
        return builder.page
    }

    /// A listing entry, with its metadata (read anyway for the version); nil if the entry vanished or changed kind
    /// since the directory was read.
    private func listEntry(key: String) -> ObjectInfo? {
        guard let location = try? locate(key) else { return nil }
        return try? inspect(location)
    }

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
                guard builder.add(key: entry.key, info: { listEntry(key: entry.key) }) else {
                    return false
                }
                continue
            }
            let markerKey = entry.key + "/"
            if markerKey.hasKeyPrefix(builder.prefix) {
                guard builder.add(key: markerKey, info: { listEntry(key: markerKey) }) else {
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
    /// names that are not UTF-8, links to anything but files beneath the root, and everything that is neither file
    /// nor directory.
    private func readDirectory(_ directory: String) throws(ObjectStoreError) -> [DirectoryEntry] {
        let segments = LocalRoot.segments(of: directory)
        return try withRoot { (rootFD) throws(ObjectStoreError) -> [DirectoryEntry] in
            let fd = paths.openDirectory(segments, at: rootFD)
            if fd < 0 {
                if [ENOENT, ENOTDIR, ELOOP].contains(errno) { return [] }
                throw failure("opendir", absolutePath(directory), key: directory + "/")
            }
            guard let stream = fdopendir(fd) else {
                close(fd)
                throw failure("opendir", absolutePath(directory), key: directory + "/")
            }
            defer { closedir(stream) }
            var entries: [DirectoryEntry] = []
            while let dirent = readdir(stream) {
                var rawName = dirent.pointee.d_name
                let type = dirent.pointee.d_type
                guard
                    let name = withUnsafeBytes(
                        of: &rawName,
                        { bytes in
                            String(validatingCString: bytes.baseAddress!.assumingMemoryBound(to: CChar.self))
                        })
                else { continue }
                if name == "." || name == ".." { continue }
                if directory.isEmpty && name == Self.stateFolderName { continue }
                let key = directory.isEmpty ? name : "\(directory)/\(name)"
                var isDirectory: Bool
                switch Int32(type) {
                case Int32(DT_REG): isDirectory = false
                case Int32(DT_DIR): isDirectory = true
                case Int32(DT_LNK), Int32(DT_UNKNOWN):
                    var status = stat()
                    guard fstatat(fd, name, &status, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                    if status.st_mode & S_IFMT == S_IFLNK {
                        // Links to files beneath the root only.
                        let target = paths.openFile(
                            name, in: fd, parent: segments, root: rootFD,
                            flags: O_RDONLY | O_NONBLOCK, reserved: Self.stateFolderName)
                        guard target >= 0 else { continue }
                        defer { close(target) }
                        guard fstat(target, &status) == 0, Self.isRegularFile(status) else { continue }
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
    }
}
