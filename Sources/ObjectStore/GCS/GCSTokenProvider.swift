import Foundation
import Synchronization

/// OAuth2 access tokens for GCS requests: fetched on first use, cached, and fetched again `refreshMargin` before
/// they expire (so a request never goes out with a token about to lapse). One fetch at a time; the other threads
/// wait for it and share the result.
///
/// Service accounts sign a JWT (RS256, OpenSSL) and exchange it at the file's `token_uri`; `authorized_user` files
/// exchange their refresh token; on Google Cloud the metadata server hands out the instance's token.
final class GCSTokenProvider: Sendable {
    static let scope = "https://www.googleapis.com/auth/devstorage.read_write"
    static let jwtLifetime: TimeInterval = 3600

    struct Token: Sendable, Equatable {
        var value: String
        var expires: Date
    }

    let credentials: GCSCredentials
    private let signer: RSASHA256Signer?
    private let client: HTTPClient
    private let refreshMargin: TimeInterval
    private let cached = Mutex<Token?>(nil)
    /// Held for a whole fetch (across its HTTP request): the one place a lock spans I/O, so concurrent requests
    /// that find no valid token wait for one fetch instead of each making their own.
    private let fetching = NSLock()
    /// Tokens fetched so far (tests check caching with it).
    let fetchCount = Atomic<Int>(0)

    init(credentials: GCSCredentials, client: HTTPClient, refreshMargin: TimeInterval = 300) throws(ObjectStoreError) {
        self.credentials = credentials
        self.client = client
        self.refreshMargin = refreshMargin
        if case .serviceAccount(let account) = credentials {
            signer = try RSASHA256Signer(pem: account.privateKeyPEM)
        } else {
            signer = nil
        }
    }

    /// A token valid for at least `refreshMargin` more seconds (or, when a refresh fails, the cached one while it
    /// is still valid at all).
    func token() throws(ObjectStoreError) -> String {
        if let token = usable(margin: refreshMargin) { return token }
        fetching.lock()
        defer { fetching.unlock() }
        if let token = usable(margin: refreshMargin) { return token }
        do {
            let fresh = try fetch(now: Date())
            cached.withLock { $0 = fresh }
            return fresh.value
        } catch {
            if let token = usable(margin: 10) { return token }
            throw error
        }
    }

    /// Forgets the cached token (the server rejected it), so the next `token()` fetches a new one.
    func invalidate() {
        cached.withLock { $0 = nil }
    }

    private func usable(margin: TimeInterval) -> String? {
        cached.withLock { token in
            guard let token, token.expires.timeIntervalSinceNow > margin else { return nil }
            return token.value
        }
    }

    // MARK: Fetching

    private func fetch(now: Date) throws(ObjectStoreError) -> Token {
        fetchCount.add(1, ordering: .relaxed)
        switch credentials {
        case .none:
            throw .unauthorized("no GCS credentials configured")
        case .serviceAccount(let account):
            guard let signer else { throw .unauthorized("no signing key for \(account.clientEmail)") }
            let assertion = try Self.assertion(for: account, signer: signer, now: now)
            let form =
                "grant_type=" + Self.formEncode("urn:ietf:params:oauth:grant-type:jwt-bearer")
                + "&assertion=" + Self.formEncode(assertion)
            return try exchange(
                url: account.tokenURI, form: form, what: "service account \(account.clientEmail)", now: now)
        case .authorizedUser(let user):
            let form = [
                "grant_type=refresh_token", "client_id=" + Self.formEncode(user.clientID),
                "client_secret=" + Self.formEncode(user.clientSecret),
                "refresh_token=" + Self.formEncode(user.refreshToken),
            ].joined(separator: "&")
            return try exchange(url: user.tokenURI, form: form, what: "user credentials", now: now)
        case .metadataServer(let host):
            let url = "http://\(host)/computeMetadata/v1/instance/service-accounts/default/token"
            let request = HTTPRequest(method: "GET", url: url, headers: [("metadata-flavor", "Google")])
            let response: HTTPResponse
            do { response = try perform(request) } catch {
                throw .unauthorized(
                    "no GCS credentials found (set credentials_file or GOOGLE_APPLICATION_CREDENTIALS, "
                        + "or run on Google Cloud): metadata server \(host): \(error)")
            }
            return try parse(response, from: "metadata server \(host)", now: now)
        case .externalAccount(let account):
            return try federatedToken(account, now: now)
        }
    }

    private func exchange(url: String, form: String, what: String, now: Date) throws(ObjectStoreError) -> Token {
        let request = HTTPRequest(
            method: "POST", url: url,
            headers: [("content-type", "application/x-www-form-urlencoded")],
            body: .data(Data(form.utf8)))
        let response: HTTPResponse
        do { response = try perform(request) } catch {
            throw .transport("cannot reach token endpoint \(url) for \(what): \(error)")
        }
        return try parse(response, from: "token endpoint \(url) for \(what)", now: now)
    }

    /// A token request, retried twice on connection failures and 5xx/429.
    func perform(_ request: HTTPRequest) throws(ObjectStoreError) -> HTTPResponse {
        var attempt = 0
        while true {
            attempt += 1
            do {
                let response = try client.perform(request)
                if attempt < 3, response.status == 429 || response.status >= 500 {
                    usleep(UInt32(100_000 * attempt))
                    continue
                }
                return response
            } catch {
                guard attempt < 3 else { throw error }
                usleep(UInt32(100_000 * attempt))
            }
        }
    }

    func parse(_ response: HTTPResponse, from source: String, now: Date) throws(ObjectStoreError) -> Token {
        let json = (try? JSONSerialization.jsonObject(with: response.body)) as? [String: Any] ?? [:]
        guard response.status == 200 else {
            let error = json["error"] as? String ?? "HTTP \(response.status)"
            let detail = (json["error_description"] as? String).map { ": \($0)" } ?? ""
            let message = "\(source) refused: \(error)\(detail)"
            throw response.status >= 500 ? .transport(message) : .unauthorized(message)
        }
        guard let value = json["access_token"] as? String, !value.isEmpty else {
            throw .unauthorized("\(source) answered without an access_token")
        }
        let lifetime =
            (json["expires_in"] as? NSNumber)?.doubleValue
            ?? (json["expires_in"] as? String).flatMap(Double.init) ?? 3600
        return Token(value: value, expires: now.addingTimeInterval(lifetime))
    }

    // MARK: JWT

    /// The signed JWT a service account exchanges for a token: RS256 over `header.claims`, both base64url JSON.
    static func assertion(
        for account: GCSCredentials.ServiceAccount, signer: RSASHA256Signer,
        now: Date
    ) throws(ObjectStoreError) -> String {
        var header: [String: Any] = ["alg": "RS256", "typ": "JWT"]
        if let kid = account.privateKeyID { header["kid"] = kid }
        let issued = Int(now.timeIntervalSince1970)
        let claims: [String: Any] = [
            "iss": account.clientEmail, "scope": scope, "aud": account.tokenURI,
            "iat": issued, "exp": issued + Int(jwtLifetime),
        ]
        let signingInput = base64URL(try json(header)) + "." + base64URL(try json(claims))
        let signature = try signer.sign(Data(signingInput.utf8))
        return signingInput + "." + base64URL(signature)
    }

    private static func json(_ object: [String: Any]) throws(ObjectStoreError) -> Data {
        do {
            return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        } catch {
            throw .other("cannot encode JWT: \(error)")
        }
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// `application/x-www-form-urlencoded` value encoding: unreserved characters kept, everything else `%XX`.
    static func formEncode(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: GCSObjectStore.unreserved) ?? value
    }
}
