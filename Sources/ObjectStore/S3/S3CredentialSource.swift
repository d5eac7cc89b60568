import Foundation

/// Where an S3 store's credentials come from, chosen once (from the configuration, the environment and the
/// `~/.aws` files, without a request) when the store is made. The order is the AWS SDKs':
///
/// 1. explicit keys (config), 2. `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (+`AWS_SESSION_TOKEN`),
/// 3. web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (EKS IRSA) → STS AssumeRoleWithWebIdentity,
/// 4. the profile (`AWS_PROFILE`, default `default`): `role_arn` with `source_profile`, `credential_source` or
///    `web_identity_token_file` (→ STS AssumeRole / AssumeRoleWithWebIdentity), static keys, `credential_process`,
/// 5. container credentials: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS) or `_FULL_URI` (EKS Pod Identity)
///    with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` / `_TOKEN`,
/// 6. EC2 instance metadata, IMDSv2 (`AWS_EC2_METADATA_SERVICE_ENDPOINT`; off with `AWS_EC2_METADATA_DISABLED`).
///
/// SSO profiles are not supported. Temporary credentials are refreshed before they expire (`S3CredentialProvider`).
indirect enum S3CredentialSource: Sendable, Equatable, CustomStringConvertible {
    /// Keys that do not change; `origin` names where they were found.
    case fixed(S3Credentials, origin: String)
    case webIdentity(roleARN: String, tokenFile: String, sessionName: String, origin: String)
    case assumeRole(
        roleARN: String, sessionName: String, externalID: String?, source: S3CredentialSource,
        origin: String)
    /// A command printing credentials as JSON (`credential_process`), run through `/bin/sh -c`.
    case process(command: String, origin: String)
    case container(url: String, tokenFile: String?, token: String?)
    case instanceMetadata(endpoint: String)

    /// Names the source and what it uses, never a secret: what `bucketfs config print` shows.
    var description: String {
        switch self {
        case .fixed(_, let origin): return origin
        case .webIdentity(let role, let file, _, let origin):
            return "web identity (\(origin): role \(role), token file \(file))"
        case .assumeRole(let role, _, _, let source, let origin):
            return "assume role (\(origin): role \(role), from \(source))"
        case .process(_, let origin): return "credential_process (\(origin))"
        case .container(let url, let file, let token):
            let auth = file.map { ", token file \($0)" } ?? (token == nil ? "" : ", token from the environment")
            return "container credentials (\(url)\(auth))"
        case .instanceMetadata(let endpoint): return "EC2 instance metadata, IMDSv2 (\(endpoint))"
        }
    }

    static let containerHost = "http://169.254.170.2"
    static let defaultIMDSEndpoint = "http://169.254.169.254"

    /// The chain above; `nil` for anonymous access (`noSignRequest`).
    static func resolve(_ configuration: S3Configuration, environment: [String: String]) throws(ObjectStoreError)
        -> S3CredentialSource?
    {
        let env = { (name: String) in S3Credentials.nonEmpty(environment[name]) }
        if configuration.noSignRequest { return nil }
        if let id = S3Credentials.nonEmpty(configuration.accessKeyID),
            let secret = S3Credentials.nonEmpty(configuration.secretAccessKey)
        {
            let keys = S3Credentials(
                accessKeyID: id, secretAccessKey: secret,
                sessionToken: S3Credentials.nonEmpty(configuration.sessionToken))
            return .fixed(keys, origin: "configuration (storage.aws_access_key_id)")
        }
        if S3Credentials.nonEmpty(configuration.accessKeyID) != nil
            || S3Credentials.nonEmpty(configuration.secretAccessKey) != nil
        {
            throw .unauthorized(
                "incomplete AWS credentials in the configuration: "
                    + "both an access key id and a secret access key are needed"
            )
        }
        if let id = env("AWS_ACCESS_KEY_ID"), let secret = env("AWS_SECRET_ACCESS_KEY") {
            let keys = S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: env("AWS_SESSION_TOKEN"))
            return .fixed(keys, origin: "environment (AWS_ACCESS_KEY_ID)")
        }
        if let file = env("AWS_WEB_IDENTITY_TOKEN_FILE"), let role = env("AWS_ROLE_ARN") {
            return .webIdentity(
                roleARN: role, tokenFile: file, sessionName: env("AWS_ROLE_SESSION_NAME") ?? sessionName(),
                origin: "AWS_WEB_IDENTITY_TOKEN_FILE")
        }
        let profile = S3Credentials.profileName(configuration, environment: environment)
        if let source = try fromProfile(profile, configuration: configuration, environment: environment, seen: []) {
            return source
        }
        if let container = containerSource(environment) { return container }
        if env("AWS_EC2_METADATA_DISABLED")?.lowercased() != "true" {
            var endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT") ?? defaultIMDSEndpoint
            while endpoint.hasSuffix("/") { endpoint.removeLast() }
            return .instanceMetadata(endpoint: endpoint)
        }
        throw .unauthorized(S3Credentials.missingMessage)
    }

    /// A profile's source, or nil when it has none (the chain goes on). `seen` breaks `source_profile` cycles.
    static func fromProfile(
        _ name: String, configuration: S3Configuration, environment: [String: String],
        seen: [String]
    ) throws(ObjectStoreError) -> S3CredentialSource? {
        let settings = S3Credentials.profileSettings(configuration, environment: environment, name: name)
        let value = { (key: String) in S3Credentials.nonEmpty(settings[key]) }
        let staticKeys = value("aws_access_key_id").flatMap { id in
            value("aws_secret_access_key").map {
                S3CredentialSource.fixed(
                    S3Credentials(
                        accessKeyID: id, secretAccessKey: $0,
                        sessionToken: value("aws_session_token")),
                    origin: "profile \(name)")
            }
        }
        if let role = value("role_arn") {
            let session = value("role_session_name") ?? sessionName()
            if let file = value("web_identity_token_file") {
                return .webIdentity(roleARN: role, tokenFile: file, sessionName: session, origin: "profile \(name)")
            }
            let base: S3CredentialSource
            if let sourceProfile = value("source_profile") {
                guard !seen.contains(sourceProfile) || (sourceProfile == name && staticKeys != nil) else {
                    throw .unauthorized("AWS profile \(name): source_profile \(sourceProfile) loops back")
                }
                if sourceProfile == name, let staticKeys {
                    base = staticKeys
                } else {
                    guard
                        let found = try fromProfile(
                            sourceProfile, configuration: configuration,
                            environment: environment, seen: seen + [name])
                    else {
                        throw .unauthorized("AWS profile \(name): source_profile \(sourceProfile) has no credentials")
                    }
                    base = found
                }
            } else if let kind = value("credential_source") {
                switch kind {
                case "Environment":
                    guard let id = S3Credentials.nonEmpty(environment["AWS_ACCESS_KEY_ID"]),
                        let secret = S3Credentials.nonEmpty(environment["AWS_SECRET_ACCESS_KEY"])
                    else {
                        throw .unauthorized(
                            "AWS profile \(name): credential_source Environment, but no AWS_ACCESS_KEY_ID")
                    }
                    base = .fixed(
                        S3Credentials(
                            accessKeyID: id, secretAccessKey: secret,
                            sessionToken: S3Credentials.nonEmpty(environment["AWS_SESSION_TOKEN"])),
                        origin: "environment (AWS_ACCESS_KEY_ID)")
                case "EcsContainer":
                    guard let container = containerSource(environment) else {
                        throw .unauthorized(
                            "AWS profile \(name): credential_source EcsContainer, but no "
                                + "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI")
                    }
                    base = container
                case "Ec2InstanceMetadata":
                    base = .instanceMetadata(
                        endpoint: S3Credentials.nonEmpty(environment["AWS_EC2_METADATA_SERVICE_ENDPOINT"])
                            ?? defaultIMDSEndpoint)
                default:
                    throw .unauthorized(
                        "AWS profile \(name): unknown credential_source \(kind) "
                            + "(expected Environment, EcsContainer or Ec2InstanceMetadata)")
                }
            } else {
                throw .unauthorized("AWS profile \(name): role_arn needs source_profile or credential_source")
            }
            return .assumeRole(
                roleARN: role, sessionName: session, externalID: value("external_id"), source: base,
                origin: "profile \(name)")
        }
        if let staticKeys { return staticKeys }
        if let command = value("credential_process") { return .process(command: command, origin: "profile \(name)") }
        return nil
    }

    static func containerSource(_ environment: [String: String]) -> S3CredentialSource? {
        let env = { (name: String) in S3Credentials.nonEmpty(environment[name]) }
        let url: String
        if let relative = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            url = containerHost + (relative.hasPrefix("/") ? relative : "/" + relative)
        } else if let full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            url = full
        } else {
            return nil
        }
        return .container(
            url: url, tokenFile: env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            token: env("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
    }

    /// `bucketfs-<host>-<pid>`: STS wants a session name, and one naming the machine shows up in CloudTrail.
    static func sessionName() -> String {
        let host = ProcessInfo.processInfo.hostName.prefix { $0 != "." }
        let clean = String(host.map { $0.isLetter || $0.isNumber || "=,.@-".contains($0) ? $0 : "-" })
        return String("bucketfs-\(clean)-\(getpid())".prefix(64))
    }
}
