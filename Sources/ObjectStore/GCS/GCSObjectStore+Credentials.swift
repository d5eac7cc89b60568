import Foundation

extension GCSObjectStore {
    /// Where a store made from `configuration` would take its tokens from; never a secret, no request.
    public static func credentialSourceDescription(_ configuration: GCSConfiguration) -> String {
        let environment = configuration.environment ?? ProcessInfo.processInfo.environment
        let emulator =
            (configuration.endpointURL.map { !$0.isEmpty } ?? false)
            || (environment["STORAGE_EMULATOR_HOST"].map { !$0.isEmpty } ?? false)
        do {
            return try GCSCredentials.resolve(configuration, environment: environment, emulator: emulator).0.description
        } catch {
            return "none: \(error)"
        }
    }
}
