import Foundation

/// Where a GCS store gets its OAuth2 access tokens, chosen once when the store is made.
///
/// Order: an explicit `credentials_file`; no authentication for emulators (`STORAGE_EMULATOR_HOST` or a custom
/// endpoint); `GOOGLE_APPLICATION_CREDENTIALS`; gcloud's application-default file; the metadata server
/// (`GCE_METADATA_HOST`, else `metadata.google.internal`).
enum GCSCredentials: Sendable, Equatable {
    /// Requests go without `Authorization` (emulators).
    case none
    case serviceAccount(ServiceAccount)
    /// `gcloud auth application-default login` files: a refresh token exchanged at `tokenURI`.
    case authorizedUser(AuthorizedUser)
    /// The instance's service account, from the metadata server at `host` (`host[:port]`).
    case metadataServer(host: String)
    /// Workload identity federation: a token of another identity provider exchanged at Google's STS.
    case externalAccount(GCSExternalAccount)

    struct ServiceAccount: Sendable, Equatable {
        var clientEmail: String
        var privateKeyPEM: String
        var privateKeyID: String?
        var tokenURI: String
        var projectID: String?
    }

    struct AuthorizedUser: Sendable, Equatable {
        var clientID: String
        var clientSecret: String
        var refreshToken: String
        var tokenURI: String
        var quotaProjectID: String?
    }

    static let defaultTokenURI = "https://oauth2.googleapis.com/token"

    /// The credentials and the project they name (if any). `emulator` says requests go to an emulator or a custom
    /// endpoint, which get no authentication unless a file is configured explicitly.
    static func resolve(
        _ configuration: GCSConfiguration, environment: [String: String],
        emulator: Bool
    ) throws(ObjectStoreError) -> (GCSCredentials, projectID: String?) {
        if let file = configuration.credentialsFile, !file.isEmpty { return try load(file: file) }
        if emulator { return (.none, nil) }
        if let file = environment["GOOGLE_APPLICATION_CREDENTIALS"], !file.isEmpty { return try load(file: file) }
        let configHome =
            environment["CLOUDSDK_CONFIG"]
            ?? (environment["HOME"].map { $0 + "/.config/gcloud" })
        if let configHome {
            let wellKnown = configHome + "/application_default_credentials.json"
            if FileManager.default.fileExists(atPath: wellKnown) { return try load(file: wellKnown) }
        }
        let host = environment["GCE_METADATA_HOST"].flatMap { $0.isEmpty ? nil : $0 } ?? "metadata.google.internal"
        return (.metadataServer(host: host), nil)
    }

    /// Names the credentials and what they use, never a secret (`bucketfs config print`).
    var description: String {
        switch self {
        case .none: return "none (emulator)"
        case .serviceAccount(let account): return "service account \(account.clientEmail)"
        case .authorizedUser: return "user credentials (gcloud application-default)"
        case .metadataServer(let host): return "metadata server \(host)"
        case .externalAccount(let account): return account.description
        }
    }

    /// Reads a credentials JSON file: `service_account`, `authorized_user` or `external_account`.
    static func load(file: String) throws(ObjectStoreError) -> (GCSCredentials, projectID: String?) {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
            throw .unauthorized("cannot read GCS credentials file \(file): \(error.localizedDescription)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .unauthorized("GCS credentials file \(file) is not a JSON object")
        }
        func field(_ name: String) -> String? {
            (object[name] as? String).flatMap { $0.isEmpty ? nil : $0 }
        }
        switch field("type") {
        case "service_account":
            guard let email = field("client_email"), let key = field("private_key") else {
                throw .unauthorized("GCS credentials file \(file) lacks client_email or private_key")
            }
            let account = ServiceAccount(
                clientEmail: email, privateKeyPEM: key, privateKeyID: field("private_key_id"),
                tokenURI: field("token_uri") ?? defaultTokenURI, projectID: field("project_id"))
            return (.serviceAccount(account), account.projectID)
        case "authorized_user":
            guard let id = field("client_id"), let secret = field("client_secret"), let refresh = field("refresh_token")
            else {
                throw .unauthorized("GCS credentials file \(file) lacks client_id, client_secret or refresh_token")
            }
            let user = AuthorizedUser(
                clientID: id, clientSecret: secret, refreshToken: refresh,
                tokenURI: field("token_uri") ?? defaultTokenURI,
                quotaProjectID: field("quota_project_id"))
            return (.authorizedUser(user), user.quotaProjectID)
        case "external_account":
            let account = try GCSExternalAccount(object, file: file)
            return (.externalAccount(account), account.quotaProjectID)
        case let other:
            throw .unauthorized(
                "GCS credentials file \(file) has type \"\(other ?? "none")\" "
                    + "(expected service_account, authorized_user or external_account)")
        }
    }
}
