import Foundation

/// Multipart uploads: create, parts (and server-side part copies), complete, abort, list.
extension S3ObjectStore {
    // MARK: Multipart

    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        try checkKey(key)
        var headers = [("content-type", options.contentType ?? "application/octet-stream")]
        headers += try metadataHeaders(options.metadata)
        // AWS takes part checksums only for an upload that declared their algorithm (and then wants every part's).
        if options.partChecksums { headers.append(("x-amz-checksum-algorithm", "CRC32C")) }
        let sent = try send(Request(method: "POST", key: key, query: [("uploads", "")], headers: headers))
        guard sent.response.status == 200, let uploadID = S3XML.parse(sent.response.body)?.value("UploadId"),
            !uploadID.isEmpty
        else {
            throw mapError(sent.response, key: key)
        }
        return uploadID
    }

    public func uploadPart(
        _ key: String, uploadID: String, number: Int,
        body: PutBody, crc32c: UInt32?
    ) throws(ObjectStoreError) -> String {
        try checkKey(key)
        let query = [("partNumber", String(number)), ("uploadId", uploadID)]
        // The server checks the part's bytes against it (BadDigest, retried): what guards an unsigned part.
        let headers = crc32c.map { [("x-amz-checksum-crc32c", CRC32C.base64($0))] } ?? []
        let sent = try send(
            Request(
                method: "PUT", key: key, query: query, headers: headers, body: body, probeUpload: uploadID,
                bodyChecksummed: crc32c != nil))
        guard sent.response.status == 200, let etag = sent.response.headers["etag"] else {
            throw mapError(sent.response, key: key)
        }
        return Self.unquote(etag)
    }

    /// UploadPartCopy: the server copies `range` of `source` into the part. `x-amz-copy-source-if-match` guards
    /// the version (not every S3-compatible server honours it; the completion's own condition still does). In an
    /// upload declared with part checksums the server answers the copy's CRC-32C (`ChecksumCRC32C`), which the
    /// completion must list (SeaweedFS refuses it with InvalidRequest otherwise); moto answers none.
    public func uploadPartCopy(
        _ key: String, uploadID: String, number: Int, source: String, range: Range<UInt64>,
        sourceVersion: String?
    ) throws(ObjectStoreError) -> CompletedPart {
        try checkKey(key)
        guard !range.isEmpty else { throw .invalidRequest("empty copy range") }
        let query = [("partNumber", String(number)), ("uploadId", uploadID)]
        var headers = [
            ("x-amz-copy-source", "/\(bucket)/\(SigV4Signer.uriEncode(source, keepSlash: true))"),
            ("x-amz-copy-source-range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"),
        ]
        if let sourceVersion { headers.append(("x-amz-copy-source-if-match", Self.quote(sourceVersion))) }
        let sent = try send(
            Request(
                method: "PUT", key: key, query: query, headers: headers, errorMayComeWith200: true,
                probeUpload: uploadID))
        guard sent.response.status == 200, let xml = S3XML.parse(sent.response.body), xml.name == "CopyPartResult",
            let etag = xml.value("ETag")
        else {
            throw mapError(sent.response, key: source, conditionKey: source)
        }
        return CompletedPart(
            number: number, etag: Self.unquote(etag), crc32c: xml.value("ChecksumCRC32C").flatMap(CRC32C.parseBase64))
    }

    /// The size and date of the new object come from a HEAD after completion (the response carries neither).
    /// A retried completion whose first attempt succeeded can come back NoSuchUpload (`.notFound`) or 412; unlike a
    /// single PUT, the multipart ETag cannot be checked locally, so that rare case is reported as an error.
    @discardableResult
    public func completeMultipartUpload(
        _ key: String, uploadID: String, parts: [CompletedPart],
        condition: PutCondition
    ) throws(ObjectStoreError) -> ObjectInfo {
        try checkKey(key)
        try validatePartList(parts)
        var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for part in parts {
            xml +=
                "<Part><PartNumber>\(part.number)</PartNumber>"
                + "<ETag>\(S3XML.escape(Self.quote(part.etag)))</ETag>"
                + (part.crc32c.map { "<ChecksumCRC32C>\(CRC32C.base64($0))</ChecksumCRC32C>" } ?? "") + "</Part>"
        }
        xml += "</CompleteMultipartUpload>"
        let headers = [("content-type", "application/xml")] + conditionHeaders(condition)
        let sent = try send(
            Request(
                method: "POST", key: key, query: [("uploadId", uploadID)], headers: headers,
                body: .data(Data(xml.utf8)), errorMayComeWith200: true, probeUpload: uploadID))
        // AWS names the root CompleteMultipartUploadResult, moto CompleteMultipartUploadResponse.
        guard sent.response.status == 200, let result = S3XML.parse(sent.response.body),
            result.name.hasPrefix("CompleteMultipartUpload")
        else {
            throw mapError(sent.response, key: key)
        }
        let version = Self.unquote(result.value("ETag") ?? sent.response.headers["etag"] ?? "")
        // The upload is complete: a failing HEAD must not turn that into an error (the caller would upload again).
        // Should the HEAD fail, or someone have overwritten the key since, the version stays ours so that a later
        // conditional write notices; the size is then unknown (0).
        var info = (try? head(key)) ?? ObjectInfo(key: key, size: 0, lastModified: Date(), version: version)
        info.version = version
        return info
    }

    public func abortMultipartUpload(_ key: String, uploadID: String) throws(ObjectStoreError) {
        try checkKey(key)
        let sent = try send(Request(method: "DELETE", key: key, query: [("uploadId", uploadID)]))
        guard sent.response.status == 204 || sent.response.status == 200 else {
            throw mapError(sent.response, key: key)
        }
    }

    public func listMultipartUploads(prefix: String) throws(ObjectStoreError) -> [MultipartUploadInfo] {
        var uploads: [MultipartUploadInfo] = []
        var keyMarker: String?
        var uploadIDMarker: String?
        repeat {
            var query = [("uploads", ""), ("encoding-type", "url")]
            if !prefix.isEmpty { query.append(("prefix", prefix)) }
            if let keyMarker { query.append(("key-marker", keyMarker)) }
            if let uploadIDMarker { query.append(("upload-id-marker", uploadIDMarker)) }
            let sent = try send(Request(method: "GET", key: nil, query: query))
            guard sent.response.status == 200 else { throw mapError(sent.response, key: nil) }
            guard let xml = S3XML.parse(sent.response.body), xml.name == "ListMultipartUploadsResult" else {
                throw .other("S3 ListMultipartUploads on \(bucket): unreadable response")
            }
            let encoded = xml.value("EncodingType")?.lowercased() == "url"
            for upload in xml.all("Upload") {
                guard let key = upload.value("Key"), let id = upload.value("UploadId") else { continue }
                uploads.append(
                    MultipartUploadInfo(
                        key: encoded ? Self.urlDecode(key) : key, uploadID: id,
                        initiated: upload.value("Initiated").flatMap(HTTPTimestamp.parseISO8601)
                            ?? Date(timeIntervalSince1970: 0)))
            }
            guard xml.value("IsTruncated") == "true" else { break }
            keyMarker = xml.value("NextKeyMarker").map { encoded ? Self.urlDecode($0) : $0 }
            uploadIDMarker = xml.value("NextUploadIdMarker")
        } while keyMarker != nil
        return uploads
    }
}
