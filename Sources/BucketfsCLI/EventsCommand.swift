import ArgumentParser
import Foundation
import Records

/// `bucketfs events list|tail|count SOURCE [STREAM]`: the append-only event logs (`events/<stream>/`); each
/// mount writes its own stream, named by its mount id, so `events tail SOURCE` shows what happened to mounts.
struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Read event streams (each mount writes one: mounted, upload_failed…).",
        subcommands: [List.self, Tail.self, Count.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Without STREAM: each stream with its count and last event; with STREAM: all its events.")
        @Argument(help: "A mount source, a redis:// or a postgres:// URL.") var source: String
        @Argument(help: "The stream (a mount id).") var stream: String?
        @Flag(help: "One JSON record per line.") var json = false
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let events = try RecordsAccess.stores(source, settings: settings).events
            if let stream {
                try EventsCommand.print(try RecordsAccess.attempt { try events.read(stream: stream) }, json: json)
                return
            }
            for name in try RecordsAccess.attempt({ try events.streams() }) {
                let last = try RecordsAccess.attempt { try events.tail(stream: name, count: 1) }.first
                let count = try RecordsAccess.attempt { try events.count(stream: name) }
                Swift.print(
                    [name, "\(count) events", last.map { "\($0.type) \(RecordCoding.format($0.timestamp))" } ?? ""]
                        .joined(separator: "\t"))
            }
        }
    }

    struct Tail: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "The last events (of every stream without STREAM), oldest first; --follow keeps printing new ones.",
            discussion:
                "Lines: time, stream, sequence, type, data as JSON. --type upload_failed lists the dead letters.")
        @Argument(help: "A mount source, a redis:// or a postgres:// URL.") var source: String
        @Argument(help: "The stream (a mount id).") var stream: String?
        @Option(name: [.customShort("n"), .long], help: "How many.") var lines = 10
        @Option(help: "Only events of this type.") var type: String?
        @Flag(name: [.customShort("f"), .long], help: "Wait for new events and print them (until interrupted).")
        var follow = false
        @Option(help: "Seconds between polls with --follow.") var interval = 1.0
        @Flag(help: "One JSON record per line.") var json = false
        @OptionGroup var settings: ConfigurationOptions

        func validate() throws {
            try FlagBounds.check(lines, flag: "--lines", in: FlagBounds.eventLines)
            try FlagBounds.check(interval, flag: "--interval", in: FlagBounds.pollInterval, unit: "seconds")
        }

        func run() throws {
            let events = try RecordsAccess.stores(source, settings: settings).events
            let wanted = { (event: EventRecord) in type == nil || event.type == type }
            var positions: [String: Int] = [:]
            var recent: [EventRecord] = []
            for name in try streams(events) {
                let all = try RecordsAccess.attempt { try events.read(stream: name) }
                positions[name] = (all.last?.sequence ?? -1) + 1
                recent += all.filter(wanted)
            }
            try EventsCommand.print(Array(EventsCommand.ordered(recent).suffix(max(lines, 0))), json: json)
            while follow {
                Thread.sleep(forTimeInterval: max(interval, 0.05))
                var fresh: [EventRecord] = []
                for name in try streams(events) {
                    let new = try RecordsAccess.attempt { try events.read(stream: name, from: positions[name] ?? 0) }
                    if let last = new.last { positions[name] = last.sequence + 1 }
                    fresh += new.filter(wanted)
                }
                try EventsCommand.print(EventsCommand.ordered(fresh), json: json)
            }
        }

        private func streams(_ events: EventLog) throws -> [String] {
            if let stream { return [stream] }
            return try RecordsAccess.attempt { try events.streams() }
        }
    }

    struct Count: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Events per type (of every stream without STREAM); with --type, one number.")
        @Argument(help: "A mount source, a redis:// or a postgres:// URL.") var source: String
        @Argument(help: "The stream (a mount id).") var stream: String?
        @Option(help: "Only this type.") var type: String?
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let events = try RecordsAccess.stores(source, settings: settings).events
            var totals: [String: Int] = [:]
            let names = try stream.map { [$0] } ?? RecordsAccess.attempt { try events.streams() }
            for name in names {
                let counts = try RecordsAccess.attempt { try events.countByType(stream: name) }
                totals.merge(counts, uniquingKeysWith: +)
            }
            if let type {
                Swift.print(totals[type] ?? 0)
                return
            }
            for (name, count) in totals.sorted(by: { $0.key < $1.key }) { Swift.print("\(name)\t\(count)") }
        }
    }

    static func ordered(_ events: [EventRecord]) -> [EventRecord] {
        events.sorted { ($0.timestamp, $0.stream, $0.sequence) < ($1.timestamp, $1.stream, $1.sequence) }
    }

    /// Written and flushed at once, so that `--follow` through a pipe shows each event as it comes.
    static func print(_ events: [EventRecord], json: Bool) throws(CLIError) {
        guard !events.isEmpty else { return }
        var text = ""
        for event in events {
            if json {
                text += try compact(event) + "\n"
            } else {
                text +=
                    [
                        RecordCoding.format(event.timestamp), event.stream, String(event.sequence), event.type,
                        try compact(JSONValue.object(event.data)),
                    ].joined(separator: "\t") + "\n"
            }
        }
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    private static func compact<T: Encodable>(_ value: T) throws(CLIError) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(RecordCoding.format(date))
        }
        do { return String(decoding: try encoder.encode(value), as: UTF8.self) } catch { throw CLIError("\(error)") }
    }
}
