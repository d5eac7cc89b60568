import Foundation

extension S3ObjectStore {
    /// Where a store made from `configuration` would take its credentials from, e.g. `web identity (…: role
    /// arn:…, token file …)`, `anonymous`, or why none are found; never a secret. Makes no request.
    public static func credentialSourceDescription(_ configuration: S3Configuration) -> String {
        let environment = configuration.environment ?? ProcessInfo.processInfo.environment
        do {
            return try S3CredentialSource.resolve(configuration, environment: environment)?.description ?? "anonymous"
        } catch {
            return "none: \(error)"
        }
    }

    /// Where the store's credentials come from (see `credentialSourceDescription`).
    public var credentialSource: String { credentialProvider?.source.description ?? "anonymous" }
}
