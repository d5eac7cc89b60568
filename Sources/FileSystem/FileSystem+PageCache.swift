import Foundation

/// The kernel's page cache filled a block at a time after random reads (`PageCacheFiller`), and the fences that
/// keep what it pushes the file's current content.
extension FileSystem {
    /// O_DIRECT, which Swift's Glibc module leaves out (it is a GNU extension there).
    #if arch(arm64) || arch(arm)
        static let directFlag: Int32 = 0o200000
    #else
        static let directFlag: Int32 = 0o40000
    #endif

    /// Sets the FUSE layer's store into the kernel's page cache (nil: none, as before mounting and after).
    public func setKernelPageStore(_ store: (@Sendable (UInt64, UInt64, Data) -> Void)?) {
        guard let store else {
            pageFiller?.setStore(nil, invalidate: nil)
            return
        }
        pageFiller?.setStore(store) { [weak self] ino in
            let invalidate = self?.kernelCacheInvalidator.withLock { $0.invalidate }
            invalidate?(ino)
        }
    }

    /// Waits for a push in flight: once the store is unset, before the FUSE session it writes to is destroyed.
    public func waitForKernelPageStores() {
        pageFiller?.drain()
    }

    /// A read of `handle` at `offset` was a seek: offers the block around it, if the kernel may hold pages of this
    /// handle's content at all (a clean file, nothing staged, no writable handle that could change pages, and the
    /// version the handle opened). Queued under the state lock, so a change made under it after this check finds the
    /// offer queued (and drops it) in `fencePageCache`.
    func offerPages(_ ino: UInt64, handle: UInt64, at offset: UInt64) {
        guard let filler = pageFiller, let cache = prefetchBudget.cache else { return }
        state.withLock { s in
            guard let file = s.files[handle], !file.direct, let version = file.version, let node = s.table[ino],
                node.staged == nil, !node.dirty, node.version == version,
                !s.files.values.contains(where: { $0.ino == ino && $0.writable })
            else { return }
            filler.offer(
                PageCacheFiller.Offer(
                    ino: ino, key: keys.key(for: node.path), version: version,
                    block: Int(offset / UInt64(cache.blockSize)), size: node.size,
                    stillCurrent: { [weak self] in self?.mayPushPages(ino, version: version) ?? false }))
        }
    }

    /// Whether pages of `version` may still be pushed for `ino`: it is clean, nothing staged, and still that version.
    /// The changes of content fence the pushes (`fencePageCache`); a refresh that takes another host's version does
    /// not (under the state lock it cannot wait for one), so a push checks this when its turn comes.
    private func mayPushPages(_ ino: UInt64, version: String) -> Bool {
        state.withLock { s in
            guard let node = s.table[ino] else { return false }
            return node.staged == nil && !node.dirty && node.version == version
        }
    }

    /// Drops the pushes offered for `ino` so far and waits for one in flight. Called once the change that forbids
    /// new offers is made (a writable handle registered, a file staged, a new version taken), before the kernel
    /// hears of it: the kernel then drops or overwrites what was pushed, and nothing older lands after.
    func fencePageCache(_ ino: UInt64) {
        pageFiller?.advance(ino)
    }
}
