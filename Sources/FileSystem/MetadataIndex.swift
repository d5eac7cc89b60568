import Foundation
import ObjectStore
import Synchronization

/// The POSIX metadata this host has seen on objects, by key and exact version, kept in the cache directory
/// across mounts. A LIST on S3 returns no user metadata, and a HEAD per entry would make `ls -l` (and `rsync`,
/// which compares mtimes) cost one request per file; with this index, a listing of objects this host wrote or
/// looked at before is one LIST.
///
/// An entry answers only for the version it was learnt for: the same version string, the same size, and, once
/// known, the same Last-Modified second. An object another tool rewrote, or re-copied onto itself with new
/// metadata (same ETag, later Last-Modified), is never shown with the old metadata: the caller asks the store.
///
/// On disk: one JSON line per learnt entry, appended; replayed at start (later lines win; a torn or undecodable
/// line is skipped, and the line after a torn one starts on a line of its own); rewritten compactly when it holds twice as many lines as entries (and over 20,000). It is a
/// cache: losing it costs requests, never correctness, so it is not fsynced.
final class MetadataIndex: Sendable {
    struct Entry: Codable, Equatable {
        var key: String
        var version: String
        var size: UInt64
        /// Last-Modified in whole seconds, once a LIST or HEAD told it (a PUT's answer does not).
        var modified: Int64?
        /// nil: the key was deleted (a tombstone line).
        var metadata: [String: String]?
    }

    private struct State {
        /// By key, byte for byte (`ExactPath`): canonically equivalent keys are two objects.
        var entries: [ExactPath: Entry] = [:]
        var lines = 0
        var fd: Int32 = -1
        var path: String?
        /// The journal ends in a line cut short (a crash, a full disk): the next line starts on a line of its own.
        var torn = false
    }

    /// Entries kept at most; beyond, the index starts over (a cache, sized for a few directories of 100,000).
    static let capacity = 500_000
    private let state = Mutex(State())

    /// `directory` nil: in memory only (tests, `memory://`). `name` tells apart mounts of different buckets.
    init(directory: String?, name: String) {
        guard let directory else { return }
        try? FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        let path = directory + "/" + Self.fileName(for: name)
        state.withLock { s in
            s.path = path
            Self.load(path, into: &s)
            s.fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        }
    }

    deinit {
        state.withLock { s in if s.fd >= 0 { close(s.fd) } }
    }

    /// The metadata known for exactly this version of the object, if any.
    func metadata(for info: ObjectInfo) -> ObjectMetadata? {
        return state.withLock { s in
            guard let entry = s.entries[ExactPath(info.key)], entry.version == info.version, entry.size == info.size,
                let metadata = entry.metadata
            else { return nil }
            let seconds = Int64(info.lastModified.timeIntervalSince1970.rounded(.down))
            if let modified = entry.modified, modified != seconds { return nil }
            if entry.modified == nil && info.lastModified.timeIntervalSince1970 > 0 {
                // First sight of its Last-Modified since we wrote it: pin it, so later copies are noticed.
                var pinned = entry
                pinned.modified = seconds
                Self.append(pinned, to: &s)
            }
            return metadata
        }
    }

    /// Learns what the store said (a HEAD, a GET, a LIST that carried metadata).
    func learn(_ info: ObjectInfo) {
        guard let metadata = info.metadata else { return }
        let seconds = Int64(info.lastModified.timeIntervalSince1970.rounded(.down))
        let entry = Entry(
            key: info.key, version: info.version, size: info.size,
            modified: seconds > 0 ? seconds : nil, metadata: metadata)
        state.withLock { s in
            if s.entries[ExactPath(info.key)] != entry { Self.append(entry, to: &s) }
        }
    }

    /// Learns the metadata of a version this mount just wrote (upload, copy, mkdir).
    func wrote(key: String, version: String, size: UInt64, metadata: ObjectMetadata) {
        let entry = Entry(key: key, version: version, size: size, modified: nil, metadata: metadata)
        state.withLock { s in Self.append(entry, to: &s) }
    }

    /// A server-side copy made `newKey` from `oldKey` with the same metadata.
    func moved(from oldKey: String, to newKey: String, version: String) {
        state.withLock { s in
            guard var entry = s.entries[ExactPath(oldKey)] else { return }
            (entry.key, entry.version, entry.modified) = (newKey, version, nil)
            Self.append(entry, to: &s)
        }
    }

    /// The object is gone.
    func forget(key: String) {
        state.withLock { s in
            guard s.entries[ExactPath(key)] != nil else { return }
            Self.append(Entry(key: key, version: "", size: 0, modified: nil, metadata: nil), to: &s)
        }
    }

    // MARK: - The journal

    private static func fileName(for name: String) -> String {
        // FNV-1a of the bucket and prefix: a stable, path-safe name.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return "metadata-" + String(hash, radix: 16) + ".jsonl"
    }

    private static func append(_ entry: Entry, to s: inout State) {
        if entry.metadata == nil {
            s.entries.removeValue(forKey: ExactPath(entry.key))
        } else {
            s.entries[ExactPath(entry.key)] = entry
        }
        if s.entries.count > capacity { s.entries = [:] }
        guard s.fd >= 0 else { return }
        var line: [UInt8] = s.torn ? [0x0A] : []
        entry.appendLine(to: &line)
        let written = line.withUnsafeBytes { write(s.fd, $0.baseAddress, $0.count) }
        if written == line.count { s.torn = false } else if written > 0 { s.torn = true }
        s.lines += 1
        // Not at 20,000 lines or fewer: an `rm -rf` of a few thousand files (a tombstone each, entries falling)
        // would otherwise rewrite the whole journal several times.
        if s.lines > 2 * max(s.entries.count, 10_000) { compact(&s) }
    }

    private static func load(_ path: String, into s: inout State) {
        guard let data = FileManager.default.contents(atPath: path) else { return }
        s.torn = !data.isEmpty && data.last != 0x0A
        let decoder = JSONDecoder()
        // All lines as one JSON array first (each newline a comma; no split into 100,000 `Data` slices, which cost
        // more than the decoding); a torn or undecodable line (or an empty one) fails it: then line by line.
        var joined = Data(count: data.count + 2)
        joined.withUnsafeMutableBytes { out in
            data.withUnsafeBytes { line in
                out[0] = 0x5B
                for i in 0..<line.count { out[i + 1] = line[i] == 0x0A ? 0x2C : line[i] }
            }
        }
        if data.last == 0x0A { joined.removeLast(2) } else { joined.removeLast(1) }
        joined.append(0x5D)
        let entries: [Entry] =
            (try? decoder.decode([Entry].self, from: joined))
            ?? data.split(separator: 0x0A).compactMap { try? decoder.decode(Entry.self, from: $0) }
        for entry in entries {
            if entry.metadata == nil {
                s.entries.removeValue(forKey: ExactPath(entry.key))
            } else {
                s.entries[ExactPath(entry.key)] = entry
            }
            s.lines += 1
        }
    }

    /// Rewrites the journal with one line per live entry (write a new file, then rename it over the old).
    private static func compact(_ s: inout State) {
        guard s.fd >= 0, let current = s.path else { return }
        let temporary = current + ".new"
        var bytes: [UInt8] = []
        for entry in s.entries.values { entry.appendLine(to: &bytes) }
        let body = Data(bytes)
        guard FileManager.default.createFile(atPath: temporary, contents: body, attributes: [.posixPermissions: 0o600]),
            rename(temporary, current) == 0
        else { return }
        close(s.fd)
        s.fd = open(current, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW)
        s.lines = s.entries.count
        s.torn = false
    }
}

extension MetadataIndex.Entry {
    /// The entry as one JSON line, as `JSONEncoder` would write it (nil fields left out), written by hand: the
    /// encoder was ~12 % of the daemon's CPU in an `rm -rf` (a tombstone per unlink) and in listings that learn.
    func appendLine(to out: inout [UInt8]) {
        out.append(contentsOf: #"{"key":"#.utf8)
        Self.appendString(key, to: &out)
        out.append(contentsOf: #","version":"#.utf8)
        Self.appendString(version, to: &out)
        out.append(contentsOf: #","size":"#.utf8)
        out.append(contentsOf: String(size).utf8)
        if let modified {
            out.append(contentsOf: #","modified":"#.utf8)
            out.append(contentsOf: String(modified).utf8)
        }
        if let metadata {
            out.append(contentsOf: #","metadata":{"#.utf8)
            for (index, name) in metadata.keys.sorted().enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                Self.appendString(name, to: &out)
                out.append(UInt8(ascii: ":"))
                Self.appendString(metadata[name]!, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(contentsOf: "}\n".utf8)
    }

    /// A JSON string: `"` and `\` escaped, control characters as `\u00XX`, the rest as UTF-8.
    private static func appendString(_ string: String, to out: inout [UInt8]) {
        func hex(_ nibble: UInt8) -> UInt8 { nibble < 10 ? 0x30 + nibble : 0x57 + nibble }
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out.append(UInt8(ascii: "\\"))
                out.append(byte)
            case 0..<0x20:
                out.append(contentsOf: #"\u00"#.utf8)
                out.append(hex(byte >> 4))
                out.append(hex(byte & 0xF))
            default:
                out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
