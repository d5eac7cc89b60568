import Foundation
import Glibc
import Synchronization

/// A Google Cloud Storage bucket, over the JSON API on libcurl (the same blocking `HTTPClient` as S3).
///
/// Keys are full object names (the FileSystem applies the mount prefix). The version of an object is its
/// generation; conditions are `ifGenerationMatch` (`0`: must not exist). Custom metadata travels in the object
/// resource's `metadata` map, with the same keys as S3 user metadata.
///
/// Every call blocks its thread (see `HTTPClient`): call it from libfuse workers or threads of your own.
///
/// Uploads: a body up to `resumableThreshold` (and every conditional write of that size) goes in one
/// `uploadType=multipart` request with its metadata; a larger one as a resumable upload in chunks. Multipart
/// uploads of the `ObjectStore` protocol become parts stored as temporary objects, composed on completion (see
/// `GCSObjectStore+Multipart.swift`).
///
/// Emulators: fake-gcs-server honours `ifGenerationMatch` only on multipart uploads. With a custom endpoint
/// (`emulator`), a conditional delete, copy, compose or resumable upload is also checked with a metadata read just
/// before the request; the condition is still sent, so a server that honours it (GCS) stays atomic.
public final class GCSObjectStore: HTTPObjectStore {
    public let bucket: String
    /// The resolved endpoint, e.g. `https://storage.googleapis.com` or `http://127.0.0.1:4443`.
    public let endpoint: String
    /// From the configuration, the credentials file or `GOOGLE_CLOUD_PROJECT`; object calls do not need it.
    public let projectID: String?
    /// A custom endpoint or `STORAGE_EMULATOR_HOST`: conditions the emulator ignores are also checked by a read.
    public let emulator: Bool
    let tokens: GCSTokenProvider?
    /// Client, retries and counters (shared with every HTTP store).
    let http: HTTPStoreCore
    let resumableThreshold: UInt64
    let chunkSize: Int
    let uploadsPrefix: String
    /// Multipart uploads this store created and has not finished: their parts need no existence check.
    let openUploads = Mutex<Set<String>>([])
    /// Attempts to the storage endpoint (token requests are not counted).
    public var attemptCount: Int { http.attempts.load(ordering: .relaxed) }
    public var retryCount: Int { http.retries.load(ordering: .relaxed) }

    public var description: String { "gs://\(bucket)/" }
    public var supportsConditionalWrites: Bool { true }

    /// Resolves endpoint and credentials (see `GCSCredentials`); makes no request (a service-account key is parsed).
    public init(configuration: GCSConfiguration) throws(ObjectStoreError) {
        let environment = configuration.environment ?? ProcessInfo.processInfo.environment
        bucket = try HTTPStoreCore.checkBucketName(configuration.bucket)
        let emulatorHost = environment["STORAGE_EMULATOR_HOST"].flatMap { $0.isEmpty ? nil : $0 }
        let custom = configuration.endpointURL.flatMap { $0.isEmpty ? nil : $0 } ?? emulatorHost
        var endpoint = custom ?? "https://storage.googleapis.com"
        if !endpoint.contains("://") { endpoint = (custom == emulatorHost ? "http://" : "https://") + endpoint }
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        let scheme = endpoint.prefix { $0 != ":" }.lowercased()
        guard scheme == "http" || scheme == "https", endpoint.count > scheme.count + 3 else {
            throw .invalidRequest("invalid GCS endpoint URL \"\(endpoint)\"")
        }
        self.endpoint = endpoint
        emulator = custom != nil
        let client = HTTPClient(
            options: HTTPClient.Options(
                connectTimeout: configuration.connectTimeout, lowSpeedLimit: configuration.lowSpeedLimit,
                lowSpeedTime: configuration.lowSpeedTime, caBundle: nil))
        let (credentials, fileProject) = try GCSCredentials.resolve(
            configuration, environment: environment,
            emulator: emulator)
        tokens = credentials == .none ? nil : try GCSTokenProvider(credentials: credentials, client: client)
        projectID = configuration.projectID ?? fileProject ?? environment["GOOGLE_CLOUD_PROJECT"]
        http = HTTPStoreCore(
            service: "GCS", bucket: bucket, endpoint: endpoint, client: client,
            retry: RetryPolicy(maxRetries: configuration.maxRetries) { Self.isRetryable($0.status) })
        resumableThreshold = UInt64(max(0, configuration.resumableThreshold))
        chunkSize = max(256 << 10, configuration.resumableChunkSize / (256 << 10) * (256 << 10))
        var uploads = configuration.uploadsPrefix
        if !uploads.isEmpty && !uploads.hasSuffix("/") { uploads += "/" }
        uploadsPrefix = uploads
    }

    /// One cheap request (a list of at most one object) so that a missing bucket, rejected credentials or an
    /// unreachable endpoint are reported in one clear line before anything is mounted (see
    /// `HTTPStoreCore.validateBucket`).
    public func validate() throws(ObjectStoreError) {
        try http.validateBucket { (policy) throws(ObjectStoreError) in
            _ = try list(ListRequest(prefix: "", maxKeys: 1), policy: policy)
        }
    }

    // MARK: Reading

    public func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo {
        try checkKey(key)
        let sent = try send(Request(method: "GET", path: objectPath(key)))
        guard sent.response.status == 200 else { throw mapError(sent.response, key: key) }
        guard let resource = GCSJSON.object(sent.response.body), let info = GCSJSON.objectInfo(resource) else {
            throw .other("GCS metadata of \(key): unreadable response")
        }
        return info
    }

    /// One media request; the object's info comes from the response headers (`x-goog-generation`,
    /// `x-goog-meta-*`). A range starting at or past the end reads as empty (GCS answers 416; a metadata read then
    /// supplies the info).
    public func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        try checkKey(key)
        var request = Request(method: "GET", path: objectPath(key), query: [("alt", "media")])
        if let range {
            if range.isEmpty { return ObjectData(info: try head(key), body: Data()) }
            request.headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
            request.expectedResponseSize = Int(clamping: range.count)
        }
        // Without it, an object stored gzip-encoded would be decompressed by the server and ranges ignored.
        request.headers.append(("accept-encoding", "gzip"))
        return try HTTPStoreCore.objectData(
            try send(request).response, range: range,
            info: { mediaInfo(key: key, headers: $0, size: $1) },
            head: { () throws(ObjectStoreError) in try head(key) },
            failure: { mapError($0, key: key) })
    }

    public func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage {
        try list(request, policy: nil)
    }

    /// Continuation tokens are ours: `p:<pageToken>` carries the server's, `k:<key>`/`d:<prefix>` resume after an
    /// entry. The latter serve two cases: pages cut to `maxKeys` (fake-gcs-server ignores `maxResults` when a
    /// delimiter is given) and `startAfter`, which GCS only offers as the inclusive `startOffset`.
    private func list(_ request: ListRequest, policy: RetryPolicy?) throws(ObjectStoreError) -> ListPage {
        let maxKeys = min(1000, max(1, request.maxKeys))
        var after: String?
        var afterIsPrefix = false
        var pageToken: String?
        if let token = request.continuationToken {
            if token.hasPrefix("p:") {
                pageToken = String(token.dropFirst(2))
                after = request.startAfter.flatMap { $0.isEmpty ? nil : $0 }
            } else if token.hasPrefix("k:") || token.hasPrefix("d:") {
                after = String(token.dropFirst(2))
                afterIsPrefix = token.hasPrefix("d:")
            } else {
                throw .invalidRequest("not a GCS continuation token: \(token)")
            }
        } else if let startAfter = request.startAfter, !startAfter.isEmpty {
            after = startAfter
        }
        var query = [
            ("maxResults", String(min(1000, maxKeys + (after == nil ? 0 : 1)))),
            ("projection", "noAcl"),
        ]
        if !request.prefix.isEmpty { query.append(("prefix", request.prefix)) }
        if let delimiter = request.delimiter, !delimiter.isEmpty { query.append(("delimiter", delimiter)) }
        if let after {
            // startOffset is inclusive; past a common prefix, start at the first name that cannot share it.
            query.append(("startOffset", afterIsPrefix ? Self.successor(after) ?? after : after))
        }
        if let pageToken { query.append(("pageToken", pageToken)) }
        let sent = try send(Request(method: "GET", path: bucketPath() + "/o", query: query), policy: policy)
        guard sent.response.status == 200 else { throw mapError(sent.response, key: nil) }
        guard let document = GCSJSON.object(sent.response.body) else {
            throw .other("GCS list of \(bucket): unreadable response")
        }
        // Entries at or before the cursor go; a common prefix that holds names past a key cursor stays.
        func isPast(_ name: String, isPrefix: Bool) -> Bool {
            guard let after else { return true }
            if afterIsPrefix { return !name.hasPrefix(after) && Self.precedes(after, name) }
            return Self.precedes(after, name) || (isPrefix && after.hasPrefix(name))
        }
        let items = (document["items"] as? [[String: Any]]) ?? []
        if let bad = items.first(where: GCSJSON.hasBadSize) {
            throw .other("GCS list of \(bucket): malformed size for \(bad["name"] as? String ?? "an object")")
        }
        var objects = items.compactMap { GCSJSON.objectInfo($0) }
            .filter { isPast($0.key, isPrefix: false) }
        var prefixes = ((document["prefixes"] as? [String]) ?? []).filter { isPast($0, isPrefix: true) }
        objects.sort { Self.precedes($0.key, $1.key) }
        prefixes.sort { Self.precedes($0, $1) }
        var page = ListPage(objects: objects, commonPrefixes: prefixes)
        if objects.count + prefixes.count > maxKeys {
            // Keep the first maxKeys entries in name order; resume after the last one kept.
            let entries = (objects.map { ($0.key, false) } + prefixes.map { ($0, true) })
                .sorted { Self.precedes($0.0, $1.0) }
            let last = entries[maxKeys - 1]
            page.objects = objects.filter { !Self.precedes(last.0, $0.key) }
            page.commonPrefixes = prefixes.filter { !Self.precedes(last.0, $0) }
            page.nextContinuationToken = (last.1 ? "d:" : "k:") + last.0
        } else if let next = document["nextPageToken"] as? String, !next.isEmpty {
            page.nextContinuationToken = "p:" + next
        }
        return page
    }

    // MARK: Writing

    @discardableResult
    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        try checkKey(key)
        let length = try Self.length(of: body)
        if length > resumableThreshold {
            return try resumableUpload(key, body: body, length: length, options: options)
        }
        return try multipartUpload(key, data: try Self.read(body, offset: 0, count: Int(length)), options: options)
    }

    /// One `uploadType=multipart` request: the object resource (name, content type, metadata) and the bytes.
    /// The condition is `ifGenerationMatch`, which the emulator honours here too.
    func multipartUpload(_ key: String, data: Data, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        let contentType = options.contentType ?? "application/octet-stream"
        var resource: [String: Any] = ["name": key, "contentType": contentType]
        if !options.metadata.isEmpty { resource["metadata"] = options.metadata }
        let json = try GCSJSON.encode(resource)
        // A random boundary (122 bits): no need to search the body for it.
        let boundary = "bucketfs-" + UUID().uuidString + UUID().uuidString
        var body = Data("--\(boundary)\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n".utf8)
        body.append(json)
        body.append(Data("\r\n--\(boundary)\r\ncontent-type: \(contentType)\r\n\r\n".utf8))
        body.append(data)
        body.append(Data("\r\n--\(boundary)--\r\n".utf8))
        var query = [("uploadType", "multipart")]
        query += try conditionQuery(options.condition, key: key)
        let sent = try send(
            Request(
                method: "POST", path: "/upload" + bucketPath() + "/o", query: query,
                headers: [("content-type", "multipart/related; boundary=\(boundary)")],
                body: .data(body)))
        if sent.response.status == 200, let resource = GCSJSON.object(sent.response.body),
            let info = GCSJSON.objectInfo(resource)
        {
            return info
        }
        // A retried conditional upload whose first attempt did land (the response was lost) fails its own
        // condition: if the object now holds exactly our bytes, it was our write.
        if sent.response.status == 412, sent.attempts > 1, options.condition != .none,
            let current = try? rawResource(key), GCSJSON.md5(current) == Data(Hashing.md5(data)).base64EncodedString(),
            let info = GCSJSON.objectInfo(current)
        {
            return info
        }
        throw try conditionError(sent.response, key: key, condition: options.condition)
    }

    /// A conditional delete sends `ifGenerationMatch` (checked first with a read on emulators, which ignore it).
    /// Deleting a missing key without a condition is not an error.
    public func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        try checkKey(key)
        var query: [(String, String)] = []
        if case .ifVersionMatches(let version) = condition {
            if emulator {
                guard try head(key).version == version else { throw .preconditionFailed(key: key) }
            }
            query = try conditionQuery(.ifVersionMatches(version), key: key)
        }
        let response = try send(Request(method: "DELETE", path: objectPath(key), query: query)).response
        switch response.status {
        case 200, 204:
            return
        case 404 where condition == .none:
            return
        default:
            throw try conditionError(response, key: key, condition: condition == .none ? .none : .ifVersionMatches(""))
        }
    }

    /// A rewrite (server-side, any size: followed through its rewrite tokens). Reads the source's metadata first,
    /// for its content type (kept when the metadata is replaced, since a resource in the request replaces all of
    /// it) and so that the copy is pinned to that generation (`ifSourceGenerationMatch`).
    @discardableResult
    public func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try checkKey(source)
        try checkKey(destination)
        let sourceInfo = try head(source)
        if emulator {
            try checkConditionByReading(
                condition, key: destination, current: source.utf8.elementsEqual(destination.utf8) ? sourceInfo : nil)
        }
        var resource: [String: Any] = [:]
        if let metadata {
            resource["metadata"] = metadata
            resource["contentType"] = sourceInfo.contentType ?? "application/octet-stream"
        }
        let body = try GCSJSON.encode(resource)
        var query = try conditionQuery(condition, key: destination)
        query.append(("ifSourceGenerationMatch", sourceInfo.version))
        let path = objectPath(source) + "/rewriteTo/b/" + Self.encode(bucket) + "/o/" + Self.encode(destination)
        var rewriteToken: String?
        var rounds = 0
        while true {
            var pageQuery = query
            if let rewriteToken { pageQuery.append(("rewriteToken", rewriteToken)) }
            let response = try send(
                Request(
                    method: "POST", path: path, query: pageQuery,
                    headers: [("content-type", "application/json")],
                    body: .data(body))
            ).response
            guard response.status == 200, let document = GCSJSON.object(response.body) else {
                if response.status == 404 { throw .notFound(key: source) }
                throw try conditionError(response, key: destination, condition: condition)
            }
            if document["done"] as? Bool == false, let token = document["rewriteToken"] as? String, !token.isEmpty {
                // A token handed back twice would have us rewrite forever.
                guard token != rewriteToken, rounds < 10_000 else {
                    throw .other("GCS rewrite of \(source) to \(destination): the server repeats its rewrite token")
                }
                rewriteToken = token
                rounds += 1
                continue
            }
            guard let resource = document["resource"] as? [String: Any], let info = GCSJSON.objectInfo(resource) else {
                throw .other("GCS rewrite of \(source) to \(destination): unreadable response")
            }
            return info
        }
    }

    // MARK: Requests and retries

    struct Request {
        var method: String
        /// Path after the endpoint (already encoded), unless `url` is given.
        var path: String = ""
        /// A full URL (a resumable session's), used as is.
        var url: String?
        var query: [(String, String)] = []
        var headers: [(String, String)] = []
        var body: HTTPBody = .none
        var expectedResponseSize: Int?

        init(
            method: String, path: String, query: [(String, String)] = [], headers: [(String, String)] = [],
            body: HTTPBody = .none
        ) {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
            self.body = body
        }

        init(method: String, url: String, headers: [(String, String)], body: HTTPBody) {
            self.method = method
            self.url = url
            self.headers = headers
            self.body = body
        }
    }

    struct Sent {
        var response: HTTPResponse
        var attempts: Int
    }

    /// Sends under the store's retry policy (`policy` to change it; see `RetryPolicy`): 408, 429 and 5xx are
    /// retryable. A 401 drops the cached token and tries once more with a fresh one.
    func send(_ request: Request, policy: RetryPolicy? = nil) throws(ObjectStoreError) -> Sent {
        var url = request.url ?? endpoint + request.path
        if !request.query.isEmpty {
            url += "?" + request.query.map { "\(Self.encode($0.0))=\(Self.encode($0.1))" }.joined(separator: "&")
        }
        var renewedToken = false
        let answer = try http.send(
            policy: policy,
            prepare: { (_: Int) throws(ObjectStoreError) -> HTTPRequest in
                var headers = request.headers
                if let tokens { headers.append(("authorization", "Bearer \(try tokens.token())")) }
                return HTTPRequest(
                    method: request.method, url: url, headers: headers, body: request.body,
                    expectedResponseSize: request.expectedResponseSize)
            },
            inspect: { response in
                guard response.status == 401, let tokens, !renewedToken else { return .asIs }
                tokens.invalidate()
                renewedToken = true
                return .again
            })
        return Sent(response: answer.response, attempts: answer.attempts)
    }

    static func isRetryable(_ status: Int) -> Bool {
        [408, 429, 500, 502, 503, 504].contains(status)
    }

    // MARK: Conditions and errors

    /// `ifGenerationMatch` for a condition; a version that is not a generation can never match.
    func conditionQuery(_ condition: PutCondition, key: String) throws(ObjectStoreError) -> [(String, String)] {
        switch condition {
        case .none: return []
        case .ifAbsent: return [("ifGenerationMatch", "0")]
        case .ifVersionMatches(let version):
            guard !version.isEmpty, version.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                throw .preconditionFailed(key: key)
            }
            return [("ifGenerationMatch", version)]
        }
    }

    /// A failed write's error. GCS answers 412 both when the generation differs and when a generation is required
    /// of a missing object; the protocol wants `.notFound` for the latter, so a 412 on `ifVersionMatches` looks.
    func conditionError(
        _ response: HTTPResponse, key: String,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectStoreError {
        if response.status == 412, case .ifVersionMatches = condition, !(try exists(key)) {
            return .notFound(key: key)
        }
        if response.status == 404, case .ifVersionMatches = condition {
            return .notFound(key: key)
        }
        return mapError(response, key: key)
    }

    /// The one place GCS answers become `ObjectStoreError`s. `key == nil`: a bucket-level call (404 = no bucket).
    func mapError(_ response: HTTPResponse, key: String?) -> ObjectStoreError {
        let parsed = GCSJSON.errorDetail(response.body)
        let reason = parsed?.reason ?? ""
        let message = parsed?.message ?? ""
        let detail =
            message.isEmpty
            ? "HTTP \(response.status)"
            : "\(reason.isEmpty ? "" : reason + ": ")\(message) (HTTP \(response.status))"
        switch response.status {
        case 404:
            return key.map { .notFound(key: $0) } ?? .noSuchBucket(bucket)
        case 409, 412:
            return .preconditionFailed(key: key ?? "")
        case 401:
            return .unauthorized(detail)
        case 403:
            return reason.contains("RateLimit") ? .throttled(detail) : .accessDenied(detail)
        case 429:
            return .throttled(detail)
        case 400, 411, 413, 416, 422:
            return .invalidRequest(detail)
        case 408, 500...599:
            return .transport("\(detail) from \(endpoint)")
        default:
            return .other("GCS \(detail)")
        }
    }

    // MARK: Helpers

    func rawResource(_ key: String) throws(ObjectStoreError) -> [String: Any] {
        let response = try send(Request(method: "GET", path: objectPath(key))).response
        guard response.status == 200, let resource = GCSJSON.object(response.body) else {
            throw mapError(response, key: key)
        }
        return resource
    }

    func checkKey(_ key: String) throws(ObjectStoreError) {
        try http.checkKey(key)
        if key.utf8.contains(where: { $0 == 0x0a || $0 == 0x0d }) {
            throw .invalidKey(key: key, reason: "GCS object names cannot contain line breaks")
        }
    }

    func bucketPath() -> String {
        "/storage/v1/b/" + Self.encode(bucket)
    }

    func objectPath(_ key: String) -> String {
        bucketPath() + "/o/" + Self.encode(key)
    }

    private func mediaInfo(key: String, headers: [String: String], size: UInt64?) -> ObjectInfo {
        let total =
            size ?? headers["x-goog-stored-content-length"].flatMap { UInt64($0) }
            ?? headers["content-length"].flatMap { UInt64($0) } ?? 0
        return ObjectInfo(
            key: key, size: total, lastModified: HTTPStoreCore.lastModified(headers),
            version: headers["x-goog-generation"] ?? "", contentType: headers["content-type"],
            metadata: HTTPStoreCore.metadata(headers, prefix: "x-goog-meta-"))
    }

    static func length(of body: PutBody) throws(ObjectStoreError) -> UInt64 {
        switch body {
        case .data(let data): return UInt64(data.count)
        case .file(let path):
            var status = stat()
            guard stat(path, &status) == 0 else {
                throw .invalidRequest("cannot read body file \(path): \(String(cString: strerror(errno)))")
            }
            return UInt64(status.st_size)
        case .fileRange(_, _, let length):
            return length
        }
    }

    /// `count` bytes at `offset` of a body (a file is read with `pread`, so chunks need no shared position).
    static func read(_ body: PutBody, offset: UInt64, count: Int) throws(ObjectStoreError) -> Data {
        switch body {
        case .data(let data):
            let start = data.startIndex + Int(offset)
            return data.subdata(in: start..<(start + count))
        case .fileRange(let path, let start, _):
            return try PutBody.read(path: path, offset: start + offset, length: UInt64(count))
        case .file(let path):
            return try PutBody.read(path: path, offset: offset, length: UInt64(count))
        }
    }

    /// Unreserved characters (RFC 3986): everything else in a name or query value is percent-encoded, `/` included.
    static let unreserved = CharacterSet(
        charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")

    static func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }

    /// Byte order of UTF-8, which is how GCS orders names.
    static func precedes(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    /// The smallest name after every name starting with `prefix` (its last byte plus one), when that is ASCII.
    static func successor(_ prefix: String) -> String? {
        guard var last = prefix.utf8.last, last < 0x7f else { return nil }
        last += 1
        return String(decoding: Array(prefix.utf8.dropLast()) + [last], as: UTF8.self)
    }
}
