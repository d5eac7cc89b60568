import Foundation

extension GCSTokenProvider {
    static let cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

    /// External account: subject token → STS exchange → (optionally) the impersonated service account's token.
    /// The subject token is read again at each fetch: Kubernetes rotates projected tokens.
    func federatedToken(_ account: GCSExternalAccount, now: Date) throws(ObjectStoreError) -> Token {
        let subject = try subjectToken(account)
        // Without impersonation the federated token is used for storage directly, so it gets the storage scope.
        let scope = account.impersonationURL == nil ? Self.scope : Self.cloudPlatformScope
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("audience", account.audience),
            ("scope", scope), ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("subject_token_type", account.subjectTokenType), ("subject_token", subject),
        ].map { "\($0.0)=\(Self.formEncode($0.1))" }.joined(separator: "&")
        let request = HTTPRequest(
            method: "POST", url: account.tokenURL,
            headers: [("content-type", "application/x-www-form-urlencoded")],
            body: .data(Data(form.utf8)))
        let response: HTTPResponse
        do { response = try perform(request) } catch {
            throw .transport("cannot reach STS \(account.tokenURL) for the external account: \(error)")
        }
        let federated = try parse(response, from: "STS \(account.tokenURL) for the external account", now: now)
        guard let url = account.impersonationURL else { return federated }
        return try impersonate(url: url, bearer: federated.value, now: now)
    }

    private func impersonate(url: String, bearer: String, now: Date) throws(ObjectStoreError) -> Token {
        let body = #"{"scope":["\#(Self.scope)"],"lifetime":"3600s"}"#
        let request = HTTPRequest(
            method: "POST", url: url,
            headers: [("content-type", "application/json"), ("authorization", "Bearer " + bearer)],
            body: .data(Data(body.utf8)))
        let response: HTTPResponse
        do { response = try perform(request) } catch {
            throw .transport("cannot reach \(url) to impersonate the service account: \(error)")
        }
        let json = (try? JSONSerialization.jsonObject(with: response.body)) as? [String: Any] ?? [:]
        guard response.status == 200, let value = json["accessToken"] as? String, !value.isEmpty else {
            let message = ((json["error"] as? [String: Any])?["message"] as? String) ?? "HTTP \(response.status)"
            throw response.status >= 500
                ? .transport("\(url) refused: \(message)")
                : .unauthorized("service account impersonation at \(url) refused: \(message)")
        }
        let expires =
            (json["expireTime"] as? String).flatMap(HTTPTimestamp.parseISO8601) ?? now.addingTimeInterval(3600)
        return Token(value: value, expires: expires)
    }

    private func subjectToken(_ account: GCSExternalAccount) throws(ObjectStoreError) -> String {
        let raw: Data
        switch account.source {
        case .file(let path):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw .unauthorized("cannot read the external account's subject token file \(path)")
            }
            raw = data
        case .url(let url, let headers):
            let response: HTTPResponse
            do {
                response = try perform(
                    HTTPRequest(method: "GET", url: url, headers: headers.map { ($0.key, $0.value) }))
            } catch { throw .unauthorized("cannot fetch the external account's subject token from \(url): \(error)") }
            guard response.status == 200 else {
                throw .unauthorized("the external account's subject token URL \(url) answered HTTP \(response.status)")
            }
            raw = response.body
        }
        let token: String?
        if let field = account.jsonField {
            token = ((try? JSONSerialization.jsonObject(with: raw)) as? [String: Any])?[field] as? String
        } else {
            token = String(decoding: raw, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let token, !token.isEmpty else { throw .unauthorized("the external account's subject token is empty") }
        return token
    }
}
