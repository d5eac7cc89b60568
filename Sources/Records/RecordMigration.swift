import Foundation

/// Copies every record from one backend to another, byte for byte. Idempotent: a record already there with the
/// same bytes is left alone, so an interrupted migration is finished by running it again.
public struct RecordMigration: Sendable {
    public struct Progress: Sendable, Equatable {
        public var total: Int
        public var done: Int
        public var copied: Int
        public var unchanged: Int
    }

    public let source: any RecordBackend
    public let destination: any RecordBackend

    public init(from source: any RecordBackend, to destination: any RecordBackend) {
        self.source = source
        self.destination = destination
    }

    /// `progress` is called after each record.
    @discardableResult
    public func run(progress: (Progress) -> Void = { _ in }) throws(RecordError) -> Progress {
        var keys: [String] = []
        for folder in RecordKey.folders { keys += try source.keys(under: folder) }
        var state = Progress(total: keys.count, done: 0, copied: 0, unchanged: 0)
        for key in keys {
            if let record = try source.read(key) {
                if try destination.read(key)?.data == record.data {
                    state.unchanged += 1
                } else {
                    try destination.write(key, data: record.data)
                    state.copied += 1
                }
            }
            state.done += 1
            progress(state)
        }
        return state
    }
}
