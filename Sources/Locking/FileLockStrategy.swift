import Foundation
import Glibc
import Synchronization

/// `flock(LOCK_EX|LOCK_NB)` (shared leases: `LOCK_SH`) on `<directory>/<escaped resource>.lock`, held by keeping
/// the descriptor open.
///
/// One host only (flock does not cross NFS reliably, and not hosts at all on local disks). The kernel drops the
/// lock when the holder dies, so the lease is only written into the record for people to read; it never expires.
/// flock locks belong to the open file description, so two acquisitions in this very process (each opens the file
/// anew) exclude each other just as two processes do.
///
/// The lock file holds the JSON `LockRecord` of the last grant. Its token is read and incremented under an
/// exclusive flock of `<lock file>.fence` (held for microseconds), so tokens grow across holders, shared ones
/// too. Lock files are never deleted: unlinking one while another process waits on its old inode would let two
/// holders coexist, and it would reset the token.
///
/// Conversions: exclusive → shared is one `flock(LOCK_SH)` (nobody else can get in between). Shared →
/// exclusive cannot be atomic with flock (Linux drops the old lock first): `LOCK_EX|LOCK_NB`, and when other
/// sharers refuse it, `LOCK_SH|LOCK_NB` again at once; only an exclusive holder slipping into that instant
/// would make the lease lost (reported as such).
public final class FileLockStrategy: LockStrategy {
    public let directory: String
    public var name: String { "file" }
    /// Stamps the records (a flock never expires: the lease is only written down for people to read).
    let clock: @Sendable () -> Date

    /// Open descriptors of held locks, by `resource` + token.
    private let descriptors = Mutex<[HeldKey: Int32]>([:])

    private struct HeldKey: Hashable {
        var resource: String
        var token: UInt64
    }

    /// Creates `directory` if needed. One under the user's runtime directory (the default, possibly in /tmp) is
    /// made 0700 and refused if someone else made it (see `PrivateDirectory`).
    public init(
        directory: String, runtimeBase: String = PrivateDirectory.runtimeBase(),
        clock: @escaping @Sendable () -> Date = { Date() }
    ) throws(LockError) {
        self.clock = clock
        var path = directory
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        guard !path.isEmpty else { throw .invalid("file_lock_dir is empty") }
        if path == runtimeBase || path.hasPrefix(runtimeBase + "/") {
            do { try PrivateDirectory.prepare(runtimeBase, sub: String(path.dropFirst(runtimeBase.count))) } catch {
                throw .invalid(error.description)
            }
        } else {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw .unavailable("cannot create lock directory \(path): \(error)")
            }
        }
        self.directory = path
    }

    deinit {
        // Only reached when nobody can release any more: let the kernel drop the locks.
        for fd in descriptors.withLock({ Array($0.values) }) { close(fd) }
    }

    public func tryAcquire(
        _ resource: String, owner: LockOwner, lease: Double,
        mode: LeaseMode
    ) throws(LockError) -> Lease? {
        try validateResource(resource)
        try validateLease(lease)
        let path = lockPath(resource)
        // Never through a link (one planted in the directory would have us rewrite its target), never a FIFO
        // or device, never truncated on open (the token lives in the file).
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o600)
        guard fd >= 0 else {
            let reason = errno == ELOOP ? "a symbolic link is there" : String(cString: strerror(errno))
            throw .unavailable("open \(path): \(reason)")
        }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw .unavailable("open \(path): not a regular file")
        }
        guard flockRetryingEINTR(fd, (mode == .shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0 else {
            let error = errno
            close(fd)
            if error == EWOULDBLOCK { return nil }
            throw .unavailable("flock \(path): \(String(cString: strerror(error)))")
        }
        let now = clock()
        var granted = Lease(
            resource: resource, owner: owner, token: 0, acquired: now,
            expires: now.addingTimeInterval(lease), duration: lease, mode: mode)
        do {
            granted.token = try nextToken(fd, path: path, recording: granted)
        } catch {
            close(fd)  // drops the flock too
            throw error
        }
        descriptors.withLock { $0[HeldKey(resource: resource, token: granted.token)] = fd }
        return granted
    }

    /// Reads the last token, writes the grant's record with the next one; under the fence file's flock, since
    /// sharers write the lock file side by side.
    private func nextToken(_ fd: Int32, path: String, recording lease: Lease) throws(LockError) -> UInt64 {
        let fence = open(path + ".fence", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o600)
        guard fence >= 0 else { throw .unavailable("open \(path).fence: \(String(cString: strerror(errno)))") }
        defer { close(fence) }
        guard flockRetryingEINTR(fence, LOCK_EX) == 0 else {
            throw .unavailable("flock \(path).fence: \(String(cString: strerror(errno)))")
        }
        // An unreadable or foreign file restarts the count rather than blocking the lock forever.
        let previous = (try? LockRecord.decode(readAll(fd)))?.token ?? 0
        var record = lease
        record.token = previous + 1
        try writeRecord(record.record, to: fd, path: path)
        return record.token
    }

    public func convert(_ lease: Lease, to mode: LeaseMode) throws(LockError) -> Lease? {
        guard mode != lease.mode else { return lease }
        let key = HeldKey(resource: lease.resource, token: lease.token)
        guard let fd = descriptors.withLock({ $0[key] }) else { throw .lost(lease.resource) }
        let path = lockPath(lease.resource)
        var converted = lease
        converted.mode = mode
        if mode == .shared {
            guard flockRetryingEINTR(fd, LOCK_SH) == 0 else {
                throw .unavailable("flock \(path): \(String(cString: strerror(errno)))")
            }
            try? writeRecord(converted.record, to: fd, path: path)
            return converted
        }
        guard flockRetryingEINTR(fd, LOCK_EX | LOCK_NB) == 0 else {
            let error = errno
            guard error == EWOULDBLOCK, flockRetryingEINTR(fd, LOCK_SH | LOCK_NB) == 0 else {
                descriptors.withLock { _ = $0.removeValue(forKey: key) }
                close(fd)
                throw .lost(lease.resource)
            }
            return nil
        }
        converted.token = try nextToken(fd, path: path, recording: converted)
        descriptors.withLock { held in
            held[key] = nil
            held[HeldKey(resource: lease.resource, token: converted.token)] = fd
        }
        return converted
    }

    public func renew(_ lease: Lease) throws(LockError) -> Lease {
        guard let fd = descriptors.withLock({ $0[HeldKey(resource: lease.resource, token: lease.token)] }) else {
            throw .lost(lease.resource)
        }
        var renewed = lease
        renewed.expires = clock().addingTimeInterval(lease.duration).lockPrecision
        // Sharers would overwrite each other's record; the flock is what holds, so only exclusive holders write.
        if lease.mode == .exclusive { try writeRecord(renewed.record, to: fd, path: lockPath(lease.resource)) }
        return renewed
    }

    public func release(_ lease: Lease) throws(LockError) {
        guard
            let fd = descriptors.withLock({
                $0.removeValue(forKey: HeldKey(resource: lease.resource, token: lease.token))
            })
        else {
            throw .lost(lease.resource)
        }
        defer { close(fd) }
        guard lease.mode == .exclusive else { return }  // closing drops the shared flock
        var record = lease.record
        record.expires = clock().addingTimeInterval(-0.001).lockPrecision  // in the past, after rounding
        record.released = true
        // The token must survive for the next holder; a failed write only costs the record's accuracy.
        try? writeRecord(record, to: fd, path: lockPath(lease.resource))
        _ = flock(fd, LOCK_UN)
    }

    /// Files whose flock is taken right now (probed with an exclusive non-blocking flock on a fresh descriptor; a
    /// `tryAcquire` at the very instant of a probe is refused, as if the lock were held, and may simply retry).
    /// Shared holders show as one record, the latest sharer's.
    public func holders() throws(LockError) -> [LockRecord] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw .unavailable("cannot list lock directory \(directory): \(error)")
        }
        var records: [LockRecord] = []
        for name in names.sorted() where name.hasSuffix(".lock") {
            if let record = probe("\(directory)/\(name)") { records.append(record) }
        }
        return records
    }

    /// Every process holding the lock file's flock, from `/proc/locks` (this host is the only one there is):
    /// the last grant's record names its holder; other sharers are known by pid only. Without `/proc`, a probe.
    public func holders(of resource: String) throws(LockError) -> [LockRecord] {
        let path = lockPath(resource)
        var info = stat()
        guard stat(path, &info) == 0 else { return [] }
        // Read to its end: Foundation's String(contentsOfFile:) stops after the first page of a /proc file.
        let locksFD = open("/proc/locks", O_RDONLY | O_CLOEXEC)
        guard locksFD >= 0 else { return probe(path).map { [$0] } ?? [] }
        let table = String(decoding: readAll(locksFD), as: UTF8.self)
        close(locksFD)
        let last = (try? LockRecord.decode(readAll(path)))
        var records: [LockRecord] = []
        for line in table.split(separator: "\n") {
            // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters ("1: -> FLOCK …") hold nothing.
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[1] == "FLOCK", let pid = Int32(fields[4]),
                let inode = fields[5].split(separator: ":").last.flatMap({ UInt64($0) }),
                inode == UInt64(info.st_ino)
            else { continue }
            let mode: LeaseMode? = fields[3] == "READ" ? .shared : nil
            let now = clock()
            if let last, last.pid == pid {
                var record = last
                record.mode = mode
                record.released = nil
                record.resource = resource
                records.append(record)
            } else {
                records.append(
                    LockRecord(
                        owner: "pid \(pid)", host: LockOwner.hostName(), pid: pid, acquired: now,
                        expires: .distantFuture, token: last?.token ?? 0, resource: resource,
                        mode: mode))
            }
        }
        return records
    }

    private func readAll(_ path: String) -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return Data() }
        defer { close(fd) }
        return readAll(fd)
    }

    private func probe(_ path: String) -> LockRecord? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if flockRetryingEINTR(fd, LOCK_EX | LOCK_NB) == 0 {
            _ = flock(fd, LOCK_UN)
            return nil  // nobody holds it
        }
        // Held: the holder may be rewriting the record this instant; skip what does not parse.
        guard var record = try? LockRecord.decode(readAll(fd)) else { return nil }
        // Shared if a shared flock is granted beside the holders.
        if flockRetryingEINTR(fd, LOCK_SH | LOCK_NB) == 0 {
            _ = flock(fd, LOCK_UN)
            record.mode = .shared
        } else {
            record.mode = nil
        }
        record.released = nil
        return record
    }

    // MARK: Files

    func lockPath(_ resource: String) -> String {
        "\(directory)/\(Self.fileName(for: resource))"
    }

    /// Percent-escapes everything but `[A-Za-z0-9._-]`, so any key (slashes included) is one flat file name.
    /// Names too long for the filesystem keep a readable prefix and end with a hash of the whole resource.
    static func fileName(for resource: String) -> String {
        var escaped = ""
        for byte in resource.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                escaped.append(Character(Unicode.Scalar(byte)))
            default:
                escaped += String(format: "%%%02X", byte)
            }
        }
        if escaped.utf8.count > 200 {
            escaped = String(escaped.prefix(150)) + "~" + String(fnv1a(resource), radix: 16)
        }
        return escaped + ".lock"
    }

    /// FNV-1a, 64 bits: enough to tell long names apart, and stable across runs (unlike `hashValue`).
    private static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }

    private func flockRetryingEINTR(_ fd: Int32, _ operation: Int32) -> Int32 {
        while true {
            let result = flock(fd, operation)
            if result == 0 || errno != EINTR { return result }
        }
    }

    private func readAll(_ fd: Int32) -> Data {
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var offset: off_t = 0
        while true {
            let n = pread(fd, &buffer, buffer.count, offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data.append(contentsOf: buffer[0..<n])
            offset += off_t(n)
        }
        return data
    }

    /// Writes in place, then trims: there is never a moment with an empty file (and no token).
    private func writeRecord(_ record: LockRecord, to fd: Int32, path: String) throws(LockError) {
        let bytes = [UInt8](record.encoded())
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .unavailable("write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
        guard ftruncate(fd, off_t(bytes.count)) == 0 else {
            throw .unavailable("truncate \(path): \(String(cString: strerror(errno)))")
        }
    }
}
