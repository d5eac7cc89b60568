import Foundation
import ObjectStore

/// `setattr`: size (a content change, through the lifecycle) and mode, owner and times (metadata). Who may
/// change what is the kernel's to check (the mount uses `default_permissions`), as is clearing setuid/setgid
/// on chown and write; this applies what the kernel sends.
extension FileSystem {
    public func setattr(_ ino: UInt64, _ changes: AttributeChanges) throws(FSError) -> FileAttributes {
        try requireWritable()
        let now = FileTime.now()
        if let size = changes.size { try truncate(ino, to: size, mtime: changes.mtime ?? now, now: now) }
        if changes.changesMetadata { try changeMetadata(ino, changes, now: now) }
        return try getattr(ino)
    }

    /// truncate(2)/ftruncate(2): the staged copy takes the new size; a file nobody has open is uploaded now,
    /// since no close will. truncate(2) holds no descriptor: the staged copy is pinned meanwhile, so that a last
    /// close cannot drop it under the download into it or the truncate (its drop waits for the end of this one).
    private func truncate(_ ino: UInt64, to size: UInt64, mtime: FileTime, now: FileTime) throws(FSError) {
        let node = try existingNode(ino)
        guard node.kind == .file else { throw node.kind == .directory ? FSError.isDirectory : FSError.invalidArgument }
        guard size <= Self.maxFileSize else { throw FSError.fileTooLarge }
        if let stream = node.stream, !stream.allowsTruncate(to: size) { dropStream(stream, of: ino) }
        state.withLock { $0.table[ino]?.stagedUsers += 1 }
        defer {
            state.withLock { $0.table[ino]?.stagedUsers -= 1 }
            dropStagedIfIdle(ino)
        }
        // Staged: no push is offered any more, and the kernel truncates its pages after this reply.
        defer { fencePageCache(ino) }
        let (staged, (idle, fresh)) = try changeStaged(ino, keepContent: size > 0) {
            staged throws(FSError) -> (Bool, Bool) in
            try staged.truncate(to: size)
            return state.withLock { s -> (Bool, Bool) in
                guard var node = s.table[ino] else { return (false, false) }
                node.size = size
                let fresh = node.content.contentChanged()
                node.noteChange(from: size)
                node.mtime = mtime
                node.touchChange(now)
                s.table[ino] = node
                return (node.openHandles == 0, fresh)
            }
        }
        if fresh || staged.takeDeferredJournal() { journal(ino) }
        guard idle else { return }
        try upload(ino)
    }

    /// chmod, chown, utimensat. With content still to upload the change rides with that upload; otherwise a
    /// file's object is copied onto itself with the new metadata (conditional on its version) and a directory's
    /// marker is written again. Holding the file's serial, so it lands between uploads, never inside one.
    private func changeMetadata(_ ino: UInt64, _ changes: AttributeChanges, now: FileTime) throws(FSError) {
        try serialised([ino]) { () throws(FSError) in
            let (before, node): (Node, Node) = try state.withLock { s throws(FSError) in
                guard var node = s.table[ino] else { throw FSError.notFound }
                let before = node
                if let p = changes.permissions { node.permissions = p & 0o7777 }
                if let u = changes.uid { node.uid = u }
                if let g = changes.gid { node.gid = g }
                if let m = changes.mtime {
                    node.mtime = m
                    node.mtimeExplicit = true
                }
                if let a = changes.atime { node.atime = a }
                node.touchChange(now)
                node.metadataKnown = true
                s.table[ino] = node
                return (before, node)
            }
            if node.dirty { journal(ino) }  // the next upload carries it: so does the sidecar
            guard !node.dirty, node.content != .detached, !node.path.isEmpty || node.ino == InodeTable.rootIno else {
                return  // the next upload carries it, or nothing will (detached)
            }
            do throws(FSError) {
                try storeMetadata(of: node)
            } catch {
                state.withLock { s in
                    guard var current = s.table[ino] else { return }
                    (current.permissions, current.uid, current.gid) = (before.permissions, before.uid, before.gid)
                    (current.mtime, current.ctime, current.atime) = (before.mtime, before.ctime, before.atime)
                    (current.metadataKnown, current.mtimeExplicit) = (before.metadataKnown, before.mtimeExplicit)
                    s.table[ino] = current
                }
                throw error
            }
        }
    }

    /// Writes a node's mode/owner/times to the store without touching its content. Call holding its serial.
    func storeMetadata(of node: Node) throws(FSError) {
        let metadata = node.objectMetadata()
        let info: ObjectInfo
        if node.kind == .directory {
            let key = directoryMetadataKey(for: node.path)
            info = try storeCall { try store.put(key, body: .data(Data()), options: PutOptions(metadata: metadata)) }
        } else if node.inStore {
            let key = keys.key(for: node.path)
            let condition: PutCondition = node.version.map { .ifVersionMatches($0) } ?? .none
            info = try storeCall { try store.copy(from: key, to: key, metadata: metadata, condition: condition) }
        } else {
            return
        }
        metadataIndex.wrote(
            key: objectKey(of: node), version: info.version, size: node.kind == .directory ? 0 : node.size,
            metadata: metadata)
        state.withLock { s in
            s.table[node.ino]?.version = info.version
            s.table[node.ino]?.writtenMetadata = metadata
            s.table[node.ino]?.storedModified = nil
            s.table[node.ino]?.inStore = true
            s.table[node.ino]?.validatedAt = .now
        }
    }
}
