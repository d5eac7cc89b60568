import Foundation

/// AWS credentials and region, resolved once when the store is created.
///
/// Chain, first found wins: explicit keys (config) → `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
/// (+`AWS_SESSION_TOKEN`) → the profile (`AWS_PROFILE`, default `default`) in the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) or the config file (`AWS_CONFIG_FILE`, default
/// `~/.aws/config`, sections `[profile name]`/`[default]`) → anonymous, only when asked for (`noSignRequest`).
///
/// Not supported: the EC2/ECS metadata service (IMDS), web identity tokens, SSO and `credential_process`; such
/// setups can export keys into the environment. Credentials are not refreshed, so temporary ones must outlive the
/// mount.
struct S3Credentials: Sendable, Equatable {
    var accessKeyID: String
    var secretAccessKey: String
    var sessionToken: String?

    static let missingMessage =
        "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or storage.aws_access_key_id"

    /// The credentials to sign with, or `nil` for anonymous access.
    static func resolve(_ configuration: S3Configuration, environment: [String: String]) throws(ObjectStoreError) -> S3Credentials? {
        if configuration.noSignRequest { return nil }
        if let id = nonEmpty(configuration.accessKeyID), let secret = nonEmpty(configuration.secretAccessKey) {
            return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: nonEmpty(configuration.sessionToken))
        }
        if nonEmpty(configuration.accessKeyID) != nil || nonEmpty(configuration.secretAccessKey) != nil {
            throw .unauthorized("incomplete AWS credentials in the configuration: both an access key id and a secret access key are needed")
        }
        if let id = nonEmpty(environment["AWS_ACCESS_KEY_ID"]), let secret = nonEmpty(environment["AWS_SECRET_ACCESS_KEY"]) {
            return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: nonEmpty(environment["AWS_SESSION_TOKEN"]))
        }
        let profile = profileSettings(configuration, environment: environment)
        if let id = nonEmpty(profile["aws_access_key_id"]), let secret = nonEmpty(profile["aws_secret_access_key"]) {
            return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: nonEmpty(profile["aws_session_token"]))
        }
        throw .unauthorized(missingMessage)
    }

    /// Explicit → `AWS_REGION` → `AWS_DEFAULT_REGION` → the profile's `region` → `us-east-1`.
    static func region(_ configuration: S3Configuration, environment: [String: String]) -> String {
        nonEmpty(configuration.region) ?? nonEmpty(environment["AWS_REGION"]) ?? nonEmpty(environment["AWS_DEFAULT_REGION"])
            ?? nonEmpty(profileSettings(configuration, environment: environment)["region"]) ?? "us-east-1"
    }

    /// The profile's settings; the credentials file wins over the config file for keys present in both.
    static func profileSettings(_ configuration: S3Configuration, environment: [String: String]) -> [String: String] {
        let name = nonEmpty(configuration.profile) ?? nonEmpty(environment["AWS_PROFILE"]) ?? "default"
        let home = nonEmpty(environment["HOME"]) ?? NSHomeDirectory()
        let credentialsPath = nonEmpty(environment["AWS_SHARED_CREDENTIALS_FILE"]).map(expandTilde(home)) ?? "\(home)/.aws/credentials"
        let configPath = nonEmpty(environment["AWS_CONFIG_FILE"]).map(expandTilde(home)) ?? "\(home)/.aws/config"
        var settings: [String: String] = [:]
        // In the config file non-default profiles are `[profile name]`; `[default]` stays bare.
        let configSection = name == "default" ? "default" : "profile \(name)"
        if let config = readINI(configPath) {
            settings.merge(config[configSection] ?? config[name] ?? [:]) { _, new in new }
        }
        if let credentials = readINI(credentialsPath) {
            settings.merge(credentials[name] ?? [:]) { _, new in new }
        }
        return settings
    }

    /// A minimal INI reader for the AWS shared files: `[section]`, `key = value`, `#`/`;` comments. Nested
    /// (indented) sub-settings such as `s3 =` blocks are skipped.
    static func parseINI(_ text: String) -> [String: [String: String]] {
        var sections: [String: [String: String]] = [:]
        var current: String?
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            if rawLine.first == " " || rawLine.first == "\t" { continue }
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                let name = line.dropFirst().dropLast().split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
                current = name
                if sections[name] == nil { sections[name] = [:] }
                continue
            }
            guard let section = current, let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            sections[section, default: [:]][key] = value
        }
        return sections
    }

    private static func readINI(_ path: String) -> [String: [String: String]]? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return parseINI(String(decoding: data, as: UTF8.self))
    }

    private static func expandTilde(_ home: String) -> (String) -> String {
        { path in path.hasPrefix("~/") ? home + path.dropFirst() : path }
    }

    private static func nonEmpty(_ value: String?) -> String? {
        guard let value, !value.isEmpty else { return nil }
        return value
    }
}
