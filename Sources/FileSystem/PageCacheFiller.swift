import Foundation

/// After a random read, hands the whole block-cache block around it to the kernel's page cache (FUSE's
/// NOTIFY_STORE), on a thread of its own: a random reader's next reads in that block are then page-cache hits, not
/// one FUSE round trip (and one cache-file read) per 4 KiB page. The kernel reads ahead for sequential readers
/// itself; for random ones it asks for single pages.
///
/// Pushed pages must be the file's content at the time they land, so a push is fenced against every change of it:
/// offers are made only for handles of a clean, unstaged file with no writable handle, and queued in the same
/// critical section of `FileSystem.state` that checked it; whatever may change the content or let the kernel keep
/// older pages (a writable open, an open of a new version, a truncate, a lock's revalidation) first makes that
/// change under the state lock, then calls `advance`: the offers queued for the inode are dropped, and a push in
/// flight is waited for. A refresh that takes another host's version cannot wait (it holds the state lock, which a
/// read the push waits for in the kernel may need): it calls `versionTaken`, which drops the queued offers; each push
/// checks, when its turn comes, that the file is still at the version offered (`Offer.stillCurrent`, under
/// `FileSystem.state`, taken with `condition` not held); and a push already past that check when the version was
/// taken is followed by an invalidation of the inode's pages (`invalidate`), so old bytes, or an end of file moved
/// past the new one, do not stay. Lock order: `FileSystem.state`, then this filler's `condition` (a leaf).
///
/// A push of a page the kernel holds locked (a read of it in flight) waits in the kernel until that read's reply
/// is in, so pushes never run on a thread that serves FUSE requests or fetches blocks.
final class PageCacheFiller: @unchecked Sendable {
    /// Stores `data` at `offset` of inode `ino` in the kernel's page cache.
    typealias Store = @Sendable (_ ino: UInt64, _ offset: UInt64, _ data: Data) -> Void

    struct Offer {
        let ino: UInt64
        let key: String
        let version: String
        let block: Int
        /// The file's size: the last block is pushed only up to it (a push past the end would extend the file).
        let size: UInt64
        /// Asked just before the push: whether the file is still at `version` (clean, nothing staged). A refresh
        /// may have taken another host's version since the offer (a smaller size, which the kernel may have heard).
        let stillCurrent: @Sendable () -> Bool
    }

    /// Offers waiting beyond this are dropped: a random reader faster than the pushes gets what it can.
    static let queueLimit = 64
    /// Blocks remembered as pushed per inode (until its next open or `advance`), so that one block is pushed once;
    /// for at most this many inodes and blocks an inode (then forgotten, so pushed again at worst).
    static let pushedLimit = 4096

    private let cache: BlockCache
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var queue: [Offer] = []
    private var pushed: [UInt64: Set<Int>] = [:]
    /// The inode being pushed, if any.
    private var pushing: UInt64?
    /// Another version of `pushing` was taken during its push: once the push is made, its pages are invalidated.
    private var pushOutdated = false
    private var store: StoreBox = StoreBox()
    private var thread: Thread?

    /// The FUSE layer's callbacks, held in a struct (see `FileSystem.KernelCacheInvalidator`).
    private struct StoreBox {
        var call: Store?
        /// Drops the kernel's pages of an inode (FUSE's NOTIFY_INVAL_INODE), from this filler's thread.
        var invalidate: (@Sendable (UInt64) -> Void)?
    }

    init(cache: BlockCache) {
        self.cache = cache
    }

    /// Sets the kernel's store, and how to invalidate an inode's pages (nil: none; offers are then dropped and the
    /// thread ends).
    func setStore(_ call: Store?, invalidate: (@Sendable (UInt64) -> Void)?) {
        condition.lock()
        store.call = call
        store.invalidate = invalidate
        if call == nil { queue.removeAll() }
        if call != nil && thread == nil {
            let started = Thread { [self] in run() }
            started.name = "bucketfs page cache"
            thread = started
            started.start()
        }
        condition.broadcast()
        condition.unlock()
    }

    /// Queues a push, unless this block was pushed (or queued) already since the inode's last open, or the queue is
    /// full. Called under `FileSystem.state`, in the critical section that checked the file may have pages pushed.
    func offer(_ offer: Offer) {
        condition.lock()
        defer { condition.unlock() }
        guard store.call != nil, queue.count < Self.queueLimit else { return }
        var blocks = pushed[offer.ino, default: []]
        guard !blocks.contains(offer.block) else { return }
        if blocks.count >= Self.pushedLimit { blocks.removeAll() }
        if pushed.count >= Self.pushedLimit && pushed[offer.ino] == nil { pushed.removeAll() }
        blocks.insert(offer.block)
        pushed[offer.ino] = blocks
        queue.append(offer)
        condition.broadcast()
    }

    /// Drops the offers queued for `ino` and waits for its push in flight. Called once the change that stops new
    /// offers is made under `FileSystem.state`, without that lock held, and before the kernel hears of the change.
    func advance(_ ino: UInt64) {
        condition.lock()
        dropOffers(ino)
        while pushing == ino { condition.wait() }
        condition.unlock()
    }

    /// A refresh took another version of `ino` (under `FileSystem.state`): drops its queued offers, and marks a push
    /// of it in flight as outdated, without waiting for it.
    func versionTaken(_ ino: UInt64) {
        condition.lock()
        dropOffers(ino)
        if pushing == ino { pushOutdated = true }
        condition.unlock()
    }

    /// Forgets what was pushed of `ino` and drops its queued offers. With `condition` held.
    private func dropOffers(_ ino: UInt64) {
        pushed[ino] = nil
        queue.removeAll { $0.ino == ino }
    }

    /// Waits until no push is in flight (once the store is unset, before the FUSE session goes).
    func drain() {
        condition.lock()
        while pushing != nil { condition.wait() }
        condition.unlock()
    }

    /// A new open of `ino`: the kernel may have dropped pages pushed before (memory pressure, `drop_caches`), so
    /// its blocks may be pushed again.
    func reopened(_ ino: UInt64) {
        condition.lock()
        pushed[ino] = nil
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty && store.call != nil { condition.wait() }
            guard let call = store.call, let invalidate = store.invalidate else {
                thread = nil
                condition.unlock()
                return
            }
            let offer = queue.removeFirst()
            pushing = offer.ino
            pushOutdated = false
            condition.unlock()
            let made = push(offer, with: call)
            condition.lock()
            let outdated = made && pushOutdated
            if !outdated { pushing = nil }
            condition.broadcast()
            condition.unlock()
            guard outdated else { continue }
            // Still `pushing`, so that an `advance` meanwhile waits for the invalidation too.
            invalidate(offer.ino)
            condition.lock()
            pushing = nil
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Whether the push was made.
    private func push(_ offer: Offer, with call: Store) -> Bool {
        let start = UInt64(offer.block) * UInt64(cache.blockSize)
        guard start < offer.size,
            let data = cache.block(key: offer.key, version: offer.version, number: offer.block), offer.stillCurrent()
        else { return false }
        let length = Int(min(UInt64(data.count), offer.size - start))
        call(offer.ino, start, length == data.count ? data : data.prefix(length))
        FileSystemMetrics.shared.pagesPushed(bytes: length)
        return true
    }
}
