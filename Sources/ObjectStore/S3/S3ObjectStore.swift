import Foundation
import Glibc
import Logging
import Synchronization

/// An S3 (or S3-compatible) bucket, over SigV4-signed REST calls on libcurl.
///
/// Keys are full object keys (the FileSystem applies the mount prefix). The version of an object is its ETag without
/// quotes; it is sent back quoted in `If-Match`. User metadata travels as `x-amz-meta-*` headers, lower-case keys
/// without the prefix.
///
/// Every call blocks its thread (see `HTTPClient`): call it from libfuse workers or threads of your own.
///
/// CopyObject's destination condition is also checked with a HEAD just before the request, because moto (and
/// older S3-compatible servers) ignore `If-Match`/`If-None-Match` there. The conditional header is still sent, so a
/// server that honours it (AWS) makes the copy atomic; one that does not leaves a window between the HEAD and the
/// copy in which another writer can slip in.
public final class S3ObjectStore: HTTPObjectStore {
    public let bucket: String
    public let region: String
    /// The resolved endpoint, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:5000`.
    public let endpoint: String
    public let pathStyle: Bool
    /// `nil` for anonymous (unsigned) access.
    let credentialProvider: S3CredentialProvider?
    /// Client, retries and counters (shared with every HTTP store).
    let http: HTTPStoreCore
    private let scheme: String
    /// `host[:port]` the requests go to (the bucket is in front of it when virtual-hosted).
    private let requestHost: String
    private let basePath: String
    public var attemptCount: Int { http.attempts.load(ordering: .relaxed) }
    public var retryCount: Int { http.retries.load(ordering: .relaxed) }
    /// Keys per DeleteObjects request: S3's limit; tests lower it to see batches split.
    let deleteBatchLimit = Atomic<Int>(1000)
    var deleteBatchSize: Int { deleteBatchLimit.load(ordering: .relaxed) }

    public var description: String { "s3://\(bucket)/" }
    public var supportsConditionalWrites: Bool { true }
    public var prefersStreamingReads: Bool { true }

    /// Resolves credentials, region and endpoint (see `S3Configuration`); makes no request. Fails with
    /// `.unauthorized` when no credentials are found and `noSignRequest` is not set.
    public init(configuration: S3Configuration) throws(ObjectStoreError) {
        let environment = configuration.environment ?? ProcessInfo.processInfo.environment
        bucket = try HTTPStoreCore.checkBucketName(configuration.bucket)
        let region = S3Credentials.region(configuration, environment: environment)
        self.region = region
        credentialProvider = try S3CredentialSource.resolve(configuration, environment: environment).map {
            S3CredentialProvider(source: $0, region: region, environment: environment)
        }
        let custom = [configuration.endpointURL, environment["AWS_ENDPOINT_URL_S3"], environment["AWS_ENDPOINT_URL"]]
            .compactMap { $0 }.first { !$0.isEmpty }
        var endpoint = custom ?? "https://s3.\(region).amazonaws.com"
        if !endpoint.contains("://") { endpoint = "https://" + endpoint }
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        self.endpoint = endpoint
        let separator = endpoint.range(of: "://")!
        scheme = endpoint[..<separator.lowerBound].lowercased()
        let rest = endpoint[separator.upperBound...]
        let authority = String(rest.prefix { $0 != "/" })
        guard !authority.isEmpty, scheme == "http" || scheme == "https" else {
            throw .invalidRequest("invalid S3 endpoint URL \"\(endpoint)\"")
        }
        basePath = String(rest.dropFirst(authority.count))
        // Dotted bucket names break TLS wildcard certificates when virtual-hosted, so they default to path-style.
        pathStyle = configuration.pathStyle ?? (custom != nil || bucket.contains("."))
        requestHost = pathStyle ? authority : "\(bucket).\(authority)"
        let client = HTTPClient(
            options: HTTPClient.Options(
                connectTimeout: configuration.connectTimeout, lowSpeedLimit: configuration.lowSpeedLimit,
                lowSpeedTime: configuration.lowSpeedTime, caBundle: environment["AWS_CA_BUNDLE"]))
        http = HTTPStoreCore(
            service: "S3", bucket: bucket, endpoint: endpoint, client: client,
            retry: RetryPolicy(maxRetries: configuration.maxRetries, isRetryable: Self.isRetryable))
    }

    /// One cheap request (ListObjectsV2, max-keys=1) so that a missing bucket, rejected credentials or an unreachable
    /// endpoint are reported, in one clear line, before anything is mounted (see `HTTPStoreCore.validateBucket`).
    public func validate() throws(ObjectStoreError) {
        // Credentials from a service (STS, metadata) first, so that their failure is reported as theirs.
        if let credentialProvider {
            do { _ = try credentialProvider.credentials() } catch {
                if case .instanceMetadata = credentialProvider.source {
                    throw .unauthorized(
                        "\(S3Credentials.missingMessage) (nor from \(credentialProvider.source): \(error))")
                }
                throw .unauthorized("cannot get AWS credentials from \(credentialProvider.source): \(error)")
            }
        }
        try http.validateBucket { (policy) throws(ObjectStoreError) in
            _ = try list(ListRequest(prefix: "", maxKeys: 1), policy: policy, quiet: true)
        }
    }

    // MARK: Reading

    public func head(_ key: String) throws(ObjectStoreError) -> ObjectInfo {
        try checkKey(key)
        let sent = try send(Request(method: "HEAD", key: key))
        guard sent.response.status == 200 else { throw mapError(sent.response, key: key) }
        let info = info(key: key, headers: sent.response.headers, size: nil)
        guard info.size <= UInt64(Int64.max), sent.response.headers["content-length"].map({ UInt64($0) != nil }) ?? true
        else { throw .other("S3 HEAD of \(key): malformed Content-Length") }
        return info
    }

    /// A range starting at or past the end reads as empty (S3 answers 416; a HEAD then supplies the object's info),
    /// as the local backend does. The body is allocated at the range's size up front.
    public func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        try checkKey(key)
        var request = Request(method: "GET", key: key)
        if let range {
            if range.isEmpty { return ObjectData(info: try head(key), body: Data()) }
            request.headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
            request.expectedResponseSize = Int(clamping: range.count)
        }
        return try HTTPStoreCore.objectData(
            try send(request).response, range: range,
            info: { info(key: key, headers: $0, size: $1) },
            head: { () throws(ObjectStoreError) in try head(key) },
            failure: { mapError($0, key: key) })
    }

    /// One GET for the whole range, its body handed on as it arrives. A connection that breaks mid-way is resumed
    /// from the byte where it stopped (up to 3 times), conditional on the same version so the pieces match.
    public func getStreaming(
        _ key: String, range: Range<UInt64>, version: String?,
        consumer: @escaping (UnsafeRawBufferPointer) -> Bool
    ) throws(ObjectStoreError) {
        try checkKey(key)
        let progress = StreamProgress(position: range.lowerBound)
        var breaks = 0
        while progress.position < range.upperBound && !progress.stopped {
            var request = Request(method: "GET", key: key)
            request.headers = [("range", "bytes=\(progress.position)-\(range.upperBound - 1)")]
            if let version { request.headers.append(("if-match", Self.quote(version))) }
            // A 200 (range ignored) is the whole object: usable only from byte 0.
            let accepted: Set<Int> = progress.position == 0 ? [200, 206] : [206]
            let startedAt = progress.position
            let sent: Sent
            do {
                sent = try send(request, policy: http.retry.with(maxRetries: 0), sinkStatuses: accepted) { piece in
                    guard consumer(piece) else {
                        progress.stopped = true
                        return false
                    }
                    progress.position += UInt64(piece.count)
                    return true
                }
            } catch .transport(let detail) {
                breaks += 1
                guard breaks <= 3 else { throw .transport(detail) }
                http.retry.backoff(attempt: breaks)
                continue
            }
            switch sent.response.status {
            case 200, 206:
                if sent.response.status == 200 { return }  // all of it went to the consumer
                if progress.position == startedAt && !progress.stopped {
                    throw .transport("GET \(key): the server sent no bytes of the range")
                }
            case 416:
                return  // past the end
            default:
                // 500/503/SlowDown…: nothing reached the consumer, so the same range can be asked again.
                if Self.isRetryable(sent.response) && breaks < 3 {
                    breaks += 1
                    http.retry.backoff(attempt: breaks)
                    continue
                }
                throw mapError(sent.response, key: key, conditionKey: key)
            }
        }
    }

    public func list(_ request: ListRequest) throws(ObjectStoreError) -> ListPage {
        try list(request, policy: nil)
    }

    private func list(
        _ request: ListRequest, policy: RetryPolicy?,
        quiet: Bool = false
    ) throws(ObjectStoreError) -> ListPage {
        // encoding-type=url: keys may hold characters XML 1.0 cannot carry; S3 then percent-encodes them.
        var query = [
            ("list-type", "2"), ("encoding-type", "url"),
            ("max-keys", String(min(1000, max(1, request.maxKeys)))),
        ]
        if !request.prefix.isEmpty { query.append(("prefix", request.prefix)) }
        if let delimiter = request.delimiter, !delimiter.isEmpty { query.append(("delimiter", delimiter)) }
        if let token = request.continuationToken { query.append(("continuation-token", token)) }
        if let startAfter = request.startAfter, !startAfter.isEmpty { query.append(("start-after", startAfter)) }
        let sent = try send(Request(method: "GET", key: nil, query: query, quiet: quiet), policy: policy)
        guard sent.response.status == 200 else { throw mapError(sent.response, key: nil) }
        guard let xml = S3XML.parse(sent.response.body), xml.name == "ListBucketResult" else {
            throw .other("S3 ListObjectsV2 on \(bucket): unreadable response")
        }
        // Decode only if the server says it encoded (some S3-compatible servers ignore encoding-type).
        let encoded = xml.value("EncodingType")?.lowercased() == "url"
        func decode(_ text: String) -> String { encoded ? Self.urlDecode(text) : text }
        var page = ListPage()
        for entry in xml.all("Contents") {
            guard let key = entry.value("Key") else { continue }
            // A size no file can have (above Int64.max) is a hostile or broken reply, not an object.
            guard let size = entry.value("Size").map({ UInt64($0) }) ?? 0, size <= UInt64(Int64.max) else {
                throw .other("S3 ListObjectsV2 on \(bucket): malformed Size for \(decode(key))")
            }
            page.objects.append(
                ObjectInfo(
                    key: decode(key), size: size,
                    lastModified: entry.value("LastModified").flatMap(HTTPTimestamp.parseISO8601)
                        ?? Date(timeIntervalSince1970: 0),
                    version: Self.unquote(entry.value("ETag") ?? ""), contentType: nil, metadata: nil))
        }
        // SeaweedFS lists in its directory-tree order (`a/x` before `a-1`); S3 promises byte order. Sorted here,
        // a page is in byte order on every server (pages themselves still follow the server's order).
        let inByteOrder = { (a: ObjectInfo, b: ObjectInfo) in a.key.utf8.lexicographicallyPrecedes(b.key.utf8) }
        if zip(page.objects, page.objects.dropFirst()).contains(where: { inByteOrder($1, $0) }) {
            page.objects.sort(by: inByteOrder)
        }
        page.commonPrefixes = xml.all("CommonPrefixes").compactMap { $0.value("Prefix").map(decode) }
        if xml.value("IsTruncated") == "true" {
            page.nextContinuationToken = xml.value("NextContinuationToken")
        }
        return page
    }

    // MARK: Writing

    /// The body is hashed for the signature before it is sent (a file is read twice: once to hash, once to
    /// stream). That costs one extra local read, and buys S3's end-to-end check that the bytes received are the
    /// bytes hashed: a file changed during the upload is rejected instead of stored torn.
    @discardableResult
    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        try checkKey(key)
        var headers = [("content-type", options.contentType ?? "application/octet-stream")]
        headers += try metadataHeaders(options.metadata)
        headers += conditionHeaders(options.condition)
        let sent = try send(Request(method: "PUT", key: key, headers: headers, body: body))
        let response = sent.response
        if response.status == 200 {
            return ObjectInfo(
                key: key, size: sent.bodyLength, lastModified: responseDate(response),
                version: Self.unquote(response.headers["etag"] ?? ""),
                contentType: options.contentType ?? "application/octet-stream",
                metadata: options.metadata)
        }
        // A retried conditional PUT whose first attempt did land (the response was lost) fails its own condition.
        // If the object now holds exactly our bytes (single-part ETag = MD5 of the body), it was our write. With
        // SSE-KMS/SSE-C the ETag is not the MD5 and the 412 stands (rare: it needs a lost response first).
        if response.status == 412, sent.attempts > 1, options.condition != .none,
            let current = try? head(key), current.version == (try? md5Hex(body))
        {
            return current
        }
        try refineIfMatchFailure(
            response, key: key,
            sentIfMatch: options.condition != .none && options.condition != .ifAbsent)
        throw mapError(response, key: key)
    }

    /// SeaweedFS answers `If-Match` on a missing key with 412 where AWS and moto answer 404: a HEAD tells the two
    /// apart, so that every server reports `.notFound` for an absent object. Costs a request on failure only.
    private func refineIfMatchFailure(
        _ response: HTTPResponse, key: String,
        sentIfMatch: Bool
    ) throws(ObjectStoreError) {
        guard response.status == 412, sentIfMatch else { return }
        if try !exists(key) { throw .notFound(key: key) }
    }

    /// A conditional delete sends `If-Match` (honoured by AWS and moto: 412 on another version, 404 when absent).
    /// A server that refuses the header (501) gets a HEAD check and a plain DELETE, with a window between the two.
    /// A retried conditional delete whose first attempt did succeed reports `.notFound`.
    public func delete(_ key: String, condition: DeleteCondition) throws(ObjectStoreError) {
        try checkKey(key)
        var headers: [(String, String)] = []
        if case .ifVersionMatches(let version) = condition { headers.append(("if-match", Self.quote(version))) }
        var sent = try send(Request(method: "DELETE", key: key, headers: headers))
        if sent.response.status == 501, case .ifVersionMatches(let version) = condition {
            guard try head(key).version == version else { throw .preconditionFailed(key: key) }
            sent = try send(Request(method: "DELETE", key: key))
        }
        switch sent.response.status {
        case 200, 204:
            return
        case 404 where condition == .none && errorCode(sent.response) != "NoSuchBucket":
            return  // deleting a missing key is not an error
        default:
            try refineIfMatchFailure(sent.response, key: key, sentIfMatch: condition != .none)
            throw mapError(sent.response, key: key)
        }
    }

    /// HEADs the source first: for its size and content type (kept when metadata is replaced, since S3 would
    /// otherwise reset it) and for a `.notFound` naming the source. Objects over 5 GiB need a multipart copy, which
    /// this does not do (S3 answers InvalidRequest).
    @discardableResult
    public func copy(
        from source: String, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try checkKey(source)
        try checkKey(destination)
        // A copy onto itself is pinned to the version the HEAD found (the one the condition was checked against):
        // another writer's bytes stored in between are refused, not copied under the caller's metadata.
        let onto = source.utf8.elementsEqual(destination.utf8)
        return try copyObject(try head(source), to: destination, metadata: metadata, condition: condition, pin: onto)
    }

    /// One request when the caller knows the source: the copy is pinned to its version
    /// (`x-amz-copy-source-if-match`). When that version is gone and the destination has no condition, the source
    /// is asked (HEAD) and what is there now is copied, as the plain `copy` does. Replacing metadata needs the
    /// content type: a source known without it (a LIST entry) is asked first too.
    @discardableResult
    public func copy(
        from source: ObjectInfo, to destination: String, metadata: ObjectMetadata?,
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        guard !source.version.isEmpty, metadata == nil || source.contentType != nil else {
            return try copy(from: source.key, to: destination, metadata: metadata, condition: condition)
        }
        try checkKey(source.key)
        try checkKey(destination)
        do {
            return try copyObject(source, to: destination, metadata: metadata, condition: condition, pin: true)
        } catch .preconditionFailed where condition == .none {
            return try copy(from: source.key, to: destination, metadata: metadata, condition: condition)
        }
    }

    private func copyObject(
        _ sourceInfo: ObjectInfo, to destination: String, metadata: ObjectMetadata?, condition: PutCondition,
        pin: Bool
    ) throws(ObjectStoreError) -> ObjectInfo {
        let source = sourceInfo.key
        try checkConditionByReading(
            condition, key: destination, current: source.utf8.elementsEqual(destination.utf8) ? sourceInfo : nil)
        var headers = [("x-amz-copy-source", "/\(bucket)/\(SigV4Signer.uriEncode(source, keepSlash: true))")]
        if pin { headers.append(("x-amz-copy-source-if-match", Self.quote(sourceInfo.version))) }
        if let metadata {
            headers.append(("x-amz-metadata-directive", "REPLACE"))
            headers.append(("content-type", sourceInfo.contentType ?? "application/octet-stream"))
            headers += try metadataHeaders(metadata)
        } else {
            headers.append(("x-amz-metadata-directive", "COPY"))
        }
        headers += conditionHeaders(condition)
        let sent = try send(Request(method: "PUT", key: destination, headers: headers, errorMayComeWith200: true))
        guard sent.response.status == 200, let xml = S3XML.parse(sent.response.body),
            xml.name == "CopyObjectResult"
        else {
            throw mapError(sent.response, key: source, conditionKey: destination)
        }
        return ObjectInfo(
            key: destination, size: sourceInfo.size,
            lastModified: xml.value("LastModified").flatMap(HTTPTimestamp.parseISO8601)
                ?? responseDate(sent.response),
            version: Self.unquote(xml.value("ETag") ?? ""), contentType: sourceInfo.contentType,
            metadata: metadata ?? sourceInfo.metadata)
    }

    // MARK: Requests and retries

    struct Request {
        var method: String
        /// `nil` addresses the bucket itself.
        var key: String?
        var query: [(String, String)] = []
        var headers: [(String, String)] = []
        var body: PutBody?
        var expectedResponseSize: Int?
        /// CopyObject and CompleteMultipartUpload may answer 200 and put an error in the body.
        var errorMayComeWith200 = false
        /// For UploadPart/CompleteMultipartUpload: on a 500, ask (ListParts) whether the upload exists before
        /// retrying. moto answers 500 instead of NoSuchUpload for unknown upload ids on these two calls; on AWS the
        /// probe just costs one request on a path that is failing anyway.
        var probeUpload: String?
        /// The caller reports a failure itself (the check before mounting prints one line): not logged.
        var quiet = false
        /// The body's bytes go with their checksum (a part's CRC-32C): BadDigest means they were damaged on the way.
        var bodyChecksummed = false
    }

    struct Sent {
        var response: HTTPResponse
        var attempts: Int
        var bodyLength: UInt64
    }

    /// Sends under the store's retry policy (`policy` to change it; see `RetryPolicy`), signing every attempt
    /// anew. 500/502/503/504, 429 and RequestTimeout are retryable; an error in a 200 (CopyObject,
    /// CompleteMultipartUpload) counts as a 500 or 503.
    func send(
        _ request: Request, policy: RetryPolicy? = nil, sinkStatuses: Set<Int> = [],
        bodySink: ((UnsafeRawBufferPointer) -> Bool)? = nil
    ) throws(ObjectStoreError) -> Sent {
        let path = canonicalPath(key: request.key)
        let queryString = SigV4Signer.canonicalQueryString(request.query)
        let url = "\(scheme)://\(requestHost)\(path)\(queryString.isEmpty ? "" : "?" + queryString)"
        let (body, payloadHash, length) = try prepare(request.body)
        var probed = false
        let answer = try http.send(
            policy: policy, sinkStatuses: sinkStatuses, bodySink: bodySink,
            prepare: {
                (_: Int) throws(ObjectStoreError) -> HTTPRequest in
                var headers = [("host", requestHost)] + request.headers
                if let credentialProvider {
                    let keys = try credentialProvider.credentials()
                    let signer = SigV4Signer(
                        accessKeyID: keys.accessKeyID, secretAccessKey: keys.secretAccessKey,
                        sessionToken: keys.sessionToken, region: region, service: "s3")
                    headers += signer.signingHeaders(
                        method: request.method, path: path, query: request.query,
                        headers: headers, payloadHash: payloadHash, date: Date())
                }
                return HTTPRequest(
                    method: request.method, url: url, headers: headers, body: body,
                    expectedResponseSize: request.expectedResponseSize)
            },
            inspect: { response in
                if request.errorMayComeWith200, response.status == 200,
                    let xml = S3XML.parse(response.body), xml.name == "Error"
                {
                    response.status = xml.value("Code") == "SlowDown" ? 503 : 500
                }
                // BadDigest to anything else (a completion whose part checksums do not match): the same again.
                if response.status == 400, !request.bodyChecksummed, errorCode(response) == "BadDigest" {
                    return .final
                }
                if response.status == 500, let uploadID = request.probeUpload, let key = request.key,
                    let missing = try? missingUploadResponse(key: key, uploadID: uploadID)
                {
                    response = missing
                    probed = true
                    return .final
                }
                return .asIs
            },
            gaveUp: { error, attempts in
                logFailure(request, status: "none", code: nil, attempts: attempts, error: "\(error)")
            })
        if answer.response.status >= 300 && !probed {
            logFailure(
                request, status: String(answer.response.status), code: errorCode(answer.response),
                attempts: answer.attempts)
        }
        return Sent(response: answer.response, attempts: answer.attempts, bodyLength: length)
    }

    /// The NoSuchUpload answer of ListParts when the upload does not exist; `nil` when it does (or we can't tell).
    private func missingUploadResponse(key: String, uploadID: String) throws(ObjectStoreError) -> HTTPResponse? {
        let probe = Request(method: "GET", key: key, query: [("uploadId", uploadID), ("max-parts", "1")])
        let response = try send(probe, policy: http.retry.with(maxRetries: 0)).response
        return response.status == 404 && errorCode(response) == "NoSuchUpload" ? response : nil
    }

    @Sendable private static func isRetryable(_ response: HTTPResponse) -> Bool {
        switch response.status {
        case 429, 500, 502, 503, 504: return true
        // BadDigest: the bytes were damaged on the way (the part's CRC32C did not match); send them again (only a
        // part sent with its checksum: `send` takes it as final for any other request).
        case 400: return ["RequestTimeout", "BadDigest"].contains(S3XML.parse(response.body)?.value("Code"))
        default: return false
        }
    }

    private func prepare(_ body: PutBody?) throws(ObjectStoreError) -> (HTTPBody, String, UInt64) {
        switch body {
        case nil:
            return (.none, SigV4Signer.emptyPayloadHash, 0)
        case .data(let data):
            let hash = credentialProvider == nil ? SigV4Signer.emptyPayloadHash : Hashing.hex(Hashing.sha256(data))
            return (.data(data), hash, UInt64(data.count))
        case .file(let path):
            let digest = try Hashing.fileDigest(path: path)
            return (.file(path: path, length: digest.length), Hashing.hex(digest.digest), digest.length)
        case .fileRange(let path, let offset, let length):
            // A streamed part: its bytes cannot change while it is sent (see `StreamingUpload`), so the SHA-256
            // pass over it (a read of the range and the hash: 40% of the daemon's CPU per byte written) is left
            // out, as AWS allows and its SDKs do over https. docs/SEMANTICS.md says what that gives up.
            return (.file(path: path, offset: offset, length: length), SigV4Signer.unsignedPayload, length)
        }
    }

    /// `/<bucket>/<key>` (path-style) or `/<key>`, each key segment URI-encoded once, `/` kept.
    private func canonicalPath(key: String?) -> String {
        var path = basePath
        if pathStyle { path += "/" + SigV4Signer.uriEncode(bucket, keepSlash: false) }
        if let key {
            path += "/" + SigV4Signer.uriEncode(key, keepSlash: true)
        }
        return path.isEmpty ? "/" : path
    }

    // MARK: Helpers

    func checkKey(_ key: String) throws(ObjectStoreError) { try http.checkKey(key) }

    /// Metadata must survive HTTP headers unchanged: token-character keys, printable ASCII values without
    /// surrounding blanks. Anything else is refused rather than silently altered (callers percent-encode).
    func metadataHeaders(_ metadata: ObjectMetadata) throws(ObjectStoreError) -> [(String, String)] {
        var headers: [(String, String)] = []
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            let keyOK =
                !key.isEmpty
                && key.utf8.allSatisfy {
                    ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x5f || $0 == 0x2e
                }
            let valueOK =
                value.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7f }
                && value.trimmingCharacters(in: .whitespaces) == value
            guard keyOK, valueOK else {
                throw .invalidRequest("metadata \(key)=\(value) cannot be sent as an x-amz-meta header")
            }
            headers.append(("x-amz-meta-\(key)", value))
        }
        return headers
    }

    func conditionHeaders(_ condition: PutCondition) -> [(String, String)] {
        switch condition {
        case .none: return []
        case .ifAbsent: return [("if-none-match", "*")]
        case .ifVersionMatches(let version): return [("if-match", Self.quote(version))]
        }
    }

    private func info(key: String, headers: [String: String], size: UInt64?) -> ObjectInfo {
        ObjectInfo(
            key: key, size: size ?? headers["content-length"].flatMap { UInt64($0) } ?? 0,
            lastModified: HTTPStoreCore.lastModified(headers), version: Self.unquote(headers["etag"] ?? ""),
            contentType: headers["content-type"],
            metadata: HTTPStoreCore.metadata(headers, prefix: "x-amz-meta-"))
    }

    private func responseDate(_ response: HTTPResponse) -> Date {
        response.headers["date"].flatMap(HTTPTimestamp.parseHTTPDate) ?? Date()
    }

    private func md5Hex(_ body: PutBody) throws(ObjectStoreError) -> String {
        switch body {
        case .data(let data): return Hashing.hex(Hashing.md5(data))
        case .file(let path): return Hashing.hex(try Hashing.fileDigest(path: path, md5: true).digest)
        case .fileRange(let path, let offset, let length):
            return Hashing.hex(try Hashing.fileDigest(path: path, md5: true, offset: offset, length: length).digest)
        }
    }

    static func unquote(_ etag: String) -> String {
        var value = etag.hasPrefix("W/") ? String(etag.dropFirst(2)) : etag
        if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
            value = String(value.dropFirst().dropLast())
        }
        return value
    }

    static func quote(_ version: String) -> String {
        "\"\(version)\""
    }

    /// Decodes `encoding-type=url` values: `%XY` escapes, and `+` as a space (as S3 and the AWS SDKs do).
    static func urlDecode(_ text: String) -> String {
        let spaced = text.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? text
    }
}

/// How far a streaming GET got, shared with its body sink.
private final class StreamProgress {
    var position: UInt64
    var stopped = false
    init(position: UInt64) { self.position = position }
}
