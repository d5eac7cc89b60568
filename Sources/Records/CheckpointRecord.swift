import Foundation

/// A workflow checkpoint of a thread (seed 001), `checkpoints/<thread>/<checkpoint>.json`.
public struct CheckpointRecord: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var threadID: String
    public var checkpointID: String
    public var createdAt: Date
    public var data: JSONValue
    public var metadata: [String: JSONValue]

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case threadID = "thread_id"
        case checkpointID = "checkpoint_id"
        case createdAt = "created_at"
        case data, metadata
    }
}

/// The intermediate writes stored for a checkpoint (seed 001's `put_writes`), `<checkpoint>.writes.json`.
public struct CheckpointWrites: Codable, Sendable, Equatable {
    public struct Write: Codable, Sendable, Equatable {
        public var taskID: String
        public var channel: String
        public var value: JSONValue

        public init(taskID: String, channel: String, value: JSONValue) {
            self.taskID = taskID
            self.channel = channel
            self.value = value
        }

        enum CodingKeys: String, CodingKey {
            case taskID = "task_id"
            case channel, value
        }
    }

    public var schemaVersion: Int
    public var threadID: String
    public var checkpointID: String
    public var updatedAt: Date
    public var writes: [Write]

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case threadID = "thread_id"
        case checkpointID = "checkpoint_id"
        case updatedAt = "updated_at"
        case writes
    }
}
