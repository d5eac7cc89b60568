import Foundation

/// The protocol's multipart uploads on GCS, which has none: each part is stored as a temporary object and the
/// parts are composed into the destination on completion.
///
/// Why compose rather than one resumable session: the protocol uploads parts in parallel and in any order
/// (the FileSystem streams a large file with several parts in flight), while a resumable session takes its bytes
/// strictly in order, one request at a time. Composing is server-side (no bytes copied through us), accepts parts
/// of any size, and takes `ifGenerationMatch` on the destination, so completion is conditional as on S3.
///
/// Layout under `uploadsPrefix` (default `.bucketfs/multipart/`, the reserved namespace of the lock objects):
/// `<id>` is the manifest — an empty object whose metadata names the destination key, content type, user metadata
/// and start time — and `<id>/<number>` the parts (5 digits). A part's ETag is its generation. GCS composes at
/// most 32 sources at once, so more parts are composed in rounds through intermediate objects `<id>/c<round>-<n>`.
/// Completion and abort delete the temporary objects; an upload left behind by a crash shows in
/// `listMultipartUploads` and can be aborted.
extension GCSObjectStore {
    private static let manifestKey = "bucketfs-upload-key"
    private static let manifestContentType = "bucketfs-upload-content-type"
    private static let manifestMetadata = "bucketfs-upload-metadata"
    private static let composeLimit = 32

    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        try checkKey(key)
        let uploadID = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let userMetadata = String(decoding: try GCSJSON.encode(options.metadata), as: UTF8.self)
        let manifest = [
            Self.manifestKey: key,
            Self.manifestContentType: options.contentType ?? "application/octet-stream",
            Self.manifestMetadata: userMetadata,
        ]
        _ = try multipartUpload(
            uploadsPrefix + uploadID, data: Data(),
            options: PutOptions(
                contentType: "application/x-bucketfs-upload", metadata: manifest,
                condition: .ifAbsent))
        openUploads.withLock { _ = $0.insert(uploadID) }
        return uploadID
    }

    public func uploadPart(
        _ key: String, uploadID: String, number: Int,
        body: PutBody, crc32c: UInt32?
    ) throws(ObjectStoreError) -> String {
        // `crc32c` is not sent: a part is an object PUT whose body GCS's JSON API takes signed by TLS (https).
        try checkKey(key)
        guard (1...10_000).contains(number) else { throw .invalidRequest("part number \(number) is not in 1...10000") }
        if !openUploads.withLock({ $0.contains(uploadID) }) { _ = try manifest(key, uploadID: uploadID) }
        let part = try put(partKey(uploadID, number), body: body, options: PutOptions())
        return part.version
    }

    @discardableResult
    public func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try checkKey(key)
        try validatePartList(parts)
        let manifest = try manifest(key, uploadID: uploadID)
        let stored = try listAll(prefix: uploadsPrefix + uploadID + "/").objects
        var generations: [String: String] = [:]
        for object in stored { generations[object.key] = object.version }
        var sources: [(name: String, generation: String)] = []
        for part in parts {
            let name = partKey(uploadID, part.number)
            guard let generation = generations[name] else {
                throw .invalidRequest("part \(part.number) was never uploaded")
            }
            guard generation == part.etag else {
                throw .invalidRequest("part \(part.number): ETag \(part.etag) does not match the uploaded part")
            }
            sources.append((name, generation))
        }
        if emulator { try checkConditionByReading(condition, key: key, current: nil) }

        // Rounds of at most 32 sources until one compose makes the destination.
        var round = 0
        while sources.count > Self.composeLimit {
            round += 1
            var next: [(name: String, generation: String)] = []
            for (index, start) in stride(from: 0, to: sources.count, by: Self.composeLimit).enumerated() {
                let group = Array(sources[start..<min(start + Self.composeLimit, sources.count)])
                let name = uploadsPrefix + uploadID + "/c\(round)-\(index)"
                let info = try compose(
                    group, into: name, contentType: "application/octet-stream", metadata: [:],
                    condition: .none)
                next.append((name, info.version))
            }
            sources = next
        }
        let info = try compose(
            sources, into: key, contentType: manifest.contentType, metadata: manifest.metadata,
            condition: condition)
        openUploads.withLock { _ = $0.remove(uploadID) }
        // The object is complete: failing to tidy up must not turn that into an error (the caller would upload again).
        try? deleteUploadObjects(uploadID)
        return info
    }

    public func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        try checkKey(key)
        _ = try manifest(key, uploadID: uploadID)
        openUploads.withLock { _ = $0.remove(uploadID) }
        try deleteUploadObjects(uploadID)
    }

    public func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        guard !uploadsPrefix.isEmpty else { return [] }
        let manifests = try listAll(prefix: uploadsPrefix, delimiter: "/").objects
        var uploads: [MultipartUploadInfo] = []
        for object in manifests {
            var metadata = object.metadata ?? [:]
            if object.metadata == nil { metadata = try head(object.key).metadata ?? [:] }
            guard let key = metadata[Self.manifestKey], key.hasPrefix(prefix) else { continue }
            uploads.append(
                MultipartUploadInfo(
                    key: key, uploadID: String(object.key.dropFirst(uploadsPrefix.count)),
                    initiated: object.lastModified))
        }
        return uploads.sorted { ($0.key, $0.uploadID) < ($1.key, $1.uploadID) }
    }

    // MARK: Pieces

    private struct Manifest {
        var contentType: String
        var metadata: ObjectMetadata
    }

    /// The upload's manifest; `.notFound(key)` when the upload does not exist (or is for another key).
    private func manifest(_ key: String, uploadID: String) throws(ObjectStoreError) -> Manifest {
        let valid =
            uploadID.count == 32
            && uploadID.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
        guard valid else { throw .notFound(key: key) }
        let info: ObjectInfo
        do { info = try head(uploadsPrefix + uploadID) } catch {
            if case .notFound = error { throw .notFound(key: key) }
            throw error
        }
        let metadata = info.metadata ?? [:]
        guard metadata[Self.manifestKey] == key else { throw .notFound(key: key) }
        let user = metadata[Self.manifestMetadata].flatMap { GCSJSON.object(Data($0.utf8)) } ?? [:]
        return Manifest(
            contentType: metadata[Self.manifestContentType] ?? "application/octet-stream",
            metadata: user.compactMapValues { $0 as? String })
    }

    private func partKey(_ uploadID: String, _ number: Int) -> String {
        let digits = String(number)
        return uploadsPrefix + uploadID + "/" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits
    }

    /// One compose request; each source pinned to its generation, the destination under `condition`.
    private func compose(
        _ sources: [(name: String, generation: String)], into destination: String, contentType: String,
        metadata: ObjectMetadata, condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        var resource: [String: Any] = ["contentType": contentType]
        if !metadata.isEmpty { resource["metadata"] = metadata }
        let body = try GCSJSON.encode([
            "kind": "storage#composeRequest",
            "sourceObjects": sources.map { ["name": $0.name, "generation": $0.generation] },
            "destination": resource,
        ])
        let query = try conditionQuery(condition, key: destination)
        let response = try send(
            Request(
                method: "POST", path: objectPath(destination) + "/compose", query: query,
                headers: [("content-type", "application/json")], body: .data(body))
        ).response
        guard response.status == 200, let document = GCSJSON.object(response.body),
            let info = GCSJSON.objectInfo(document)
        else {
            if response.status == 404 { throw .invalidRequest("a part of the upload disappeared before completion") }
            throw try conditionError(response, key: destination, condition: condition)
        }
        return info
    }

    /// Parts and intermediates first, the manifest last (so an interrupted clean-up stays listed and abortable).
    private func deleteUploadObjects(_ uploadID: String) throws(ObjectStoreError) {
        for object in try listAll(prefix: uploadsPrefix + uploadID + "/").objects {
            try delete(object.key, condition: .none)
        }
        try delete(uploadsPrefix + uploadID, condition: .none)
    }
}
