import ArgumentParser
import ObjectStore

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Inspect configuration.", subcommands: [Print.self])

    struct Print: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective configuration (defaults < YAML < flags < -o), secrets redacted.")

        @Argument(help: "Mount source, e.g. file:///srv/bucket/ (default: from the config file).")
        var source: String?

        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let configuration = try settings.resolve()
            var resolved = source ?? configuration.sourceFromStorage()
            if let text = resolved {
                do { resolved = try StoreLocation(parsing: text).description } catch { throw CLIError("\(error)") }
            }
            print(configuration.redactedYAML(source: resolved), terminator: "")
        }
    }
}
