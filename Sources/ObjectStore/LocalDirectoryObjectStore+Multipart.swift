import CLibc
import Foundation
import Glibc

/// Multipart uploads of the local backend, staged in `<root>/.bucketfs-local/multipart/<uploadID>/`: `upload.json`
/// plus one `part-<n>` file per part, every one opened beneath the state folder without following links, and
/// synced before it is acknowledged.
extension LocalDirectoryObjectStore {
    struct UploadRecord: Codable {
        var key: String
        var initiated: Date
        var contentType: String?
        var metadata: ObjectMetadata
    }

    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        let location = try locate(key)
        guard !location.isMarker else {
            throw .invalidKey(key: key, reason: "a directory marker cannot be uploaded in parts")
        }
        let uploadID = UUID().uuidString.lowercased()
        let uploads = try openStateDirectory("multipart")
        defer { close(uploads) }
        guard mkdirat(uploads, uploadID, 0o777) == 0 else { throw failure("mkdir", uploadID, key: key) }
        let record = UploadRecord(
            key: key, initiated: Date(), contentType: options.contentType,
            metadata: options.metadata)
        do throws(ObjectStoreError) {
            let directory = openat(uploads, uploadID, LocalRoot.directoryFlags)
            guard directory >= 0 else { throw failure("open", uploadID, key: key) }
            defer { close(directory) }
            let data: Data
            do { data = try JSONEncoder().encode(record) } catch { throw .other("encode upload record: \(error)") }
            try writeFile("upload.json", in: directory, key: key) { (fd) throws(ObjectStoreError) in
                try write(.data(data), to: fd)
            }
            try sync(uploads, "multipart folder")
        } catch {
            removeUploadDirectory(uploadID, in: uploads)
            throw error
        }
        return uploadID
    }

    /// The ETag is a random token per part write (not a content hash); `complete` checks it so that a part
    /// re-uploaded meanwhile is not silently mixed in.
    public func uploadPart(_ key: String, uploadID: String, number: Int, body: PutBody, crc32c: UInt32?)
        throws(ObjectStoreError) -> String
    {
        guard (1...10_000).contains(number) else {
            throw .invalidRequest("part number \(number) is outside 1...10000")
        }
        try checkPartChecksum(crc32c, of: body, key: key)
        let directory = try openUpload(key, uploadID: uploadID).directory
        defer { close(directory) }
        let etag = UUID().uuidString.lowercased()
        try writeFile("part-\(number)", in: directory, key: key) { (fd) throws(ObjectStoreError) in
            try write(body, to: fd)
            try setAttribute(Self.partETagAttributeName, Data(etag.utf8), fd: fd, key: key)
        }
        return etag
    }

    @discardableResult
    public func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        let (directory, record) = try openUpload(key, uploadID: uploadID)
        defer { close(directory) }
        try validatePartList(parts)
        let location = try locate(key)
        let attributes = StoredAttributes(contentType: record.contentType, metadata: record.metadata)
        let temp = try stageTempFile(attributes: attributes) { (fd) throws(ObjectStoreError) in
            for part in parts {
                let partFD = openat(directory, "part-\(part.number)", O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                guard partFD >= 0 else {
                    throw .invalidRequest("part \(part.number) was not uploaded to \(uploadID)")
                }
                defer { close(partFD) }
                guard readAttribute(Self.partETagAttributeName, fd: partFD) == Data(part.etag.utf8) else {
                    throw .invalidRequest("part \(part.number) of \(uploadID) does not have etag \(part.etag)")
                }
                try copyAll(from: partFD, to: fd, describing: "part \(part.number) of \(uploadID)")
            }
        }
        // A failed condition leaves the upload in place, as S3 does: the caller may retry or abort.
        let info = try commit(temp, to: location, condition: condition)
        if let uploads = try? openStateDirectory("multipart") {
            removeUploadDirectory(uploadID, in: uploads)
            close(uploads)
        }
        return info
    }

    public func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        close(try openUpload(key, uploadID: uploadID).directory)
        let uploads = try openStateDirectory("multipart")
        defer { close(uploads) }
        guard removeUploadDirectory(uploadID, in: uploads) else {
            throw failure("remove", "multipart upload \(uploadID)", key: key)
        }
    }

    public func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        guard let uploads = try? openStateDirectory("multipart") else { return [] }
        defer { close(uploads) }
        let uploadsList = Self.names(in: uploads).compactMap { id -> MultipartUploadInfo? in
            guard let record = readUploadRecord(id, in: uploads), record.key.hasKeyPrefix(prefix) else { return nil }
            return MultipartUploadInfo(key: record.key, uploadID: id, initiated: record.initiated)
        }
        return uploadsList.sorted(by: MultipartUploadInfo.listOrder)
    }

    // MARK: - Upload folders

    /// Writes `name` in `directory` through a temp name, synced, renamed in, and the directory synced.
    private func writeFile(
        _ name: String, in directory: Int32, key: String,
        fill: (Int32) throws(ObjectStoreError) -> Void
    ) throws(ObjectStoreError) {
        let temp = "\(name).tmp-\(UUID().uuidString.lowercased())"
        let fd = openat(directory, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw errno == ENOENT ? .notFound(key: key) : failure("create", temp, key: key) }
        do throws(ObjectStoreError) {
            defer { close(fd) }
            try fill(fd)
            try sync(fd, temp)
            guard renameat(directory, temp, directory, name) == 0 else { throw failure("rename", name, key: key) }
            paths.noteRename(name)
            try sync(directory, "upload folder")
        } catch {
            unlinkat(directory, temp, 0)
            throw error
        }
    }

    private func readUploadRecord(_ uploadID: String, in uploads: Int32) -> UploadRecord? {
        let directory = openat(uploads, uploadID, LocalRoot.directoryFlags)
        guard directory >= 0 else { return nil }
        defer { close(directory) }
        return readUploadRecord(in: directory)
    }

    private func readUploadRecord(in directory: Int32) -> UploadRecord? {
        let fd = openat(directory, "upload.json", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        guard let data = try? handle.readToEnd() else { return nil }
        return try? JSONDecoder().decode(UploadRecord.self, from: data)
    }

    /// The upload's folder (open) and record; `.notFound(key)` for an unknown ID or one that belongs to another key.
    private func openUpload(_ key: String, uploadID: String) throws(ObjectStoreError) -> (
        directory: Int32,
        record: UploadRecord
    ) {
        guard !uploadID.isEmpty, !uploadID.contains("/"), uploadID != ".", uploadID != ".." else {
            throw .notFound(key: key)
        }
        let uploads = try openStateDirectory("multipart")
        defer { close(uploads) }
        let directory = openat(uploads, uploadID, LocalRoot.directoryFlags)
        guard directory >= 0 else { throw .notFound(key: key) }
        guard let record = readUploadRecord(in: directory), record.key == key else {
            close(directory)
            throw .notFound(key: key)
        }
        return (directory, record)
    }

    /// Removes the folder and the files in it (there are no subfolders); false with errno on failure.
    @discardableResult
    private func removeUploadDirectory(_ uploadID: String, in uploads: Int32) -> Bool {
        let directory = openat(uploads, uploadID, LocalRoot.directoryFlags)
        if directory >= 0 {
            for name in Self.names(in: directory) { unlinkat(directory, name, 0) }
            close(directory)
        }
        guard unlinkat(uploads, uploadID, AT_REMOVEDIR) == 0 || errno == ENOENT else { return false }
        return paths.sync(uploads, "multipart folder")
    }

    /// The entries of an open directory (but `.` and `..`); `directory` stays open.
    private static func names(in directory: Int32) -> [String] {
        let copy = openat(directory, ".", LocalRoot.directoryFlags)
        guard copy >= 0, let stream = fdopendir(copy) else { return [] }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            var rawName = entry.pointee.d_name
            let name = withUnsafeBytes(of: &rawName) { bytes in
                String(cString: bytes.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
