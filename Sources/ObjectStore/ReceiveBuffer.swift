import Foundation
import Synchronization

/// A large buffer that received object bytes are copied into, taken from `ReceiveBufferPool` and given back to
/// it when the last `Data` viewing it is gone. Filled by one thread at a time (its owner: a transfer, a stream);
/// `data(_:)` views only bytes already filled, which are never written again, so readers need no lock of their own
/// beyond the one their owner hands `count` over with.
public final class ReceiveBuffer: @unchecked Sendable {
    public let bytes: UnsafeMutableRawPointer
    public let capacity: Int
    /// Bytes filled so far, from the start.
    public private(set) var count = 0
    private let pool: ReceiveBufferPool

    fileprivate init(bytes: UnsafeMutableRawPointer, capacity: Int, pool: ReceiveBufferPool) {
        self.bytes = bytes
        self.capacity = capacity
        self.pool = pool
    }

    deinit { pool.giveBack(bytes, capacity: capacity) }

    /// Room left after what is filled.
    public var room: Int { capacity - count }

    /// Copies `piece` after what is filled; the caller checks `room` first.
    public func append(_ piece: UnsafeRawBufferPointer) {
        precondition(piece.count <= room, "receive buffer overrun")
        guard let base = piece.baseAddress, !piece.isEmpty else { return }
        (bytes + count).copyMemory(from: base, byteCount: piece.count)
        count += piece.count
    }

    /// Marks `bytes[count..<count + more]` as filled (written by the caller, e.g. `pread`).
    public func fill(_ more: Int) {
        precondition(more >= 0 && more <= room, "receive buffer overrun")
        count += more
    }

    /// A view of filled bytes `range`, no copy: the `Data` keeps this buffer out of the pool while it lives.
    /// (Never mutated in place by its users: a view's bytes may be another view's too.)
    public func data(_ range: Range<Int>) -> Data {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "view beyond the filled bytes")
        guard !range.isEmpty else { return Data() }
        return Data(
            bytesNoCopy: bytes + range.lowerBound, count: range.count,
            deallocator: .custom { [self] _, _ in withExtendedLifetime(self) {} })
    }

    /// All the filled bytes.
    public var filled: Data { data(0..<count) }
}

/// Reused buffers of at least `minimumSize` (1 MiB) for object bytes as they arrive: ranged GET bodies, stream
/// blocks, block-cache reads. The daemon mmaps every allocation of 1 MiB or more (so freed memory goes back to the
/// system at once), which makes each fresh buffer cost page faults, zeroing and an munmap: a fifth of the daemon's
/// CPU in a cold sequential read (perf, SeaweedFS on loopback). Buffers come in powers of two; up to
/// `retainedBytes` of free ones are kept, the rest freed.
public final class ReceiveBufferPool: Sendable {
    public static let minimumSize = 1 << 20
    /// Bodies larger than this are not pooled (a whole-object GET, a Content-Length a server got wrong).
    public static let maximumSize = 64 << 20
    public static let shared = ReceiveBufferPool(retainedBytes: 16 << 20)

    private struct Free: @unchecked Sendable {
        var buffers: [Int: [UnsafeMutableRawPointer]] = [:]
        var bytes = 0
    }
    private let free = Mutex(Free())
    public let retainedBytes: Int

    public init(retainedBytes: Int) {
        self.retainedBytes = retainedBytes
    }

    /// A buffer of at least `capacity` bytes: from the pool from `minimumSize` on; below it, one of exactly
    /// `capacity`, freed when done (malloc serves those well).
    public func take(capacity: Int) -> ReceiveBuffer {
        precondition(capacity > 0 && capacity <= 1 << 30, "receive buffer size out of range")
        guard capacity >= Self.minimumSize else {
            return ReceiveBuffer(
                bytes: .allocate(byteCount: capacity, alignment: 16), capacity: capacity, pool: self)
        }
        let size = Self.sizeClass(capacity)
        let reused = free.withLock { f -> UnsafeMutableRawPointer? in
            guard let pointer = f.buffers[size]?.popLast() else { return nil }
            f.bytes -= size
            return pointer
        }
        let bytes = reused ?? Self.fresh(size, mapping: capacity)
        return ReceiveBuffer(bytes: bytes, capacity: size, pool: self)
    }

    /// `pieces` joined into one pooled buffer (one piece: itself, no copy).
    public func joined(_ pieces: [Data]) -> Data {
        guard pieces.count > 1 else { return pieces.first ?? Data() }
        let total = pieces.reduce(0) { $0 + $1.count }
        guard total > 0 else { return Data() }
        let buffer = take(capacity: total)
        for piece in pieces { piece.withUnsafeBytes { buffer.append($0) } }
        return buffer.filled
    }

    /// Bytes held by free buffers now.
    public var retained: Int { free.withLock { $0.bytes } }

    fileprivate func giveBack(_ bytes: UnsafeMutableRawPointer, capacity: Int) {
        let kept = free.withLock { f -> Bool in
            guard capacity >= Self.minimumSize, f.bytes + capacity <= retainedBytes else { return false }
            f.buffers[capacity, default: []].append(bytes)
            f.bytes += capacity
            return true
        }
        if !kept { bytes.deallocate() }
    }

    /// A new buffer of `size` bytes whose first `mapping` bytes (what was asked for: the rest of the size class may
    /// never be used, and is left unmapped) are mapped at once: one madvise(MADV_POPULATE_WRITE) instead of a page
    /// fault per 4 KiB as the bytes arrive. The pool is empty on a fresh mount, so its first stream faulted in ~20
    /// MiB: 3,800 faults, 4-5 % of the daemon's CPU in a cold read. Kernels before 5.14 refuse it: faults as before.
    private static func fresh(_ size: Int, mapping: Int) -> UnsafeMutableRawPointer {
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        _ = madvise(bytes, min(size, (mapping + 4095) / 4096 * 4096), populateWrite)
        return bytes
    }
    /// MADV_POPULATE_WRITE (Linux 5.14), which Swift's Glibc module does not export yet.
    private static let populateWrite: Int32 = 23

    static func sizeClass(_ capacity: Int) -> Int {
        var size = minimumSize
        while size < capacity { size <<= 1 }
        return size
    }
}
