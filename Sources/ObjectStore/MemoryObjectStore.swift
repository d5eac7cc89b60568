import Foundation
import Synchronization

/// An object store held in process memory (`memory://name`), for tests and throwaway mounts.
///
/// All state sits behind one mutex, so every conditional write is checked and applied atomically.
/// Versions come from a counter that grows on every write (put, copy, completed upload). Keys are compared byte for
/// byte, as S3 does (`Key`).
public final class MemoryObjectStore: ObjectStore {
    public let name: String
    public var description: String { "memory://\(name)" }
    public var supportsConditionalWrites: Bool { true }
    public var prefersStreamingReads: Bool { true }

    /// A key as a dictionary key, byte for byte: `String` equality is canonical equivalence, so `caf\u{e9}` and
    /// `cafe\u{301}` were one object here, where a bucket holds two.
    private struct Key: Hashable {
        let string: String
        init(_ string: String) { self.string = string }
        static func == (a: Key, b: Key) -> Bool { a.string.utf8.elementsEqual(b.string.utf8) }
        func hash(into hasher: inout Hasher) {
            let hashed = string.utf8.withContiguousStorageIfAvailable {
                hasher.combine(bytes: UnsafeRawBufferPointer($0))
            }
            if hashed == nil { Array(string.utf8).withUnsafeBytes { hasher.combine(bytes: $0) } }
        }
    }

    private struct StoredObject {
        var info: ObjectInfo
        var body: Data
    }

    private struct Part {
        var etag: String
        var body: Data
        var crc32c: UInt32?
    }

    private struct Upload {
        var key: String
        var initiated: Date
        var contentType: String?
        var metadata: ObjectMetadata
        /// Created with `PutOptions.partChecksums`: the completion must give each part's CRC32C, as SeaweedFS wants.
        var partChecksums = false
        var parts: [Int: Part] = [:]
    }

    private struct State {
        var objects: [Key: StoredObject] = [:]
        var uploads: [String: Upload] = [:]
        var counter: UInt64 = 0

        mutating func nextVersion() -> String {
            counter += 1
            return String(counter)
        }
    }

    private let state = Mutex(State())

    /// Stores created through `shared(named:)`, so that two users of `memory://name` in one process see the same data.
    private static let registry = Mutex<[String: MemoryObjectStore]>([:])

    /// A new, empty store that nobody else shares.
    public init(name: String = "") {
        self.name = name
    }

    /// The process-wide store for `memory://name`, created on first use.
    public static func shared(named name: String) -> MemoryObjectStore {
        registry.withLock { stores in
            if let store = stores[name] { return store }
            let store = MemoryObjectStore(name: name)
            stores[name] = store
            return store
        }
    }

    // MARK: Reading

    public func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo {
        try state.withLock { (state) throws(ObjectStoreError) -> ObjectInfo in
            guard let object = state.objects[Key(key)] else { throw .notFound(key: key) }
            return object.info
        }
    }

    public func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        let object = try state.withLock { (state) throws(ObjectStoreError) -> StoredObject in
            guard let object = state.objects[Key(key)] else { throw .notFound(key: key) }
            return object
        }
        guard let range else { return ObjectData(info: object.info, body: object.body) }
        // Clamped like an HTTP range; a range starting at or past the end gives an empty body.
        let size = UInt64(object.body.count)
        let lower = Int(min(range.lowerBound, size))
        let upper = Int(min(range.upperBound, size))
        let start = object.body.startIndex
        return ObjectData(info: object.info, body: Data(object.body[(start + lower)..<(start + upper)]))
    }

    public func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage {
        let infos = state.withLock { state in
            state.objects.values.compactMap { object in
                object.info.key.hasKeyPrefix(request.prefix) ? object.info : nil
            }
        }
        var builder = ListPageBuilder(request)
        for info in infos.sorted(by: { $0.key.precedesInKeyOrder($1.key) }) {
            var entry = info
            entry.contentType = nil
            entry.metadata = nil
            guard builder.add(key: info.key, info: { entry }) else { break }
        }
        return builder.page
    }

    // MARK: Writing

    @discardableResult
    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        try Self.validate(key)
        let data = try Self.read(body)
        return try state.withLock { (state) throws(ObjectStoreError) -> ObjectInfo in
            try options.condition.check(key: key, currentVersion: state.objects[Key(key)]?.info.version)
            return Self.store(data, at: key, contentType: options.contentType, metadata: options.metadata, in: &state)
        }
    }

    public func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        try state.withLock { (state) throws(ObjectStoreError) in
            if case .ifVersionMatches(let version) = condition {
                guard let current = state.objects[Key(key)] else { throw .notFound(key: key) }
                guard current.info.version == version else { throw .preconditionFailed(key: key) }
            }
            state.objects[Key(key)] = nil
        }
    }

    @discardableResult
    public func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try Self.validate(destination)
        if source.utf8.elementsEqual(destination.utf8) && metadata == nil {
            // As S3: a copy onto itself must change something.
            throw .invalidRequest("copying \(source) onto itself requires new metadata")
        }
        return try state.withLock { (state) throws(ObjectStoreError) -> ObjectInfo in
            guard let original = state.objects[Key(source)] else { throw .notFound(key: source) }
            try condition.check(key: destination, currentVersion: state.objects[Key(destination)]?.info.version)
            return Self.store(
                original.body, at: destination, contentType: original.info.contentType,
                metadata: metadata ?? original.info.metadata ?? [:], in: &state)
        }
    }

    // MARK: Multipart uploads

    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        try Self.validate(key)
        let uploadID = UUID().uuidString.lowercased()
        let upload = Upload(
            key: key, initiated: Date(), contentType: options.contentType, metadata: options.metadata,
            partChecksums: options.partChecksums)
        state.withLock { $0.uploads[uploadID] = upload }
        return uploadID
    }

    public func uploadPart(_ key: String, uploadID: String, number: Int, body: PutBody, crc32c: UInt32?)
        throws(ObjectStoreError) -> String
    {
        guard (1...10_000).contains(number) else {
            throw .invalidRequest("part number \(number) is outside 1...10000")
        }
        let data = try Self.read(body)
        try checkPartChecksum(crc32c, of: .data(data), key: key)
        return try state.withLock { (state) throws(ObjectStoreError) -> String in
            guard state.uploads[uploadID]?.key.utf8.elementsEqual(key.utf8) == true else { throw .notFound(key: key) }
            let etag = "part-\(number)-\(state.nextVersion())"
            state.uploads[uploadID]?.parts[number] = Part(etag: etag, body: data, crc32c: crc32c)
            return etag
        }
    }

    @discardableResult
    public func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try validatePartList(parts)
        return try state.withLock { (state) throws(ObjectStoreError) -> ObjectInfo in
            guard let upload = state.uploads[uploadID], upload.key.utf8.elementsEqual(key.utf8) else {
                throw .notFound(key: key)
            }
            var body = Data()
            for part in parts {
                guard let stored = upload.parts[part.number], stored.etag == part.etag else {
                    throw .invalidRequest("part \(part.number) with etag \(part.etag) was not uploaded to \(uploadID)")
                }
                if upload.partChecksums {
                    guard let crc = part.crc32c else { throw .invalidRequest("part \(part.number) has no checksum") }
                    guard crc == stored.crc32c ?? CRC32C.checksum(stored.body) else {
                        throw .invalidRequest("BadDigest: part \(part.number)'s checksum does not match")
                    }
                }
                body.append(stored.body)
            }
            // A failed condition leaves the upload in place, as S3 does: the caller may retry or abort.
            try condition.check(key: key, currentVersion: state.objects[Key(key)]?.info.version)
            state.uploads[uploadID] = nil
            return Self.store(body, at: key, contentType: upload.contentType, metadata: upload.metadata, in: &state)
        }
    }

    public func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        try state.withLock { (state) throws(ObjectStoreError) in
            guard state.uploads[uploadID]?.key.utf8.elementsEqual(key.utf8) == true else { throw .notFound(key: key) }
            state.uploads[uploadID] = nil
        }
    }

    public func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        let uploads = state.withLock { state in
            state.uploads.compactMap { id, upload in
                upload.key.hasKeyPrefix(prefix)
                    ? MultipartUploadInfo(key: upload.key, uploadID: id, initiated: upload.initiated) : nil
            }
        }
        return uploads.sorted(by: MultipartUploadInfo.listOrder)
    }

    // MARK: Helpers

    private static func validate(_ key: String) throws(ObjectStoreError) {
        guard !key.isEmpty else { throw .invalidKey(key: key, reason: "empty key") }
    }

    private static func read(_ body: PutBody) throws(ObjectStoreError) -> Data {
        switch body {
        case .data(let data):
            return data
        case .file(let path):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw .invalidRequest("cannot read body file \(path)")
            }
            return data
        case .fileRange(let path, let offset, let length):
            return try PutBody.read(path: path, offset: offset, length: length)
        }
    }

    private static func store(
        _ body: Data, at key: String, contentType: String?, metadata: ObjectMetadata,
        in state: inout State
    ) -> ObjectInfo {
        let info = ObjectInfo(
            key: key, size: UInt64(body.count), lastModified: Date(), version: state.nextVersion(),
            contentType: contentType, metadata: metadata)
        state.objects[Key(key)] = StoredObject(info: info, body: body)
        return info
    }
}
