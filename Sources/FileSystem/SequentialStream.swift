import Foundation
import ObjectStore

/// One streaming GET that runs ahead of a reader going through a large file from its start (`cat`, `cp`, a
/// checksum): a single request instead of a range per window, so the store sends at its full single-stream rate.
/// It stays at most `ahead` bytes in front of the reader (the transfer pauses meanwhile) and keeps `behind` bytes
/// already read for the kernel's slightly out-of-order reads. A read it cannot serve (a seek) returns nil: the
/// caller stops the stream and goes on with ranged reads.
final class SequentialStream: @unchecked Sendable {
    static let ahead: UInt64 = 8 << 20
    static let behind: UInt64 = 4 << 20
    /// Whole blocks waiting for the cache writer at most: when it falls further behind (a disk slower than the
    /// network), the transfer waits for it.
    static let maxPendingWrites = 8
    /// What the stream may hold at once, counted against the mount's read-ahead budget.
    static var footprint: Int { Int(ahead + behind + (1 << 20)) + (maxPendingWrites << 20) }

    /// Received bytes from `start`, in a pooled buffer (reused: no fresh pages for each MiB received).
    private struct Block {
        var start: UInt64
        var buffer: ReceiveBuffer
        var count: Int { buffer.count }
    }

    private let size: UInt64
    private let budget: PrefetchBudget
    // Everything below is guarded by `condition`.
    private let condition = NSCondition()
    private var blocks: [Block] = []
    /// Bytes received so far reach this offset.
    private var received: UInt64
    /// The furthest the reader has read.
    private var readTo: UInt64
    private var finished = false
    private var failure: ObjectStoreError?
    private var closed = false
    /// Who waits on `condition`, so that it is signalled only when that wait can end: a broadcast at every piece
    /// received woke each waiting reader dozens of times per MiB (about 60 futex calls per MiB streamed).
    /// `wanted`: at most the end of every waiting reader's range (a reader sets it again each time it waits).
    private var wanted = UInt64.max
    private var transferWaits = false
    /// Hands each whole block received (and the last, shorter one) to the block cache. Set before the transfer.
    private var keep: ((Int, Data) -> Void)?
    /// Blocks for `keep`, written by a thread of their own: on the transfer's thread the disk writes halved its
    /// rate (SeaweedFS on loopback, 256 MiB, at load 8-11: 119-203 MiB/s with them there, 213-257 with the writer,
    /// 280 without a cache). Guarded by `writes`.
    private let writes = NSCondition()
    private var pendingWrites: [(number: Int, data: Data)] = []
    private var writerDone = false
    private var writerWaits = false
    private var queueWaits = false
    /// The writer thread has stored its last block and ended (`waitForCacheWrites`).
    private var writerEnded = true
    private var blockSize = 1 << 20

    /// Starts the transfer of `start..<size` on a thread of its own, or returns nil when the budget is spent.
    static func start(
        store: any ObjectStore, key: String, version: String?, from start: UInt64, size: UInt64,
        budget: PrefetchBudget
    ) -> SequentialStream? {
        // Cached already (read before, this mount or an earlier one): ranged reads serve it from the block cache.
        if let cache = budget.cache, let version,
            cache.contains(key: key, version: version, number: Int(start / UInt64(cache.blockSize)))
        {
            return nil
        }
        guard budget.reserve(footprint) else { return nil }
        let stream = SequentialStream(size: size, from: start, budget: budget)
        if let cache = budget.cache, let version, start % UInt64(cache.blockSize) == 0 {
            stream.keep = { number, data in cache.store(key: key, version: version, number: number, data: data) }
            stream.writerEnded = false
            let writer = Thread { stream.writeBlocks() }
            writer.name = "bucketfs-stream-cache"
            writer.start()
            stream.blockSize = cache.blockSize
        }
        let thread = Thread {
            do throws(ObjectStoreError) {
                try store.getStreaming(key, range: start..<size, version: version) { stream.receive($0) }
                stream.end(nil)
            } catch {
                stream.end(error)
            }
        }
        thread.name = "bucketfs-stream"
        thread.start()
        return stream
    }

    private init(size: UInt64, from start: UInt64, budget: PrefetchBudget) {
        self.size = size
        self.budget = budget
        received = start
        readTo = start
    }

    /// `count` bytes at `offset`, waiting for them to arrive; nil when the stream cannot serve that range.
    func read(offset: UInt64, count: Int) throws(ObjectStoreError) -> Data? {
        let end = min(size, offset + UInt64(count))
        condition.lock()
        defer { condition.unlock() }
        let kept = blocks.first?.start ?? received
        // The transfer pauses `ahead` bytes past the furthest read: a read beyond that would wait forever.
        guard !closed, offset >= kept, end <= readTo + Self.ahead else { return nil }
        while received < end && !finished && failure == nil && !closed {
            wanted = min(wanted, end)
            condition.wait()
        }
        if closed { return nil }  // closed meanwhile (revalidated, released): the caller reads by range
        if let failure { throw failure }
        guard offset < received else { return offset >= size ? Data() : nil }  // ended short: ranged reads
        // A read inside one block is a slice of it, not a copy (the FUSE reply copies it anyway).
        var pieces: [Data] = []
        for block in blocks where block.start < end && block.start + UInt64(block.count) > offset {
            let from = Int(max(offset, block.start) - block.start)
            let to = Int(min(end, block.start + UInt64(block.count)) - block.start)
            pieces.append(block.buffer.data(from..<to))
        }
        // (A view is never appended to: its bytes are the buffer's, which other views share.)
        let data = ReceiveBufferPool.shared.joined(pieces)
        readTo = max(readTo, offset + UInt64(data.count))
        // Drop what lies well behind the reader, and let the transfer go on.
        while let first = blocks.first, first.start + UInt64(first.count) + Self.behind < readTo {
            blocks.removeFirst()
        }
        if transferWaits && received < readTo + Self.ahead { condition.broadcast() }
        return data
    }

    /// The transfer's sink: waits while far enough ahead; false stops the transfer (closed).
    private func receive(_ piece: UnsafeRawBufferPointer) -> Bool {
        var whole: [Block] = []
        condition.lock()
        defer {
            condition.unlock()
            if keep != nil && !whole.isEmpty { queueWrites(whole) }  // disk I/O on the writer thread
        }
        while received >= readTo + Self.ahead && !closed {
            transferWaits = true
            condition.wait()
            transferWaits = false
        }
        if closed { return false }
        // Blocks of `blockSize` (the cache's, aligned when the stream started at 0): a block that is full is handed
        // to the cache. Only the count is looked at: holding a copy of the block would make the append copy it.
        var rest = piece
        while !rest.isEmpty {
            if let last = blocks.last, last.count < blockSize {
                let take = min(rest.count, blockSize - last.count)
                last.buffer.append(UnsafeRawBufferPointer(rebasing: rest[..<take]))
                rest = UnsafeRawBufferPointer(rebasing: rest[take...])
            } else {
                let take = min(rest.count, blockSize)
                let buffer = ReceiveBufferPool.shared.take(capacity: blockSize)
                buffer.append(UnsafeRawBufferPointer(rebasing: rest[..<take]))
                rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                blocks.append(Block(start: received + UInt64(piece.count - rest.count - take), buffer: buffer))
            }
            if let last = blocks.last, last.count == blockSize || last.start + UInt64(last.count) == size {
                whole.append(last)
            }
        }
        received += UInt64(piece.count)
        if received >= wanted {
            wanted = .max  // the readers still short of their range set it again
            condition.broadcast()
        }
        return true
    }

    /// Hands whole blocks to the cache writer, waiting while it has no room.
    private func queueWrites(_ blocks: [Block]) {
        writes.lock()
        for block in blocks {
            while pendingWrites.count >= Self.maxPendingWrites && !writerDone {
                queueWaits = true
                writes.wait()
                queueWaits = false
            }
            pendingWrites.append((Int(block.start) / blockSize, block.buffer.filled))
            if writerWaits { writes.broadcast() }
        }
        writes.unlock()
    }

    /// The cache writer: stores queued blocks until the transfer is over and the queue empty.
    private func writeBlocks() {
        while true {
            writes.lock()
            while pendingWrites.isEmpty && !writerDone {
                writerWaits = true
                writes.wait()
                writerWaits = false
            }
            if pendingWrites.isEmpty {
                writerEnded = true
                writes.broadcast()
                writes.unlock()
                return
            }
            let next = pendingWrites.removeFirst()
            if queueWaits { writes.broadcast() }
            writes.unlock()
            keep?(next.number, next.data)
        }
    }

    /// Waits until the transfer is over and the cache writer has stored every block handed to it (at once without a
    /// cache). For tests, which look at the cache's files.
    func waitForCacheWrites() {
        writes.lock()
        while !writerEnded { writes.wait() }
        writes.unlock()
    }

    /// No more blocks will come: the writer finishes the queue and stops.
    private func stopWriter() {
        writes.lock()
        writerDone = true
        writes.broadcast()
        writes.unlock()
    }

    /// The transfer is over (all of it, or failed). Reads of what arrived go on until `close`.
    private func end(_ error: ObjectStoreError?) {
        stopWriter()
        condition.lock()
        finished = true
        if !closed { failure = error }
        let release = closed
        condition.broadcast()
        condition.unlock()
        if release { budget.release(Self.footprint) }
    }

    /// Stops the transfer and frees the buffer (the handle is released, or the reader went elsewhere).
    func close() {
        condition.lock()
        closed = true
        blocks = []
        let release = finished
        condition.broadcast()
        condition.unlock()
        if release { budget.release(Self.footprint) }
    }
}
