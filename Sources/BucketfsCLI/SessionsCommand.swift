import ArgumentParser
import Foundation
import Records

/// `bucketfs sessions list|show|end|cleanup SOURCE`: the session records (every mount is one).
struct SessionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sessions", abstract: "List, show, end or clean up session records (each mount is one).",
        subcommands: [List.self, Show.self, End.self, Cleanup.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One line per session: id, status, created, requests, errors.")
        @Argument(help: "A mount source (s3://bucket/prefix/, gs://…, file:///dir/) or a redis:// URL.")
        var source: String
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let stores = try RecordsAccess.stores(source, settings: settings)
            for session in try RecordsAccess.attempt({ try stores.sessions.list() }) {
                let m = session.metrics
                print(
                    [
                        session.sessionID, session.status, RecordCoding.format(session.createdAt),
                        "requests=\(m.requestCount)",
                        "errors=\(m.errorCount)",
                        session.metadata["mount_point"].flatMap { if case .string(let s) = $0 { s } else { nil } }
                            ?? "",
                    ]
                    .joined(separator: "\t"))
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a session record as JSON.")
        @Argument(help: "A mount source or a redis:// URL.") var source: String
        @Argument(help: "The session id.") var id: String
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let stores = try RecordsAccess.stores(source, settings: settings)
            guard let session = try RecordsAccess.attempt({ try stores.sessions.get(id) }) else {
                throw CLIError("no session \(id)")
            }
            try RecordsAccess.printJSON(session)
        }
    }

    struct End: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mark a session ended (e.g. a mount whose host died).")
        @Argument(help: "A mount source or a redis:// URL.") var source: String
        @Argument(help: "The session id.") var id: String
        @Option(help: "The status to record.") var status = "ended"
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let stores = try RecordsAccess.stores(source, settings: settings)
            guard try RecordsAccess.attempt({ try stores.sessions.end(id, status: status) }) else {
                throw CLIError("no session \(id)")
            }
        }
    }

    struct Cleanup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete sessions not updated for --max-idle-hours (with their conversations and task context).")
        @Argument(help: "A mount source or a redis:// URL.") var source: String
        @Option(help: "Hours without an update.") var maxIdleHours: Double = 24
        @OptionGroup var settings: ConfigurationOptions

        func validate() throws {
            try FlagBounds.check(maxIdleHours, flag: "--max-idle-hours", in: FlagBounds.idleHours, unit: "hours")
        }

        func run() throws {
            let stores = try RecordsAccess.stores(source, settings: settings)
            for id in try RecordsAccess.attempt({ try stores.sessions.cleanupExpired(maxIdleHours: maxIdleHours) }) {
                print("removed \(id)")
            }
        }
    }
}
