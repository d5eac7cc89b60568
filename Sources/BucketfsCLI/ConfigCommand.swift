import ArgumentParser
import Foundation
import ObjectStore

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Inspect configuration.", subcommands: [Print.self])

    struct Print: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective configuration (defaults < YAML < BUCKETFS_* < flags < -o), secrets redacted."
        )

        @Argument(help: "Mount source, e.g. file:///srv/bucket/ (default: BUCKETFS_SOURCE, then the config file).")
        var source: String?

        @Flag(help: "Follow each value that is not the default with the layer that set it (file, variable, flag, -o).")
        var sources = false

        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let environment = ProcessInfo.processInfo.environment
            let layers = try settings.layers(environment: environment)
            let configuration = layers.last!.configuration
            var resolved =
                source ?? environment["BUCKETFS_SOURCE"].flatMap { $0.isEmpty ? nil : $0 }
                ?? configuration.sourceFromStorage()
            var location: StoreLocation?
            if let text = resolved {
                do { location = try StoreLocation(parsing: text) } catch { throw CLIError("\(error)") }
                resolved = location?.description
            }
            var text = sources ? Self.annotated(layers, source: resolved) : configuration.redactedYAML(source: resolved)
            if let credentials = Self.credentialSource(location, configuration: configuration) {
                text += "credentials: \"\(credentials.replacingOccurrences(of: "\"", with: "'"))\"\n"
            }
            let unknown = Configuration.unknownVariables(in: environment)
            if !unknown.isEmpty { text += "# ignored (not bucketfs options): \(unknown.joined(separator: ", "))\n" }
            print(text, terminator: "")
        }

        /// Where an S3 or GCS mount of `location` would take its credentials from (no request, no secret).
        static func credentialSource(_ location: StoreLocation?, configuration: Configuration) -> String? {
            switch location?.kind {
            case .s3(let bucket, _):
                return S3ObjectStore.credentialSourceDescription(configuration.s3Configuration(bucket: bucket))
            case .gcs(let bucket, _):
                return GCSObjectStore.credentialSourceDescription(configuration.gcsConfiguration(bucket: bucket))
            default: return nil
            }
        }

        /// The final YAML, each line that differs from the defaults followed by `# <layer>`: the last layer whose
        /// configuration printed that line differently from the layer before it.
        static func annotated(_ layers: [(source: String, configuration: Configuration)], source: String?) -> String {
            let printed = layers.map { $0.configuration.redactedYAML(source: nil).split(separator: "\n") }
            var lines = printed.last!.map(String.init)
            for index in lines.indices {
                guard
                    let layer = printed.indices.last(where: { $0 > 0 && printed[$0][index] != printed[$0 - 1][index] })
                else { continue }
                lines[index] += "  # \(layers[layer].source)"
            }
            let head = source.map { ["source: \"\($0)\""] } ?? []
            return (head + lines).joined(separator: "\n") + "\n"
        }
    }
}
