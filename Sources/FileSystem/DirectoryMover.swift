import Foundation
import ObjectStore

/// Renames a directory in the store: every key under `oldPrefix` comes to lie under `newPrefix`.
///
/// 1. Lists everything under the old prefix (no delimiter).
/// 2. Recreates the markers (`…/`) with a PUT carrying their metadata, never a copy: SeaweedFS lists markers
///    that CopyObject then calls missing (where a sidecar carries a directory's metadata, a marker's own is not
///    asked for: the server drops it). Copies every other object (sidecars included) on the server, in parallel on
///    `workers`, `width` at a time, each naming the version listed (no HEAD of the source first on S3).
/// 3. If anything in 2 failed, deletes what it created and throws: the caller still sees the old tree only.
/// 4. Deletes the old keys in batches (`deleteObjects`: DeleteObjects on S3), then the old markers and every
///    directory prefix the old keys implied, deepest first (the local backend removes a directory with its
///    marker; SeaweedFS keeps an emptied directory listed until its `dir/` key is deleted). A failed delete is
///    retried; once the new tree is complete the rename is only ever finished, never undone.
///
/// Keys that vanish between the listing and their copy (deleted by another client) are skipped.
struct DirectoryMover {
    let store: any ObjectStore
    let workers: WorkerPool
    let width: Int
    /// Whether markers carry the directories' metadata (false where a sidecar does: a marker is then recreated
    /// empty, with no HEAD for metadata the server would drop anyway).
    let markersCarryMetadata: Bool
    /// Attempts per old key in the delete phase.
    var deleteAttempts = 4

    init(store: any ObjectStore, workers: WorkerPool, width: Int, markersCarryMetadata: Bool = true) {
        self.store = store
        self.workers = workers
        self.width = max(1, width)
        self.markersCarryMetadata = markersCarryMetadata
    }

    /// Moves the tree; returns the new version of every key moved, by its key relative to the prefixes (`""` is the
    /// directory's own marker, `sub/` a subdirectory's, `sub/f` a file), byte for byte (`caf\u{e9}` and `cafe\u{301}`
    /// are two keys).
    func move(from oldPrefix: String, to newPrefix: String) throws(ObjectStoreError) -> ExactPathMap<String> {
        precondition(oldPrefix.hasSuffix("/") && newPrefix.hasSuffix("/"), "prefixes end in /")
        let listed = try store.listAll(prefix: oldPrefix).objects
        let backend = store
        let markers = listed.filter { $0.key.hasSuffix("/") }.sorted { $0.key < $1.key }
        let files = listed.filter { !$0.key.hasSuffix("/") }
        let cut = oldPrefix.utf8.count  // bytes: `/\u{301}` is one `Character`
        let relative: @Sendable (String) -> String = { String(KeyMapping.dropping(cut, of: $0)) }

        var created: [String] = []
        var versions: ExactPathMap<String> = [:]
        var failure: ObjectStoreError?
        // Markers first, shallowest first (a local directory exists before its content is copied in).
        for marker in markers {
            do throws(ObjectStoreError) {
                var metadata = marker.metadata
                if metadata == nil && markersCarryMetadata { metadata = try backend.head(marker.key).metadata }
                let info = try backend.put(
                    newPrefix + relative(marker.key), body: .data(Data()),
                    options: PutOptions(metadata: metadata ?? [:]))
                created.append(info.key)
                versions[relative(marker.key)] = info.version
            } catch .notFound {
                continue
            } catch {
                failure = error
                break
            }
        }
        if failure == nil {
            let copies = workers.map(files.count, width: width) { i -> Result<String, ObjectStoreError> in
                Result { () throws(ObjectStoreError) in
                    // The listed version: S3 pins the copy to it (falling back to a HEAD if it moved on).
                    try backend.copy(
                        from: files[i], to: newPrefix + relative(files[i].key), metadata: nil, condition: .none
                    ).version
                }
            }
            for (file, result) in zip(files, copies) {
                switch result {
                case .success(let version):
                    created.append(newPrefix + relative(file.key))
                    versions[relative(file.key)] = version
                case .failure(.notFound(_)):
                    continue
                case .failure(let error):
                    failure = failure ?? error
                }
            }
        }
        if let failure {
            // Undo: the new tree goes, deepest first; the old one was not touched.
            _ = deleteAll(created.sorted(by: >))
            throw failure
        }

        var directories = Set(markers.map { ExactPath($0.key) })
        directories.insert(ExactPath(oldPrefix))
        for file in files {
            let rest = relative(file.key)
            for slash in rest.utf8.indices where rest.utf8[slash] == UInt8(ascii: "/") {
                directories.insert(ExactPath(oldPrefix + String(rest.unicodeScalars[..<slash]) + "/"))
            }
        }
        let left = deleteAll(files.map(\.key)) + deleteAll(directories.map(\.string).sorted(by: >))
        if let (key, error) = left.first {
            throw .other(
                "renamed to \(newPrefix), but \(left.count) old key(s) could not be deleted "
                    + "(first \(key): \(error))")
        }
        return versions
    }

    /// Deletes in batches, retrying failed keys with a short backoff; returns what could not be deleted.
    private func deleteAll(_ keys: [String]) -> [(String, ObjectStoreError)] {
        var pending = keys
        var failed: [(String, ObjectStoreError)] = []
        for attempt in 0..<deleteAttempts where !pending.isEmpty {
            if attempt > 0 { usleep(useconds_t(100_000 << min(attempt, 4))) }
            failed = []
            for (key, result) in zip(pending, deleteInChunks(pending)) {
                if case .failure(let error) = result { failed.append((key, error)) }
            }
            pending = failed.map(\.0)
        }
        return failed
    }

    /// Keys at which a delete batch is split into parallel ones: a server may work through one DeleteObjects key by
    /// key (SeaweedFS: ~1 ms a key), so 4 requests at once finish sooner; the order among the chunks is not kept
    /// (the files go in one call, the directories, deepest first, in another, and are rarely this many).
    static let parallelDeleteThreshold = 64

    private func deleteInChunks(_ keys: [String]) -> [Result<Void, ObjectStoreError>] {
        guard keys.count >= Self.parallelDeleteThreshold else { return store.deleteObjects(keys) }
        let chunks = min(4, width)
        let size = (keys.count + chunks - 1) / chunks
        let backend = store
        let parts = workers.map(chunks, width: chunks) { i -> [Result<Void, ObjectStoreError>] in
            let range = (i * size)..<min(keys.count, (i + 1) * size)
            return range.isEmpty ? [] : backend.deleteObjects(Array(keys[range]))
        }
        return parts.flatMap { $0 }
    }
}
