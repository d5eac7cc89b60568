import Foundation

/// Resumable uploads: large bodies in chunks, resumed from the offset the server kept.
extension GCSObjectStore {
    // MARK: Resumable uploads

    /// A resumable session: the resource (and condition) at the start, then the body in `chunkSize` chunks (read
    /// one at a time from the file, so memory stays bounded). A chunk that fails is resumed from the offset the
    /// server reports as persisted.
    func resumableUpload(
        _ key: String, body: PutBody, length: UInt64,
        options: PutOptions
    ) throws(ObjectStoreError) -> ObjectInfo {
        let contentType = options.contentType ?? "application/octet-stream"
        if emulator { try checkConditionByReading(options.condition, key: key, current: nil) }
        var resource: [String: Any] = ["name": key, "contentType": contentType]
        if !options.metadata.isEmpty { resource["metadata"] = options.metadata }
        var query = [("uploadType", "resumable")]
        query += try conditionQuery(options.condition, key: key)
        let start = try send(
            Request(
                method: "POST", path: "/upload" + bucketPath() + "/o", query: query,
                headers: [
                    ("content-type", "application/json; charset=UTF-8"),
                    ("x-upload-content-type", contentType),
                    ("x-upload-content-length", String(length)),
                ],
                body: .data(try GCSJSON.encode(resource)))
        ).response
        guard start.status == 200, let session = start.headers["location"], !session.isEmpty else {
            throw try conditionError(start, key: key, condition: options.condition)
        }
        // Every chunk carries our bearer token: it goes to the endpoint we were configured with, nowhere else.
        guard Self.sameOrigin(session, endpoint) else {
            throw .other(
                "GCS resumable upload of \(key): the server named a session on another host; refused "
                    + "(the token is only sent to \(endpoint))")
        }
        var offset: UInt64 = 0
        var failures = 0
        while true {
            let count = Int(min(UInt64(chunkSize), length - offset))
            let chunk = try Self.read(body, offset: offset, count: count)
            let last = offset + UInt64(count) == length
            let range =
                count == 0
                ? "bytes */\(length)"
                : "bytes \(offset)-\(offset + UInt64(count) - 1)/\(last ? String(length) : "*")"
            let response: HTTPResponse
            do {
                response = try send(
                    Request(
                        method: "PUT", url: session,
                        headers: [
                            ("content-type", contentType),
                            ("content-range", range),
                        ],
                        body: .data(chunk)), policy: http.retry.with(maxRetries: 0)
                ).response
            } catch {
                guard case .transport = error, failures < http.retry.maxRetries else { throw error }
                failures += 1
                http.retry.backoff(attempt: failures)
                offset = try persistedOffset(session: session, length: length) ?? offset
                continue
            }
            switch response.status {
            case 200, 201:
                guard let resource = GCSJSON.object(response.body), let info = GCSJSON.objectInfo(resource) else {
                    throw .other("GCS resumable upload of \(key): unreadable response")
                }
                return info
            case 308:
                offset = Self.persistedOffset(response) ?? offset + UInt64(count)
            case let status where Self.isRetryable(status) && failures < http.retry.maxRetries:
                failures += 1
                http.retry.backoff(attempt: failures)
                offset = try persistedOffset(session: session, length: length) ?? offset
            default:
                throw try conditionError(response, key: key, condition: options.condition)
            }
        }
    }

    /// Scheme, host and port of `url` are those of `endpoint` (a session URL may add any path and query).
    static func sameOrigin(_ url: String, _ endpoint: String) -> Bool {
        guard let a = URLComponents(string: url), let b = URLComponents(string: endpoint),
            let scheme = a.scheme?.lowercased(), scheme == b.scheme?.lowercased(),
            let host = a.host?.lowercased(), !host.isEmpty, host == b.host?.lowercased(),
            a.user == nil, a.password == nil
        else { return false }
        let defaultPort = scheme == "https" ? 443 : 80
        return (a.port ?? defaultPort) == (b.port ?? defaultPort)
    }

    /// Asks a session how much it has (`Content-Range: bytes */total`); `nil` if it cannot tell.
    func persistedOffset(session: String, length: UInt64) throws(ObjectStoreError) -> UInt64? {
        let status = try? send(
            Request(
                method: "PUT", url: session, headers: [("content-range", "bytes */\(length)")],
                body: .data(Data())), policy: http.retry.with(maxRetries: 1)
        ).response
        guard let status, status.status == 308 else { return nil }
        return Self.persistedOffset(status) ?? 0
    }

    /// The offset after `Range: bytes=0-N` of a 308 answer; `0` when the header is absent (nothing persisted).
    static func persistedOffset(_ response: HTTPResponse) -> UInt64? {
        guard let range = response.headers["range"] else { return 0 }
        return range.split(separator: "-").last.flatMap { UInt64($0) }.map { $0 + 1 }
    }
}
