import Foundation

/// AWS credentials: keys, a session token for temporary ones, and when they expire (nil: never).
struct S3Credentials: Sendable, Equatable {
    var accessKeyID: String
    var secretAccessKey: String
    var sessionToken: String?
    var expiration: Date?

    init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil, expiration: Date? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
    }

    static let missingMessage =
        "no AWS credentials found: "
        + "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or storage.aws_access_key_id"

    /// The credentials the chain (`S3CredentialSource.resolve`) gives now, or `nil` for anonymous access. Sources
    /// that ask a service (STS, the container or instance metadata) ask it once here.
    static func resolve(_ configuration: S3Configuration, environment: [String: String]) throws(ObjectStoreError)
        -> S3Credentials?
    {
        guard let source = try S3CredentialSource.resolve(configuration, environment: environment) else { return nil }
        return try S3CredentialProvider(
            source: source, region: region(configuration, environment: environment),
            environment: environment
        ).credentials()
    }

    /// Explicit → `AWS_REGION` → `AWS_DEFAULT_REGION` → the profile's `region` → `us-east-1`.
    static func region(_ configuration: S3Configuration, environment: [String: String]) -> String {
        nonEmpty(configuration.region) ?? nonEmpty(environment["AWS_REGION"]) ?? nonEmpty(
            environment["AWS_DEFAULT_REGION"])
            ?? nonEmpty(profileSettings(configuration, environment: environment)["region"]) ?? "us-east-1"
    }

    /// The name of the profile in use: explicit, `AWS_PROFILE`, `default`.
    static func profileName(_ configuration: S3Configuration, environment: [String: String]) -> String {
        nonEmpty(configuration.profile) ?? nonEmpty(environment["AWS_PROFILE"]) ?? "default"
    }

    /// The profile's settings; the credentials file wins over the config file for keys present in both.
    static func profileSettings(
        _ configuration: S3Configuration, environment: [String: String],
        name: String? = nil
    ) -> [String: String] {
        let name = name ?? profileName(configuration, environment: environment)
        let home = nonEmpty(environment["HOME"]) ?? NSHomeDirectory()
        let credentialsPath =
            nonEmpty(environment["AWS_SHARED_CREDENTIALS_FILE"]).map(expandTilde(home)) ?? "\(home)/.aws/credentials"
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
                let name = line.dropFirst().dropLast().split(separator: " ", omittingEmptySubsequences: true).joined(
                    separator: " ")
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

    static func nonEmpty(_ value: String?) -> String? {
        guard let value, !value.isEmpty else { return nil }
        return value
    }
}
