import Foundation

/// The contract every backend (local directory, memory, S3, GCS) fulfils.
///
/// Calls are synchronous and may block on I/O: callers run them on libfuse worker threads or threads of
/// their own, never on Swift's cooperative pool. Every failure is an `ObjectStoreError`.
public protocol ObjectStore: Sendable {
    /// A short description for logs and `config print`, e.g. `file:///srv/data/`.
    var description: String { get }
    /// Whether `PutCondition` / `DeleteCondition` are honoured atomically by the store.
    var supportsConditionalWrites: Bool { get }
    /// Whether a reader going through an object from its start is best served by one `getStreaming` call (S3: a
    /// single request at the store's full single-stream rate) rather than by parallel ranged GETs.
    var prefersStreamingReads: Bool { get }

    /// Checks that the store answers (the bucket exists, the credentials are accepted, the endpoint is reachable,
    /// the directory is there), so that a command can report it in one line before doing anything. Cheap: one
    /// request at most. The default (memory) has nothing to check.
    func validate() throws(ObjectStoreError)

    func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo
    /// The whole object, or `range` of it (clamped to the object's size, as HTTP ranges are).
    func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData
    /// One page of a listing; follow `nextContinuationToken` for the rest.
    func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage
    @discardableResult
    func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo
    func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError)
    /// Server-side copy. `metadata == nil` keeps the source's metadata; otherwise it is replaced. The content type
    /// is always the source's. Copying a key onto itself needs new metadata (S3 refuses it otherwise).
    @discardableResult
    func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo
    /// `copy` of a source the caller knows (its key, version, size, content type and metadata, as a HEAD, a LIST or
    /// its own upload told it): a backend that would ask for them first (S3) skips that request and pins the copy to
    /// that version where the server honours it. The default is the plain `copy` of `source.key`.
    @discardableResult
    func copy(
        from source: ObjectInfo, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo

    func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String
    /// Uploads part `number` (1-based). Returns the part's ETag, needed to complete. `crc32c`, the CRC-32C of the
    /// body, is checked by the store where it can (S3 servers that check it, memory, local directory): a part
    /// whose bytes do not match fails with `.invalidRequest` (S3 BadDigest), and is stored nowhere.
    func uploadPart(_ key: String, uploadID: String, number: Int, body: PutBody, crc32c: UInt32?)
        throws(ObjectStoreError) -> String
    /// Uploads part `number` as `range` of the object `source`, which must still be at `sourceVersion` (if given:
    /// `.preconditionFailed` otherwise). S3 copies on the server (UploadPartCopy); the default reads the range and
    /// uploads it with its CRC-32C. Returns the part as the completion lists it: its ETag and its CRC-32C where the
    /// store gives one (an S3 server computes it for an upload created with `PutOptions.partChecksums`: SeaweedFS
    /// and AWS do, and then refuse a completion that leaves it out; moto gives none and checks none).
    func uploadPartCopy(
        _ key: String, uploadID: String, number: Int, source: String, range: Range<UInt64>,
        sourceVersion: String?
    ) throws(ObjectStoreError) -> CompletedPart
    /// Hands `range` of `key` to `consumer` in the pieces it arrives in, for as long as `consumer` returns true;
    /// blocks until the range is done or `consumer` stops it. The object must be at `version`, if given
    /// (`.preconditionFailed` otherwise). S3 sends one streaming GET (resumed where it broke off); the default
    /// reads 8 MiB ranges one after another.
    func getStreaming(
        _ key: String, range: Range<UInt64>, version: String?,
        consumer: @escaping (UnsafeRawBufferPointer) -> Bool) throws(ObjectStoreError)
    /// Completes with the listed parts, in order, checking `condition` atomically at completion
    /// (`PutOptions.condition` given to `createMultipartUpload` is not used).
    @discardableResult
    func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo
    func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError)
    func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo]
    /// Deletes every key, unconditionally; a missing key counts as deleted. One result per key, in order: a failure
    /// of one key (or of a whole request) fails those keys only. S3 sends DeleteObjects, 1,000 keys a request; GCS
    /// deletes in parallel; the default deletes one after another, in the order given.
    func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>]
}

extension ObjectStore {
    @discardableResult
    public func copy(
        from source: ObjectInfo, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try copy(from: source.key, to: destination, metadata: metadata, condition: condition)
    }

    public var prefersStreamingReads: Bool { false }

    public func validate() throws(ObjectStoreError) {}

    public func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>] { deleteEach(keys) }

    public func uploadPartCopy(
        _ key: String, uploadID: String, number: Int, source: String, range: Range<UInt64>,
        sourceVersion: String?
    ) throws(ObjectStoreError) -> CompletedPart {
        try uploadPartCopyByReading(
            key, uploadID: uploadID, number: number, source: source, range: range,
            sourceVersion: sourceVersion)
    }

    public func getStreaming(
        _ key: String, range: Range<UInt64>, version: String?,
        consumer: @escaping (UnsafeRawBufferPointer) -> Bool
    ) throws(ObjectStoreError) {
        try getStreamingByRanges(key, range: range, version: version, consumer: consumer)
    }

    /// The default `deleteObjects`: one `delete` a key, in the order given.
    public func deleteEach(_ keys: [String]) -> [Result<Void, ObjectStoreError>] {
        keys.map { key in
            do throws(ObjectStoreError) {
                try delete(key, condition: .none)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
    }

    /// A part without a checksum.
    public func uploadPart(_ key: String, uploadID: String, number: Int, body: PutBody) throws(ObjectStoreError)
        -> String
    {
        try uploadPart(key, uploadID: uploadID, number: number, body: body, crc32c: nil)
    }

    /// Fails as S3's BadDigest does unless `crc32c` (if given) is the CRC-32C of `body`; for stores that check it
    /// themselves (memory, local directory).
    public func checkPartChecksum(_ crc32c: UInt32?, of body: PutBody, key: String) throws(ObjectStoreError) {
        guard let crc32c else { return }
        let actual = try CRC32C.checksum(of: body)
        guard actual == crc32c else {
            throw .invalidRequest(
                "BadDigest: part of \(key) has CRC32C \(CRC32C.base64(actual)), not \(CRC32C.base64(crc32c))")
        }
    }

    /// The default `uploadPartCopy`, a client-side UploadPartCopy: GET of the range (checked against
    /// `sourceVersion`), then UploadPart with the
    /// range's CRC-32C.
    public func uploadPartCopyByReading(
        _ key: String, uploadID: String, number: Int, source: String,
        range: Range<UInt64>,
        sourceVersion: String?
    ) throws(ObjectStoreError) -> CompletedPart {
        let data = try get(source, range: range)
        if let sourceVersion, data.info.version != sourceVersion { throw .preconditionFailed(key: source) }
        guard data.body.count == range.count else {
            throw .invalidRequest("\(source) has no bytes \(range.lowerBound)..<\(range.upperBound)")
        }
        let crc = CRC32C.checksum(data.body)
        let etag = try uploadPart(key, uploadID: uploadID, number: number, body: .data(data.body), crc32c: crc)
        return CompletedPart(number: number, etag: etag, crc32c: crc)
    }

    /// The default `getStreaming`: ranged GETs of 8 MiB, one after another.
    public func getStreamingByRanges(
        _ key: String, range: Range<UInt64>, version: String?,
        consumer: (UnsafeRawBufferPointer) -> Bool
    ) throws(ObjectStoreError) {
        var offset = range.lowerBound
        while offset < range.upperBound {
            let piece = try get(key, range: offset..<min(range.upperBound, offset + (8 << 20)))
            if let version, piece.info.version != version { throw .preconditionFailed(key: key) }
            if piece.body.isEmpty { return }
            guard piece.body.withUnsafeBytes({ consumer($0) }) else { return }
            offset += UInt64(piece.body.count)
        }
    }

    public func get(_ key: String) throws(ObjectStoreError) -> ObjectData {
        try get(key, range: nil)
    }

    /// A condition checked by reading, for servers that ignore it (moto on CopyObject, fake-gcs-server on most
    /// calls): compare with the current object. `current` saves the read when the caller has it. Not atomic: another
    /// writer can slip in between this read and the write; the condition is still sent, so a server that honours it
    /// closes that window.
    func checkConditionByReading(
        _ condition: PutCondition, key: String,
        current: ObjectInfo?
    ) throws(ObjectStoreError) {
        switch condition {
        case .none:
            return
        case .ifAbsent:
            if current != nil { throw .preconditionFailed(key: key) }
            if try exists(key) { throw .preconditionFailed(key: key) }
        case .ifVersionMatches(let version):
            let info: ObjectInfo
            if let current { info = current } else { info = try head(key) }
            guard info.version == version else { throw .preconditionFailed(key: key) }
        }
    }

    /// Whether `key` is there: a `head` that is `.notFound` says no; other failures are thrown.
    func exists(_ key: String) throws(ObjectStoreError) -> Bool {
        do {
            _ = try head(key)
            return true
        } catch {
            if case .notFound = error { return false }
            throw error
        }
    }

    @discardableResult
    public func put(
        _ key: String, data: Data,
        options: PutOptions = PutOptions()
    ) throws(ObjectStoreError) -> ObjectInfo {
        try put(key, body: .data(data), options: options)
    }

    public func delete(_ key: String) throws(ObjectStoreError) {
        try delete(key, condition: .none)
    }

    /// Every object and common prefix under `prefix`, following continuation tokens.
    /// A store that hands back a continuation token it gave before would have us list forever: that is an error
    /// (the listing fails, the caller gets EIO), as is a listing beyond `maxListPages` pages.
    public func listAll(prefix: String, delimiter: String? = nil) throws(ObjectStoreError) -> ListPage {
        var all = ListPage()
        var token: String? = nil
        var seen = Set<String>()
        repeat {
            let page = try list(ListRequest(prefix: prefix, delimiter: delimiter, continuationToken: token))
            all.objects += page.objects
            all.commonPrefixes += page.commonPrefixes
            token = page.nextContinuationToken
            if let token {
                guard seen.insert(token).inserted else {
                    throw .other(
                        "malformed LIST reply for prefix \"\(prefix)\": the store repeated a continuation "
                            + "token after \(seen.count) pages; listing stopped")
                }
                guard seen.count < maxListPages else {
                    throw .other("LIST of prefix \"\(prefix)\" exceeded \(maxListPages) pages; listing stopped")
                }
            }
        } while token != nil
        return all
    }
}

/// Pages `listAll` follows at most (100 million keys at 1,000 a page).
public let maxListPages = 100_000

/// User metadata: lower-case ASCII keys (without any `x-amz-meta-` prefix) and string values.
public typealias ObjectMetadata = [String: String]

public struct ObjectInfo: Sendable, Equatable {
    public var key: String
    public var size: UInt64
    public var lastModified: Date
    /// Changes on every write: an ETag on S3, a generation on GCS, a token on the local backends.
    public var version: String
    public var contentType: String?
    /// `nil` when the store did not return it (a LIST entry); `[:]` when the object has none.
    public var metadata: ObjectMetadata?

    public init(
        key: String, size: UInt64, lastModified: Date, version: String,
        contentType: String? = nil, metadata: ObjectMetadata? = nil
    ) {
        self.key = key
        self.size = size
        self.lastModified = lastModified
        self.version = version
        self.contentType = contentType
        self.metadata = metadata
    }
}

public struct ObjectData: Sendable {
    public var info: ObjectInfo
    public var body: Data
    public init(info: ObjectInfo, body: Data) {
        self.info = info
        self.body = body
    }
}

public struct ListRequest: Sendable {
    public var prefix: String
    public var delimiter: String?
    public var continuationToken: String?
    /// Keys strictly after this one (S3 `start-after`).
    public var startAfter: String?
    public var maxKeys: Int

    public init(
        prefix: String, delimiter: String? = nil, continuationToken: String? = nil,
        startAfter: String? = nil, maxKeys: Int = 1000
    ) {
        self.prefix = prefix
        self.delimiter = delimiter
        self.continuationToken = continuationToken
        self.startAfter = startAfter
        self.maxKeys = maxKeys
    }
}

public struct ListPage: Sendable {
    /// Sorted by key. Entries carry metadata only where the backend has it without another request (the local
    /// directory); S3, GCS and memory listings leave `metadata == nil`, as a real LIST does.
    public var objects: [ObjectInfo]
    /// Each ends with the delimiter, e.g. `photos/2024/`.
    public var commonPrefixes: [String]
    public var nextContinuationToken: String?

    public init(objects: [ObjectInfo] = [], commonPrefixes: [String] = [], nextContinuationToken: String? = nil) {
        self.objects = objects
        self.commonPrefixes = commonPrefixes
        self.nextContinuationToken = nextContinuationToken
    }
}

public enum PutBody: Sendable {
    case data(Data)
    /// The bytes of a local file, read at upload time (lets large bodies stream without being held in memory).
    case file(path: String)
    /// `length` bytes of a local file from `offset`, read at upload time: a part of a staged file streams from
    /// the page cache instead of being copied into memory first.
    case fileRange(path: String, offset: UInt64, length: UInt64)
}

extension PutBody {
    /// The bytes of a `.fileRange` body, for stores that keep or copy bodies whole (memory, tests).
    public static func read(path: String, offset: UInt64, length: UInt64) throws(ObjectStoreError) -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw .invalidRequest("cannot read body file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var data = Data(count: Int(length))
        var done = 0
        while done < data.count {
            let count = data.count
            let got = data.withUnsafeMutableBytes {
                pread(fd, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else {
                throw .invalidRequest(
                    got < 0
                        ? "cannot read body file \(path): \(String(cString: strerror(errno)))"
                        : "body file \(path) shrank while it was being uploaded")
            }
            done += got
        }
        return data
    }
}

public enum PutCondition: Sendable, Equatable {
    case none
    /// Fails with `.preconditionFailed` if the key exists (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`).
    case ifAbsent
    /// Fails with `.preconditionFailed` unless the object's current version is this one (`.notFound` if absent).
    case ifVersionMatches(String)
}

public enum DeleteCondition: Sendable, Equatable {
    case none
    case ifVersionMatches(String)
}

public struct PutOptions: Sendable {
    public var contentType: String?
    public var metadata: ObjectMetadata
    public var condition: PutCondition
    /// Multipart only: every part will carry its CRC-32C (`uploadPart(…, crc32c:)`, `CompletedPart.crc32c`), part
    /// numbers 1, 2, 3… S3 declares it at CreateMultipartUpload (`x-amz-checksum-algorithm: CRC32C`), as AWS
    /// requires before it takes part checksums.
    public var partChecksums: Bool

    public init(
        contentType: String? = nil, metadata: ObjectMetadata = [:], condition: PutCondition = .none,
        partChecksums: Bool = false
    ) {
        self.contentType = contentType
        self.metadata = metadata
        self.condition = condition
        self.partChecksums = partChecksums
    }
}

public struct CompletedPart: Sendable, Equatable {
    public var number: Int
    public var etag: String
    /// The part's CRC-32C as uploaded, for an upload created with `PutOptions.partChecksums`.
    public var crc32c: UInt32?
    public init(number: Int, etag: String, crc32c: UInt32? = nil) {
        self.number = number
        self.etag = etag
        self.crc32c = crc32c
    }
}

public struct MultipartUploadInfo: Sendable, Equatable {
    public var key: String
    public var uploadID: String
    public var initiated: Date
    public init(key: String, uploadID: String, initiated: Date) {
        self.key = key
        self.uploadID = uploadID
        self.initiated = initiated
    }
}
