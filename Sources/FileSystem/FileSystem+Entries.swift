import Foundation
import Glibc
import ObjectStore

/// Making and removing directory entries: mkdir, symlink, mknod (FIFOs, sockets, devices), create, unlink,
/// rmdir, link (refused).
extension FileSystem {
    public func mkdir(parent: UInt64, name: String, permissions: UInt32, caller: Caller) throws(FSError)
        -> FileAttributes
    {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        try requireAbsent(path)
        if let limit = options.maxKeyLength, directoryMetadataKey(for: path).utf8.count > limit {
            throw FSError.nameTooLong  // its sidecar's key would be too long
        }
        let owner = ownership(of: caller, in: parent, directory: true)
        let now = FileTime.now()
        var node = Node(
            ino: 0, path: path, kind: .directory, size: 0, permissions: (permissions & 0o7777) | owner.setgid,
            uid: owner.uid, gid: owner.gid, mtime: now, ctime: now, version: nil, inStore: true,
            metadataKnown: true, validatedAt: .now)
        var info = try storeCall {
            try store.put(
                keys.directoryPrefix(for: path), body: .data(Data()),
                options: PutOptions(metadata: node.objectMetadata()))
        }
        if options.directoryMetadataInSidecar {
            info = try storeCall {
                try store.put(
                    directoryMetadataKey(for: path), body: .data(Data()),
                    options: PutOptions(metadata: node.objectMetadata()))
            }
        }
        node.version = info.version
        node.writtenMetadata = node.objectMetadata()
        return insertNew(node, retain: true)
    }

    public func symlink(parent: UInt64, name: String, target: String, caller: Caller) throws(FSError) -> FileAttributes
    {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        guard !target.isEmpty else { throw FSError.notFound }  // symlink(2): an empty target is ENOENT
        guard target.utf8.count < Int(PATH_MAX) else { throw FSError.nameTooLong }
        let owner = ownership(of: caller, in: parent, directory: false)
        return try makeEmptyObject(path, kind: .symlink, permissions: 0o777, owner: owner, symlinkTarget: target)
    }

    /// mknod(2): a FIFO, a unix-domain socket or a character/block device is a zero-byte object whose metadata
    /// carries its type, mode and device number; the kernel serves its I/O. A regular file is an empty object.
    public func mknod(
        parent: UInt64, name: String, mode: UInt32, rdev: UInt32,
        caller: Caller
    ) throws(FSError) -> FileAttributes {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        guard let kind = NodeKind(mode: mode), kind != .directory, kind != .symlink else {
            throw FSError.invalidArgument
        }
        let owner = ownership(of: caller, in: parent, directory: false)
        let device = kind == .characterDevice || kind == .blockDevice ? rdev : 0
        return try makeEmptyObject(path, kind: kind, permissions: mode & 0o7777, owner: owner, rdev: device)
    }

    /// One PUT, conditional on absence, of a zero-byte object of `kind` with its metadata.
    private func makeEmptyObject(
        _ path: String, kind: NodeKind, permissions: UInt32, owner: Ownership,
        symlinkTarget: String? = nil, rdev: UInt32 = 0
    ) throws(FSError) -> FileAttributes {
        try requireAbsent(path)
        let now = FileTime.now()
        var node = Node(
            ino: 0, path: path, kind: kind, size: 0, permissions: permissions, uid: owner.uid,
            gid: owner.gid, mtime: now, ctime: now, rdev: rdev, symlinkTarget: symlinkTarget, version: nil,
            inStore: true, metadataKnown: true, validatedAt: .now)
        node.size = UInt64(node.objectBody.count)
        let info: ObjectInfo
        do throws(ObjectStoreError) {
            info = try store.put(
                keys.key(for: path), body: .data(node.objectBody),  // a long symlink target: its body
                options: PutOptions(metadata: node.objectMetadata(), condition: .ifAbsent))
        } catch .preconditionFailed {
            throw FSError.exists  // another writer made it since we looked
        } catch {
            throw FSError(error)
        }
        node.version = info.version
        node.writtenMetadata = node.objectMetadata()
        return insertNew(node, retain: true)
    }

    /// Creates a file that exists only locally until its first flush uploads it (one PUT for create+write+close).
    public func create(
        parent: UInt64, name: String, permissions: UInt32, flags: Int32,
        caller: Caller
    ) throws(FSError) -> (attributes: FileAttributes, handle: UInt64) {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        let owner = ownership(of: caller, in: parent, directory: false)
        let staged = try StagedFile(directory: stagingDirectory, loaded: true)
        let now = FileTime.now()
        var node = Node(
            ino: 0, path: path, kind: .file, size: 0, permissions: permissions & 0o7777,
            uid: owner.uid, gid: owner.gid, mtime: now, ctime: now, version: nil, inStore: false,
            metadataKnown: true, validatedAt: .now)
        node.staged = staged
        node.content = .pending
        node.openHandles = 1
        node.stream = makeStream(for: node)
        let attributes = insertNew(node, retain: true)
        let handle = state.withLock { s in
            let h = s.allocateHandle()
            s.files[h] = OpenFile(ino: attributes.ino, writable: true)
            return h
        }
        journal(attributes.ino)
        return (attributes, handle)
    }

    /// Hard links: an object cannot share another's content by reference, and a copy would not stay one file.
    public func link(_ ino: UInt64, newParent: UInt64, newName: String) throws(FSError) -> FileAttributes {
        try requireWritable()
        _ = try childPath(parent: newParent, name: newName)
        throw FSError.notPermitted
    }

    /// Removes a name. Ordered with the file's uploads: one in flight ends first, none starts after (the node is
    /// detached), so an unlink can never be undone by an upload re-creating the object.
    public func unlink(parent: UInt64, name: String) throws(FSError) {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        let attributes = try resolve(path, retain: false)
        guard attributes.kind != .directory else { throw FSError.isDirectory }
        try serialised([attributes.ino]) { () throws(FSError) in
            let node = try existingNode(attributes.ino)
            guard node.path == path else { throw FSError.notFound }  // renamed or removed while we waited
            if node.kind == .file && node.openHandles > 0 && node.inStore {
                // POSIX keeps an unlinked file readable through descriptors still open: keep a local copy (pinned
                // while it downloads: their last close meanwhile must not drop it; the drop below follows).
                state.withLock { $0.table[node.ino]?.stagedUsers += 1 }
                defer { state.withLock { $0.table[node.ino]?.stagedUsers -= 1 } }
                _ = try stage(node.ino, keepContent: true)
            }
            if node.inStore {
                try deleteObject(keys.key(for: path))
            }
            if let stream = node.stream { dropStream(stream, of: node.ino) }
            unjournal(state.withLock { $0.table[node.ino]?.staged })  // never to be uploaded: not to recover
            let now = FileTime.now()
            state.withLock { s in
                s.table[node.ino]?.touchChange(now)
                s.table.detach(path: path)
                s.noteNameChanged(path)
                s.negative[path] = .now + .seconds(options.negativeTTL)
                s.entriesChanged(in: KeyMapping.parent(of: path), at: now)
                s.tailKnowledge.noteUnlinked(
                    name: KeyMapping.name(of: path), in: KeyMapping.parent(of: path), at: .now,
                    until: .now + .seconds(options.negativeTTL))
            }
        }
        dropStagedIfIdle(attributes.ino)
    }

    public func rmdir(parent: UInt64, name: String) throws(FSError) {
        try requireWritable()
        let path = try childPath(parent: parent, name: name)
        let attributes = try resolve(path, retain: false)
        guard attributes.kind == .directory else { throw FSError.notDirectory }
        let marker = keys.directoryPrefix(for: path)
        let sidecar = DirectoryMarkers.sidecarKey(forMarker: marker)
        let page = try storeCall { try store.list(ListRequest(prefix: marker, maxKeys: 3)) }
        let hasPending = state.withLock { !$0.table.pendingChildren(of: path).isEmpty }
        let content = page.objects.filter { $0.key != marker && $0.key != sidecar }
        if hasPending || !content.isEmpty || !page.commonPrefixes.isEmpty {
            throw FSError.notEmpty
        }
        // Both, listed or not (one DeleteObjects on S3): SeaweedFS may not list a marker it keeps as a directory,
        // and lists the emptied directory until its marker is deleted. The sidecar goes first, so that the local
        // backend, which removes the directory with its marker, finds it empty.
        for result in store.deleteObjects([sidecar, marker]) {
            switch result {
            case .success, .failure(.notFound): continue
            case .failure(let error): throw FSError(error)
            }
        }
        metadataIndex.forget(key: sidecar)
        metadataIndex.forget(key: marker)
        let now = FileTime.now()
        state.withLock { s in
            s.table.detach(path: path)
            s.noteNameChanged(path)
            s.listed.removeValue(forKey: path)
            s.tailKnowledge.forget(path)
            s.negative[path] = .now + .seconds(options.negativeTTL)
            s.entriesChanged(in: KeyMapping.parent(of: path), at: now)
        }
    }

    /// Deletes `key`; one already gone is what was asked for.
    func deleteObject(_ key: String) throws(FSError) {
        do throws(ObjectStoreError) {
            try store.delete(key)
        } catch .notFound {
            // removed by someone else meanwhile
        } catch {
            throw FSError(error)
        }
        metadataIndex.forget(key: key)
    }

    struct Ownership {
        var uid: UInt32
        var gid: UInt32
        /// `S_ISGID` for a directory made in a setgid directory (it passes the bit on), else 0.
        var setgid: UInt32
    }

    /// The owner of a new entry: the caller, with the group of a setgid parent directory (as BSD and Linux do).
    func ownership(of caller: Caller, in parent: UInt64, directory: Bool) -> Ownership {
        guard let node = state.withLock({ $0.table[parent] }), node.permissions & UInt32(S_ISGID) != 0 else {
            return Ownership(uid: caller.uid, gid: caller.gid, setgid: 0)
        }
        return Ownership(uid: caller.uid, gid: node.gid, setgid: directory ? UInt32(S_ISGID) : 0)
    }
}
