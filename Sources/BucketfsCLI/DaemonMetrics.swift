import CoreMetrics
import FileSystem
import Foundation
import FuseBridge
import Glibc
import ObjectStore
import Synchronization

/// The daemon's metrics beyond locks, through swift-metrics (rendered as Prometheus text by `--metrics-addr` and
/// `.bucketfs/metrics`). Names and labels are stable; docs/METRICS.md lists them and the Grafana dashboard in
/// docs/ is built on them:
///
/// - FUSE: `bucketfs_fuse_operations_total{op}`, `bucketfs_fuse_errors_total{op,errno}`,
///   `bucketfs_fuse_operation_duration_seconds{op}` (histogram), `bucketfs_conflicts_total` (ESTALE replies);
/// - store: `bucketfs_store_operations_total{op}`, `bucketfs_store_operation_errors_total{op,code}`,
///   `bucketfs_store_operation_duration_seconds{op}`, `bucketfs_store_bytes_total{op,direction}`,
///   `bucketfs_store_retries_total`;
/// - file system: `bucketfs_read_ahead_total{result}`, `bucketfs_small_content_cache_total{result}`,
///   `bucketfs_page_cache_pushed_bytes_total`,
///   `bucketfs_uploads_pending`, `bucketfs_uploads_in_flight`, `bucketfs_uploads_queued`, `bucketfs_staging_bytes`,
///   `bucketfs_recovery_items` (read when scraped).
///
/// Handles are made on first use and kept (swift-metrics would look each up in the registry on every call);
/// they must be made after `MetricsSystem.bootstrap`, which the daemon does before anything is counted.
final class DaemonMetrics: Sendable {
    static let shared = DaemonMetrics()

    private let counters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let timers = Mutex<[String: CoreMetrics.Timer]>([:])
    private let gauges = Mutex<[String: CoreMetrics.Gauge]>([:])
    /// Each FUSE operation's counter and timer, by operation name alone: every request records both, and building
    /// their keys from label and dimensions each time was a visible share of a 4 KiB read.
    private let operationHandles = Mutex<[String: (CoreMetrics.Counter, CoreMetrics.Timer)]>([:])
    /// Run before each scrape: they bring the read-when-scraped values up to date.
    private let refreshers = Mutex<[@Sendable () -> Void]>([])

    // MARK: Handles

    func counter(_ label: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Counter {
        let key = Self.key(label, dimensions)
        return counters.withLock { cache in
            if let handle = cache[key] { return handle }
            let handle = CoreMetrics.Counter(label: label, dimensions: dimensions)
            cache[key] = handle
            return handle
        }
    }

    func timer(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Timer {
        let key = Self.key(label, dimensions)
        return timers.withLock { cache in
            if let handle = cache[key] { return handle }
            let handle = CoreMetrics.Timer(label: label, dimensions: dimensions)
            cache[key] = handle
            return handle
        }
    }

    func gauge(_ label: String) -> CoreMetrics.Gauge {
        gauges.withLock { cache in
            if let handle = cache[label] { return handle }
            let handle = CoreMetrics.Gauge(label: label)
            cache[label] = handle
            return handle
        }
    }

    private static func key(_ label: String, _ dimensions: [(String, String)]) -> String {
        label + dimensions.map { "|\($0.0)=\($0.1)" }.joined()
    }

    // MARK: FUSE

    /// Feeds `FuseOperationMetrics` into the FUSE metrics.
    func installFuseObserver() {
        FuseOperationMetrics.install { [self] operation, errno, seconds in
            fuseOperation(operation, errno: errno, seconds: seconds)
        }
    }

    func fuseOperation(_ operation: String, errno: Int32, seconds: Double) {
        let op = [("op", operation)]
        let handles =
            operationHandles.withLock { $0[operation] }
            ?? {
                let made = (
                    counter("bucketfs_fuse_operations_total", op),
                    timer("bucketfs_fuse_operation_duration_seconds", op)
                )
                operationHandles.withLock { $0[operation] = made }
                return made
            }()
        handles.0.increment()
        handles.1.recordNanoseconds(Int64(seconds * 1e9))
        guard errno != 0 else { return }
        counter("bucketfs_fuse_errors_total", op + [("errno", Self.errnoName(errno))]).increment()
        if errno == ESTALE { counter("bucketfs_conflicts_total").increment() }
    }

    static let errnoNames: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", EBADF: "EBADF", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM",
        EACCES: "EACCES", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR",
        EINVAL: "EINVAL", EFBIG: "EFBIG", ENOSPC: "ENOSPC", EROFS: "EROFS", EMLINK: "EMLINK", ERANGE: "ERANGE",
        EDEADLK: "EDEADLK", ENAMETOOLONG: "ENAMETOOLONG", ENOLCK: "ENOLCK", ENOSYS: "ENOSYS", ENOTEMPTY: "ENOTEMPTY",
        ENODATA: "ENODATA", ENOTSUP: "ENOTSUP", ETIMEDOUT: "ETIMEDOUT", ESTALE: "ESTALE", EINTR: "EINTR",
        ECONNREFUSED: "ECONNREFUSED", EHOSTUNREACH: "EHOSTUNREACH", ECANCELED: "ECANCELED",
    ]

    static func errnoName(_ errno: Int32) -> String { errnoNames[errno] ?? String(errno) }

    // MARK: Store

    /// One call of the mount's store: `error` is nil for an answer ("not found" and "changed by another writer"
    /// included), else the error's code.
    func storeOperation(_ operation: String, error: ObjectStoreError?, seconds: Double, received: Int, sent: Int) {
        let op = [("op", operation)]
        counter("bucketfs_store_operations_total", op).increment()
        timer("bucketfs_store_operation_duration_seconds", op).recordNanoseconds(Int64(seconds * 1e9))
        if let error { counter("bucketfs_store_operation_errors_total", op + [("code", Self.code(error))]).increment() }
        if received > 0 {
            counter("bucketfs_store_bytes_total", op + [("direction", "received")]).increment(by: Int64(received))
        }
        if sent > 0 { counter("bucketfs_store_bytes_total", op + [("direction", "sent")]).increment(by: Int64(sent)) }
    }

    /// Bytes a streaming GET handed on (counted when it ends, whatever the outcome).
    func streamed(_ bytes: Int) {
        guard bytes > 0 else { return }
        counter("bucketfs_store_bytes_total", [("op", "get_streaming"), ("direction", "received")]).increment(
            by: Int64(bytes))
    }

    /// The error's kind, a bounded set of label values.
    static func code(_ error: ObjectStoreError) -> String {
        switch error {
        case .notFound: return "not_found"
        case .preconditionFailed: return "precondition_failed"
        case .noSuchBucket: return "no_such_bucket"
        case .unauthorized: return "unauthorized"
        case .accessDenied: return "access_denied"
        case .throttled: return "throttled"
        case .invalidKey: return "invalid_key"
        case .invalidRequest: return "invalid_request"
        case .noSpace: return "no_space"
        case .transport: return "transport"
        case .other: return "other"
        }
    }

    // MARK: Read when scraped

    /// The mount's file system, staging and recovery folders and store, read before each scrape.
    func watch(fileSystem: FileSystem, cacheDirectory: String, store: any ObjectStore) {
        let counts = FileSystemMetrics.shared
        let seen = Mutex<[String: Int]>([:])
        /// A counter that follows a running total kept elsewhere.
        let follow = { @Sendable [self] (label: String, dimensions: [(String, String)], total: Int) in
            let key = Self.key(label, dimensions)
            let delta = seen.withLock { last -> Int in
                defer { last[key] = total }
                return total - (last[key] ?? 0)
            }
            // Made at the first scrape even at 0, so that the series exists before anything happens.
            let handle = counter(label, dimensions)
            if delta > 0 { handle.increment(by: Int64(delta)) }
        }
        let retries: @Sendable () -> Int = { (store as? any HTTPObjectStore)?.retryCount ?? 0 }
        refreshers.withLock { list in
            list.append { [self] in
                follow("bucketfs_read_ahead_total", [("result", "hit")], counts.readAheadHits.load(ordering: .relaxed))
                follow(
                    "bucketfs_read_ahead_total", [("result", "miss")], counts.readAheadMisses.load(ordering: .relaxed))
                follow(
                    "bucketfs_small_content_cache_total", [("result", "hit")],
                    counts.smallContentHits.load(ordering: .relaxed))
                follow(
                    "bucketfs_small_content_cache_total", [("result", "miss")],
                    counts.smallContentMisses.load(ordering: .relaxed))
                follow(
                    "bucketfs_page_cache_pushed_bytes_total", [], counts.pagesPushedBytes.load(ordering: .relaxed))
                follow("bucketfs_store_retries_total", [], retries())
                let pending = fileSystem.pendingUploadCount
                let inFlight = max(0, counts.uploadsInFlight.load(ordering: .relaxed))
                gauge("bucketfs_uploads_pending").record(pending)
                gauge("bucketfs_uploads_in_flight").record(inFlight)
                gauge("bucketfs_uploads_queued").record(max(0, pending - inFlight))
                gauge("bucketfs_staging_bytes").record(Self.bytes(under: cacheDirectory + "/staging"))
                gauge("bucketfs_recovery_items").record(Self.files(in: cacheDirectory + "/recovery", suffix: ".data"))
            }
        }
    }

    func refresh() {
        for refresher in refreshers.withLock({ $0 }) { refresher() }
    }

    /// Bytes of the regular files under `directory` (staged files are few: one per file being written).
    static func bytes(under directory: String) -> Int {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return 0 }
        var total = 0
        while let name = walker.nextObject() as? String {
            var info = stat()
            if lstat(directory + "/" + name, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG {
                total += Int(info.st_size)
            }
        }
        return total
    }

    static func files(in directory: String, suffix: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(suffix) }.count
    }
}
