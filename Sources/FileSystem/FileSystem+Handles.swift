import Foundation
import Glibc
import ObjectStore

/// Open files: open, read (local copy, small-file content, streaming GET or ranged read-ahead), write (into the
/// staged copy, and a streamed multipart upload while sequential), flush/fsync/release (uploads, `+WriteBack`).
extension FileSystem {

    public struct OpenResult: Sendable {
        public var handle: UInt64
        /// The kernel may keep its cached pages of the file (FOPEN_KEEP_CACHE): the version revalidated by this
        /// open is the one whose pages this mount let it cache (the last open's, and no read since served another),
        /// and no local change is pending. Else the kernel drops them — another host's write is read fresh.
        public var keepCache: Bool
    }

    public func open(_ ino: UInt64, flags: Int32) throws(FSError) -> OpenResult {
        let writable = flags & O_ACCMODE != O_RDONLY
        if writable { try requireWritable() }
        var node = try existingNode(ino)
        guard node.kind == .file else { throw node.kind == .directory ? FSError.isDirectory : FSError.invalidArgument }
        if node.staged == nil && !node.path.isEmpty && !isFresh(node) {
            _ = try resolve(node.path, retain: false, force: true)  // close-to-open: see other hosts' writes
            node = try existingNode(ino)
        }
        if writable && flags & O_TRUNC != 0 {
            let (_, (abandoned, fresh)) = try changeStaged(ino, keepContent: false) {
                staged throws(FSError) -> (StreamingUpload?, Bool) in
                try staged.truncate(to: 0)
                return state.withLock { s -> (StreamingUpload?, Bool) in
                    guard var node = s.table[ino] else { return (nil, false) }
                    let old = node.stream
                    node.size = 0
                    let fresh = node.content.contentChanged()
                    node.noteChange(from: 0)
                    node.mtime = .now()
                    node.touchChange(node.mtime)
                    node.stream = makeStream(for: node)
                    s.table[ino] = node
                    return (old, fresh)
                }
            }
            abandoned?.abort()
            if fresh { journal(ino) }
        }
        let opened = state.withLock { s in
            let handle = s.allocateHandle()
            let version = s.table[ino]?.version
            let content = s.table[ino]?.staged == nil ? s.smallContents.take(ino, version: version) : nil
            s.files[handle] = OpenFile(
                ino: ino, content: content, version: version, writable: writable, direct: flags & Self.directFlag != 0)
            s.table[ino]?.openHandles += 1
            // (`lastOpenedVersion`: the version of the pages the kernel may hold; a mismatch drops them all.)
            let keep = version != nil && version == s.table[ino]?.lastOpenedVersion && s.table[ino]?.dirty == false
            s.table[ino]?.lastOpenedVersion = version
            return OpenResult(handle: handle, keepCache: keep)
        }
        // The kernel writes a writable handle's data into its pages, and drops them at an open without keep_cache:
        // no push may land after either.
        if writable || !opened.keepCache { fencePageCache(ino) } else { pageFiller?.reopened(ino) }
        return opened
    }

    public func read(_ ino: UInt64, handle: UInt64, offset: UInt64, size: Int) throws(FSError) -> Data {
        let node = try existingNode(ino)
        if let staged = node.staged {
            try staged.prepare { fd throws(FSError) in try download(path: node.path, into: fd, ino: ino) }
            return try staged.read(at: offset, count: size)
        }
        guard offset < node.size, size > 0 else { return Data() }
        if let content = state.withLock({ $0.files[handle]?.content }), UInt64(content.count) == node.size {
            let end = min(content.count, Int(offset) + size)
            return content.subdata(in: Int(offset)..<end)
        }
        let prefetcher = state.withLock { s -> ReadPrefetcher? in
            guard var file = s.files[handle] else { return nil }
            // A handle of another version (opened before a revalidation) fills the kernel's cache with pages that
            // the next open must not keep.
            if file.version != node.version || file.version != s.table[ino]?.lastOpenedVersion {
                s.table[ino]?.lastOpenedVersion = nil
            }
            if file.prefetcher == nil {
                file.prefetcher = ReadPrefetcher(
                    store: store, key: keys.key(for: node.path), size: node.size,
                    settings: ReadPrefetcher.Settings(), budget: prefetchBudget,
                    workers: workers, version: node.version,
                    streaming: store.prefersStreamingReads)
                s.files[handle] = file
            }
            return file.prefetcher
        }
        guard let prefetcher else { throw FSError.badHandle }
        let (data, seek) = try storeCall { try prefetcher.readNotingSeek(offset: offset, count: size) }
        if seek { offerPages(ino, handle: handle, at: offset) }
        return data
    }

    public func write(_ ino: UInt64, handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer) throws(FSError)
        -> Int
    {
        guard offset + UInt64(data.count) <= Self.maxFileSize else { throw FSError.fileTooLarge }
        if options.stagingLimit > 0 {
            let end = offset + UInt64(data.count)
            let over = state.withLock { s in
                s.table.stagedBytes + (end - min(end, s.table[ino]?.size ?? 0)) > options.stagingLimit
            }
            if over { throw FSError.noSpace }  // the staging area is full: ENOSPC, nothing half-written
        }
        let (staged, (size, fresh, stream)) = try changeStaged(ino, keepContent: true) {
            staged throws(FSError) -> (UInt64, Bool, StreamingUpload?) in
            let stream = state.withLock { $0.table[ino]?.stream }
            if let stream, try stream.write(data, at: offset, into: staged) {
                // Sequential so far: the stream took the write.
            } else {
                if let stream { dropStream(stream, of: ino) }
                try staged.write(data, at: offset)
            }
            let end = offset + UInt64(data.count)
            let (size, fresh) = state.withLock { s -> (UInt64, Bool) in
                guard var node = s.table[ino] else { return (end, false) }
                node.size = max(node.size, end)
                node.noteChange(from: offset)
                node.mtime = .now()
                node.touchChange(node.mtime)
                // (An unlinked or replaced file stays detached: its bytes serve its open descriptors only.)
                let fresh = node.content.contentChanged()
                s.table[ino] = node
                return (node.size, fresh)
            }
            return (size, fresh, stream)
        }
        if fresh || staged.takeDeferredJournal() { journal(ino) }
        if let stream, state.withLock({ $0.table[ino]?.stream }) === stream {
            stream.advance(staged: staged, contiguousEnd: size)
        }
        return data.count
    }

    /// Every close of a descriptor: upload pending writes so the next open, on any host, sees them — and so
    /// that this close reports a failure. A new empty file too (`: > f`), though a shell that closes a duplicate
    /// descriptor before writing then costs two PUTs: an error that nobody hears would be worse.
    public func flush(_ ino: UInt64, handle: UInt64) throws(FSError) {
        try upload(ino)
    }

    public func fsync(_ ino: UInt64, handle: UInt64) throws(FSError) {
        try upload(ino)
    }

    public func release(_ ino: UInt64, handle: UInt64) {
        let (file, stillDirty) = state.withLock { s -> (OpenFile?, Bool) in
            guard let file = s.files.removeValue(forKey: handle) else { return (nil, false) }
            guard var node = s.table[ino] else { return (file, false) }
            node.openHandles -= 1
            s.table[ino] = node
            return (file, node.openHandles == 0 && node.dirty)
        }
        file?.prefetcher?.close()
        if stillDirty {
            // Writes that no flush carried (e.g. through mmap): upload now; a failure is kept for recovery.
            do { try upload(ino) } catch {
                // Nobody is left to report it to: the content is in the recovery folder (logged there).
                logger.error("upload at release failed", metadata: ["error": "\(error)"])
                let (kept, staged) = state.withLock { s -> (Bool, StagedFile?) in
                    guard s.table[ino]?.preserveStaged == false else { return (false, nil) }
                    s.table[ino]?.content.abandon()
                    return (true, s.table[ino]?.staged)
                }
                // In the recovery folder: nothing left to recover from staging. Else the sidecar says so.
                if kept { unjournal(staged) } else { journal(ino, closed: true) }
            }
        }
        dropStagedIfIdle(ino)
    }
}
