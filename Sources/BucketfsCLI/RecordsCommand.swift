import ArgumentParser
import Foundation
import Records

/// `bucketfs records migrate --from URL --to URL`.
struct RecordsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "records", abstract: "Work on record backends as a whole.", subcommands: [Migrate.self])

    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy every record from one backend to another, byte for byte.",
            discussion:
                "Idempotent: records already there with the same bytes are left alone; "
                + "run again to finish an interrupted copy."
        )
        @Option(help: "A mount source, a redis:// or a postgres:// URL.") var from: String
        @Option(help: "A mount source, a redis:// or a postgres:// URL.") var to: String
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let source = try RecordsAccess.backend(from, settings: settings)
            let destination = try RecordsAccess.backend(to, settings: settings)
            let line = ProgressLine()
            let result = try RecordsAccess.attempt {
                try RecordMigration(from: source, to: destination).run { p in
                    line.update("records: \(p.done)/\(p.total) (\(p.copied) copied, \(p.unchanged) unchanged)")
                }
            }
            line.clear()
            print("\(result.total) records: \(result.copied) copied, \(result.unchanged) unchanged")
        }
    }
}
