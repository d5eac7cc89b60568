import Foundation
import Locking
import ObjectStore
import Synchronization

/// flock(2) and fcntl(2) locks on files of the mount (see `FileLockCoordinator`), and what they do to caches:
/// a lease newly taken revalidates the file against the store, and the last lock on a file uploads its pending
/// writes before the lease goes — so lock → read → write → unlock on one mount sees what another mount wrote
/// under the same lock.
extension FileSystem {
    /// Sets the hook that drops the kernel's attributes and page cache of an inode.
    public func setKernelCacheInvalidator(_ invalidate: @escaping @Sendable (UInt64) -> Void) {
        kernelCacheInvalidator.withLock { $0.invalidate = invalidate }
    }

    /// Takes `request` on `ino`. Answers through `reply`: at once when granted, when refused (`.wouldBlock`
    /// if `wait` is false) or on failure; a blocking request that must wait is answered later from the lock
    /// waiter thread, with `.interrupted` once `interrupted()` says so. No thread waits meanwhile.
    public func setLock(
        _ ino: UInt64, _ request: FileLock, wait: Bool, interrupted: @escaping @Sendable () -> Bool,
        reply: @escaping @Sendable (FSError?) -> Void
    ) {
        do {
            switch try attemptLock(ino, request, queue: wait) {
            case .granted: reply(nil)
            case .heldLocally, .heldElsewhere:
                if wait { locks.wait(ino, request, interrupted: interrupted, reply: reply) } else { reply(.wouldBlock) }
            }
        } catch {
            reply(error)
        }
    }

    /// Blocking form of `setLock` for callers with a thread to spare (tests, tools).
    public func setLockWaiting(
        _ ino: UInt64, _ request: FileLock, wait: Bool,
        interrupted: @escaping @Sendable () -> Bool = { false }
    ) throws(FSError) {
        let done = DispatchSemaphore(value: 0)
        let answer = Mutex<FSError?>(nil)
        setLock(ino, request, wait: wait, interrupted: interrupted) { error in
            answer.withLock { $0 = error }
            done.signal()
        }
        done.wait()
        if let error = answer.withLock({ $0 }) { throw error }
    }

    /// `F_UNLCK` and `LOCK_UN`: drops `owner`'s locks of `kind` on the range.
    public func unlock(_ ino: UInt64, owner: UInt64, kind: LockKind, start: UInt64 = 0, end: UInt64 = .max) {
        locks.unlock(
            ino, change: { $0.remove(owner: owner, kind: kind, start: start, end: end) },
            beforeRelease: { uploadBeforeUnlock(ino) })
    }

    /// A close by a process (FUSE `flush` with its lock owner): POSIX ends every lock that process holds on
    /// the file. Costs a dictionary lookup when it holds none.
    public func closeLockOwner(_ ino: UInt64, owner: UInt64) {
        unlock(ino, owner: owner, kind: .posix)
    }

    /// The last close of an open file description (FUSE `release`): its flock lock (`flockOwner`, when the
    /// kernel says one was taken) and its OFD locks go.
    public func releaseLocks(_ ino: UInt64, handle: UInt64, flockOwner: UInt64?) {
        locks.unlock(
            ino,
            change: { table in
                let byHandle = table.remove(handle: handle)
                let byOwner = flockOwner.map { table.remove(owner: $0, kind: .flock) } ?? false
                return byHandle || byOwner
            }, beforeRelease: { uploadBeforeUnlock(ino) })
    }

    /// `F_GETLK`: the lock held in this mount that would stop `request`, or nil. Locks of other mounts are not
    /// reported here (see `testLockAcrossMounts`).
    public func testLock(_ ino: UInt64, _ request: FileLock) -> FileLock? {
        locks.conflict(ino, with: request)
    }

    /// `F_GETLK` as the bridge answers it: a lock of this mount, or else one another mount holds through the
    /// strategy — asked for only when this mount's own lease cannot rule it out (one round trip: a GET of the
    /// lock object, one Redis script, a flock probe), reported over the whole file with pid 0.
    public func testLockAcrossMounts(_ ino: UInt64, _ request: FileLock) -> FileLock? {
        if let local = locks.conflict(ino, with: request) { return local }
        guard let path = state.withLock({ $0.table[ino]?.path }) else { return nil }
        return locks.remoteConflict(ino, path: path, with: request)
    }

    /// Leases this mount holds now (files locked here), for status listings.
    public var heldLockLeases: [Lease] {
        locks.heldLeases
    }

    /// Gives every lease back (unmount), after pending uploads; blocked requests are answered EINTR.
    public func shutdownLocks() {
        locks.shutdown()
    }

    // MARK: - Internals

    /// Called once at the end of `init`: the waiter thread retries through here.
    func installLockRetry() {
        locks.setRetry(
            { [weak self] ino, request throws(FSError) -> FileLockCoordinator.Outcome in
                guard let self else { throw FSError.interrupted }
                return try self.attemptLock(ino, request, queue: true)
            },
            release: { [weak self] ino in
                guard let self else { return }
                self.locks.releaseIfUnused(ino, beforeRelease: { self.uploadBeforeUnlock(ino) })
            },
            path: { [weak self] ino in
                self?.state.withLock { $0.table[ino]?.path }
            })
    }

    func attemptLock(
        _ ino: UInt64, _ request: FileLock,
        queue: Bool = false
    ) throws(FSError) -> FileLockCoordinator.Outcome {
        guard let node = state.withLock({ $0.table[ino] }) else { throw FSError.notFound }
        let outcome = try locks.attempt(ino, path: node.path, request, queue: queue)
        if case .granted(newLease: true) = outcome { revalidateAfterLockGrant(ino) }
        // A conversion to shared (flock LOCK_SH over LOCK_EX, F_RDLCK over F_WRLCK) may leave an exclusive lease
        // with only shared locks: it becomes shared, after the writes made under it are uploaded.
        if case .granted = outcome, request.mode == .shared {
            locks.unlock(ino, change: { _ in true }, beforeRelease: { uploadBeforeUnlock(ino) })
        }
        return outcome
    }

    /// Another mount may have changed the file while it held the lock: ask the store, and if the version moved
    /// drop what we cached of the old one (attributes, read-ahead, a clean local copy, the kernel's pages).
    /// Local writes not uploaded yet win.
    private func revalidateAfterLockGrant(_ ino: UInt64) {
        guard
            let (path, before, staged) = state.withLock({ s -> (String, String?, StagedFile?)? in
                guard let node = s.table[ino], node.kind == .file, !node.path.isEmpty, !node.dirty,
                    node.stream?.hasStarted != true
                else { return nil }
                return (node.path, node.version, node.staged)
            })
        else { return }
        var changed = true
        do {
            if let staged {
                // `resolve` trusts a node with local content; this one is only a clean copy: ask directly.
                let info = try storeCall { try store.head(keys.key(for: path)) }
                changed = info.version != before
                if changed { try replaceCleanCopy(ino, at: path, version: before, staged: staged, with: info) }
            } else {
                _ = try resolve(path, retain: false, force: true)
                changed = state.withLock { $0.table[ino]?.version } != before
            }
        } catch {
            logger.warning(
                "could not revalidate a file after locking it", metadata: ["path": "\(path)", "error": "\(error)"])
        }
        guard changed else { return }
        let dropped = state.withLock { s -> [OpenFile] in
            var dropped: [OpenFile] = []
            for (handle, file) in s.files where file.ino == ino {
                dropped.append(file)
                s.files[handle]?.prefetcher = nil
                s.files[handle]?.content = nil
            }
            return dropped
        }
        for file in dropped { file.prefetcher?.close() }
        fencePageCache(ino)
        kernelCacheInvalidator.withLock { $0.invalidate }?(ino)
    }

    /// The node's staged copy is clean but of an old version: take the store's attributes and empty the copy,
    /// which the next read fills from the new version. Holding the file's serial, and only if the node is still
    /// the one asked about (same path, same version): an unlink meanwhile leaves the copy as the only content
    /// its open descriptors have, and an upload meanwhile made the copy the newest.
    private func replaceCleanCopy(
        _ ino: UInt64, at path: String, version: String?, staged: StagedFile, with info: ObjectInfo
    ) throws(FSError) {
        try serialised([ino]) { () throws(FSError) in
            // Holding the copy (`forgetContent(if:)`): a write that staged it before this check cannot land its
            // bytes between the check and the emptying; it waits, finds the copy empty and stages the new version.
            let unused: StreamingUpload?? = staged.forgetContent {
                state.withLock { s in
                    guard let node = s.table[ino], node.path == path, !node.unlinked, node.version == version,
                        node.staged === staged, !node.dirty, node.stream?.hasStarted != true
                    else { return nil }
                    staged.markOutdated()  // before the new version is visible (`dropStagedIfIdle` checks it)
                    var updated = apply(observation: .object(info), to: node)
                    updated.stream = nil
                    s.table[ino] = updated
                    return .some(node.stream)
                }
            }
            unused??.abort()
        }
    }

    /// The writes made under the lock reach the store before another mount can take it.
    func uploadBeforeUnlock(_ ino: UInt64) {
        do {
            try upload(ino)
        } catch {
            // The content is in the recovery folder (the upload logged it); the lock goes anyway, or a failing
            // store would keep every other mount out.
            logger.error("upload before unlock failed", metadata: ["error": "\(error)"])
        }
    }
}
