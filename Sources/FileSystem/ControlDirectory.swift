import Foundation
import Records
import Synchronization

/// The read-only `.bucketfs/` directory at the mount root (name configurable): the mount's records and state
/// as files that `ls -l`, `cat` and `jq` read.
///
/// It takes the place of the real `<prefix>.bucketfs/` folder of the store, and presents what is there rather than
/// hiding it: record folders (`sessions/`, `checkpoints/`, `uploads/`, `conversations/`, `tasks/`, `buffers/`,
/// `registry/`, `events/`) come from the records backend (the same objects when records live in the bucket), every
/// other real key under the folder (the object strategy's `locks/<path>.lock`) from the store, and generated files are
/// added: `metrics`, `health.json`, `config.json`, and `locks/<path>.json` for each file this mount holds locks on or
/// waits for.
///
/// Inodes are in a reserved range above the inode table's. A file's content is rendered when the kernel asks
/// for its attributes and kept for the opens that follow, so the size the kernel caches is the size read.
public final class ControlDirectory: Sendable {
    /// What the daemon provides; all closures are called on libfuse threads and may block briefly.
    public struct Settings: Sendable {
        public var name: String
        /// Where records are; nil: the store's `<prefix>.bucketfs/`.
        public var records: (any RecordBackend)?
        public var metrics: @Sendable () -> String
        public var health: @Sendable () -> Data
        public var config: @Sendable () -> Data
        /// Permission bits of its files; its directories get x where the files have r. The default lets the
        /// mount's owner alone read them: under allow_other they would show every user the lock and upload
        /// records (which name every file) and a GCS mount's in-flight parts.
        public var fileMode: UInt32

        public init(
            name: String = ".bucketfs", records: (any RecordBackend)? = nil,
            metrics: @escaping @Sendable () -> String = { "" },
            health: @escaping @Sendable () -> Data = { Data("{}\n".utf8) },
            config: @escaping @Sendable () -> Data = { Data("{}\n".utf8) },
            fileMode: UInt32 = 0o400
        ) {
            self.name = name
            self.records = records
            self.fileMode = fileMode & 0o444
            self.metrics = metrics
            self.health = health
            self.config = config
        }
    }

    static let firstIno: UInt64 = 1 << 60
    static let recordFolders = Set(RecordKey.folders.map { String($0.dropLast()) })
    static let generatedFiles = ["metrics", "health.json", "config.json"]
    static let fixedDirectories = ["sessions", "checkpoints", "uploads", "locks"]

    public let name: String
    let settings: Settings
    /// The real keys under `<prefix><name>/`.
    let storeFolder: any RecordBackend
    let records: any RecordBackend
    let owner: (uid: UInt32, gid: UInt32)
    let created = FileTime.now()

    private struct State {
        var inoByPath: [String: UInt64] = ["": ControlDirectory.firstIno]
        var pathByIno: [UInt64: String] = [ControlDirectory.firstIno: ""]
        /// Content rendered at the last attribute request, by inode.
        var rendered: [UInt64: Data] = [:]
        var open: [UInt64: Data] = [:]
        var nextHandle: UInt64 = 1 << 62
    }

    private let state = Mutex(State())
    /// This mount's lock table as `locks/<file>.json` documents; set by the filesystem.
    let lockFiles = Mutex(LockFiles())

    /// The provider, held in a struct, not as `Mutex<Closure?>`: each `withLock { $0 }` of a bare closure wrapped it in
    /// two more reabstraction thunks and wrote it back, so every call grew slower until the stack overflowed (a daemon
    /// crash after a few million FUSE operations; see docs/DEVELOPMENT.md, "Closures behind a Mutex").
    struct LockFiles: Sendable {
        var provide: (@Sendable () -> [String: Data])?
    }

    init(settings: Settings, storeFolder: any RecordBackend, uid: UInt32, gid: UInt32) {
        self.settings = settings
        self.name = settings.name
        self.storeFolder = storeFolder
        self.records = settings.records ?? storeFolder
        self.owner = (uid, gid)
    }

    public var rootIno: UInt64 { Self.firstIno }

    func owns(_ ino: UInt64) -> Bool { ino >= Self.firstIno }

    // MARK: Names

    func lookup(parent: UInt64, name child: String) throws(FSError) -> FileAttributes {
        let path = try self.path(of: parent)
        let full = path.isEmpty ? child : path + "/" + child
        guard let attributes = try attributes(of: full) else { throw FSError.notFound }
        return attributes
    }

    func getattr(_ ino: UInt64) throws(FSError) -> FileAttributes {
        guard let attributes = try attributes(of: try path(of: ino)) else { throw FSError.notFound }
        return attributes
    }

    /// The root entry as the mount root's listing shows it.
    func rootEntryAttributes() -> FileAttributes { directoryAttributes(Self.firstIno) }

    func readDirectory(_ ino: UInt64, offset: UInt64, add: (DirectoryEntry) -> Bool) throws(FSError) {
        let path = try self.path(of: ino)
        var entries = [(".", directoryAttributes(ino))]
        for child in try children(of: path) {
            let full = path.isEmpty ? child : path + "/" + child
            if let attributes = try attributes(of: full) { entries.append((child, attributes)) }
        }
        guard offset < UInt64(entries.count) else { return }
        for (index, entry) in entries.enumerated().dropFirst(Int(offset)) {
            guard add(DirectoryEntry(name: entry.0, attributes: entry.1, nextOffset: UInt64(index + 1))) else { break }
        }
    }

    // MARK: Content

    func open(_ ino: UInt64, flags: Int32) throws(FSError) -> UInt64 {
        guard flags & O_ACCMODE == O_RDONLY, flags & O_TRUNC == 0 else { throw FSError.readOnly }
        let path = try self.path(of: ino)
        var content = state.withLock { $0.rendered[ino] }
        if content == nil { content = try render(path) }
        guard let content else { throw FSError.isDirectory }
        return state.withLock { s in
            s.nextHandle += 1
            s.open[s.nextHandle] = content
            return s.nextHandle
        }
    }

    func read(handle: UInt64, offset: UInt64, size: Int) throws(FSError) -> Data {
        guard let content = state.withLock({ $0.open[handle] }) else { throw FSError.badHandle }
        guard offset < UInt64(content.count) else { return Data() }
        return content.subdata(in: Int(offset)..<min(content.count, Int(offset) + size))
    }

    func release(handle: UInt64) {
        _ = state.withLock { $0.open.removeValue(forKey: handle) }
    }

    /// A change to the control directory or inside it.
    func refusesChange(parent: UInt64, name child: String) -> Bool {
        owns(parent) || (parent == InodeTable.rootIno && child == name)
    }

    // MARK: The tree

    private func path(of ino: UInt64) throws(FSError) -> String {
        guard let path = state.withLock({ $0.pathByIno[ino] }) else { throw FSError.notFound }
        return path
    }

    private func ino(for path: String) -> UInt64 {
        state.withLock { s in
            if let ino = s.inoByPath[path] { return ino }
            let ino = Self.firstIno + UInt64(s.inoByPath.count)
            s.inoByPath[path] = ino
            s.pathByIno[ino] = path
            return ino
        }
    }

    /// Directories are the fixed ones and any prefix of a key; files are generated ones and keys.
    private func attributes(of path: String) throws(FSError) -> FileAttributes? {
        if path.isEmpty { return directoryAttributes(Self.firstIno) }
        if let content = try render(path) {
            let ino = ino(for: path)
            state.withLock { $0.rendered[ino] = content }
            return FileAttributes(
                ino: ino, kind: .file, size: UInt64(content.count), permissions: settings.fileMode,
                uid: owner.uid, gid: owner.gid, mtime: .now(), ctime: .now())
        }
        let fixed = !path.contains("/") && Self.fixedDirectories.contains(path)
        if fixed { return directoryAttributes(ino(for: path)) }
        let isDirectory = try !children(of: path).isEmpty
        return isDirectory ? directoryAttributes(ino(for: path)) : nil
    }

    private func directoryAttributes(_ ino: UInt64) -> FileAttributes {
        FileAttributes(
            ino: ino, kind: .directory, size: 0, permissions: directoryMode, uid: owner.uid,
            gid: owner.gid, mtime: created, ctime: created)
    }

    /// r and x for whoever may read the files: 0400 → 0500, 0444 → 0555.
    var directoryMode: UInt32 { settings.fileMode | (settings.fileMode >> 2) }

    /// A file's bytes, or nil when `path` is no file.
    private func render(_ path: String) throws(FSError) -> Data? {
        switch path {
        case "metrics": return Data(settings.metrics().utf8)
        case "health.json": return settings.health()
        case "config.json": return settings.config()
        default: break
        }
        if path.hasPrefix("locks/"), let generated = currentLockFiles()[String(path.dropFirst("locks/".count))] {
            return generated
        }
        do {
            return try backend(for: path).read(path)?.data
        } catch {
            throw FSError.io("\(name)/\(path): \(error)")
        }
    }

    private func children(of path: String) throws(FSError) -> [String] {
        var names = Set<String>()
        if path.isEmpty {
            names.formUnion(Self.generatedFiles)
            names.formUnion(Self.fixedDirectories)
        }
        if path == "locks" { names.formUnion(currentLockFiles().keys) }
        let prefix = path.isEmpty ? "" : path + "/"
        do {
            var sources = [backend(for: path)]
            if path.isEmpty, settings.records != nil { sources.append(records) }
            for source in sources {
                for key in try source.keys(under: prefix) {
                    if let first = key.dropFirst(prefix.count).split(separator: "/").first {
                        names.insert(String(first))
                    }
                }
            }
        } catch {
            throw FSError.io("\(name)/\(path): \(error)")
        }
        return names.sorted()
    }

    private func backend(for path: String) -> any RecordBackend {
        let top = path.split(separator: "/").first.map(String.init) ?? ""
        return Self.recordFolders.contains(top) ? records : storeFolder
    }

    private func currentLockFiles() -> [String: Data] {
        lockFiles.withLock { $0.provide }?() ?? [:]
    }
}
