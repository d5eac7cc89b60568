import Foundation

/// Checkpoints (seed 001), one object per checkpoint, with its intermediate writes beside it.
public struct CheckpointStore: Sendable {
    let table: RecordTable<CheckpointRecord>
    let writesTable: RecordTable<CheckpointWrites>
    /// Stamps `created_at`, which orders a thread's checkpoints (tests move it).
    let clock: @Sendable () -> Date

    init(backend: any RecordBackend, clock: @escaping @Sendable () -> Date = { Date() }) {
        table = RecordTable(backend: backend)
        writesTable = RecordTable(backend: backend)
        self.clock = clock
    }

    /// Stores (or replaces) a checkpoint.
    @discardableResult
    public func store(
        thread: String, id: String, data: JSONValue,
        metadata: [String: JSONValue] = [:]
    ) throws(RecordError) -> CheckpointRecord {
        try RecordKey.validate(thread, "thread id")
        try RecordKey.validate(id, "checkpoint id")
        let record = CheckpointRecord(
            schemaVersion: RecordCoding.schemaVersion, threadID: thread, checkpointID: id,
            createdAt: RecordCoding.truncated(clock()), data: data, metadata: metadata)
        try table.put(RecordKey.checkpoint(thread, id), record)
        return record
    }

    /// The checkpoint `id`, or the latest of the thread when `id` is nil.
    public func get(thread: String, id: String? = nil) throws(RecordError) -> CheckpointRecord? {
        try RecordKey.validate(thread, "thread id")
        guard let id else { return try list(thread: thread, limit: 1).first }
        try RecordKey.validate(id, "checkpoint id")
        return try table.get(RecordKey.checkpoint(thread, id))
    }

    /// Newest first.
    public func list(thread: String, limit: Int = 10) throws(RecordError) -> [CheckpointRecord] {
        try RecordKey.validate(thread, "thread id")
        let all = try table.all(under: RecordKey.checkpoints(thread)) {
            $0.hasSuffix(".json") && !$0.hasSuffix(".writes.json")
        }
        return Array(
            all.map(\.record)
                .sorted { ($0.createdAt, $0.checkpointID) > ($1.createdAt, $1.checkpointID) }
                .prefix(max(limit, 0)))
    }

    /// Every thread that has checkpoints.
    public func threads() throws(RecordError) -> [String] {
        let keys = try table.backend.keys(under: "checkpoints/")
        let segments = keys.compactMap {
            $0.dropFirst("checkpoints/".count).split(separator: "/").first.map(String.init)
        }
        return Set(segments).map(RecordKey.id(fromSegment:)).sorted()
    }

    /// Appends `writes` of `task` to the checkpoint's intermediate writes (seed 001's `put_writes`).
    public func putWrites(
        thread: String, checkpoint: String, task: String,
        writes: [(channel: String, value: JSONValue)]
    ) throws(RecordError) {
        try RecordKey.validate(thread, "thread id")
        try RecordKey.validate(checkpoint, "checkpoint id")
        let entries = writes.map { CheckpointWrites.Write(taskID: task, channel: $0.channel, value: $0.value) }
        _ = try writesTable.upsert(
            RecordKey.writes(thread, checkpoint),
            make: {
                CheckpointWrites(
                    schemaVersion: RecordCoding.schemaVersion, threadID: thread, checkpointID: checkpoint,
                    updatedAt: RecordCoding.now(), writes: [])
            }
        ) { (record: inout CheckpointWrites) throws(RecordError) in
            record.writes += entries
            record.updatedAt = RecordCoding.now()
        }
    }

    /// The intermediate writes of a checkpoint, in the order they were put.
    public func getWrites(thread: String, checkpoint: String) throws(RecordError) -> [CheckpointWrites.Write] {
        try RecordKey.validate(thread, "thread id")
        try RecordKey.validate(checkpoint, "checkpoint id")
        return try writesTable.get(RecordKey.writes(thread, checkpoint))?.writes ?? []
    }
}
