import Foundation

/// How S3 answers become `ObjectStoreError`s.
extension S3ObjectStore {
    // MARK: Errors

    /// The one place S3 answers become `ObjectStoreError`s. `key` is named by not-found errors, `conditionKey`
    /// (default `key`) by failed conditions — they differ for a copy (missing source, condition on the destination).
    func mapError(_ response: HTTPResponse, key: String?, conditionKey: String? = nil) -> ObjectStoreError {
        let xml = S3XML.parse(response.body)
        let code = xml?.value("Code") ?? ""
        let message = xml?.value("Message") ?? ""
        let detail =
            code.isEmpty
            ? "HTTP \(response.status)"
            : "\(code)\(message.isEmpty ? "" : ": \(message)") (HTTP \(response.status))"
        let conditionKey = conditionKey ?? key ?? ""
        switch code {
        case "NoSuchKey", "NoSuchUpload", "NoSuchVersion":
            return .notFound(key: key ?? "")
        case "NoSuchBucket":
            return .noSuchBucket(bucket)
        case "PreconditionFailed", "ConditionalRequestConflict":
            return .preconditionFailed(key: conditionKey)
        case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
            "AuthorizationHeaderMalformed", "MissingSecurityHeader", "RequestTimeTooSkewed", "InvalidClientTokenId":
            return .unauthorized(detail)
        case "AccessDenied", "AllAccessDisabled", "AccountProblem":
            return .accessDenied(detail)
        case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests":
            return .throttled(detail)
        case "InvalidPart", "InvalidPartOrder", "EntityTooSmall", "EntityTooLarge", "InvalidArgument", "InvalidRequest",
            "MalformedXML", "InvalidDigest", "BadDigest", "XAmzContentSHA256Mismatch", "KeyTooLongError",
            "MetadataTooLarge", "InvalidBucketName", "IncompleteBody", "MissingContentLength":
            return .invalidRequest(detail)
        case "PermanentRedirect":
            let other = response.headers["x-amz-bucket-region"].map { "region \($0)" } ?? "another region"
            return .other("bucket \(bucket) is in \(other), not \(region): set the region (\(detail))")
        default:
            break
        }
        switch response.status {
        case 301:
            let other = response.headers["x-amz-bucket-region"].map { "region \($0)" } ?? "another region"
            return .other("bucket \(bucket) is in \(other), not \(region): set the region")
        case 404:
            return key.map { .notFound(key: $0) } ?? .noSuchBucket(bucket)
        case 409 where code.isEmpty, 412:
            return .preconditionFailed(key: conditionKey)
        case 400 where code == "RequestTimeout":
            return .transport("\(detail) from \(endpoint)")
        case 401:
            return .unauthorized(detail)
        case 403:
            // A HEAD has no body: wrong credentials and missing permission look alike.
            return .accessDenied(code.isEmpty ? "HTTP 403 (wrong credentials or no permission)" : detail)
        case 429, 503:
            return .throttled(detail)
        case 500...599:
            return .transport("\(detail) from \(endpoint)")
        case 400..<500:
            return .invalidRequest(detail)
        default:
            return .other("S3 \(detail)")
        }
    }

    func errorCode(_ response: HTTPResponse) -> String? {
        S3XML.parse(response.body)?.value("Code")
    }
}
