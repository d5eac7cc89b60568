import Foundation
import ObjectStore
import Records

/// What the kernel sees: the bucket's tree (`FileSystem`) with the read-only `.bucketfs/` control directory
/// (`ControlDirectory`) laid over its root. Every FUSE operation comes here first; this is the one place that
/// tells the two apart, so `FileSystem` knows nothing of the control directory beyond the lock documents it
/// shows.
///
/// The control directory's inodes are a range of their own (`ControlDirectory.firstIno` and up), so an inode
/// routes by number. A name routes by its parent: inside the control directory, or `.bucketfs` at the root, which
/// shadows a real key of that name (never listed, never changed through the mount).
public final class MountTree: Sendable {
    public let files: FileSystem
    public let control: ControlDirectory?

    /// The cookie after the control directory's entry in the root listing: past every real entry's offset.
    static let afterControlEntry: UInt64 = 1 << 62

    public init(files: FileSystem, control settings: ControlDirectory.Settings? = nil) {
        self.files = files
        self.control = settings.map {
            ControlDirectory(
                settings: $0,
                storeFolder: ObjectStoreRecordBackend(
                    store: files.store, prefix: files.options.prefix + $0.name + "/"),
                uid: files.options.uid, gid: files.options.gid)
        }
        control?.lockFiles.withLock { lockFiles in
            lockFiles.provide = { [weak files] in files?.lockDocuments() ?? [:] }
        }
    }

    public var options: FileSystemOptions { files.options }

    /// The control directory, when `ino` is one of its inodes.
    private func control(owning ino: UInt64) -> ControlDirectory? {
        guard let control, control.owns(ino) else { return nil }
        return control
    }

    /// Refuses a namespace change inside the control directory or of its name at the root.
    private func requireOutsideControl(parent: UInt64, name: String) throws(FSError) {
        if control?.refusesChange(parent: parent, name: name) == true { throw FSError.readOnly }
    }

    // MARK: Names and attributes

    public func lookup(parent: UInt64, name: String) throws(FSError) -> FileAttributes {
        if let control {
            if control.owns(parent) { return try control.lookup(parent: parent, name: name) }
            if parent == InodeTable.rootIno && name == control.name { return control.rootEntryAttributes() }
        }
        return try files.lookup(parent: parent, name: name)
    }

    public func forget(_ ino: UInt64, count: UInt64) {
        if control(owning: ino) != nil { return }  // its inodes live as long as the mount
        files.forget(ino, count: count)
    }

    public func getattr(_ ino: UInt64) throws(FSError) -> FileAttributes {
        if let control = control(owning: ino) { return try control.getattr(ino) }
        return try files.getattr(ino)
    }

    public func setattr(_ ino: UInt64, _ changes: AttributeChanges) throws(FSError) -> FileAttributes {
        if control(owning: ino) != nil { throw FSError.readOnly }
        return try files.setattr(ino, changes)
    }

    public func readlink(_ ino: UInt64) throws(FSError) -> String {
        if control(owning: ino) != nil { throw FSError.invalidArgument }  // it holds no links
        return try files.readlink(ino)
    }

    public func statfs() -> FileSystemStats { files.statfs() }

    // MARK: Namespace changes

    public func mknod(parent: UInt64, name: String, mode: UInt32, rdev: UInt32, caller: Caller) throws(FSError)
        -> FileAttributes
    {
        try requireOutsideControl(parent: parent, name: name)
        return try files.mknod(parent: parent, name: name, mode: mode, rdev: rdev, caller: caller)
    }

    public func mkdir(parent: UInt64, name: String, permissions: UInt32, caller: Caller) throws(FSError)
        -> FileAttributes
    {
        try requireOutsideControl(parent: parent, name: name)
        return try files.mkdir(parent: parent, name: name, permissions: permissions, caller: caller)
    }

    public func symlink(parent: UInt64, name: String, target: String, caller: Caller) throws(FSError)
        -> FileAttributes
    {
        try requireOutsideControl(parent: parent, name: name)
        return try files.symlink(parent: parent, name: name, target: target, caller: caller)
    }

    public func create(parent: UInt64, name: String, permissions: UInt32, flags: Int32, caller: Caller)
        throws(FSError) -> (attributes: FileAttributes, handle: UInt64)
    {
        try requireOutsideControl(parent: parent, name: name)
        return try files.create(parent: parent, name: name, permissions: permissions, flags: flags, caller: caller)
    }

    public func link(_ ino: UInt64, newParent: UInt64, newName: String) throws(FSError) -> FileAttributes {
        try requireOutsideControl(parent: newParent, name: newName)
        if control(owning: ino) != nil { throw FSError.readOnly }
        return try files.link(ino, newParent: newParent, newName: newName)
    }

    public func unlink(parent: UInt64, name: String) throws(FSError) {
        try requireOutsideControl(parent: parent, name: name)
        try files.unlink(parent: parent, name: name)
    }

    public func rmdir(parent: UInt64, name: String) throws(FSError) {
        try requireOutsideControl(parent: parent, name: name)
        try files.rmdir(parent: parent, name: name)
    }

    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String, noReplace: Bool)
        throws(FSError)
    {
        try requireOutsideControl(parent: parent, name: name)
        try requireOutsideControl(parent: newParent, name: newName)
        try files.rename(parent: parent, name: name, newParent: newParent, newName: newName, noReplace: noReplace)
    }

    // MARK: Files

    public func open(_ ino: UInt64, flags: Int32) throws(FSError) -> FileSystem.OpenResult {
        if let control = control(owning: ino) {
            return FileSystem.OpenResult(handle: try control.open(ino, flags: flags), keepCache: false)
        }
        return try files.open(ino, flags: flags)
    }

    public func read(_ ino: UInt64, handle: UInt64, offset: UInt64, size: Int) throws(FSError) -> Data {
        if let control = control(owning: ino) { return try control.read(handle: handle, offset: offset, size: size) }
        return try files.read(ino, handle: handle, offset: offset, size: size)
    }

    public func write(_ ino: UInt64, handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer) throws(FSError)
        -> Int
    {
        if control(owning: ino) != nil { throw FSError.readOnly }  // opened read-only; never reached
        return try files.write(ino, handle: handle, offset: offset, data: data)
    }

    public func flush(_ ino: UInt64, handle: UInt64) throws(FSError) {
        if control(owning: ino) != nil { return }  // nothing to upload
        try files.flush(ino, handle: handle)
    }

    public func fsync(_ ino: UInt64, handle: UInt64) throws(FSError) {
        if control(owning: ino) != nil { return }
        try files.fsync(ino, handle: handle)
    }

    public func release(_ ino: UInt64, handle: UInt64) {
        if let control = control(owning: ino) { return control.release(handle: handle) }
        files.release(ino, handle: handle)
    }

    // MARK: Directories

    public func openDirectory(_ ino: UInt64) throws(FSError) -> UInt64 {
        if control(owning: ino) != nil { return 0 }  // its listings need no handle
        return try files.openDirectory(ino)
    }

    /// The root listing is the bucket's (less a real `.bucketfs`) and then the control directory's entry.
    public func readDirectory(
        _ ino: UInt64, handle: UInt64, offset: UInt64, plus: Bool,
        add: (DirectoryEntry) -> Bool
    ) throws(FSError) {
        if let control = control(owning: ino) { return try control.readDirectory(ino, offset: offset, add: add) }
        guard ino == InodeTable.rootIno, let control else {
            return try files.readDirectory(ino, handle: handle, offset: offset, plus: plus, add: add)
        }
        guard offset != Self.afterControlEntry else { return }
        var full = false
        try files.readDirectory(ino, handle: handle, offset: offset, plus: plus) { entry in
            if entry.name == control.name {
                // Shadowed: skipped (its cookie unused), and the lookup a listing with attributes counts undone.
                if plus { files.forget(entry.attributes.ino, count: 1) }
                return true
            }
            full = !add(entry)
            return !full
        }
        if !full {
            _ = add(
                DirectoryEntry(
                    name: control.name, attributes: control.rootEntryAttributes(),
                    nextOffset: Self.afterControlEntry))
        }
    }

    public func releaseDirectory(_ ino: UInt64, handle: UInt64) {
        if control(owning: ino) != nil { return }
        files.releaseDirectory(handle: handle)
    }

    // MARK: Locks (the control directory's files lock like any other, within the mount's lock table)

    public func setLock(
        _ ino: UInt64, _ request: FileLock, wait: Bool, interrupted: @escaping @Sendable () -> Bool,
        reply: @escaping @Sendable (FSError?) -> Void
    ) {
        files.setLock(ino, request, wait: wait, interrupted: interrupted, reply: reply)
    }

    public func unlock(_ ino: UInt64, owner: UInt64, kind: LockKind, start: UInt64 = 0, end: UInt64 = .max) {
        files.unlock(ino, owner: owner, kind: kind, start: start, end: end)
    }

    public func closeLockOwner(_ ino: UInt64, owner: UInt64) { files.closeLockOwner(ino, owner: owner) }

    public func releaseLocks(_ ino: UInt64, handle: UInt64, flockOwner: UInt64?) {
        files.releaseLocks(ino, handle: handle, flockOwner: flockOwner)
    }

    public func testLockAcrossMounts(_ ino: UInt64, _ request: FileLock) -> FileLock? {
        files.testLockAcrossMounts(ino, request)
    }
}
