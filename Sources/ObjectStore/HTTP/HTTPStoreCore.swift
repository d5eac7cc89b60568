import Foundation
import Synchronization

/// What every object store over HTTP shares (S3, GCS, and a third one alike): the client, the retry policy and the
/// loop that applies it, the attempt counters, the pre-mount bucket check and the key rules both clouds have.
/// A store adds only its protocol: how a request is addressed and authorised, which answers are retryable, how
/// answers become `ObjectStoreError`s.
final class HTTPStoreCore: Sendable {
    /// The protocol's name in messages: "S3", "GCS".
    let service: String
    let bucket: String
    let endpoint: String
    let client: HTTPClient
    let retry: RetryPolicy
    /// Every HTTP attempt, retries included: a metric, and how tests see retries happen.
    let attempts = Atomic<Int>(0)
    /// Attempts after the first of a request (the daemon's `bucketfs_store_retries_total`).
    let retries = Atomic<Int>(0)

    init(service: String, bucket: String, endpoint: String, client: HTTPClient, retry: RetryPolicy) {
        self.service = service
        self.bucket = bucket
        self.endpoint = endpoint
        self.client = client
        self.retry = retry
    }

    /// What a store makes of an answer before the policy sees it.
    enum Verdict {
        /// The policy decides: sent again if retryable and retries are left.
        case asIs
        /// The answer stands, retryable or not.
        case final
        /// Sent again at once, without waiting (e.g. with a renewed token); it counts as an attempt.
        case again
    }

    struct Answer {
        var response: HTTPResponse
        var attempts: Int
    }

    /// Sends one request under `policy` (the store's by default). `prepare` builds attempt n's request (signed, or
    /// with a token); an error there ends the request at once. `inspect` sees every answer first and may change
    /// it. `gaveUp` hears of the error that ends the request after its retries (a connection failure).
    func send(
        policy: RetryPolicy? = nil, sinkStatuses: Set<Int> = [],
        bodySink: ((UnsafeRawBufferPointer) -> Bool)? = nil,
        prepare: (_ attempt: Int) throws(ObjectStoreError) -> HTTPRequest,
        inspect: (inout HTTPResponse) -> Verdict = { _ in .asIs },
        gaveUp: (ObjectStoreError, _ attempts: Int) -> Void = { _, _ in }
    ) throws(ObjectStoreError) -> Answer {
        let policy = policy ?? retry
        var attempt = 0
        while true {
            attempt += 1
            attempts.add(1, ordering: .relaxed)
            if attempt > 1 { retries.add(1, ordering: .relaxed) }
            let request = try prepare(attempt)
            let retriesLeft = attempt <= policy.maxRetries
            do {
                var response = try client.perform(request, sinkStatuses: sinkStatuses, bodySink: bodySink)
                switch inspect(&response) {
                case .final: return Answer(response: response, attempts: attempt)
                case .again: continue
                case .asIs: break
                }
                if retriesLeft, policy.isRetryable(response) {
                    policy.backoff(attempt: attempt)
                    continue
                }
                return Answer(response: response, attempts: attempt)
            } catch {
                guard retriesLeft, case .transport = error else {
                    gaveUp(error, attempt)
                    throw error
                }
                policy.backoff(attempt: attempt)
            }
        }
    }

    /// The pre-mount check: `probe` runs the store's cheapest bucket-level request (a list of at most one key)
    /// under the policy it is given, which retries at most once — a user waiting at the command line should hear
    /// about a dead endpoint quickly. A failure becomes one line naming the bucket and the endpoint.
    func validateBucket(_ probe: (RetryPolicy) throws(ObjectStoreError) -> Void) throws(ObjectStoreError) {
        do {
            try probe(retry.with(maxRetries: min(1, retry.maxRetries)))
        } catch {
            switch error {
            case .noSuchBucket:
                throw .noSuchBucket("\(bucket) (at \(endpoint))")
            case .unauthorized(let detail):
                throw .unauthorized("\(endpoint) rejected the credentials for bucket \(bucket): \(detail)")
            case .accessDenied(let detail):
                throw .accessDenied("cannot list bucket \(bucket) at \(endpoint): \(detail)")
            case .transport(let detail):
                throw .transport("cannot reach \(service) endpoint \(endpoint): \(detail)")
            default:
                throw error
            }
        }
    }

    /// A bucket name as given, if it can be one: not empty, no `/` (it goes into URLs and hosts as is).
    static func checkBucketName(_ name: String) throws(ObjectStoreError) -> String {
        guard !name.isEmpty, !name.contains("/") else { throw .invalidRequest("invalid bucket name \"\(name)\"") }
        return name
    }

    /// The rule S3 and GCS share: a key is 1 to 1,024 bytes.
    func checkKey(_ key: String) throws(ObjectStoreError) {
        if key.isEmpty { throw .invalidKey(key: key, reason: "empty key") }
        if key.utf8.count > 1024 { throw .invalidKey(key: key, reason: "longer than 1024 bytes (\(service)'s limit)") }
    }

    /// A GET's answer as `ObjectStore.get` returns it: 200 is the whole object (when a range was asked, the server
    /// ignored it: the range is cut out), 206 the range (the object's size from Content-Range), 416 a range past the
    /// end (empty, with `head`'s info); anything else is `failure`'s error. `info` reads headers and a size.
    static func objectData(
        _ response: HTTPResponse, range: Range<UInt64>?,
        info: (_ headers: [String: String], _ size: UInt64?) -> ObjectInfo,
        head: () throws(ObjectStoreError) -> ObjectInfo,
        failure: (HTTPResponse) -> ObjectStoreError
    ) throws(ObjectStoreError) -> ObjectData {
        switch response.status {
        case 200:
            let whole = ObjectData(info: info(response.headers, UInt64(response.body.count)), body: response.body)
            guard let range else { return whole }
            let lower = Int(clamping: min(range.lowerBound, UInt64(response.body.count)))
            let upper = Int(clamping: min(range.upperBound, UInt64(response.body.count)))
            return ObjectData(info: whole.info, body: response.body.subdata(in: lower..<upper))
        case 206:
            let total = response.headers["content-range"].flatMap { $0.split(separator: "/").last }
                .flatMap { UInt64($0) }
            return ObjectData(info: info(response.headers, total), body: response.body)
        case 416:
            return ObjectData(info: try head(), body: Data())
        default:
            throw failure(response)
        }
    }

    /// User metadata from headers named `<prefix><key>` (`x-amz-meta-`, `x-goog-meta-`).
    static func metadata(_ headers: [String: String], prefix: String) -> ObjectMetadata {
        var metadata: ObjectMetadata = [:]
        for (name, value) in headers where name.hasPrefix(prefix) {
            metadata[String(name.dropFirst(prefix.count))] = value
        }
        return metadata
    }

    /// Last-Modified of a response, or the epoch when absent.
    static func lastModified(_ headers: [String: String]) -> Date {
        headers["last-modified"].flatMap(HTTPTimestamp.parseHTTPDate) ?? Date(timeIntervalSince1970: 0)
    }
}

/// A store with an `HTTPStoreCore`: the daemon reads its retry count for `bucketfs_store_retries_total`.
public protocol HTTPObjectStore: ObjectStore {
    /// Attempts after the first of a request, since the store was made.
    var retryCount: Int { get }
    /// Every HTTP attempt, retries included.
    var attemptCount: Int { get }
}
