import Foundation

/// After a random read, hands the whole block-cache block around it to the kernel's page cache (FUSE's
/// NOTIFY_STORE), on a thread of its own: a random reader's next reads in that block are then page-cache hits, not
/// one FUSE round trip (and one cache-file read) per 4 KiB page. The kernel reads ahead for sequential readers
/// itself; for random ones it asks for single pages.
///
/// Pushed pages must be the file's content at the time they land, so a push is fenced against every change of it:
/// offers are made only for handles of a clean, unstaged file with no writable handle (checked by `FileSystem`
/// under its state lock, with `generation(of:)` read in the same critical section), and whatever may change the
/// content or let the kernel keep older pages (a writable open, an open of a new version, a truncate, a lock's
/// revalidation) first calls `advance` under that lock, then `drain` outside it. Offers of an older generation
/// are dropped, and a push in flight is waited for. Lock order: `FileSystem.state`, then this filler's `condition`.
///
/// A push of a page the kernel holds locked (a read of it in flight) waits in the kernel until that read's reply
/// is in, so pushes never run on a thread that serves FUSE requests or fetches blocks.
final class PageCacheFiller: @unchecked Sendable {
    /// Stores `data` at `offset` of inode `ino` in the kernel's page cache.
    typealias Store = @Sendable (_ ino: UInt64, _ offset: UInt64, _ data: Data) -> Void

    struct Offer: Hashable {
        let ino: UInt64
        let key: String
        let version: String
        let block: Int
        /// The file's size: the last block is pushed only up to it (a push past the end would extend the file).
        let size: UInt64
        let generation: UInt64
    }

    /// Offers waiting beyond this are dropped: a random reader faster than the pushes gets what it can.
    static let queueLimit = 64
    /// Blocks remembered as pushed per inode (until its next `advance`), so that one block is pushed once.
    static let pushedLimit = 4096

    private let cache: BlockCache
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var queue: [Offer] = []
    private var generations: [UInt64: UInt64] = [:]
    private var pushed: [UInt64: Set<Int>] = [:]
    /// The inode being pushed, if any.
    private var pushing: UInt64?
    private var store: StoreBox = StoreBox()
    private var thread: Thread?

    /// The FUSE layer's callback, held in a struct (see `FileSystem.KernelCacheInvalidator`).
    private struct StoreBox {
        var call: Store?
    }

    init(cache: BlockCache) {
        self.cache = cache
    }

    /// Sets the kernel's store (nil: none; offers are then dropped and the thread ends).
    func setStore(_ call: Store?) {
        condition.lock()
        store.call = call
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

    /// The generation an offer for `ino` made now carries. Called under `FileSystem.state`.
    func generation(of ino: UInt64) -> UInt64 {
        condition.lock()
        defer { condition.unlock() }
        return generations[ino, default: 0]
    }

    /// Queues a push, unless this block was pushed (or queued) already in this generation, or the queue is full.
    func offer(_ offer: Offer) {
        condition.lock()
        defer { condition.unlock() }
        guard store.call != nil, generations[offer.ino, default: 0] == offer.generation, queue.count < Self.queueLimit
        else { return }
        var blocks = pushed[offer.ino, default: []]
        guard !blocks.contains(offer.block) else { return }
        if blocks.count >= Self.pushedLimit { blocks.removeAll() }
        blocks.insert(offer.block)
        pushed[offer.ino] = blocks
        queue.append(offer)
        condition.broadcast()
    }

    /// Offers for `ino` made before this are dropped when their turn comes. Called under `FileSystem.state`,
    /// in the critical section that makes the change; then `drain` once that lock is released.
    func advance(_ ino: UInt64) {
        condition.lock()
        generations[ino, default: 0] += 1
        pushed[ino] = nil
        queue.removeAll { $0.ino == ino }
        condition.unlock()
    }

    /// Waits until no push of `ino` (nil: of any inode) is in flight. Called without `FileSystem.state` held.
    func drain(_ ino: UInt64? = nil) {
        condition.lock()
        while let busy = pushing, ino == nil || busy == ino { condition.wait() }
        condition.unlock()
    }

    /// Forgets a removed inode.
    func forget(_ ino: UInt64) {
        condition.lock()
        generations[ino] = nil
        pushed[ino] = nil
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty && store.call != nil { condition.wait() }
            guard let call = store.call else {
                thread = nil
                condition.unlock()
                return
            }
            let offer = queue.removeFirst()
            guard generations[offer.ino, default: 0] == offer.generation else {
                condition.unlock()
                continue
            }
            pushing = offer.ino
            condition.unlock()
            push(offer, with: call)
            condition.lock()
            pushing = nil
            condition.broadcast()
            condition.unlock()
        }
    }

    private func push(_ offer: Offer, with call: Store) {
        let start = UInt64(offer.block) * UInt64(cache.blockSize)
        guard start < offer.size,
            let data = cache.block(key: offer.key, version: offer.version, number: offer.block)
        else { return }
        let length = Int(min(UInt64(data.count), offer.size - start))
        call(offer.ino, start, length == data.count ? data : data.prefix(length))
        FileSystemMetrics.shared.pagesPushed(bytes: length)
    }
}
