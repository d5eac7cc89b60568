import Synchronization

/// Counts the file system keeps for the daemon's metrics (`bucketfs_read_ahead_total`, …), as plain atomics so
/// that this layer needs no metrics library: the daemon reads them when it is scraped. One set per process
/// (a daemon serves one mount).
public final class FileSystemMetrics: Sendable {
    public static let shared = FileSystemMetrics()

    /// Reads served by read-ahead from bytes already fetched (hit) or that had to fetch on the caller's thread.
    public let readAheadHits = Atomic<Int>(0)
    public let readAheadMisses = Atomic<Int>(0)
    /// Opens of small files that found (hit) or did not find the content their lookup fetched.
    public let smallContentHits = Atomic<Int>(0)
    public let smallContentMisses = Atomic<Int>(0)
    /// Uploads (PUT or multipart) sending now; the FileSystem calls `uploadStarted`/`uploadFinished` around them.
    public let uploadsInFlight = Atomic<Int>(0)
    /// Bytes handed to the kernel's page cache after random reads (`PageCacheFiller`).
    public let pagesPushedBytes = Atomic<Int>(0)

    public init() {}

    public func readAhead(hit: Bool) {
        if hit { readAheadHits.add(1, ordering: .relaxed) } else { readAheadMisses.add(1, ordering: .relaxed) }
    }

    public func smallContent(hit: Bool) {
        if hit { smallContentHits.add(1, ordering: .relaxed) } else { smallContentMisses.add(1, ordering: .relaxed) }
    }

    public func pagesPushed(bytes: Int) { pagesPushedBytes.add(bytes, ordering: .relaxed) }

    public func uploadStarted() { uploadsInFlight.add(1, ordering: .relaxed) }
    public func uploadFinished() { uploadsInFlight.subtract(1, ordering: .relaxed) }
}
