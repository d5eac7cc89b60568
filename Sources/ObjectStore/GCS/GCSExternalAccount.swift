import Foundation

/// An `external_account` credentials file (workload identity federation): a subject token from another identity
/// provider (a Kubernetes service-account token, an OIDC token on disk or from a URL) is exchanged at Google's STS
/// (`token_url`, RFC 8693) for a federated access token, which then — when `service_account_impersonation_url`
/// is set — buys a service account's access token (IAM Credentials `generateAccessToken`).
///
/// Subject tokens from a file or a URL, as text or JSON (`format.subject_token_field_name`). AWS and executable
/// sources (`environment_id`, `executable`) are not supported.
struct GCSExternalAccount: Sendable, Equatable, CustomStringConvertible {
    enum Source: Sendable, Equatable {
        case file(String)
        case url(String, headers: [String: String])
    }

    var audience: String
    var subjectTokenType: String
    var tokenURL: String
    var source: Source
    /// `subject_token_field_name` when the token is a field of a JSON document; nil for plain text.
    var jsonField: String?
    var impersonationURL: String?
    var quotaProjectID: String?

    var description: String {
        let from: String
        switch source {
        case .file(let path): from = "token file \(path)"
        case .url(let url, _): from = "token URL \(url)"
        }
        let impersonating =
            impersonationURL.map { url -> String in
                let account = url.split(separator: "/").last.map { String($0.prefix { $0 != ":" }) } ?? url
                return ", impersonating \(account)"
            } ?? ""
        return "external account (workload identity federation: \(from), audience \(audience)\(impersonating))"
    }

    init(_ object: [String: Any], file: String) throws(ObjectStoreError) {
        func field(_ name: String) -> String? { (object[name] as? String).flatMap { $0.isEmpty ? nil : $0 } }
        guard let audience = field("audience"), let type = field("subject_token_type"),
            let source = object["credential_source"] as? [String: Any]
        else {
            throw .unauthorized("GCS credentials file \(file) lacks audience, subject_token_type or credential_source")
        }
        self.audience = audience
        subjectTokenType = type
        tokenURL = field("token_url") ?? "https://sts.googleapis.com/v1/token"
        impersonationURL = field("service_account_impersonation_url")
        quotaProjectID = field("quota_project_id")
        if let path = source["file"] as? String, !path.isEmpty {
            self.source = .file(path)
        } else if let url = source["url"] as? String, !url.isEmpty {
            self.source = .url(url, headers: source["headers"] as? [String: String] ?? [:])
        } else {
            throw .unauthorized(
                "GCS credentials file \(file): credential_source needs file or url "
                    + "(AWS and executable sources are not supported)")
        }
        let format = source["format"] as? [String: Any]
        jsonField = (format?["type"] as? String) == "json" ? (format?["subject_token_field_name"] as? String) : nil
    }
}
