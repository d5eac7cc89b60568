import Foundation

/// Seed 004's context buffer: per-thread append-only slots with an index, expiring after `ttl` seconds
/// (`nil`: never). Expired slots read as absent; `purgeExpired` deletes them.
public struct ThreadBufferStore: Sendable {
    let table: RecordTable<BufferSlot>
    public let ttl: Double?
    let clock: @Sendable () -> Date

    init(backend: any RecordBackend, ttl: Double?, clock: @escaping @Sendable () -> Date = { Date() }) {
        table = RecordTable(backend: backend)
        self.ttl = ttl
        self.clock = clock
    }

    /// Appends and returns the slot's index. Racing appenders each get their own index.
    @discardableResult
    public func append(thread: String, data: JSONValue) throws(RecordError) -> Int {
        try RecordKey.validate(thread, "thread id")
        var index = try table.backend.keys(under: RecordKey.buffer(thread)).count
        for _ in 0..<RecordTable<BufferSlot>.maxAttempts {
            let now = RecordCoding.truncated(clock())
            let slot = BufferSlot(
                schemaVersion: RecordCoding.schemaVersion, threadID: thread, index: index, createdAt: now,
                expiresAt: ttl.map { now.addingTimeInterval($0) }, data: data)
            if try table.create(RecordKey.slot(thread, index: index), slot) { return index }
            index += 1
        }
        throw .contended(RecordKey.buffer(thread))
    }

    /// Every live slot of the thread, in index order.
    public func all(thread: String) throws(RecordError) -> [BufferSlot] {
        try RecordKey.validate(thread, "thread id")
        let now = clock()
        return try table.all(under: RecordKey.buffer(thread)).map(\.record).filter { !$0.isExpired(at: now) }
            .sorted { $0.index < $1.index }
    }

    public func slot(thread: String, index: Int) throws(RecordError) -> BufferSlot? {
        try RecordKey.validate(thread, "thread id")
        guard index >= 0, let slot = try table.get(RecordKey.slot(thread, index: index)),
            !slot.isExpired(at: clock())
        else {
            return nil
        }
        return slot
    }

    public func length(thread: String) throws(RecordError) -> Int { try all(thread: thread).count }

    public func exists(thread: String) throws(RecordError) -> Bool { try length(thread: thread) > 0 }

    /// `true` if the thread had slots.
    @discardableResult
    public func delete(thread: String) throws(RecordError) -> Bool {
        try RecordKey.validate(thread, "thread id")
        let keys = try table.backend.keys(under: RecordKey.buffer(thread))
        for key in keys { try table.backend.remove(key) }
        return !keys.isEmpty
    }

    /// Threads with at least one live slot.
    public func threads() throws(RecordError) -> [String] {
        let keys = try table.backend.keys(under: "buffers/")
        let segments = Set(
            keys.compactMap { $0.dropFirst("buffers/".count).split(separator: "/").first.map(String.init) })
        var live: [String] = []
        for thread in segments.map(RecordKey.id(fromSegment:)).sorted() where try exists(thread: thread) {
            live.append(thread)
        }
        return live
    }

    /// Deletes expired slots; returns how many.
    @discardableResult
    public func purgeExpired(now: Date? = nil) throws(RecordError) -> Int {
        let now = now ?? clock()
        var removed = 0
        for (key, slot) in try table.all(under: "buffers/") where slot.isExpired(at: now) {
            try table.backend.remove(key)
            removed += 1
        }
        return removed
    }
}
