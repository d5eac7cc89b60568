import CFuse
import Foundation
import Glibc

/// What the daemon asks of the kernel at FUSE_INIT, and the read-ahead it sets after mounting. The defaults are
/// what `bench/fuse-options.sh` measured best on this bed (bench/README.md has the table); the environment
/// variable `BUCKETFS_FUSE_TUNING` (comma-separated `key=value`, for that bench) overrides them.
public struct FuseTuning: Sendable, Equatable {
    /// Bytes per WRITE request; libfuse 3.14 derives max_pages from it, and the kernel allows 256 pages (1 MiB).
    public var maxWrite: UInt32 = 1 << 20
    /// The kernel caps FUSE read-ahead at its 128 KiB default whatever max_readahead says; the bdi's
    /// read_ahead_kb raised after mounting gives 1 MiB READ requests (0 keeps the kernel's).
    public var readAheadKiB: Int = 1024
    /// Lookups and readdirs in one directory run in parallel instead of under the directory's lock.
    public var parallelDirops = true
    /// Read-ahead requests run beside the reader's own.
    public var asyncRead = true
    /// Requests in flight beyond which the kernel queues (default 12, congested at 9).
    public var maxBackground: UInt32 = 64
    public var congestionThreshold: UInt32 = 48
    /// Splice moves request and reply bodies through a pipe; ours live in memory buffers, so it only adds calls.
    public var spliceRead = false
    public var spliceWrite = false
    public var spliceMove = false
    /// Off: the kernel would keep its own size and mtime of a regular file over the store's, so a change made by
    /// another host is not seen at open (close-to-open breaks); bench/README.md shows it.
    public var writebackCache = false
    /// After a random read, the block around it is stored in the kernel's page cache (`PageCacheFiller`).
    public var pagePush = true

    public init() {}

    public static let environmentVariable = "BUCKETFS_FUSE_TUNING"

    /// The defaults with the environment's overrides; a bad value is one readable line.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(FuseSessionError) -> FuseTuning
    {
        try parse(environment[environmentVariable] ?? "")
    }

    public static func parse(_ text: String) throws(FuseSessionError) -> FuseTuning {
        var tuning = FuseTuning()
        for item in text.split(separator: ",") where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            let key = parts[0]
            let value = parts.count == 2 ? parts[1] : "1"
            func number(_ range: ClosedRange<Int>) throws(FuseSessionError) -> Int {
                guard let n = Int(value), range.contains(n) else {
                    throw FuseSessionError(description: "\(environmentVariable): \(key) must be in \(range)")
                }
                return n
            }
            func flag() throws(FuseSessionError) -> Bool { try number(0...1) == 1 }
            switch key {
            case "max_write": tuning.maxWrite = UInt32(try number(4096...(1 << 20)))
            case "read_ahead_kb": tuning.readAheadKiB = try number(0...(1 << 16))
            case "parallel_dirops": tuning.parallelDirops = try flag()
            case "async_read": tuning.asyncRead = try flag()
            case "max_background": tuning.maxBackground = UInt32(try number(1...65535))
            case "congestion_threshold": tuning.congestionThreshold = UInt32(try number(1...65535))
            case "splice_read": tuning.spliceRead = try flag()
            case "splice_write": tuning.spliceWrite = try flag()
            case "splice_move": tuning.spliceMove = try flag()
            case "writeback_cache": tuning.writebackCache = try flag()
            case "page_push": tuning.pagePush = try flag()
            default: throw FuseSessionError(description: "\(environmentVariable): unknown key \(key)")
            }
        }
        return tuning
    }

    /// Applies the wishes to the kernel's offer at FUSE_INIT; a capability the kernel lacks stays off.
    func negotiate(_ conn: UnsafeMutablePointer<fuse_conn_info>) {
        conn.pointee.max_write = maxWrite
        conn.pointee.max_readahead = UInt32(max(readAheadKiB, 128) * 1024)
        conn.pointee.max_background = maxBackground
        conn.pointee.congestion_threshold = min(congestionThreshold, maxBackground)
        let wishes: [(UInt32, Bool)] = [
            (UInt32(FUSE_CAP_ASYNC_READ), asyncRead), (UInt32(FUSE_CAP_PARALLEL_DIROPS), parallelDirops),
            (UInt32(FUSE_CAP_SPLICE_READ), spliceRead), (UInt32(FUSE_CAP_SPLICE_WRITE), spliceWrite),
            (UInt32(FUSE_CAP_SPLICE_MOVE), spliceMove), (UInt32(FUSE_CAP_WRITEBACK_CACHE), writebackCache),
        ]
        for (capability, wanted) in wishes {
            if wanted && conn.pointee.capable & capability != 0 {
                conn.pointee.want |= capability
            } else {
                conn.pointee.want &= ~capability
            }
        }
    }

    /// Sets the mount's read-ahead (`/sys/class/bdi/<major:minor>/read_ahead_kb`, writable by root). Found through
    /// /proc/self/mountinfo: a stat of the mount point would wait for this daemon's own loop.
    func applyReadAhead(mountpoint: String) -> Bool {
        guard readAheadKiB > 0, let device = Self.device(of: mountpoint) else { return false }
        let path = "/sys/class/bdi/\(device)/read_ahead_kb"
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let text = "\(readAheadKiB)\n"
        return text.withCString { write(fd, $0, strlen($0)) } == text.utf8.count
    }

    /// `major:minor` of the last mount at `mountpoint` (mountinfo escapes space, tab, newline and `\` in octal).
    static func device(of mountpoint: String, mountinfo: String? = nil) -> String? {
        guard let text = mountinfo ?? (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) else {
            return nil
        }
        var escaped = ""
        for character in mountpoint {
            switch character {
            case "\\": escaped += "\\134"
            case " ": escaped += "\\040"
            case "\t": escaped += "\\011"
            case "\n": escaped += "\\012"
            default: escaped.append(character)
            }
        }
        for line in text.split(separator: "\n").reversed() {
            let fields = line.split(separator: " ")
            if fields.count > 4 && fields[4] == escaped { return String(fields[2]) }
        }
        return nil
    }
}
