import Foundation
import ObjectStore

/// rename(2). A file: server-side copy, then delete, ordered with the file's uploads (and those of the file it
/// replaces). A directory: `DirectoryMover` — not atomic, but it finishes or undoes (docs/SEMANTICS.md). The moved node
/// keeps its inode number; a replaced node is detached, so nothing of it is uploaded any more.
extension FileSystem {
    public func rename(
        parent: UInt64, name: String, newParent: UInt64, newName: String,
        noReplace: Bool
    ) throws(FSError) {
        try requireWritable()
        let from = try childPath(parent: parent, name: name)
        let to = try childPath(parent: newParent, name: newName)
        let source = try resolve(from, retain: false)
        guard ExactPath(from) != ExactPath(to) else { return }  // (`caf\u{e9}` to `cafe\u{301}` is a rename)
        if source.kind == .directory && ExactPath(to + "/").isBelow(from + "/") { throw FSError.invalidArgument }
        var destination: FileAttributes?
        do throws(FSError) { destination = try resolve(to, retain: false) } catch .notFound { destination = nil }
        if let destination {
            if noReplace { throw FSError.exists }
            if destination.ino == source.ino { return }  // two names of one node: nothing to do
            if source.kind == .directory && destination.kind != .directory { throw FSError.notDirectory }
            if source.kind != .directory && destination.kind == .directory { throw FSError.isDirectory }
            if destination.kind == .directory {
                try rmdir(parent: newParent, name: newName)
            }
        }
        if source.kind == .directory {
            try renameDirectory(ino: source.ino, from: from, to: to)
        } else {
            try renameObject(ino: source.ino, replacing: destination?.ino, from: from, to: to)
        }
        let now = FileTime.now()
        state.withLock { s in
            s.table[source.ino]?.touchChange(now)
            s.entriesChanged(in: KeyMapping.parent(of: from), at: now)
            s.entriesChanged(in: KeyMapping.parent(of: to), at: now)
        }
    }

    private func renameObject(ino: UInt64, replacing replaced: UInt64?, from: String, to: String) throws(FSError) {
        try serialised([ino] + (replaced.map { [$0] } ?? [])) { () throws(FSError) in
            let node = try existingNode(ino)
            guard node.path == from else { throw FSError.notFound }  // renamed or removed while we waited
            let oldKey = keys.key(for: from)
            let newKey = keys.key(for: to)
            var newVersion: String?
            if node.inStore {
                // What the node knows of the stored version saves S3 a HEAD of the source before its copy.
                let known = node.version.map { version in
                    ObjectInfo(
                        key: oldKey, size: node.storedSize,
                        lastModified: Date(timeIntervalSince1970: Double(node.storedModified ?? 0)),
                        version: version, contentType: node.contentType, metadata: node.writtenMetadata)
                }
                let info = try storeCall {
                    guard let known else {
                        return try store.copy(from: oldKey, to: newKey, metadata: nil, condition: .none)
                    }
                    return try store.copy(from: known, to: newKey, metadata: nil, condition: .none)
                }
                newVersion = info.version
                metadataIndex.moved(from: oldKey, to: newKey, version: info.version)
                try deleteObject(oldKey)
            }
            let abandoned = state.withLock { s -> StreamingUpload? in
                let replacedNode = s.table.node(at: to)
                if !node.inStore, let replacedNode, replacedNode.inStore, replacedNode.kind != .directory {
                    // Not uploaded yet: its upload now replaces the object that was there.
                    s.table[ino]?.inStore = true
                    s.table[ino]?.version = replacedNode.version
                }
                s.table.move(from: from, to: to)
                s.noteNameChanged(from)
                s.noteNameChanged(to)
                s.noteExists(to)
                if let newVersion {
                    // The copy may hold another writer's bytes (the source is copied as it is now): a clean copy
                    // here is never handed to the block cache as that version.
                    if s.table[ino]?.dirty == false { s.table[ino]?.staged?.markOutdated() }
                    s.table[ino]?.version = newVersion
                    s.table[ino]?.storedModified = nil
                }
                s.negative.removeValue(forKey: to)
                s.negative[from] = .now + .seconds(options.negativeTTL)
                return replacedNode?.stream
            }
            // The replaced file's streamed upload (it was being written) must never complete over the new one.
            if let abandoned, let replaced { dropStream(abandoned, of: replaced) }
            if let replaced { unjournal(state.withLock { $0.table[replaced]?.staged }) }
            journal(ino)  // a pending file: its sidecar names the new key and base
        }
        if let replaced { dropStagedIfIdle(replaced) }
    }

    private func renameDirectory(ino: UInt64, from: String, to: String) throws(FSError) {
        // No upload of a file below may run while its key moves.
        let below = state.withLock { s in s.table.nodes(under: from).filter { $0.kind != .directory }.map(\.ino) }
        try serialised(below) { () throws(FSError) in
            let oldPrefix = keys.directoryPrefix(for: from)
            let newPrefix = keys.directoryPrefix(for: to)
            let mover = DirectoryMover(
                store: store, workers: bulkWorkers, width: options.renameParallelism,
                markersCarryMetadata: !options.directoryMetadataInSidecar)
            let versions = try storeCall { try mover.move(from: oldPrefix, to: newPrefix) }
            for (rest, version) in versions {
                metadataIndex.moved(from: oldPrefix + rest, to: newPrefix + rest, version: version)
                metadataIndex.forget(key: oldPrefix + rest)
            }
            state.withLock { s in
                s.table.move(from: from, to: to)
                s.noteNameChanged(from)
                s.noteNameChanged(to)
                s.noteExists(to)
                s.listed = s.listed.filter { !($0.key == ExactPath(from) || $0.key.isBelow(from + "/")) }
                s.tailKnowledge.forget(from)
                for (rest, version) in versions where !rest.isEmpty && !rest.hasSuffix("/") {
                    if let moved = s.table.ino(at: to + "/" + rest) {
                        // Copied at the version listed, maybe another writer's: as for a file's rename.
                        if s.table[moved]?.dirty == false { s.table[moved]?.staged?.markOutdated() }
                        s.table[moved]?.version = version
                        s.table[moved]?.storedModified = nil
                    }
                }
                if let marker = versions[""], let moved = s.table.ino(at: to) { s.table[moved]?.version = marker }
                s.negative.removeValue(forKey: to)
                s.negative[from] = .now + .seconds(options.negativeTTL)
            }
        }
    }
}
