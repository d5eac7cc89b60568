import ArgumentParser
import Foundation
import Records

/// `bucketfs checkpoints list|show|put SOURCE THREAD`.
struct CheckpointsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoints", abstract: "List or show a thread's checkpoints.",
        subcommands: [List.self, Show.self, Put.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Newest first: id and time; without THREAD, the threads that have checkpoints.")
        @Argument(help: "A mount source, a redis:// or a postgres:// URL.") var source: String
        @Argument(help: "The thread id.") var thread: String?
        @Option(help: "At most this many.") var limit = 10
        @OptionGroup var settings: ConfigurationOptions

        func validate() throws {
            try FlagBounds.check(limit, flag: "--limit", in: FlagBounds.listLimit)
        }

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
            guard let checkpoint = try RecordsAccess.attempt({ try stores.checkpoints.get(thread: thread, id: id) })
            else {
                throw CLIError("no checkpoint \(id ?? "(latest)") in thread \(thread)")
            }
            try RecordsAccess.printJSON(checkpoint)
        }
    }

    struct Put: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store a checkpoint (data and metadata as JSON text) and print it as stored.")
        @Argument(help: "A mount source, a redis:// or a postgres:// URL.") var source: String
        @Argument(help: "The thread id.") var thread: String
        @Argument(help: "The checkpoint id.") var id: String
        @Option(help: "The checkpoint's data, any JSON.") var data = "null"
        @Option(help: "A JSON object.") var metadata = "{}"
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let stores = try RecordsAccess.stores(source, settings: settings)
            let value = try RecordsAccess.attempt { try JSONValue(parsing: Data(data.utf8)) }
            guard case .object(let fields) = try RecordsAccess.attempt({ try JSONValue(parsing: Data(metadata.utf8)) })
            else {
                throw CLIError("--metadata must be a JSON object")
            }
            let record = try RecordsAccess.attempt {
                try stores.checkpoints.store(thread: thread, id: id, data: value, metadata: fields)
            }
            try RecordsAccess.printJSON(record)
        }
    }
}
