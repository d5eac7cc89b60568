import Foundation
import ObjectStore
import Synchronization

/// Bytes that all read-ahead buffers of a mount may hold together.
final class PrefetchBudget: Sendable {
    private let available: Mutex<Int>
    /// The mount's on-disk block cache, which read-ahead and streams read through (nil: none).
    let cache: BlockCache?

    init(bytes: Int, cache: BlockCache? = nil) {
        available = Mutex(bytes)
        self.cache = cache
    }

    func reserve(_ bytes: Int) -> Bool {
        available.withLock { left in
            guard left >= bytes else { return false }
            left -= bytes
            return true
        }
    }

    func release(_ bytes: Int) {
        available.withLock { $0 += bytes }
    }
}

/// Read-ahead for one open file that is not being written: a sequential reader gets a window that doubles
/// from `initialWindow` to `maxWindow`, fetched as parallel ranged GETs of up to `partSize`; a seek outside
/// the buffered range starts over with the initial window. Chunks ahead of the reader count against the
/// mount's `PrefetchBudget`; when it is spent, reads are fetched on demand only.
final class ReadPrefetcher: @unchecked Sendable {
    struct Settings {
        var initialWindow = 1 << 20
        var maxWindow = 64 << 20
        var partSize = 8 << 20
    }

    private final class Chunk {
        let start: UInt64
        let end: UInt64
        /// Counted against the budget (read-ahead), as opposed to fetched because a read asked for it.
        let budgeted: Bool
        var data: Data?
        var error: ObjectStoreError?
        var done: Bool { data != nil || error != nil }
        init(start: UInt64, end: UInt64, budgeted: Bool) {
            self.start = start
            self.end = end
            self.budgeted = budgeted
        }
    }

    /// How far out of order the kernel's concurrent reads of one sequential reader may arrive.
    private static let slack: UInt64 = 4 << 20

    private let store: any ObjectStore
    private let key: String
    private let size: UInt64
    private let settings: Settings
    private let budget: PrefetchBudget
    private let workers: WorkerPool
    /// The version blocks are cached under: the one given at open, else the first one a GET returned.
    private let version: Mutex<String?>

    // Everything below is guarded by `condition`; workers broadcast on it when a chunk completes.
    private let condition = NSCondition()
    private var chunks: [Chunk] = []
    private var window: Int
    private var closed = false

    init(store: any ObjectStore, key: String, size: UInt64, settings: Settings, budget: PrefetchBudget,
         workers: WorkerPool, version: String? = nil) {
        self.version = Mutex(version)
        self.store = store
        self.key = key
        self.size = size
        self.settings = settings
        self.budget = budget
        self.workers = workers
        self.window = settings.initialWindow
    }

    func read(offset: UInt64, count: Int) throws(ObjectStoreError) -> Data {
        let end = min(size, offset + UInt64(count))
        guard offset < end else { return Data() }
        condition.lock()
        defer { condition.unlock() }

        // The kernel sends several reads of a sequential reader at once (async read-ahead), a little out of order:
        // a read near the buffered region is still sequential. Only a read far from it is a seek, which drops what
        // was fetched for another position and starts small again.
        let near = chunks.first.map { first in
            offset + Self.slack >= first.start && offset <= (chunks.map(\.end).max() ?? 0) + UInt64(window)
        } ?? false
        if !near {
            dropChunks { _ in true }
            window = settings.initialWindow
        }
        // The chunks this read is made of, held by reference: another thread's seek may drop them from `chunks`
        // meanwhile (they still complete, and this read still uses them).
        var cursor = offset
        var parts: [Chunk] = []
        var demand: [Chunk] = []
        while cursor < end {
            if let chunk = chunks.first(where: { $0.start <= cursor && cursor < $0.end }) {
                parts.append(chunk)
                cursor = chunk.end
            } else {
                let next = chunks.first(where: { $0.start > cursor })?.start ?? UInt64.max
                let chunkEnd = min(size, next, cursor + UInt64(max(count, settings.initialWindow)))
                let chunk = Chunk(start: cursor, end: chunkEnd, budgeted: false)
                insert(chunk)
                parts.append(chunk)
                demand.append(chunk)
                cursor = chunkEnd
            }
        }
        FileSystemMetrics.shared.readAhead(hit: demand.isEmpty)
        readAhead(from: end)
        // What this read needs now is fetched on the caller's own (libfuse) thread, so that a busy worker pool
        // (read-ahead of other files, part uploads) never delays it.
        for chunk in demand {
            condition.unlock()
            let outcome = fetch(chunk.start..<chunk.end)
            condition.lock()
            complete(chunk, with: outcome)
        }

        var result = Data(capacity: Int(end - offset))
        cursor = offset
        for chunk in parts {
            while !chunk.done { condition.wait() }
            if let error = chunk.error {
                dropChunks { $0 === chunk }
                throw error
            }
            let data = chunk.data!
            let from = Int(cursor - chunk.start)
            let to = min(data.count, Int(min(end, chunk.end) - chunk.start))
            if from < to { result.append(data[data.startIndex + from ..< data.startIndex + to]) }
            if to < Int(min(end, chunk.end) - chunk.start) { break }    // the object is shorter than we thought
            cursor = chunk.end
        }
        // Sequential progress: forget what is well behind the reader (concurrent reads may still need what is just
        // behind), widen the window.
        dropChunks { $0.end + Self.slack <= offset }
        window = min(settings.maxWindow, window * 2)
        return result
    }

    /// Stops read-ahead; chunks still in flight are dropped when they land.
    func close() {
        condition.lock()
        closed = true
        dropChunks { _ in true }
        condition.unlock()
    }

    /// Range of one read-ahead GET: `partSize` while the window is small, half the window once it is large. A long
    /// sequential read then costs few requests — what matters where a request has a cost of its own beyond its
    /// bytes (per-request overhead on S3, a full-object copy per ranged GET on moto) — with two still in flight.
    private var partSize: Int { max(min(settings.partSize, window), window / 2) }

    /// Starts fetching up to `from + window` in parts, as far as the budget allows. Called with the lock held.
    private func readAhead(from: UInt64) {
        guard !closed else { return }
        var cursor = max(from, chunks.map(\.end).max() ?? from)
        let limit = min(size, from + UInt64(window))
        while cursor < limit {
            // Parts as large as the window allows (the window may be overshot by one part): clipping the last part
            // to the window would add a sliver of a GET per kernel read once the window stops growing.
            let length = Int(min(UInt64(partSize), size - cursor))
            guard budget.reserve(length) else { return }
            start(Chunk(start: cursor, end: cursor + UInt64(length), budgeted: true))
            cursor += UInt64(length)
        }
    }

    /// Adds a read-ahead chunk and fetches it on a worker thread. Called with the lock held.
    private func start(_ chunk: Chunk) {
        insert(chunk)
        let range = chunk.start..<chunk.end
        nonisolated(unsafe) let target = chunk
        workers.submit { [self] in
            let outcome = fetch(range)
            condition.lock()
            complete(target, with: outcome)
            condition.unlock()
        }
    }

    private func insert(_ chunk: Chunk) {
        chunks.append(chunk)
        chunks.sort { $0.start < $1.start }
    }

    /// One ranged GET, or the block cache; called without the lock. With a cache the GET is widened to whole
    /// blocks, which are kept (a 4 KiB random read fetches its 1 MiB block: the next reads near it are local).
    private func fetch(_ range: Range<UInt64>) -> Result<Data, ObjectStoreError> {
        do throws(ObjectStoreError) {
            guard let cache = budget.cache, !range.isEmpty else { return .success(try store.get(key, range: range).body) }
            let blockSize = UInt64(cache.blockSize)
            let first = Int(range.lowerBound / blockSize)
            let last = Int((range.upperBound - 1) / blockSize)
            let base = UInt64(first) * blockSize
            if let known = version.withLock({ $0 }) {
                var cached = Data()
                for number in first...last {
                    guard let block = cache.block(key: key, version: known, number: number) else { break }
                    cached.append(block)
                    if UInt64(block.count) < blockSize { break }    // the object's last block
                }
                if base + UInt64(cached.count) >= min(range.upperBound, size) {
                    return .success(Self.slice(cached, from: range.lowerBound - base, count: range.count))
                }
            }
            let got = try store.get(key, range: base..<min(size, UInt64(last + 1) * blockSize))
            let cacheable = version.withLock { known -> Bool in
                if known == nil { known = got.info.version }
                return known == got.info.version
            }
            if cacheable {
                var offset = 0
                for number in first...last where offset < got.body.count {
                    let end = min(got.body.count, offset + cache.blockSize)
                    // Whole blocks only, and the object's last one.
                    if end - offset == cache.blockSize || base + UInt64(end) == got.info.size {
                        cache.store(key: key, version: got.info.version, number: number,
                                    data: got.body.subdata(in: offset..<end))
                    }
                    offset = end
                }
            }
            return .success(Self.slice(got.body, from: range.lowerBound - base, count: range.count))
        } catch {
            return .failure(error)
        }
    }

    private static func slice(_ data: Data, from: UInt64, count: Int) -> Data {
        let start = min(data.count, Int(from))
        return data.subdata(in: start..<min(data.count, start + count))
    }

    /// Called with the lock held.
    private func complete(_ chunk: Chunk, with outcome: Result<Data, ObjectStoreError>) {
        switch outcome {
        case .success(let data): chunk.data = data
        case .failure(let error): chunk.error = error
        }
        // Dropped while in flight: its budget comes back now.
        if chunk.budgeted && !chunks.contains(where: { $0 === chunk }) { budget.release(chunk.end - chunk.start) }
        condition.broadcast()
    }

    /// Removes matching chunks, returning the budget of those that completed (in-flight ones return it on landing).
    private func dropChunks(where predicate: (Chunk) -> Bool) {
        chunks.removeAll { chunk in
            guard predicate(chunk) else { return false }
            if chunk.budgeted && chunk.done { budget.release(Int(chunk.end - chunk.start)) }
            return true
        }
    }
}

private extension PrefetchBudget {
    func release(_ bytes: UInt64) { release(Int(bytes)) }
}
