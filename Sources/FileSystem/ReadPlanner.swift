import Foundation
import Logging
import Synchronization

/// How one mount reads a large file front to back, chosen from what it measured on its store: one streaming GET
/// (best where a ranged GET costs more than its bytes — moto copies the whole object for each one), or parallel
/// ranged GETs (best where one connection is slower than the store — SeaweedFS, AWS S3 at ~100 MB/s a connection).
///
/// What is compared is the time the reader spends in `read` per byte delivered (waiting for data, and copying it;
/// reads waiting at the same time count once — the wall time during which at least one read waited):
/// the kernel's own cost per read is the same either way, and a reader that never waits is served as well as it
/// can be by both. Each method keeps a running estimate (exponentially weighted, half from the newest sample), fed
/// by every planned sequential read of at least `minimumSample` bytes through it that the block cache did not
/// serve.
///
/// Until the stream is measured, a large read streams the whole file: one request, the least work for the store
/// and the daemon (SeaweedFS on this bed: half the daemon's CPU of ranges, and faster), measured over a whole file,
/// its start-up included as every later stream pays it. (A probe that streamed only its first stretch measured
/// mostly SeaweedFS's slow start of a large GET, and chose ranges that were slower over the file.) After that,
/// while ranges are unmeasured and on every `probeEvery`-th large read, a read of at least `probeFileSize` bytes
/// probes ranges: its first `probeSegment` bytes by ranges, the rest by the faster. A tie (within `tolerance`) goes
/// to the stream: one request instead of many.
///
/// The probe's ranged stretch starts with one GET of `probePart` from its start, alone (the kernel's first reads of
/// the stretch wait for it): if that GET moved under `probeRatio` of the stream's measured rate, ranges lost this
/// probe — a store that pays a fixed cost per GET as large as the stream's (moto copies the whole object for each)
/// — and the stream takes over at once. Otherwise the stretch reads ahead in parallel, and still stops as soon as
/// the reader has spent in it what the stream took for all of it (`probeLimit`). A probe ended early records ranges
/// as costing what it saw, and at least as much as the stream (`recordLostProbe`), and the stream is used until a
/// later probe finds ranges faster.
///
/// Ranged reads are sized from measurements too: a part is what one GET moves in `partDuration` at the measured
/// rate of one ranged GET (so its fixed cost, the time to the first byte, stays small beside its transfer), within
/// `minimumPart...maximumPart`; the parts in flight are the read-ahead window (up to 64 MiB, within the mount's
/// `PrefetchBudget`) over the part size, so a store with slow connections gets more of them at once.
final class ReadPlanner: Sendable {
    enum Method: Sendable, Equatable, CustomStringConvertible {
        case stream, ranges
        var description: String { self == .stream ? "stream" : "ranges" }
    }

    /// One stretch of a planned read: `method` (nil: the faster, decided when the reader gets there) for
    /// `start..<end`.
    struct Segment: Equatable {
        var method: Method?
        var start: UInt64
        var end: UInt64
    }

    static let threshold: UInt64 = 8 << 20
    static let probeSegment: UInt64 = 16 << 20
    static let probeFileSize: UInt64 = 48 << 20
    static let probeEvery = 8
    static let minimumSample = 8 << 20
    static let tolerance = 0.15
    static let partDuration = 0.08
    static let minimumPart = 4 << 20
    static let maximumPart = 16 << 20
    static let probePart: UInt64 = 4 << 20
    static let probeRatio = 0.5

    private struct State {
        /// Seconds in `read` per MiB delivered, by method.
        var cost: [Method: Double] = [:]
        var samples: [Method: Int] = [:]
        /// Bytes per second of one ranged GET of at least 1 MiB.
        var requestRate: Double?
        /// Bytes per second of a stream, wall clock, over a stretch of at least `minimumSample` bytes.
        var streamRate: Double?
        var plans = 0
        /// The last probe of ranges ended early, lost: the stream is used until a later probe finds ranges faster
        /// (the lost probe's cost is anchored to the stream's estimate of that moment, which moves on).
        var rangesLostProbe = false
    }
    private let state = Mutex(State())
    private let logger: Logger?

    init(logger: Logger? = nil) {
        self.logger = logger
    }

    /// The segments of a sequential read of a `size`-byte file from byte 0; `streaming` says whether the store has
    /// a single-request stream at all (else: ranges, as always).
    func plan(size: UInt64, streaming: Bool) -> [Segment] {
        guard streaming, size >= Self.threshold else { return [Segment(method: .ranges, start: 0, end: size)] }
        return state.withLock { s in
            s.plans += 1
            guard s.cost[.stream] != nil else { return [Segment(method: .stream, start: 0, end: size)] }
            if size >= Self.probeFileSize && (s.cost[.ranges] == nil || s.plans % Self.probeEvery == 0) {
                return [
                    Segment(method: .ranges, start: 0, end: Self.probeSegment),
                    Segment(method: nil, start: Self.probeSegment, end: size),
                ]
            }
            return [Segment(method: Self.best(s), start: 0, end: size)]
        }
    }

    /// The faster method as measured so far (the stream while unmeasured).
    var best: Method { state.withLock { Self.best($0) } }

    private static func best(_ s: State) -> Method {
        guard !s.rangesLostProbe, let stream = s.cost[.stream], let ranges = s.cost[.ranges] else { return .stream }
        return ranges < stream * (1 - tolerance) ? .ranges : .stream
    }

    /// A planned stretch read by `method`: `bytes` delivered in `seconds` spent in `read`.
    func record(_ method: Method, bytes: Int, seconds: Double) {
        record(method, bytes: bytes, seconds: seconds, lostProbe: false)
    }

    private func record(_ method: Method, bytes: Int, seconds: Double, lostProbe: Bool) {
        guard bytes >= Self.minimumSample else { return }
        let cost = seconds / (Double(bytes) / Double(1 << 20))
        let (before, after, costs) = state.withLock { s in
            let before = Self.best(s)
            if method == .ranges { s.rangesLostProbe = lostProbe }
            s.cost[method] = s.cost[method].map { ($0 + cost) / 2 } ?? cost
            s.samples[method, default: 0] += 1
            return (before, Self.best(s), s.cost)
        }
        let measured = costs.sorted { $0.key == .stream && $1.key == .ranges }
            .map { "\($0.key) \(String(format: "%.2f", $0.value * 1000)) ms/MiB" }.joined(separator: ", ")
        logger?.log(
            level: before == after ? .debug : .info, "large sequential reads: \(after)",
            metadata: ["measured": "\(measured)", "sample": "\(method) \(bytes >> 20) MiB"])
    }

    /// Seconds a reader may spend in a probe's ranged stretch of `bytes` before ranges can no longer win it: what
    /// the stream measured for as many bytes, less the tolerance (nil: the stream is unmeasured).
    func probeLimit(bytes: UInt64) -> Double? {
        state.withLock { s in
            s.cost[.stream].map { $0 * (1 - Self.tolerance) * Double(bytes) / Double(1 << 20) }
        }
    }

    /// A probe's ranged stretch of `bytes` ended early, lost, after the reader spent `seconds` in it: ranges cost at
    /// least that for the stretch, and no less than the stream; the stream is used until a later probe finds
    /// ranges faster, which turns the choice at once.
    func recordLostProbe(bytes: UInt64, seconds: Double) {
        let mib = Double(bytes) / Double(1 << 20)
        let stream = state.withLock { $0.cost[.stream] } ?? 0
        record(.ranges, bytes: Int(bytes), seconds: max(seconds, stream * mib), lostProbe: true)
    }

    /// A stream's stretch moved `bytes` in `seconds` of wall time.
    func recordStreamRate(bytes: Int, seconds: Double) {
        guard bytes >= Self.minimumSample, seconds > 0 else { return }
        let rate = Double(bytes) / seconds
        state.withLock { s in s.streamRate = s.streamRate.map { ($0 + rate) / 2 } ?? rate }
    }

    /// Bytes per second of a stream, wall clock (nil: not measured): what a probe's first ranged GET is judged by.
    var streamRate: Double? { state.withLock { $0.streamRate } }

    /// One ranged GET of `bytes` that took `seconds`.
    func recordRequest(bytes: Int, seconds: Double) {
        guard bytes >= 1 << 20, seconds > 0 else { return }
        let rate = Double(bytes) / seconds
        state.withLock { s in s.requestRate = s.requestRate.map { ($0 + rate) / 2 } ?? rate }
    }

    /// Range of one read-ahead GET once the window is wide, from the measured per-request rate (nil: not measured).
    var partSize: Int? {
        state.withLock { s in
            s.requestRate.map { rate in
                let part = (Int(rate * Self.partDuration) >> 20) << 20
                return min(Self.maximumPart, max(Self.minimumPart, part))
            }
        }
    }

    /// Seconds per MiB by method and sample counts, for logs and tests.
    var estimates: (cost: [Method: Double], samples: [Method: Int]) {
        state.withLock { ($0.cost, $0.samples) }
    }
}
