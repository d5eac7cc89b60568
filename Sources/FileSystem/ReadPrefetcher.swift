import Foundation
import Logging
import ObjectStore
import Synchronization

/// Bytes that all read-ahead buffers of a mount may hold together.
final class PrefetchBudget: Sendable {
    private let available: Mutex<Int>
    /// The mount's on-disk block cache, which read-ahead and streams read through (nil: none).
    let cache: BlockCache?
    /// The mount's choice between one streaming GET and parallel ranges, from what it measured.
    let planner: ReadPlanner

    init(bytes: Int, cache: BlockCache? = nil, logger: Logger? = nil) {
        available = Mutex(bytes)
        self.cache = cache
        planner = ReadPlanner(logger: logger)
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

/// Reads of one open file that is not being written. A file read from byte 0 follows the plan of the mount's
/// `ReadPlanner`: stretches served by one streaming GET (`SequentialStream`) or by ranged read-ahead, each measured
/// for the planner. Ranged read-ahead: a sequential reader gets a window that doubles from `initialWindow` (a planned
/// stretch: `plannedWindow`) to `maxWindow`, fetched as parallel ranged GETs of the planner's part size; a seek
/// outside the buffered range starts over with the initial window (and leaves the plan). Chunks ahead of the reader
/// and streams count against the mount's `PrefetchBudget`; when it is spent, reads are fetched on demand only.
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
        /// Served by the block cache, not the store.
        var cached = false
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
    /// Where the furthest read since the last seek ended (nil: no read yet), and how many reads near it in a row
    /// (the seek's own included): read-ahead waits for the third, because a random reader's next read lands near
    /// its last one now and then (1 in 30 over a 256 MiB file), but two in a row hardly ever.
    private var frontier: UInt64?
    private var streak = 0
    private static let readAheadStreak = 3
    private var closed = false
    // The plan of a read from byte 0 (`ReadPlanner`): the stretch being read, those after it, the stream serving it.
    private var planned = false
    private var segment: ReadPlanner.Segment?
    private var nextSegments: [ReadPlanner.Segment] = []
    private var stream: SequentialStream?
    /// What the reader got in the current stretch and the seconds it spent in `read` for it; whether the block cache
    /// served any of it (then it measures the disk, not the store: not recorded).
    private var segmentBytes = 0
    private var segmentSeconds = 0.0
    private var segmentCached = false
    /// The latest end of a read accounted so far (uptime nanoseconds).
    private var busyUntil: UInt64 = 0
    /// In a probe's ranged stretch: the seconds in `read` past which ranges have lost it (`ReadPlanner.probeLimit`).
    private var probeLimit: Double?
    /// In a probe's ranged stretch: its first GET (`ReadPlanner.probePart`) is not judged yet; no read-ahead before.
    private var probeFirst = false
    private var segmentStarted: UInt64 = 0
    private let streaming: Bool
    /// Where a planned ranged stretch starts its window: wide enough to be parallel at once, small enough that a
    /// reader that only wanted the first bytes costs little more than a stream would.
    static let plannedWindow = 8 << 20

    /// `streaming`: the store has a real single-request stream (`ObjectStore.prefersStreamingReads`).
    init(
        store: any ObjectStore, key: String, size: UInt64, settings: Settings, budget: PrefetchBudget,
        workers: WorkerPool, version: String? = nil, streaming: Bool = false
    ) {
        self.version = Mutex(version)
        self.streaming = streaming
        self.store = store
        self.key = key
        self.size = size
        self.settings = settings
        self.budget = budget
        self.workers = workers
        self.window = settings.initialWindow
    }

    func read(offset: UInt64, count: Int) throws(ObjectStoreError) -> Data {
        try readNotingSeek(offset: offset, count: count).data
    }

    /// `read`, and whether it was a seek: a ranged read far from where the reader was (a random reader's).
    func readNotingSeek(offset: UInt64, count: Int) throws(ObjectStoreError) -> (data: Data, seek: Bool) {
        guard offset < size, count > 0 else { return (Data(), false) }
        let started = DispatchTime.now().uptimeNanoseconds
        if let stream = streamServing(offset: offset) {
            if let data = try stream.read(offset: offset, count: count) {
                account(offset: offset, bytes: data.count, since: started, cached: false, streamed: true)
                return (data, false)
            }
            // A read the stream cannot serve (far from it): off the plan, ranged reads from here. (Unless another
            // thread's read moved the plan on meanwhile, closing this stream: then the plan goes on.)
            condition.lock()
            if self.stream === stream {
                leaveSegment(record: true)
                nextSegments = []
            }
            condition.unlock()
        }
        let (data, cached, seek) = try readRanges(offset: offset, count: count)
        account(offset: offset, bytes: data.count, since: started, cached: cached)
        return (data, seek)
    }

    /// Stops read-ahead and the stream; chunks still in flight are dropped when they land.
    func close() {
        condition.lock()
        closed = true
        leaveSegment(record: true)
        nextSegments = []
        dropChunks { _ in true }
        condition.unlock()
    }

    // MARK: The plan

    /// The stream to serve a read at `offset` from, after moving the plan along: nil for a ranged read.
    private func streamServing(offset: UInt64) -> SequentialStream? {
        condition.lock()
        defer { condition.unlock() }
        // Only a handle whose first read is at (or, out of order, just after) byte 0 follows a plan.
        if !planned && !closed {
            planned = true
            if offset < Self.slack {
                nextSegments = budget.planner.plan(size: size, streaming: streaming)
                enterSegment()
            }
        }
        while let current = segment {
            // A read far outside the stretch is a seek: the plan is over (what was read so far still counts).
            if offset + Self.slack < current.start || offset > current.end + Self.slack {
                leaveSegment(record: true)
                nextSegments = []
                return nil
            }
            guard offset >= current.end, !nextSegments.isEmpty else { break }
            leaveSegment(record: true)
            enterSegment()
        }
        // Reads a little behind a stream's start (the kernel's reads arrive out of order) are ranged reads.
        guard let current = segment, offset >= current.start else { return nil }
        return stream
    }

    /// Starts the next planned stretch. Called with the lock held.
    private func enterSegment() {
        guard !nextSegments.isEmpty, !closed else { return }
        var next = nextSegments.removeFirst()
        if next.method == nil { next.method = budget.planner.best }
        segment = next
        segmentBytes = 0
        segmentSeconds = 0
        segmentCached = false
        probeLimit = nil
        probeFirst = false
        segmentStarted = DispatchTime.now().uptimeNanoseconds
        if next.method == .stream {
            // Nil when the budget is spent or the block cache holds the start: then ranged reads serve the stretch.
            stream = SequentialStream.start(
                store: store, key: key, version: version.withLock { $0 }, from: next.start,
                size: size, budget: budget)
            if stream == nil { segmentCached = true }  // not a measure of the stream
        } else {
            dropChunks { $0.end <= next.start }
            window = max(window, min(settings.maxWindow, Self.plannedWindow))
            // A ranged stretch with more after it is a probe's.
            if !nextSegments.isEmpty {
                probeLimit = budget.planner.probeLimit(bytes: next.end - next.start)
                probeFirst = probeLimit != nil
            }
        }
    }

    /// The probe's ranged stretch lost (its first GET was too slow, or the reader spent in it more than the stream
    /// would have for all of it): recorded so, and ended where the fetched chunks end (a block boundary, so that the
    /// stream after it fills the block cache). Called with the lock held.
    private func abandonProbe() {
        guard var current = segment, !nextSegments.isEmpty else { return }
        budget.planner.recordLostProbe(bytes: current.end - current.start, seconds: segmentSeconds)
        probeLimit = nil
        probeFirst = false
        segmentCached = true  // recorded
        let block = UInt64(budget.cache?.blockSize ?? BlockCache.defaultBlockSize)
        let fetched = chunks.map(\.end).max() ?? current.start
        current.end = min(current.end, max(current.start, fetched / block * block))
        segment = current
        nextSegments[0].start = current.end
    }

    /// Ends the current stretch, recording what it measured. Called with the lock held.
    private func leaveSegment(record: Bool) {
        guard let current = segment else { return }
        if record && !segmentCached, let method = current.method {
            budget.planner.record(method, bytes: segmentBytes, seconds: segmentSeconds)
            // (Until its last read ended: a reader that keeps the file open after reading it is not slower.)
            let wall = Double(max(busyUntil, segmentStarted) - segmentStarted) / 1e9
            if method == .stream { budget.planner.recordStreamRate(bytes: segmentBytes, seconds: wall) }
        }
        segment = nil
        probeLimit = nil
        probeFirst = false
        stream?.close()
        stream = nil
    }

    /// Counts a read towards the current stretch (if it lies in it). Its time is the part of its wait that no read
    /// accounted before it covered: the kernel sends several reads at once, and summing their waits counted a
    /// stream, which all of them wait on together, several times over (on SeaweedFS a stream stretch measured
    /// 85-109 ms/MiB so, 27-35 ms/MiB as wall time).
    private func account(offset: UInt64, bytes: Int, since started: UInt64, cached: Bool, streamed: Bool = false) {
        condition.lock()
        let now = DispatchTime.now().uptimeNanoseconds
        let from = max(started, busyUntil)
        let seconds = now > from ? Double(now - from) / 1e9 : 0
        busyUntil = max(busyUntil, now)
        if streamed { frontier = max(frontier ?? 0, offset + UInt64(bytes)) }
        if let current = segment, offset >= current.start, offset < current.end {
            segmentBytes += bytes
            segmentSeconds += seconds
            if cached { segmentCached = true }
            if let limit = probeLimit, !segmentCached, segmentSeconds > limit { abandonProbe() }
        }
        condition.unlock()
    }

    // MARK: Ranged reads

    /// The bytes at `offset` from read-ahead chunks (fetching what is missing), whether any came from the cache,
    /// and whether the read was a seek.
    private func readRanges(offset: UInt64, count: Int) throws(ObjectStoreError) -> (Data, Bool, Bool) {
        let end = min(size, offset + UInt64(count))
        guard offset < end else { return (Data(), false, false) }
        condition.lock()
        defer { condition.unlock() }

        // The kernel sends several reads of a sequential reader at once (async read-ahead), a little out of order:
        // a read near the buffered region is still sequential. Only a read far from it is a seek, which drops what
        // was fetched for another position and starts small again.
        // Near means within `slack` of where the reader's furthest read ended (the first read: near the start):
        // not anywhere in the chunks or the window, which a random reader's reads fall into often enough to start
        // read-ahead of the whole window.
        let near = frontier.map { offset + Self.slack >= $0 && offset <= $0 + Self.slack } ?? (offset < Self.slack)
        frontier = near ? max(frontier ?? 0, end) : end
        streak = near ? streak + 1 : 1
        // A jump inside a planned ranged stretch is a seek too: the plan is over (a file read from its start, its
        // header say, then at random: one stretch for the whole file, which would read ahead for every read).
        if !near, segment?.method == .ranges {
            leaveSegment(record: true)
            nextSegments = []
        }
        // (A planned ranged stretch is known to be sequential: it starts wider, and reads ahead at once.)
        let planned =
            segment.map { $0.method == .ranges && offset + Self.slack >= $0.start && offset < $0.end }
            ?? false
        if !near {
            dropChunks { _ in true }
            window =
                planned
                ? max(settings.initialWindow, min(settings.maxWindow, Self.plannedWindow))
                : settings.initialWindow
        }
        // The chunks this read is made of, held by reference: another thread's seek may drop them from `chunks`
        // meanwhile (they still complete, and this read still uses them).
        var cursor = offset
        var parts: [Chunk] = []
        var demand: [Chunk] = []
        // A probe's ranged stretch begins with one GET of its first `probePart`, which the first read fetches.
        var probeChunk: Chunk?
        if probeFirst, let current = segment,
            !chunks.contains(where: { $0.start <= current.start && current.start < $0.end })
        {
            if offset >= current.start && offset < current.start + ReadPlanner.probePart {
                let chunk = Chunk(
                    start: current.start, end: min(current.end, current.start + ReadPlanner.probePart),
                    budgeted: false)
                insert(chunk)
                demand.append(chunk)
                probeChunk = chunk
            } else {
                probeFirst = false  // the reader is elsewhere: nothing to judge
            }
        }
        while cursor < end {
            if let chunk = chunks.first(where: { $0.start <= cursor && cursor < $0.end }) {
                parts.append(chunk)
                cursor = chunk.end
            } else {
                let next = chunks.first(where: { $0.start > cursor })?.start ?? UInt64.max
                // A read whose blocks are all cached fetches just itself (the cache reads only those bytes); else
                // at least the initial window.
                let local = isCached(cursor..<min(size, cursor + UInt64(count)))
                let chunkEnd = min(size, next, cursor + UInt64(local ? count : max(count, settings.initialWindow)))
                let chunk = Chunk(start: cursor, end: chunkEnd, budgeted: false)
                insert(chunk)
                parts.append(chunk)
                demand.append(chunk)
                cursor = chunkEnd
            }
        }
        FileSystemMetrics.shared.readAhead(hit: demand.isEmpty)
        // (A read just behind a live stream's start fetches what it needs, nothing ahead: the stream has that.)
        // A seek (a random read) starts no read-ahead: only the third read in a row near the one before does.
        // (A probe's ranged stretch reads ahead only once its first GET is judged.)
        let sequential = planned || (near && streak >= Self.readAheadStreak)
        if sequential && !probeFirst && (segment?.method != .stream || stream == nil) { readAhead(from: end) }
        // What this read needs now is fetched on the caller's own (libfuse) thread, so that a busy worker pool
        // (read-ahead of other files, part uploads) never delays it.
        for chunk in demand {
            condition.unlock()
            let started = DispatchTime.now().uptimeNanoseconds
            let outcome = fetch(chunk.start..<chunk.end)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            condition.lock()
            complete(chunk, with: outcome)
            if chunk === probeChunk { judgeProbe(outcome, seconds: seconds) }
        }

        // (Most reads lie in one chunk: they are a slice of it, not a copy — the FUSE reply copies them anyway.)
        var pieces: [Data] = []
        var cached = false
        cursor = offset
        for chunk in parts {
            while !chunk.done { condition.wait() }
            if let error = chunk.error {
                dropChunks { $0 === chunk }
                throw error
            }
            let data = chunk.data!
            cached = cached || chunk.cached
            let from = Int(cursor - chunk.start)
            let to = min(data.count, Int(min(end, chunk.end) - chunk.start))
            if from < to {
                pieces.append(data[data.startIndex + from..<data.startIndex + to])
            }
            if to < Int(min(end, chunk.end) - chunk.start) { break }  // the object is shorter than we thought
            cursor = chunk.end
        }
        // Sequential progress: forget what is well behind the reader (concurrent reads may still need what is just
        // behind), widen the window.
        dropChunks { $0.end + Self.slack <= offset }
        window = min(settings.maxWindow, window * 2)
        return (ReceiveBufferPool.shared.joined(pieces), cached, !near)
    }

    /// The probe's first ranged GET is in: under `probeRatio` of the stream's rate, ranges lost this probe; else the
    /// stretch reads ahead from now on. Called with the lock held.
    private func judgeProbe(
        _ outcome: Result<(data: Data, cached: Bool), ObjectStoreError>, seconds: Double
    ) {
        guard probeFirst else { return }
        probeFirst = false
        guard case .success(let got) = outcome, !got.cached, let streamRate = budget.planner.streamRate, seconds > 0
        else { return }
        if Double(got.data.count) / seconds < streamRate * ReadPlanner.probeRatio { abandonProbe() }
    }

    /// Whether every block of `range` is in the block cache (index only).
    private func isCached(_ range: Range<UInt64>) -> Bool {
        guard let cache = budget.cache, let known = version.withLock({ $0 }), !range.isEmpty else { return false }
        let blockSize = UInt64(cache.blockSize)
        return (Int(range.lowerBound / blockSize)...Int((range.upperBound - 1) / blockSize)).allSatisfy {
            cache.contains(key: key, version: known, number: $0)
        }
    }

    /// Range of one read-ahead GET: the planner's part size (from the measured rate of one GET; `settings.partSize`
    /// until measured), but at most a quarter of the window (at least 1 MiB), so that several are in flight at once.
    private var partSize: Int {
        min(max(1 << 20, window / 4), budget.planner.partSize ?? settings.partSize)
    }

    /// Starts fetching up to `from + window` in parts, as far as the budget allows. Called with the lock held.
    private func readAhead(from: UInt64) {
        guard !closed else { return }
        var cursor = max(from, chunks.map(\.end).max() ?? from)
        // A planned ranged stretch followed by another (a probe) fetches nothing past its end.
        let stretchEnd = nextSegments.isEmpty ? size : (segment?.end ?? size)
        let limit = min(size, from + UInt64(window), max(stretchEnd, from))
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
    private func fetch(_ range: Range<UInt64>) -> Result<(data: Data, cached: Bool), ObjectStoreError> {
        do throws(ObjectStoreError) {
            guard let cache = budget.cache, !range.isEmpty else { return .success((try timedGet(range).body, false)) }
            let blockSize = UInt64(cache.blockSize)
            let first = Int(range.lowerBound / blockSize)
            let last = Int((range.upperBound - 1) / blockSize)
            let base = UInt64(first) * blockSize
            if let known = version.withLock({ $0 }),
                let local = Self.cached(range, of: key, version: known, in: cache, size: size)
            {
                return .success((local, true))
            }
            let got = try timedGet(base..<min(size, UInt64(last + 1) * blockSize))
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
                        cache.store(
                            key: key, version: got.info.version, number: number,
                            data: got.body[got.body.startIndex + offset..<got.body.startIndex + end])
                    }
                    offset = end
                }
            }
            return .success((Self.slice(got.body, from: range.lowerBound - base, count: range.count), false))
        } catch {
            return .failure(error)
        }
    }

    /// A ranged GET, its duration given to the planner (which sizes parts from it).
    private func timedGet(_ range: Range<UInt64>) throws(ObjectStoreError) -> ObjectData {
        let started = DispatchTime.now().uptimeNanoseconds
        let got = try store.get(key, range: range)
        budget.planner.recordRequest(
            bytes: got.body.count,
            seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
        return got
    }

    /// `range` from cached blocks, reading only its bytes; nil unless every block it covers is cached (a block not
    /// cached is found out by `read`, without a look at the index first).
    private static func cached(
        _ range: Range<UInt64>, of key: String, version: String, in cache: BlockCache,
        size: UInt64
    ) -> Data? {
        let blockSize = UInt64(cache.blockSize)
        let upper = min(range.upperBound, size)
        guard range.lowerBound < upper else { return nil }
        let first = Int(range.lowerBound / blockSize)
        let last = Int((upper - 1) / blockSize)
        if first == last {  // one block: its bytes as read, no second copy
            let base = UInt64(first) * blockSize
            let from = Int(range.lowerBound - base)
            let to = Int(upper - base)
            guard let piece = cache.read(key: key, version: version, number: first, range: from..<to) else {
                return nil
            }
            guard piece.count == to - from else {
                cache.forget(key: key, version: version, number: first)  // cut short by a crash
                return nil
            }
            return piece
        }
        // Block after block into one pooled buffer (a fresh one of several MiB is faulted in and zeroed).
        let buffer = ReceiveBufferPool.shared.take(capacity: Int(upper - range.lowerBound))
        for number in first...last {
            let base = UInt64(number) * blockSize
            let from = Int(max(range.lowerBound, base) - base)
            let to = Int(min(upper, base + blockSize) - base)
            guard let got = cache.read(key: key, version: version, number: number, range: from..<to, into: buffer)
            else { return nil }
            guard got == to - from else {
                cache.forget(key: key, version: version, number: number)  // cut short by a crash
                return nil
            }
        }
        return buffer.filled
    }

    /// A view of `count` bytes of `data` from `from` (not a copy: the chunk keeps the GET's buffer).
    private static func slice(_ data: Data, from: UInt64, count: Int) -> Data {
        let start = min(data.count, Int(from))
        return data[data.startIndex + start..<data.startIndex + min(data.count, start + count)]
    }

    /// Called with the lock held.
    private func complete(_ chunk: Chunk, with outcome: Result<(data: Data, cached: Bool), ObjectStoreError>) {
        switch outcome {
        case .success(let got):
            chunk.data = got.data
            chunk.cached = got.cached
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

extension PrefetchBudget {
    fileprivate func release(_ bytes: UInt64) { release(Int(bytes)) }
}
