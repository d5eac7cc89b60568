import Foundation
import Glibc
import Logging
import ObjectStore

/// Recovery of the staged files of mounts that are gone (see `StagingJournal`).
extension StagingJournal {
    /// What one `recover` did.
    public struct RecoveryReport: Sendable, Equatable {
        /// Finished uploading (the object had not changed).
        public var uploaded: [String] = []
        /// Put in the recovery folder (changed in the store, other store, upload failed, no base known).
        public var kept: [String] = []
        /// Where each kept file's copy went (key → `.data` path in the recovery folder).
        public var savedCopies: [String: String] = [:]
        /// Sidecars that could not be decoded, left in place.
        public var unreadable: [String] = []
        /// Sidecars whose staged file was gone.
        public var missing: [String] = []

        public init() {}
    }

    /// Handles every sidecar in the staging folder whose mount is gone. Call at mount, before serving.
    @discardableResult
    public func recover(store target: any ObjectStore, recovery: RecoveryFolder) -> RecoveryReport {
        var report = RecoveryReport()
        let folder = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard folder >= 0 else {
            logger.warning("cannot read the staging folder for crash recovery", metadata: ["folder": "\(directory)"])
            return report
        }
        defer { close(folder) }
        var owners: [String: Bool] = [:]  // mount id → gone
        var stillOwned: Set<String> = []
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        for name in Self.entries(of: folder) where name.hasSuffix(Self.sidecarSuffix) {
            let stem = String(name.dropLast(Self.sidecarSuffix.count))
            guard Self.isStagedName(stem) else { continue }
            guard let data = Self.read(name, in: folder), let record = try? decoder.decode(Record.self, from: data),
                Self.isMountID(record.mountID)
            else {
                logger.error(
                    "unreadable staging journal entry; left in place",
                    metadata: ["entry": "\(directory)/\(name)"])
                report.unreadable.append(name)
                continue
            }
            let gone = owners[record.mountID] ?? ownerIsGone(record.mountID, in: folder)
            owners[record.mountID] = gone
            guard gone else { continue }
            if !recoverOne(stem, record: record, in: folder, store: target, recovery: recovery, report: &report) {
                stillOwned.insert(record.mountID)
            }
        }
        removeLocksOfGoneMounts(in: folder, keeping: stillOwned)
        return report
    }

    /// Uploads or keeps one file; false when it is still there (the next mount tries again).
    private func recoverOne(
        _ stem: String, record: Record, in folder: Int32, store target: any ObjectStore,
        recovery: RecoveryFolder, report: inout RecoveryReport
    ) -> Bool {
        let sidecarName = stem + Self.sidecarSuffix
        let fd = openat(folder, stem, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        var status = stat()
        guard fd >= 0, fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            if fd >= 0 { close(fd) }
            logger.error(
                "a stopped daemon's staged file is gone; nothing to recover",
                metadata: [
                    "key": "\(record.key)", "store": "\(record.store)",
                ])
            unlinkat(folder, sidecarName, 0)
            report.missing.append(record.key)
            return true
        }
        defer { close(fd) }
        let base = Self.decode(record.base)
        let size = "\(status.st_size)"
        var reason = "the daemon (pid \(record.pid)) stopped before uploading this file"
        if record.store == store, base != .unknown, record.closed {
            let condition: PutCondition
            switch base {
            case .absent: condition = .ifAbsent
            case .version(let v): condition = .ifVersionMatches(v)
            case .unknown: condition = .none
            }
            do {
                let options = PutOptions(
                    contentType: record.contentType, metadata: record.metadata,
                    condition: condition)
                try target.put(record.key, body: .file(path: "\(directory)/\(stem)"), options: options)
                logger.warning(
                    "recovered a file a stopped daemon had not uploaded: uploaded now",
                    metadata: [
                        "key": "\(record.key)", "bytes": "\(size)", "pid": "\(record.pid)",
                    ])
                unlinkat(folder, stem, 0)
                unlinkat(folder, sidecarName, 0)
                report.uploaded.append(record.key)
                return true
            } catch .preconditionFailed {
                reason += "; the object changed in the store since, so it was not overwritten"
            } catch .notFound {
                reason += "; the object was deleted from the store since, so it was not written back"
            } catch {
                reason += "; uploading it at the next mount failed: \(error)"
            }
        } else if !record.closed {
            reason += " (it was still open for writing, so it may be cut off; not published)"
        } else if base == .unknown {
            reason += "; the version it was based on is unknown, so it was not uploaded"
        } else {
            reason += "; it belongs to \(record.store), not to this mount's store"
        }
        let recoveryBase: RecoveryFolder.Base? =
            switch base {
            case .absent: .absent
            case .version(let v): .version(v)
            case .unknown: nil
            }
        guard
            let saved = recovery.save(
                contentOf: fd, key: record.key, reason: reason, base: recoveryBase,
                store: record.store, context: record.context,
                describing: "\(directory)/\(stem)")
        else { return false }
        unlinkat(folder, stem, 0)
        unlinkat(folder, sidecarName, 0)
        report.kept.append(record.key)
        report.savedCopies[record.key] = saved
        return true
    }

    /// A mount is gone when its lock file is missing or its lock can be taken (the kernel drops a dead process's
    /// `flock`s). This run's own mount is never gone.
    private func ownerIsGone(_ id: String, in folder: Int32) -> Bool {
        guard id != mountID else { return false }
        let fd = openat(folder, "mount-\(id).lock", O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return errno == ENOENT }
        defer { close(fd) }
        return flock(fd, LOCK_EX | LOCK_NB) == 0
    }

    private func removeLocksOfGoneMounts(in folder: Int32, keeping owned: Set<String>) {
        for name in Self.entries(of: folder) where name.hasPrefix("mount-") && name.hasSuffix(".lock") {
            let id = String(name.dropFirst(6).dropLast(5))
            guard Self.isMountID(id), !owned.contains(id), ownerIsGone(id, in: folder) else { continue }
            let remaining = Self.entries(of: folder).contains { entry in
                entry.hasSuffix(Self.sidecarSuffix)
                    && (Self.read(entry, in: folder).map {
                        String(decoding: $0, as: UTF8.self).contains(id)
                    } ?? false)
            }
            if !remaining { unlinkat(folder, name, 0) }
        }
        try? RecoveryFolder.syncDirectory(directory)
    }

    // MARK: - Names

    /// `staged-XXXXXX` as `mkstemp` makes them: nothing else in the folder is ever opened as staged content.
    static func isStagedName(_ name: String) -> Bool {
        name.hasPrefix("staged-") && name.utf8.count == 13
            && name.utf8.dropFirst(7).allSatisfy { isalnum(Int32($0)) != 0 }
    }

    static func isMountID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64 && id.utf8.allSatisfy { isxdigit(Int32($0)) != 0 || $0 == UInt8(ascii: "-") }
    }

    /// The names in an open folder (but `.` and `..`).
    static func entries(of folder: Int32) -> [String] {
        let copy = openat(folder, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard copy >= 0, let stream = fdopendir(copy) else { return [] }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            var raw = entry.pointee.d_name
            let name = withUnsafeBytes(of: &raw) {
                String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// A small regular file of the folder, never through a link.
    static func read(_ name: String, in folder: Int32) -> Data? {
        let fd = openat(folder, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        return try? handle.read(upToCount: 1 << 20)
    }
}
