import Foundation
import ObjectStore
import Synchronization

/// Object content on local disk, in aligned blocks of `blockSize` bytes, keyed by store, object key and version: a
/// changed object has another version, so its old blocks are never served (they age out). The store (`store`: its
/// bucket and endpoint) is part of the key because two stores sharing a cache directory may both have a key at one
/// version (GCS and local generations, counters). Shared by every handle of the mount; the files stay in the cache
/// directory, so a remount of the same store reads what it already fetched while the version is unchanged. Bounded
/// by `limit` bytes, least recently used blocks evicted first.
///
/// A block is one file `<directory>/<hash of store, key and version>.<block index>`, whose first lines repeat the
/// store, key and version (checked on every open: a hash collision is a miss, never wrong bytes). Written to a
/// temporary name and renamed, not synced: after a crash the file may be cut short (journaling file systems keep a
/// prefix of a new file's bytes, maybe none, never others), which the header check refuses, or which reads short
/// and the reader takes for a miss (`forget`). Files are 0600 in a 0700 directory.
///
/// A whole object can also be one file, `<hash>.o`: a file this mount wrote and uploaded, moved in from staging
/// rather than copied (`adopt`). Its bytes start at offset 0 and the same header follows them, then its length
/// (4 bytes, little-endian); every block of the object is served from it. Its bytes may have been written long
/// before, in any order, over older ones: a crash could keep the trailer but not all of them, so it is synced
/// before it takes its name.
final class BlockCache: Sendable {
    static let defaultBlockSize = 1 << 20

    let directory: String
    let blockSize: Int
    let limit: UInt64
    /// The store's line of every header, and the hashes' state after it (see `stem`).
    private let storeLine: [UInt8]
    private let seeds: (UInt64, UInt64)

    private struct Index {
        /// File name → size on disk and last use (a counter, not a clock).
        var entries: [String: (size: UInt64, used: UInt64)] = [:]
        var total: UInt64 = 0
        var clock: UInt64 = 0
    }
    private let index = Mutex(Index())

    /// A block file kept open for the next reads of it (a random reader comes back to the same blocks): its header
    /// was checked when it was opened. Closed when the last reader lets go of it; an evicted block's file is
    /// unlinked while it may still be open, and its bytes are still the right ones for that key and version.
    private final class OpenBlock: Sendable {
        let fd: Int32
        /// The header it was opened for: another object whose name collides is not served from it.
        let header: [UInt8]
        /// A whole-object file (`.o`): block `number` starts at `number × blockSize`, and the content ends at `end`.
        let wholeObject: Bool
        let end: Int
        init(fd: Int32, header: [UInt8], wholeObject: Bool, end: Int) {
            self.fd = fd
            self.header = header
            self.wholeObject = wholeObject
            self.end = end
        }
        deinit { close(fd) }

        /// Reads `range` of block `number` to `pointer`: the count read, or -1.
        func read(_ range: Range<Int>, of number: Int, blockSize: Int, to pointer: UnsafeMutableRawPointer?) -> Int {
            guard wholeObject else { return pread(fd, pointer, range.count, off_t(header.count + range.lowerBound)) }
            let start = number * blockSize + range.lowerBound
            return pread(fd, pointer, max(0, min(range.count, end - start)), off_t(start))
        }
    }
    private let openBlocks = Mutex<[String: OpenBlock]>([:])
    private static let maxOpenBlocks = 512

    /// Creates the directory if needed and indexes what a previous mount left (oldest modification first); entries of
    /// other stores (and of the layout before stores were named) are never served, and age out.
    init(directory: String, limit: UInt64, blockSize: Int = BlockCache.defaultBlockSize, store: String = "") {
        self.directory = directory
        self.limit = limit
        self.blockSize = blockSize
        self.storeLine = Array(Self.escaped(store).utf8) + [UInt8(ascii: "\n")]
        var seeds: (UInt64, UInt64) = (0xcbf2_9ce4_8422_2325, 0x8422_2325_cbf2_9ce4)
        for byte in storeLine { Self.mix(byte, into: &seeds) }
        self.seeds = seeds
        try? FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        var found: [(name: String, size: UInt64, modified: Date)] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            let path = directory + "/" + name
            if name.hasPrefix(".tmp-") {
                try? FileManager.default.removeItem(atPath: path)
                continue
            }
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { continue }
            found.append(
                (
                    name, (attributes[.size] as? NSNumber)?.uint64Value ?? 0,
                    attributes[.modificationDate] as? Date ?? .distantPast
                ))
        }
        found.sort { $0.modified < $1.modified }
        index.withLock { index in
            for entry in found {
                index.clock += 1
                index.entries[entry.name] = (entry.size, index.clock)
                index.total += entry.size
            }
        }
        evict()
    }

    /// Block `number` of the object at `version`, if cached: the whole block, or less for the object's last one.
    func block(key: String, version: String, number: Int) -> Data? {
        read(key: key, version: version, number: number, range: 0..<blockSize)
    }

    /// `range` of block `number` (clipped to the block), read from its file alone — no copy of the whole block, so a
    /// 4 KiB random read served here costs two small preads; nil if not cached (or the header is another object's).
    func read(key: String, version: String, number: Int, range: Range<Int>) -> Data? {
        // A MiB or more into a pooled buffer (a fresh one would be mmapped, faulted in and zeroed for every read); a
        // small random read into a plain Data, which malloc serves from its arena.
        guard range.count < ReceiveBufferPool.minimumSize else {
            let buffer = ReceiveBufferPool.shared.take(capacity: range.count)
            guard read(key: key, version: version, number: number, range: range, into: buffer) != nil else {
                return nil
            }
            return buffer.filled
        }
        guard let file = openFile(key: key, version: version, number: number) else { return nil }
        var data = Data(count: range.count)
        let got = data.withUnsafeMutableBytes { buffer in
            file.read(range, of: number, blockSize: blockSize, to: buffer.baseAddress)
        }
        guard got >= 0 else { return nil }
        data.count = got
        return data
    }

    /// `read`, appending the bytes to `buffer` (which has room for `range`); the count read, nil if not cached.
    func read(key: String, version: String, number: Int, range: Range<Int>, into buffer: ReceiveBuffer) -> Int? {
        precondition(range.count <= buffer.room, "no room for the block's bytes")
        guard let file = openFile(key: key, version: version, number: number) else { return nil }
        let got = file.read(range, of: number, blockSize: blockSize, to: buffer.bytes + buffer.count)
        guard got >= 0 else { return nil }
        buffer.fill(got)
        return got
    }

    /// The open file of an indexed block, or of the whole object (its use noted for the LRU), nil if not cached.
    private func openFile(key: String, version: String, number: Int) -> OpenBlock? {
        let stem = self.stem(key: key, version: version)
        let name = index.withLock { index -> String? in
            for name in [stem + "." + String(number), stem + ".o"] where index.entries[name] != nil {
                index.clock += 1
                index.entries[name]?.used = index.clock
                return name
            }
            return nil
        }
        guard let name else { return nil }
        guard let file = openBlock(name, header: header(key: key, version: version)) else {
            drop(name)  // cut short by a crash (or, as good as never, another object's): fetched and kept anew
            return nil
        }
        return file
    }

    /// Block `number` read short (`read` gave fewer bytes than the object has there): its file was cut short by a
    /// crash. Dropped, so that the block fetched instead is kept.
    func forget(key: String, version: String, number: Int) {
        let stem = self.stem(key: key, version: version)
        let served = index.withLock { index in
            [stem + "." + String(number), stem + ".o"].first { index.entries[$0] != nil }
        }
        if let served { drop(served) }
    }

    /// Unindexes and deletes the file `name`, if indexed.
    private func drop(_ name: String) {
        let dropped = index.withLock { index -> Bool in
            guard let entry = index.entries.removeValue(forKey: name) else { return false }
            index.total -= entry.size
            return true
        }
        guard dropped else { return }
        unlink(directory + "/" + name)
        openBlocks.withLock { $0[name] = nil }
    }

    /// The open file `name`, opened (and its header checked) if it is not open yet.
    private func openBlock(_ name: String, header: [UInt8]) -> OpenBlock? {
        if let file = openBlocks.withLock({ $0[name] }), file.header == header { return file }
        let fd = open(directory + "/" + name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let wholeObject = name.hasSuffix(".o")
        var end = Int.max
        if wholeObject {
            // The header sits after the content, its length in the last 4 bytes.
            var status = stat()
            var length: UInt32 = 0
            guard fstat(fd, &status) == 0, status.st_size >= header.count + 4,
                pread(fd, &length, 4, off_t(status.st_size) - 4) == 4, Int(UInt32(littleEndian: length)) == header.count
            else {
                close(fd)
                return nil
            }
            end = Int(status.st_size) - 4 - header.count
        }
        let file = OpenBlock(fd: fd, header: header, wholeObject: wholeObject, end: end)
        var found = [UInt8](repeating: 0, count: header.count)
        guard pread(fd, &found, header.count, off_t(wholeObject ? end : 0)) == header.count, found == header else {
            return nil
        }
        openBlocks.withLock { files in
            // Bounded: any one goes when full (its readers keep it open until they are done).
            if files.count >= Self.maxOpenBlocks, let any = files.keys.first { files[any] = nil }
            files[name] = file
        }
        return file
    }

    /// Whether block `number` of the object at `version` is indexed (without reading it): a whole-object file holds
    /// every block of it.
    func contains(key: String, version: String, number: Int) -> Bool {
        let stem = self.stem(key: key, version: version)
        return index.withLock { $0.entries[stem + "." + String(number)] != nil || $0.entries[stem + ".o"] != nil }
    }

    /// Takes the file at `path`, exactly the `size` bytes of the object at `version` and written by nobody any more
    /// (a staged copy just uploaded), as the cached content of the whole object: moved in, not copied, so that
    /// reading back what this mount wrote costs no GET. Returns false, leaving `path` where it was, when it does not
    /// fit (over half the limit, which keeps one file from evicting everything) or cannot be moved; true once the
    /// file is the cache's (kept, or deleted if it could not be finished: the store has the bytes).
    func adopt(key: String, version: String, path: String, size: UInt64) -> Bool {
        let header = self.header(key: key, version: version)
        let total = size + UInt64(header.count) + 4
        guard size > 0, total <= limit / 2 else { return false }
        let name = stem(key: key, version: version) + ".o"
        let temporary = directory + "/.tmp-" + UUID().uuidString
        guard rename(path, temporary) == 0 else { return false }
        // From here the file is the cache's: a failure deletes it (the store has the bytes).
        var trailer = header
        withUnsafeBytes(of: UInt32(header.count).littleEndian) { trailer.append(contentsOf: $0) }
        let fd = open(temporary, O_WRONLY | O_CLOEXEC)
        var status = stat()
        // Synced: its bytes were written over time, maybe over others (see the type's comment). Not on a read path.
        let written =
            fd >= 0 && fstat(fd, &status) == 0 && UInt64(status.st_size) == size
            && pwrite(fd, trailer, trailer.count, off_t(size)) == trailer.count && fdatasync(fd) == 0
        if fd >= 0 { close(fd) }
        guard written, rename(temporary, directory + "/" + name) == 0 else {
            unlink(temporary)
            return true
        }
        openBlocks.withLock { $0[name] = nil }
        noteStored(name, size: total)
        return true
    }

    /// Indexes the file `name` just renamed into place (`size` bytes on disk), then evicts down to the limit.
    private func noteStored(_ name: String, size: UInt64) {
        index.withLock { index in
            index.clock += 1
            if let old = index.entries[name] { index.total -= old.size }
            index.entries[name] = (size, index.clock)
            index.total += size
        }
        evict()
    }

    /// Keeps block `number` (`data` is the whole block, or the object's shorter last block).
    func store(key: String, version: String, number: Int, data: Data) {
        guard !data.isEmpty, data.count <= blockSize, UInt64(data.count) <= limit else { return }
        let name = stem(key: key, version: version) + "." + String(number)
        if index.withLock({ $0.entries[name] != nil }) { return }
        let header = self.header(key: key, version: version)
        let temporary = directory + "/.tmp-" + UUID().uuidString
        // Header and bytes written straight from where they are (one vectored write, no joined copy).
        guard Self.write(header, data, to: temporary), rename(temporary, directory + "/" + name) == 0 else {
            unlink(temporary)
            return
        }
        noteStored(name, size: UInt64(header.count + data.count))
    }

    /// Creates `path` (0600, new) holding `header` then `data`.
    private static func write(_ header: [UInt8], _ data: Data, to path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return header.withUnsafeBytes { head in
            data.withUnsafeBytes { body in
                var parts = [
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress), iov_len: head.count),
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress), iov_len: body.count),
                ]
                var written = 0
                let total = head.count + body.count
                // A short write goes on where it stopped.
                while written < total {
                    let count = parts.withUnsafeMutableBufferPointer { writev(fd, $0.baseAddress, 2) }
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else { return false }
                    written += count
                    var skip = count
                    for index in 0..<2 {
                        let taken = min(skip, parts[index].iov_len)
                        parts[index].iov_base = parts[index].iov_base.map { $0 + taken }
                        parts[index].iov_len -= taken
                        skip -= taken
                    }
                }
                return true
            }
        }
    }

    /// Bytes held (headers included).
    var size: UInt64 { index.withLock { $0.total } }

    /// Drops least recently used blocks until the total is within the limit.
    private func evict() {
        let victims = index.withLock { index -> [String] in
            guard index.total > limit else { return [] }
            var names: [String] = []
            for (name, entry) in index.entries.sorted(by: { $0.value.used < $1.value.used }) {
                guard index.total > limit else { break }
                index.entries[name] = nil
                index.total -= entry.size
                names.append(name)
            }
            return names
        }
        for name in victims { unlink(directory + "/" + name) }
        openBlocks.withLock { files in for name in victims { files[name] = nil } }
    }

    /// The store's line, then the key's and the version's.
    private func header(key: String, version: String) -> [UInt8] {
        let key = Self.escaped(key)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(storeLine.count + key.utf8.count + version.utf8.count + 2)
        bytes += storeLine
        bytes += key.utf8
        bytes.append(UInt8(ascii: "\n"))
        bytes += version.utf8
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    /// Newlines cannot be in a version; a key's (or a store's) are escaped so that each stays one line (checked
    /// first: this runs for every read, and the replacing is costly).
    private static func escaped(_ text: String) -> String {
        text.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\n") })
            ? text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n") : text
    }

    private static func mix(_ byte: UInt8, into hashes: inout (UInt64, UInt64)) {
        hashes.0 = (hashes.0 ^ UInt64(byte)) &* 0x100_0000_01b3
        hashes.1 = (hashes.1 ^ UInt64(byte)) &* 0x100_0000_01b3 &+ 0x9e37_79b9
    }

    /// Two independent 64-bit FNV-1a hashes of store, key and version (the store's part hashed once, in `seeds`):
    /// 128 bits, collisions checked by the header anyway.
    private func stem(key: String, version: String) -> String {
        var hashes = seeds
        // (Byte by byte, without joining the two into a new array: this runs several times for every read.)
        for byte in key.utf8 { Self.mix(byte, into: &hashes) }
        Self.mix(0, into: &hashes)
        for byte in version.utf8 { Self.mix(byte, into: &hashes) }
        return String(hashes.0, radix: 16) + String(hashes.1, radix: 16)
    }
}
