import Foundation
import Glibc
import ObjectStore

/// Write-back: local content (a staged file) to the store, following the lifecycle of `ContentState`. Every
/// upload holds the file's `FileSerial`, so uploads of one file, its renames and its unlink happen one at a
/// time, and each upload's condition is the version the previous store change of this mount left (`base`:
/// absent for a new file, else the version read or written last).
extension FileSystem {
    /// Uploads the file's content if it changed: conditional on absence for a new file, on the version seen
    /// otherwise. On failure the content goes to the recovery folder and the error is returned (to close/fsync).
    func upload(_ ino: UInt64) throws(FSError) {
        try serialised([ino]) { () throws(FSError) in try uploadHoldingSerial(ino) }
    }

    /// Keeps a staged file of an upload that a crash interrupted in the recovery folder (see `UploadJournal`).
    /// Returns where the content went, or nil if it could not be saved.
    public func keepForRecovery(stagedPath: String, key: String, reason: String) -> String? {
        recovery.save(stagedPath: stagedPath, key: key, reason: reason)
    }

    /// Uploads every file with pending writes; used when the mount shuts down.
    public func flushAll() {
        let pending = state.withLock { s in s.table.nodes.values.filter { $0.content == .pending }.map(\.ino) }
        for ino in pending {
            do { try upload(ino) } catch { logger.error("upload at unmount failed", metadata: ["error": "\(error)"]) }
        }
    }

    // MARK: - The staging journal (crash safety)

    /// Writes (or rewrites) the sidecar of a file whose content the store lacks: its key, base and metadata.
    /// Called when it becomes pending, and when its key, base or metadata move while it stays so.
    ///
    /// A new file with no byte yet has nothing a crash could lose: its sidecar waits for the first write or
    /// truncate (`StagedFile.takeDeferredJournal`), or for a close that leaves it unstored. `create` runs
    /// under the kernel's exclusive lock on the directory, so two fsyncs there would serialise every writer
    /// creating files in that directory; the first write runs outside it.
    func journal(_ ino: UInt64, closed: Bool = false) {
        guard let stagingJournal else { return }
        let entry = state.withLock { s -> (String, String, StagingJournal.Base, String?, ObjectMetadata)? in
            guard let node = s.table[ino], node.dirty, let staged = node.staged, !node.path.isEmpty else { return nil }
            if !closed && !node.inStore && node.size == 0 {
                staged.deferJournal()
                return nil
            }
            _ = staged.takeDeferredJournal()  // written now
            let base: StagingJournal.Base = node.inStore ? node.version.map { .version($0) } ?? .unknown : .absent
            return (staged.path, keys.key(for: node.path), base, node.contentType, node.objectMetadata())
        }
        guard let (path, key, base, contentType, metadata) = entry else { return }
        stagingJournal.record(
            stagedPath: path, key: key, base: base, contentType: contentType, metadata: metadata,
            closed: closed)
    }

    /// The staged file's content is in the store, in the recovery folder, or of no use any more.
    func unjournal(_ staged: StagedFile?) {
        if let staged { stagingJournal?.clear(stagedPath: staged.path) }
    }

    struct UploadJob {
        var staged: StagedFile
        /// The node as the upload began (its path, size, stream, base).
        var node: Node
        var options: PutOptions
    }

    private func uploadHoldingSerial(_ ino: UInt64) throws(FSError) {
        let job: UploadJob? = state.withLock { s in
            guard var node = s.table[ino], let staged = node.staged, !node.path.isEmpty,
                node.content.beginUpload()
            else { return nil }
            var job = node
            node.changedFrom = nil
            if node.stream?.hasStarted == true {
                node.stream = nil  // completed by this upload; later writes go to a plain PUT
            } else {
                job.stream = nil  // not started: a PUT now, and the stream stays for the writes to come
            }
            node.mtimeExplicit = false
            s.table[ino] = node
            let condition: PutCondition = node.inStore ? node.version.map { .ifVersionMatches($0) } ?? .none : .ifAbsent
            return UploadJob(
                staged: staged, node: job,
                options: PutOptions(
                    contentType: node.contentType,
                    metadata: node.objectMetadata(),
                    condition: condition))
        }
        guard let job else { return }
        FileSystemMetrics.shared.uploadStarted()
        defer { FileSystemMetrics.shared.uploadFinished() }
        let key = keys.key(for: job.node.path)
        if let stream = job.node.stream {
            if stream.key == key {
                do throws(ObjectStoreError) {
                    if let info = try completeStream(stream, job: job) { return recordUpload(ino, info, job: job) }
                } catch {
                    logger.warning(
                        "streamed upload failed; uploading the staged file instead",
                        metadata: ["key": "\(key)", "error": "\(error)"])
                }
            }
            stream.abort()
        }
        if let info = uploadReusingStoredParts((job.staged, job.node, job.options), key: key) {
            return recordUpload(ino, info, job: job)
        }
        // A small file goes from memory: the bytes stored are then known, and kept for the reads that follow.
        var sent: Data?
        if job.node.size <= Self.smallObjectLimit,
            let data = try? job.staged.read(at: 0, count: Int(Self.smallObjectLimit) + 1),
            UInt64(data.count) <= Self.smallObjectLimit
        {
            sent = data
        }
        let info: ObjectInfo
        do {
            info = try store.put(
                key, body: sent.map { .data($0) } ?? .file(path: job.staged.path), options: job.options)
        } catch {
            let conflict: Bool
            switch (error, job.options.condition) {
            case (.preconditionFailed, _), (.notFound, .ifVersionMatches): conflict = true
            default: conflict = false
            }
            // One copy per failure episode of a transient error (a later failure replaces it, a success drops it);
            // every conflict keeps its own.
            let base: RecoveryFolder.Base =
                job.node.inStore ? job.node.version.map { .version($0) } ?? .absent : .absent
            let saved = recovery.save(
                stagedPath: job.staged.path, key: key, reason: error.description, base: base,
                episode: conflict ? nil : "\(ino)")
            events?.uploadFailed(key: key, saved: saved, error: error.description, conflict: conflict)
            state.withLock { s in
                s.table[ino]?.noteChange(from: 0)  // next time: upload it all
                s.table[ino]?.content.uploadFailed(conflict: conflict)
                if saved == nil { s.table[ino]?.preserveStaged = true }
            }
            if conflict && saved != nil { unjournal(job.staged) }  // the recovery folder has it now
            // A conflict stays one: retrying would fail the same way, the user decides (recover push). The
            // store may come back otherwise: the next flush, fsync or release tries again.
            if conflict { throw FSError.stale("\(key) was changed or deleted by another writer") }
            throw FSError.io("upload of \(key) failed: \(error)")
        }
        recordUpload(ino, info, job: job, sent: sent)
    }

    /// The upload stored `info`: the node's base moves to it, and the lifecycle on (clean, or pending again if
    /// written meanwhile).
    /// `sent`: the whole content of that version, kept for the next open (`SmallContentCache`).
    private func recordUpload(_ ino: UInt64, _ info: ObjectInfo, job: UploadJob, sent: Data? = nil) {
        metadataIndex.wrote(
            key: info.key.isEmpty ? keys.key(for: job.node.path) : info.key, version: info.version,
            size: info.size, metadata: job.options.metadata)
        recovery.resolved(episode: "\(ino)")
        defer {
            // Written meanwhile: the sidecar takes the new base; else the store has it all.
            if state.withLock({ $0.table[ino]?.dirty }) == true { journal(ino) } else { unjournal(job.staged) }
        }
        state.withLock { s in
            guard var node = s.table[ino] else { return }
            node.content.uploadStored()
            node.inStore = true
            node.version = info.version
            node.writtenMetadata = job.options.metadata
            node.storedModified = nil
            node.storedSize = info.size
            node.validatedAt = .now
            s.table[ino] = node
            if let sent, UInt64(sent.count) == info.size { s.smallContents.put(ino, version: info.version, data: sent) }
        }
    }

    /// Finishes a streamed multipart upload. Metadata set since the stream began (chmod, an explicit mtime)
    /// follows with a metadata-only copy. Returns nil when the file never filled a part (plain PUT instead).
    private func completeStream(_ stream: StreamingUpload, job: UploadJob) throws(ObjectStoreError) -> ObjectInfo? {
        guard
            var info = try stream.finish(staged: job.staged, size: job.node.size, condition: job.options.condition)
        else { return nil }
        var sent = stream.metadata
        sent["mtime"] = job.options.metadata["mtime"]
        sent["ctime"] = job.options.metadata["ctime"]
        sent["atime"] = job.options.metadata["atime"]
        for (key, value) in job.node.foreignMetadata where sent[key] == nil { sent[key] = value }
        if job.node.mtimeExplicit || sent != job.options.metadata {
            // The content is safely in the store now: a failure here costs only the metadata, so log it
            // rather than letting the caller upload the content again.
            do throws(ObjectStoreError) {
                info = try store.copy(
                    from: info.key, to: info.key, metadata: job.options.metadata,
                    condition: .ifVersionMatches(info.version))
            } catch {
                logger.error(
                    "could not store metadata after upload", metadata: ["key": "\(info.key)", "error": "\(error)"])
            }
        }
        return info
    }

    /// A stream for a new or truncated file, when the mount streams uploads.
    func makeStream(for node: Node) -> StreamingUpload? {
        guard let partSize = options.multipartPartSize else { return nil }
        var metadata = node.posixMetadata().objectMetadata
        for key in ["mtime", "ctime", "atime"] { metadata[key] = nil }
        return StreamingUpload(
            store: store, key: keys.key(for: node.path), metadata: metadata, partSize: partSize,
            maxInFlight: options.multipartMaxInFlight, lane: uploadLane, journal: uploadJournal)
    }

    /// The file stopped being a sequential write: abandon its stream; the close uploads the staged file.
    func dropStream(_ stream: StreamingUpload, of ino: UInt64) {
        state.withLock { s in
            if s.table[ino]?.stream === stream { s.table[ino]?.stream = nil }
        }
        stream.abort()
    }

    /// The node's staged file, created on first use; with `keepContent` the object's content is copied in.
    func stage(_ ino: UInt64, keepContent: Bool) throws(FSError) -> StagedFile {
        let node = try existingNode(ino)
        guard node.kind == .file else { throw FSError.isDirectory }
        if let staged = node.staged {
            if keepContent {
                try staged.prepare { fd throws(FSError) in try download(path: node.path, into: fd, ino: ino) }
            } else {
                staged.markLoaded()
            }
            return staged
        }
        let needsContent = keepContent && node.inStore && node.size > 0
        if needsContent && options.stagingLimit > 0 {
            let over = state.withLock { $0.table.stagedBytes + node.size > options.stagingLimit }
            if over { throw FSError.noSpace }
        }
        let fresh = try StagedFile(directory: stagingDirectory, loaded: !needsContent)
        let staged = state.withLock { s -> StagedFile in
            if let existing = s.table[ino]?.staged { return existing }
            s.table[ino]?.staged = fresh
            return fresh
        }
        if staged !== fresh { fresh.discard() }
        do {
            try staged.prepare { fd throws(FSError) in try download(path: node.path, into: fd, ino: ino) }
        } catch {
            // Leave no half-filled copy behind: a later O_TRUNC or write starts from a clean slate.
            let dropped = state.withLock { s -> Bool in
                guard let node = s.table[ino], node.staged === staged, !node.dirty else { return false }
                s.table[ino]?.staged = nil
                return true
            }
            if dropped { staged.discard() }
            throw error
        }
        return staged
    }

    /// Stages the node's copy and runs `change` on it (a write, a truncate, and the node marked changed) so that no
    /// lock's revalidation empties a clean copy between the bytes and the mark (`StagedFile.change`), which would
    /// let the next upload go without them. A copy emptied before `change` is staged again, from the new version.
    func changeStaged<T>(
        _ ino: UInt64, keepContent: Bool, _ change: (StagedFile) throws(FSError) -> T
    ) throws(FSError) -> (StagedFile, T) {
        while true {
            let staged = try stage(ino, keepContent: keepContent)
            if let changed = try staged.change({ () throws(FSError) in try change(staged) }) {
                return (staged, changed)
            }
        }
    }

    /// Copies the object into `fd` in bounded ranges. Later uploads are conditional on the version downloaded.
    func download(path: String, into fd: Int32, ino: UInt64) throws(FSError) {
        let key = keys.key(for: path)
        // The version seen at open: the content written on top of must be that one.
        let opened = state.withLock { $0.table[ino]?.version }
        var version = opened
        var offset: UInt64 = 0
        while true {
            let chunk = try storeCall { try store.get(key, range: offset..<(offset + Self.downloadChunk)) }
            if let known = version, known != chunk.info.version {
                // The node moved to it meanwhile: while its copy downloads, only this mount's chmod or touch (a
                // metadata copy: the same bytes) moves it (a revalidation waits for the download, `forgetContent`).
                // Content as good to write on; again from its start.
                guard state.withLock({ $0.table[ino]?.version }) == chunk.info.version else {
                    throw FSError.stale("\(key) was changed by another writer")
                }
                version = chunk.info.version
                if offset > 0 {
                    offset = 0
                    _ = ftruncate(fd, 0)
                    continue
                }
            }
            if version == nil || offset == 0 { keepForeignAttributes(of: chunk.info, ino: ino) }
            version = chunk.info.version
            let written = chunk.body.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard written == chunk.body.count else { throw FSError.io("staging write failed for \(key)") }
            offset += UInt64(chunk.body.count)
            if offset >= chunk.info.size || chunk.body.isEmpty { break }
        }
        state.withLock { s in
            // Only if nothing moved it since: a chmod's copy after the last GET keeps these bytes under a new
            // version; a rename's copy marked the staged copy outdated (`markOutdated`).
            if let version, s.table[ino]?.version == opened { s.table[ino]?.version = version }
        }
    }

    /// Content type and metadata of other tools, seen when the object is read for writing, go back with the upload.
    private func keepForeignAttributes(of info: ObjectInfo, ino: UInt64) {
        guard let metadata = info.metadata else { return }
        state.withLock { s in
            s.table[ino]?.contentType = info.contentType
            s.table[ino]?.foreignMetadata = PosixMetadata.foreign(metadata)
        }
    }

    /// Drops the staged copy of a file nobody has open once nothing of it waits for an upload. A whole clean copy
    /// of the stored version becomes that version's entry in the block cache (`BlockCache.adopt`): moved, not
    /// copied, so reading back what was just written costs no GET.
    func dropStagedIfIdle(_ ino: UInt64) {
        /// The object version a dropped copy holds whole, for the block cache.
        struct CachedAs {
            var key: String
            var version: String
            var size: UInt64
        }
        let drop: (staged: StagedFile, cacheAs: CachedAs?)? = state.withLock { s in
            guard var node = s.table[ino], node.openHandles == 0, node.stagedUsers == 0, let staged = node.staged,
                !node.content.hasUnstoredChanges || node.path.isEmpty
            else { return nil }
            if node.path.isEmpty { node.content.detach() }
            node.staged = nil
            let preserve = node.preserveStaged
            // Clean (nothing written since the upload or download that set `version`) and whole (loaded).
            var cacheAs: CachedAs?
            if node.content == .clean, node.inStore, !node.path.isEmpty, staged.isLoaded,
                node.size == node.storedSize, let version = node.version
            {
                cacheAs = CachedAs(key: keys.key(for: node.path), version: version, size: node.size)
            }
            s.table[ino] = node
            s.table.evictIfUnused(ino)
            return preserve ? nil : (staged, cacheAs)
        }
        guard let drop else { return }
        unjournal(drop.staged)
        guard let cache = prefetchBudget.cache, let entry = drop.cacheAs else { return drop.staged.discard() }
        drop.staged.discard { path in cache.adopt(key: entry.key, version: entry.version, path: path, size: entry.size)
        }
    }
}
