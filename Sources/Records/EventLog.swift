import Foundation
import Synchronization

/// Append-only event logs, one per stream (`events/<stream>/<sequence>.json`), over any record backend.
///
/// Append creates the next sequence number if absent; the loser of a race takes the next one, so racing
/// appenders all land, each once, in a gap-free order. The next number is remembered per stream, so an
/// uncontended append is one create (plus one listing the first time a stream is written here).
public final class EventLog: Sendable {
    let table: RecordTable<EventRecord>
    private let next = Mutex<[String: Int]>([:])

    init(backend: any RecordBackend) { table = RecordTable(backend: backend) }

    @discardableResult
    public func append(stream: String, type: String, data: [String: JSONValue] = [:]) throws(RecordError) -> EventRecord
    {
        try RecordKey.validate(stream, "event stream")
        try RecordKey.validate(type, "event type")
        var sequence: Int
        if let known = next.withLock({ $0[stream] }) { sequence = known } else { sequence = try nextSequence(stream) }
        for attempt in 0..<RecordTable<EventRecord>.maxAttempts {
            let event = EventRecord(stream: stream, sequence: sequence, type: type, data: data)
            if try table.create(RecordKey.event(stream, sequence: sequence), event) {
                next.withLock { $0[stream] = max($0[stream] ?? 0, sequence + 1) }
                return event
            }
            // Someone else appended: after a few collisions, look where the log ends instead of stepping.
            sequence = attempt % 4 == 3 ? max(try nextSequence(stream), sequence + 1) : sequence + 1
        }
        throw .contended(RecordKey.events(stream))
    }

    /// Events with `sequence >= from`, oldest first, at most `limit`.
    public func read(stream: String, from: Int = 0, limit: Int = .max) throws(RecordError) -> [EventRecord] {
        try RecordKey.validate(stream, "event stream")
        let keys = try table.backend.keys(under: RecordKey.events(stream))
            .filter { (Self.sequence(ofKey: $0) ?? -1) >= from }.prefix(max(limit, 0))
        return try load(Array(keys))
    }

    /// The last `count` events, oldest first.
    public func tail(stream: String, count: Int = 10) throws(RecordError) -> [EventRecord] {
        try RecordKey.validate(stream, "event stream")
        return try load(Array(try table.backend.keys(under: RecordKey.events(stream)).suffix(max(count, 0))))
    }

    /// How many events the stream has, of `type` if given.
    public func count(stream: String, type: String? = nil) throws(RecordError) -> Int {
        guard let type else {
            try RecordKey.validate(stream, "event stream")
            return try table.backend.keys(under: RecordKey.events(stream)).filter { Self.sequence(ofKey: $0) != nil }
                .count
        }
        return try read(stream: stream).filter { $0.type == type }.count
    }

    /// Events per type.
    public func countByType(stream: String) throws(RecordError) -> [String: Int] {
        try read(stream: stream).reduce(into: [:]) { $0[$1.type, default: 0] += 1 }
    }

    /// Every stream that has events.
    public func streams() throws(RecordError) -> [String] {
        let keys = try table.backend.keys(under: "events/")
        let segments = keys.compactMap { $0.dropFirst("events/".count).split(separator: "/").first.map(String.init) }
        return Set(segments).map(RecordKey.id(fromSegment:)).sorted()
    }

    /// Calls `handle` with each event from `from` on, in order, as they are appended, polling every `interval`
    /// seconds, until `handle` returns false or `shouldStop` says so (checked between polls). Blocks the calling
    /// thread. Returns the sequence number to follow from next time.
    @discardableResult
    public func follow(
        stream: String, from: Int = 0, interval: Double = 0.5,
        shouldStop: () -> Bool = { false },
        _ handle: (EventRecord) -> Bool
    ) throws(RecordError) -> Int {
        var position = from
        while true {
            for event in try read(stream: stream, from: position) {
                position = event.sequence + 1
                if !handle(event) { return position }
            }
            if shouldStop() { return position }
            usleep(UInt32(max(interval, 0.01) * 1_000_000))
        }
    }

    /// The sequence number after the last event of the stream.
    private func nextSequence(_ stream: String) throws(RecordError) -> Int {
        let keys = try table.backend.keys(under: RecordKey.events(stream))
        return (keys.reversed().lazy.compactMap(Self.sequence(ofKey:)).first ?? -1) + 1
    }

    private func load(_ keys: [String]) throws(RecordError) -> [EventRecord] {
        var events: [EventRecord] = []
        for key in keys { if let event = try table.get(key) { events.append(event) } }
        return events.sorted { $0.sequence < $1.sequence }
    }

    /// `events/<stream>/0000000042.json` → 42; nil for anything else under the stream.
    static func sequence(ofKey key: String) -> Int? {
        guard let name = key.split(separator: "/").last, name.hasSuffix(".json") else { return nil }
        return Int(name.dropLast(5))
    }
}
