import ArgumentParser
import Foundation
import Records

/// `bucketfs checkpoints list|show SOURCE THREAD`.
struct CheckpointsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoints", abstract: "List or show a thread's checkpoints.", subcommands: [List.self, Show.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Newest first: id and time; without THREAD, the threads that have checkpoints.")
        @Argument(help: "A mount source, a redis:// or a postgres:// URL.") var source: String
        @Argument(help: "The thread id.") var thread: String?
        @Option(help: "At most this many.") var limit = 10
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let stores = try RecordsAccess.stores(source, settings: settings)
            guard let thread else {
                for thread in try RecordsAccess.attempt({ try stores.checkpoints.threads() }) { print(thread) }
                return
            }
            for checkpoint in try RecordsAccess.attempt({ try stores.checkpoints.list(thread: thread, limit: limit) }) {
                print("\(checkpoint.checkpointID)\t\(RecordCoding.format(checkpoint.createdAt))")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a checkpoint (the latest without ID) as JSON.")
        @Argument(help: "A mount source, a redis:// or a postgres:// URL.") var source: String
        @Argument(help: "The thread id.") var thread: String
        @Argument(help: "The checkpoint id.") var id: String?
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let stores = try RecordsAccess.stores(source, settings: settings)
            guard let checkpoint = try RecordsAccess.attempt({ try stores.checkpoints.get(thread: thread, id: id) }) else {
                throw CLIError("no checkpoint \(id ?? "(latest)") in thread \(thread)")
            }
            try RecordsAccess.printJSON(checkpoint)
        }
    }
}
