import Foundation
import Synchronization

/// The credentials of one `S3CredentialSource`: fixed ones as they are; temporary ones fetched on first use,
/// cached, and fetched again before they expire — `refreshMargin` (5 minutes, as the SDKs) before, or half-way
/// through a lifetime shorter than twice that — so a request never goes out signed with keys about to lapse.
/// A failed refresh keeps using the cached keys while they are valid at all. One fetch at a time; other threads
/// wait for it and share its result.
///
/// Fetches block their thread (HTTP through `HTTPClient`, `credential_process` through a child process): they run
/// on the threads that send S3 requests (libfuse workers, the CLI), never on Swift's cooperative pool.
final class S3CredentialProvider: Sendable {
    let source: S3CredentialSource
    private let region: String
    private let environment: [String: String]
    private let refreshMargin: TimeInterval
    /// Metadata services answer from the local link: a short connect timeout, so a machine without one is told fast.
    private let client = HTTPClient(options: HTTPClient.Options(connectTimeout: 1, lowSpeedLimit: 1, lowSpeedTime: 5))
    private let cached = Mutex<(credentials: S3Credentials, refreshAt: Date)?>(nil)
    /// Held for a whole fetch (across its I/O), so that threads finding no valid keys wait for one fetch.
    private let fetching = NSLock()
    /// The provider of an assumed role's source credentials.
    private let base: S3CredentialProvider?
    /// Fetches so far (tests check caching and refresh with it).
    let fetchCount = Atomic<Int>(0)

    init(source: S3CredentialSource, region: String, environment: [String: String], refreshMargin: TimeInterval = 300) {
        self.source = source
        self.region = region
        self.environment = environment
        self.refreshMargin = refreshMargin
        if case .assumeRole(_, _, _, let inner, _) = source {
            base = S3CredentialProvider(
                source: inner, region: region, environment: environment,
                refreshMargin: refreshMargin)
        } else {
            base = nil
        }
    }

    /// Keys valid for a while yet.
    func credentials() throws(ObjectStoreError) -> S3Credentials {
        if case .fixed(let keys, _) = source { return keys }
        if let keys = fresh() { return keys }
        fetching.lock()
        defer { fetching.unlock() }
        if let keys = fresh() { return keys }
        do {
            let now = Date()
            let keys = try fetch()
            let lifetime = keys.expiration.map { $0.timeIntervalSince(now) } ?? .infinity
            let refreshAt = now.addingTimeInterval(lifetime - min(refreshMargin, lifetime / 2))
            cached.withLock { $0 = (keys, refreshAt) }
            return keys
        } catch {
            if let keys = stillValid() { return keys }
            throw error
        }
    }

    /// Forgets the cached keys (the server called them expired), so the next call fetches.
    func invalidate() {
        cached.withLock { $0 = nil }
        base?.invalidate()
    }

    private func fresh() -> S3Credentials? {
        cached.withLock { entry in
            guard let entry, entry.refreshAt > Date() else { return nil }
            return entry.credentials
        }
    }

    private func stillValid() -> S3Credentials? {
        cached.withLock { entry in
            guard let entry else { return nil }
            if let expiration = entry.credentials.expiration, expiration.timeIntervalSinceNow < 10 { return nil }
            return entry.credentials
        }
    }

    // MARK: Fetching

    private func fetch() throws(ObjectStoreError) -> S3Credentials {
        fetchCount.add(1, ordering: .relaxed)
        let sts = STSClient(client: client, region: region, environment: environment)
        switch source {
        case .fixed(let keys, _):
            return keys
        case .webIdentity(let role, let file, let session, _):
            guard let data = FileManager.default.contents(atPath: file),
                let token = S3Credentials.nonEmpty(
                    String(decoding: data, as: UTF8.self)
                        .trimmingCharacters(in: .whitespacesAndNewlines))
            else {
                throw .unauthorized("cannot read the web identity token file \(file)")
            }
            return try sts.assumeRoleWithWebIdentity(roleARN: role, sessionName: session, token: token)
        case .assumeRole(let role, let session, let externalID, _, _):
            guard let base else { throw .unauthorized("assume role \(role): no source credentials") }
            return try sts.assumeRole(
                roleARN: role, sessionName: session, externalID: externalID,
                using: try base.credentials())
        case .process(let command, let origin):
            return try AWSMetadataCredentials.run(process: command, origin: origin)
        case .container(let url, let tokenFile, let token):
            return try AWSMetadataCredentials(client: client).container(url: url, tokenFile: tokenFile, token: token)
        case .instanceMetadata(let endpoint):
            return try AWSMetadataCredentials(client: client).instance(endpoint: endpoint)
        }
    }
}
