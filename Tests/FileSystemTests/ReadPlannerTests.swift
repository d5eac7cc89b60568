import Foundation
import ObjectStore
import TestSupport
import XCTest

@testable import FileSystem

/// The mount's choice between one streaming GET and parallel ranged GETs (`ReadPlanner`), on its own and through
/// `ReadPrefetcher` on stores shaped like moto (a ranged GET costs a copy of the whole object) and like SeaweedFS
/// (one connection is slower than several).
final class ReadPlannerTests: XCTestCase {
    let workers = WorkerPool(threads: 16, name: "test-planner")

    override func tearDown() {
        workers.stop()
    }

    /// Every 4 KiB unlike the others (its index, then a pattern), quick to make in a debug build.
    static func content(_ count: Int) -> Data {
        var pattern = Data(count: 4096)
        for index in 0..<4096 { pattern[index] = UInt8(truncatingIfNeeded: index &* 31 &+ 7) }
        var data = Data(capacity: count + 4096)
        var page: UInt64 = 0
        while data.count < count {
            var stamped = pattern
            withUnsafeBytes(of: page) { stamped.replaceSubrange(0..<8, with: $0) }
            data.append(stamped)
            page += 1
        }
        return data.prefix(count)
    }

    func testTheFirstLargeReadStreamsThenRangesAreProbedAndTheFasterIsUsed() {
        let planner = ReadPlanner()
        let size: UInt64 = 256 << 20
        XCTAssertEqual(
            planner.plan(size: size, streaming: true), [.init(method: .stream, start: 0, end: size)],
            "unmeasured: the whole file by one stream")
        XCTAssertEqual(planner.best, .stream, "unmeasured: the stream, one request")
        planner.record(.stream, bytes: 256 << 20, seconds: 2.56)
        let probe = planner.plan(size: size, streaming: true)
        XCTAssertEqual(probe.map(\.method), [.ranges, nil], "then a probe of ranges, the rest by the faster")
        XCTAssertEqual(probe.first?.end, ReadPlanner.probeSegment)
        XCTAssertEqual(probe.last?.end, size)
        planner.record(.ranges, bytes: 16 << 20, seconds: 0.04)
        XCTAssertEqual(planner.best, .ranges)
        XCTAssertEqual(planner.plan(size: size, streaming: true), [.init(method: .ranges, start: 0, end: size)])
        // The newest samples weigh half: ranges slowing down hands the choice back to the stream.
        for _ in 0..<3 { planner.record(.ranges, bytes: 16 << 20, seconds: 0.5) }
        XCTAssertEqual(planner.best, .stream)
        // Every 8th large read probes again, so that a change is noticed.
        let plans = (0..<16).map { _ in planner.plan(size: size, streaming: true) }
        XCTAssertEqual(plans.filter { $0.count == 2 }.count, 2)
    }

    func testTiesSmallSamplesAndStoresWithoutAStream() {
        let planner = ReadPlanner()
        planner.record(.stream, bytes: 32 << 20, seconds: 0.10)
        planner.record(.ranges, bytes: 32 << 20, seconds: 0.095)
        XCTAssertEqual(planner.best, .stream, "within the tolerance: fewer requests win")
        planner.record(.ranges, bytes: 1 << 20, seconds: 0.0001)
        XCTAssertEqual(planner.estimates.samples[.ranges], 1, "a sample under 8 MiB says little: ignored")
        XCTAssertEqual(planner.plan(size: 1 << 30, streaming: false), [.init(method: .ranges, start: 0, end: 1 << 30)])
        XCTAssertEqual(planner.plan(size: 4 << 20, streaming: true), [.init(method: .ranges, start: 0, end: 4 << 20)])
        XCTAssertEqual(
            planner.plan(size: 20 << 20, streaming: true).map(\.method), [.stream],
            "too small to probe: the best so far")
        let fresh = ReadPlanner()
        fresh.recordStreamRate(bytes: 1 << 20, seconds: 0.01)
        XCTAssertNil(fresh.streamRate, "a stream's rate from under 8 MiB says little: ignored")
        fresh.recordStreamRate(bytes: 64 << 20, seconds: 0.5)
        XCTAssertEqual(fresh.streamRate, Double(128 << 20))
    }

    func testPartSizeFollowsTheRateOfOneRequest() {
        let planner = ReadPlanner()
        XCTAssertNil(planner.partSize)
        planner.recordRequest(bytes: 8 << 20, seconds: 8.0 / 100)  // 100 MiB/s: 8 MiB in 80 ms
        XCTAssertEqual(planner.partSize, 8 << 20)
        let slow = ReadPlanner()
        slow.recordRequest(bytes: 4 << 20, seconds: 1)
        XCTAssertEqual(slow.partSize, ReadPlanner.minimumPart)
        let fast = ReadPlanner()
        fast.recordRequest(bytes: 16 << 20, seconds: 0.001)
        XCTAssertEqual(fast.partSize, ReadPlanner.maximumPart)
    }

    /// A store whose connections each move `mibPerSecond`, many at once (SeaweedFS, AWS S3); with `rangeCost`, a
    /// ranged GET first pays that many seconds (moto copying the whole object).
    final class PacedStore: ForwardingObjectStore, @unchecked Sendable {
        let base: any ObjectStore = MemoryObjectStore()
        let mibPerSecond: Double
        let rangeCost: Double
        let streams = Counter()
        let gets = Counter()
        /// Bytes sent by ranged GETs (not streams).
        let rangedBytes = Counter()
        init(mibPerSecond: Double, rangeCost: Double = 0) {
            self.mibPerSecond = mibPerSecond
            self.rangeCost = rangeCost
        }
        var description: String { "paced" }
        private func pace(_ bytes: Int) { usleep(useconds_t(Double(bytes) / Double(1 << 20) / mibPerSecond * 1e6)) }
        func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
            gets.add()
            usleep(useconds_t(rangeCost * 1e6))
            let got = try base.get(key, range: range)
            pace(got.body.count)
            rangedBytes.add(got.body.count)
            return got
        }
        func getStreaming(
            _ key: String, range: Range<UInt64>, version: String?,
            consumer: @escaping (UnsafeRawBufferPointer) -> Bool
        ) throws(ObjectStoreError) {
            streams.add()
            let body = try base.get(key, range: range).body
            var offset = 0
            while offset < body.count {
                let piece = min(body.count - offset, 256 << 10)
                pace(piece)
                let going = body.withUnsafeBytes { all in
                    consumer(UnsafeRawBufferPointer(rebasing: all[offset..<offset + piece]))
                }
                guard going else { return }
                offset += piece
            }
        }
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        func add(_ amount: Int = 1) { lock.withLock { count += amount } }
        var value: Int { lock.withLock { count } }
    }

    /// Reads `key` front to back in 512 KiB reads, four at a time a little out of order (as the kernel's
    /// asynchronous read-ahead sends them), through one handle.
    func readAll(_ store: any ObjectStore, key: String, size: Int, budget: PrefetchBudget) throws -> Data {
        let prefetcher = ReadPrefetcher(
            store: store, key: key, size: UInt64(size), settings: ReadPrefetcher.Settings(),
            budget: budget, workers: workers, version: try store.head(key).version,
            streaming: true)
        defer { prefetcher.close() }
        let piece = 512 << 10
        var result = Data(count: size)
        var offset = 0
        while offset < size {
            let batch = (0..<4).map { offset + $0 * piece }.filter { $0 < size }
            let got = ThreadSafeBox<[Int: Data]>([:])
            let errors = ThreadSafeBox<[Error]>([])
            DispatchQueue.concurrentPerform(iterations: batch.count) { index in
                let at = batch[batch.count - 1 - index]  // the later ones first
                do {
                    let data = try prefetcher.read(offset: UInt64(at), count: piece)
                    got.update { $0[at] = data }
                } catch {
                    errors.update { $0.append(error) }
                }
            }
            if let error = errors.value.first { throw error }
            for at in batch {
                let data = try XCTUnwrap(got.value[at])
                XCTAssertEqual(data.count, min(piece, size - at), "at \(at)")
                result.replaceSubrange(at..<at + data.count, with: data)
            }
            offset += batch.count * piece
        }
        return result
    }

    func testSlowConnectionsChooseParallelRanges() throws {
        let store = PacedStore(mibPerSecond: 200)
        let body = Self.content(64 << 20)
        try store.base.put("f", data: body)
        let budget = PrefetchBudget(bytes: 128 << 20)
        XCTAssertEqual(try readAll(store, key: "f", size: body.count, budget: budget), body)
        XCTAssertEqual(store.streams.value, 1, "the first large read streamed")
        XCTAssertEqual(store.rangedBytes.value, 0, "all of it")
        XCTAssertEqual(try readAll(store, key: "f", size: body.count, budget: budget), body)
        XCTAssertEqual(budget.planner.best, .ranges, "the second probed ranges: \(budget.planner.estimates)")
        XCTAssertEqual(store.streams.value, 1, "and went on with them")
        XCTAssertEqual(try readAll(store, key: "f", size: body.count, budget: budget), body)
        XCTAssertEqual(store.streams.value, 1, "then ranges only")
    }

    func testCostlyRangesChooseTheStream() throws {
        // moto on a busy machine: a ranged GET of a 256 MiB object costs ~0.4 s before its first byte.
        let store = PacedStore(mibPerSecond: 400, rangeCost: 0.4)
        let body = Self.content(64 << 20)
        try store.base.put("f", data: body)
        let budget = PrefetchBudget(bytes: 128 << 20)
        XCTAssertEqual(try readAll(store, key: "f", size: body.count, budget: budget), body)
        XCTAssertEqual(store.streams.value, 1, "the first large read streamed")
        XCTAssertEqual(try readAll(store, key: "f", size: body.count, budget: budget), body)
        XCTAssertEqual(budget.planner.best, .stream, "\(budget.planner.estimates)")
        // The probe's first ranged GET (4 MiB) ran far slower than the stream: the probe ended there, instead of
        // fetching its 16 MiB by ranges (on moto each GET costs a copy of the whole object).
        XCTAssertLessThan(store.rangedBytes.value, 8 << 20, "\(store.gets.value) GETs")
        XCTAssertEqual(store.streams.value, 2, "then one stream from where the probe's ranges stopped")
        let gets = store.gets.value
        XCTAssertEqual(try readAll(store, key: "f", size: body.count, budget: budget), body)
        XCTAssertLessThanOrEqual(store.gets.value - gets, 2, "then one stream (and the out-of-order reads before it)")
    }

    /// Whatever the plan, every byte is right: the switches between stream and ranges, a seek in the middle of a
    /// stretch, the block cache serving a second read.
    func testEveryByteIsRightAcrossSwitchesAndSeeks() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("plan-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = PacedStore(mibPerSecond: 2000)
        let size = (50 << 20) + 4321
        let body = Self.content(size)
        try store.base.put("f", data: body)
        let budget = PrefetchBudget(bytes: 128 << 20, cache: BlockCache(directory: directory, limit: 1 << 30))
        XCTAssertEqual(try readAll(store, key: "f", size: size, budget: budget), body)
        XCTAssertEqual(try readAll(store, key: "f", size: size, budget: budget), body)
        let prefetcher = ReadPrefetcher(
            store: store, key: "g", size: UInt64(size), settings: ReadPrefetcher.Settings(),
            budget: PrefetchBudget(bytes: 128 << 20), workers: workers, streaming: true)
        try store.base.put("g", data: body)
        defer { prefetcher.close() }
        for offset in [0, 128 << 10, 20 << 20, (20 << 20) + 4096, 3 << 20, size - 10] {
            XCTAssertEqual(
                try prefetcher.read(offset: UInt64(offset), count: 65536),
                body.subdata(in: offset..<min(size, offset + 65536)), "at \(offset)")
        }
    }
}

/// A value behind a lock, for collecting results from `concurrentPerform`.
final class ThreadSafeBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func update(_ change: (inout Value) -> Void) { lock.withLock { change(&stored) } }
}
