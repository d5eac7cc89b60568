import Foundation
import Logging

/// The log line of a request that failed for good.
extension S3ObjectStore {
    /// One line per request that failed for good (after its retries): operation, key, status, S3 error code and
    /// retry count. Headers and URLs are never logged (they carry signatures and tokens). Answers callers expect
    /// and turn into a result (404 on reading or deleting an object, 412 condition failed, 304) are debug; the rest
    /// (a 404 on a write means the bucket is gone) are warnings.
    func logFailure(_ request: Request, status: String, code: String?, attempts: Int, error: String? = nil) {
        guard !request.quiet else { return }
        var metadata: Logger.Metadata = [
            "operation": "\(Self.operationName(request))", "bucket": "\(bucket)",
            "key": "\(request.key ?? "")", "status": "\(status)",
            "retries": "\(attempts - 1)",
        ]
        if let code { metadata["code"] = "\(code)" }
        if let error { metadata["error"] = "\(error)" }
        let expected =
            status == "412" || status == "304"
            || (status == "404" && request.key != nil && ["HEAD", "GET", "DELETE"].contains(request.method))
        Logger(label: "bucketfs.s3").log(
            level: expected ? .debug : .warning, "store request failed",
            metadata: metadata)
    }

    /// The S3 API name of a request, as AWS's documentation and error messages call it.
    static func operationName(_ request: Request) -> String {
        let query = Set(request.query.map(\.0))
        let copy = request.headers.contains { $0.0.lowercased() == "x-amz-copy-source" }
        switch request.method {
        case "HEAD": return request.key == nil ? "HeadBucket" : "HeadObject"
        case "GET":
            if request.key == nil { return query.contains("uploads") ? "ListMultipartUploads" : "ListObjectsV2" }
            return query.contains("uploadId") ? "ListParts" : "GetObject"
        case "PUT":
            if query.contains("partNumber") { return copy ? "UploadPartCopy" : "UploadPart" }
            return copy ? "CopyObject" : "PutObject"
        case "POST":
            if query.contains("uploads") { return "CreateMultipartUpload" }
            if query.contains("uploadId") { return "CompleteMultipartUpload" }
            return query.contains("delete") ? "DeleteObjects" : "POST"
        case "DELETE": return query.contains("uploadId") ? "AbortMultipartUpload" : "DeleteObject"
        default: return request.method
        }
    }
}
