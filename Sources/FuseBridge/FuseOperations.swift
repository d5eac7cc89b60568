import CFuse
import FileSystem
import Foundation
import Glibc

/// The `fuse_lowlevel_ops` table. Each callback runs on a libfuse worker thread, finds the `FuseContext`
/// through the request's userdata, calls `MountTree` (the bucket's `FileSystem` with the control directory over
/// it; it may block on the store — fine on these threads) and replies once.
enum FuseOperations {
    /// `renameat2` flags (linux/fs.h), which Glibc's module does not export.
    static let renameNoReplace: UInt32 = 1 << 0
    static let renameExchange: UInt32 = 1 << 1

    static func context(_ req: fuse_req_t?) -> FuseContext {
        Unmanaged<FuseContext>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    /// The file system and the reply of a request; `operation` names it in the FUSE metrics.
    static func reply(_ req: fuse_req_t?, _ operation: String) -> (MountTree, FuseReply) {
        let ctx = context(req)
        return (
            ctx.tree,
            FuseReply(
                request: req!, timeout: ctx.tree.options.metadataTTL,
                operation: operation)
        )
    }

    static func caller(_ req: fuse_req_t?) -> Caller {
        let ctx = fuse_req_ctx(req)!.pointee
        return Caller(uid: ctx.uid, gid: ctx.gid)
    }

    /// A name from the kernel. One that is not valid UTF-8 cannot be a key as it is, and repairing it would
    /// rename the file: a change refuses it (EILSEQ), a lookup finds nothing.
    static func name(_ cString: UnsafePointer<CChar>?) throws(FSError) -> String {
        guard let name = String(validatingCString: cString!) else { throw FSError.illegalName }
        return name
    }

    static func makeTable() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            // Request sizes, capabilities and queue depth: FuseTuning says what and why.
            guard let conn, let userdata else { return }
            Unmanaged<FuseContext>.fromOpaque(userdata).takeUnretainedValue().tuning.negotiate(conn)
        }
        ops.lookup = { req, parent, cName in
            let (fs, r) = FuseOperations.reply(req, "lookup")
            r.run { () throws(FSError) in
                let name: String
                do throws(FSError) { name = try FuseOperations.name(cName) } catch { throw FSError.notFound }
                r.entry(try fs.lookup(parent: parent, name: name))
            }
        }
        ops.forget = { req, ino, count in
            FuseOperations.context(req).tree.forget(ino, count: count)
            fuse_reply_none(req)
        }
        ops.forget_multi = { req, count, forgets in
            let fs = FuseOperations.context(req).tree
            for i in 0..<count {
                fs.forget(forgets![i].ino, count: forgets![i].nlookup)
            }
            fuse_reply_none(req)
        }
        ops.getattr = { req, ino, _ in
            let (fs, r) = FuseOperations.reply(req, "getattr")
            r.run { () throws(FSError) in r.attributes(try fs.getattr(ino)) }
        }
        ops.setattr = { req, ino, attr, toSet, _ in
            let (fs, r) = FuseOperations.reply(req, "setattr")
            let changes = FuseOperations.attributeChanges(attr!.pointee, toSet)
            r.run { () throws(FSError) in r.attributes(try fs.setattr(ino, changes)) }
        }
        ops.readlink = { req, ino in
            let (fs, r) = FuseOperations.reply(req, "readlink")
            r.run { () throws(FSError) in
                let target = try fs.readlink(ino)
                fuse_reply_readlink(req, target)
            }
        }
        ops.mknod = { req, parent, cName, mode, rdev in
            let (fs, r) = FuseOperations.reply(req, "mknod")
            r.run { () throws(FSError) in
                r.entry(
                    try fs.mknod(
                        parent: parent, name: FuseOperations.name(cName), mode: mode,
                        rdev: UInt32(truncatingIfNeeded: rdev),
                        caller: FuseOperations.caller(req)))
            }
        }
        ops.mkdir = { req, parent, cName, mode in
            let (fs, r) = FuseOperations.reply(req, "mkdir")
            r.run { () throws(FSError) in
                r.entry(
                    try fs.mkdir(
                        parent: parent, name: FuseOperations.name(cName), permissions: mode,
                        caller: FuseOperations.caller(req)))
            }
        }
        ops.unlink = { req, parent, cName in
            let (fs, r) = FuseOperations.reply(req, "unlink")
            r.run { () throws(FSError) in
                try fs.unlink(parent: parent, name: FuseOperations.name(cName))
                r.ok()
            }
        }
        ops.rmdir = { req, parent, cName in
            let (fs, r) = FuseOperations.reply(req, "rmdir")
            r.run { () throws(FSError) in
                try fs.rmdir(parent: parent, name: FuseOperations.name(cName))
                r.ok()
            }
        }
        ops.symlink = { req, target, parent, cName in
            let (fs, r) = FuseOperations.reply(req, "symlink")
            r.run { () throws(FSError) in
                r.entry(
                    try fs.symlink(
                        parent: parent, name: FuseOperations.name(cName), target: FuseOperations.name(target),
                        caller: FuseOperations.caller(req)))
            }
        }
        ops.rename = { req, parent, cName, newParent, cNewName, flags in
            let (fs, r) = FuseOperations.reply(req, "rename")
            guard flags & FuseOperations.renameExchange == 0 else { return r.error(.invalidArgument) }
            r.run { () throws(FSError) in
                try fs.rename(
                    parent: parent, name: FuseOperations.name(cName), newParent: newParent,
                    newName: FuseOperations.name(cNewName),
                    noReplace: flags & FuseOperations.renameNoReplace != 0)
                r.ok()
            }
        }
        ops.link = { req, ino, newParent, cNewName in
            let (fs, r) = FuseOperations.reply(req, "link")
            r.run { () throws(FSError) in
                r.entry(try fs.link(ino, newParent: newParent, newName: FuseOperations.name(cNewName)))
            }
        }
        ops.open = { req, ino, fi in
            let (fs, r) = FuseOperations.reply(req, "open")
            r.run { () throws(FSError) in
                let opened = try fs.open(ino, flags: fi!.pointee.flags)
                fi!.pointee.fh = opened.handle
                fi!.pointee.keep_cache = opened.keepCache ? 1 : 0
                fuse_reply_open(req, fi)
            }
        }
        ops.create = { req, parent, cName, mode, fi in
            let (fs, r) = FuseOperations.reply(req, "create")
            r.run { () throws(FSError) in
                let created = try fs.create(
                    parent: parent, name: FuseOperations.name(cName), permissions: mode,
                    flags: fi!.pointee.flags, caller: FuseOperations.caller(req))
                fi!.pointee.fh = created.handle
                var param = FuseReply.entryParam(created.attributes, timeout: r.timeout)
                fuse_reply_create(req, &param, fi)
            }
        }
        ops.read = { req, ino, size, offset, fi in
            let (fs, r) = FuseOperations.reply(req, "read")
            r.run { () throws(FSError) in
                let data = try fs.read(ino, handle: fi!.pointee.fh, offset: UInt64(offset), size: size)
                let splice = FuseOperations.context(req).tuning.spliceWrite
                _ = data.withUnsafeBytes { bytes in
                    splice
                        ? FuseOperations.replyData(req, bytes)
                        : fuse_reply_buf(req, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
                }
            }
        }
        ops.write = { req, ino, buffer, size, offset, fi in
            let (fs, r) = FuseOperations.reply(req, "write")
            r.run { () throws(FSError) in
                let written = try fs.write(
                    ino, handle: fi!.pointee.fh, offset: UInt64(offset),
                    data: UnsafeRawBufferPointer(start: buffer, count: size))
                fuse_reply_write(req, written)
            }
        }
        ops.flush = { req, ino, fi in
            let (fs, r) = FuseOperations.reply(req, "flush")
            let uploaded = Result { () throws(FSError) in try fs.flush(ino, handle: fi!.pointee.fh) }
            // After the upload (what was written under a lock is in the store before another mount can take
            // it) and before the reply (the locks are gone when close returns), the closing process's POSIX
            // locks on the file end.
            fs.closeLockOwner(ino, owner: fi!.pointee.lock_owner)
            switch uploaded {
            case .success: r.ok()
            case .failure(let error): r.error(error)
            }
        }
        ops.fsync = { req, ino, _, fi in
            let (fs, r) = FuseOperations.reply(req, "fsync")
            r.run { () throws(FSError) in
                try fs.fsync(ino, handle: fi!.pointee.fh)
                r.ok()
            }
        }
        ops.release = { req, ino, fi in
            let (fs, r) = FuseOperations.reply(req, "release")
            fs.release(ino, handle: fi!.pointee.fh)
            // The kernel sends no LOCK_UN when a flocked file is closed: the lock ends here (NOTES).
            fs.releaseLocks(
                ino, handle: fi!.pointee.fh,
                flockOwner: fi!.pointee.flock_release != 0 ? fi!.pointee.lock_owner : nil)
            r.ok()
        }
        ops.flock = { req, ino, fi, operation in
            FuseOperations.flock(req, ino, fi!.pointee, operation)
        }
        ops.getlk = { req, ino, fi, lock in
            let (fs, _) = FuseOperations.reply(req, "getlk")
            var answer = lock!.pointee
            let request = FuseOperations.fileLock(answer, owner: fi!.pointee.lock_owner, handle: fi!.pointee.fh)
            // Another mount's lock is asked of the strategy (a round trip) when this mount cannot rule it out.
            if let holder = fs.testLockAcrossMounts(ino, request) {
                answer.l_type = Int16(holder.mode == .exclusive ? F_WRLCK : F_RDLCK)
                answer.l_whence = Int16(SEEK_SET)
                answer.l_start = Int(holder.start)
                answer.l_len = holder.end == .max ? 0 : Int(holder.end - holder.start + 1)
                answer.l_pid = Int32(bitPattern: holder.pid)
            } else {
                answer.l_type = Int16(F_UNLCK)
            }
            fuse_reply_lock(req, &answer)
        }
        ops.setlk = { req, ino, fi, lock, sleep in
            FuseOperations.setlk(req, ino, fi!.pointee, lock!.pointee, wait: sleep != 0)
        }
        ops.opendir = { req, ino, fi in
            let (fs, r) = FuseOperations.reply(req, "opendir")
            r.run { () throws(FSError) in
                fi!.pointee.fh = try fs.openDirectory(ino)
                fuse_reply_open(req, fi)
            }
        }
        ops.readdir = { req, ino, size, offset, fi in
            FuseOperations.readDirectory(req, ino, size, offset, fi, plus: false)
        }
        ops.readdirplus = { req, ino, size, offset, fi in
            FuseOperations.readDirectory(req, ino, size, offset, fi, plus: true)
        }
        ops.releasedir = { req, ino, fi in
            let (fs, r) = FuseOperations.reply(req, "releasedir")
            fs.releaseDirectory(ino, handle: fi!.pointee.fh)
            r.ok()
        }
        ops.fsyncdir = { req, _, _, _ in
            fuse_reply_err(req, 0)
        }
        ops.statfs = { req, _ in
            let (fs, _) = FuseOperations.reply(req, "statfs")
            let stats = fs.statfs()
            var sv = statvfs()
            sv.f_bsize = UInt(stats.blockSize)
            sv.f_frsize = UInt(stats.blockSize)
            sv.f_blocks = UInt(stats.totalBlocks)
            sv.f_bfree = UInt(stats.freeBlocks)
            sv.f_bavail = UInt(stats.freeBlocks)
            sv.f_files = UInt(stats.totalFiles)
            sv.f_ffree = UInt(stats.freeFiles)
            sv.f_favail = UInt(stats.freeFiles)
            sv.f_namemax = UInt(stats.maxNameLength)
            fuse_reply_statfs(req, &sv)
        }
        return ops
    }

    /// `flock(2)`: LOCK_SH / LOCK_EX (with LOCK_NB: answer at once) or LOCK_UN, owned by the open file description.
    static func flock(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: fuse_file_info, _ operation: Int32) {
        let (fs, r) = FuseOperations.reply(req, "flock")
        let owner = fi.lock_owner
        if operation & LOCK_UN != 0 {
            fs.unlock(ino, owner: owner, kind: .flock)
            return r.ok()
        }
        let mode: LockMode = operation & LOCK_EX != 0 ? .exclusive : .shared
        let pid = fuse_req_ctx(req)!.pointee.pid
        let request = FileLock(owner: owner, kind: .flock, mode: mode, pid: UInt32(bitPattern: pid), handle: fi.fh)
        lock(req, ino, request, wait: operation & LOCK_NB == 0)
    }

    /// `fcntl(2)` F_SETLK / F_SETLKW (and OFD locks, which arrive the same way with the description as owner).
    static func setlk(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: fuse_file_info, _ lock: Glibc.flock, wait: Bool) {
        let (fs, r) = FuseOperations.reply(req, "setlk")
        let request = fileLock(lock, owner: fi.lock_owner, handle: fi.fh)
        if lock.l_type == Int16(F_UNLCK) {
            fs.unlock(ino, owner: request.owner, kind: .posix, start: request.start, end: request.end)
            return r.ok()
        }
        FuseOperations.lock(req, ino, request, wait: wait)
    }

    /// Asks for `request`; a blocked waiting request is answered later from the lock waiter thread, and a FUSE
    /// interrupt (the caller got a signal) ends it with EINTR.
    static func lock(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ request: FileLock, wait: Bool) {
        let fs = FuseOperations.context(req).tree
        let pending = PendingRequest(request: req!)
        fs.setLock(ino, request, wait: wait, interrupted: { pending.interrupted }) { error in
            pending.answer(error)
        }
    }

    static func fileLock(_ lock: Glibc.flock, owner: UInt64, handle: UInt64) -> FileLock {
        let start = UInt64(max(0, lock.l_start))
        let end = lock.l_len <= 0 ? UInt64.max : start + UInt64(lock.l_len) - 1
        return FileLock(
            owner: owner, kind: .posix, mode: lock.l_type == Int16(F_WRLCK) ? .exclusive : .shared,
            start: start, end: end, pid: UInt32(bitPattern: lock.l_pid), handle: handle)
    }

    /// A read reply through `fuse_reply_data`, which libfuse vmsplices and splices when splice write is on.
    static func replyData(_ req: fuse_req_t?, _ bytes: UnsafeRawBufferPointer) -> Int32 {
        var vector = fuse_bufvec()
        vector.count = 1
        vector.buf = fuse_buf(
            size: bytes.count, flags: fuse_buf_flags(rawValue: 0),
            mem: UnsafeMutableRawPointer(mutating: bytes.baseAddress), fd: -1, pos: 0)
        return fuse_reply_data(req, &vector, fuse_buf_copy_flags(rawValue: 0))
    }

    static func readDirectory(
        _ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t,
        _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool
    ) {
        let (fs, r) = FuseOperations.reply(req, plus ? "readdirplus" : "readdir")
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buffer.deallocate() }
        var used = 0
        r.run { () throws(FSError) in
            try fs.readDirectory(ino, handle: fi!.pointee.fh, offset: UInt64(offset), plus: plus) { entry in
                let needed: Int
                if plus {
                    var param = FuseReply.entryParam(entry.attributes, timeout: r.timeout)
                    if !entry.complete { param.attr_timeout = 0 }  // defaults for want of metadata: stat asks
                    needed = fuse_add_direntry_plus(
                        req, buffer + used, size - used, entry.name, &param,
                        off_t(entry.nextOffset))
                } else {
                    var st = FuseReply.stat(entry.attributes)
                    needed = fuse_add_direntry(
                        req, buffer + used, size - used, entry.name, &st, off_t(entry.nextOffset))
                }
                guard needed <= size - used else { return false }
                used += needed
                return true
            }
            fuse_reply_buf(req, buffer, used)
        }
    }

    static func attributeChanges(_ attr: stat, _ toSet: Int32) -> AttributeChanges {
        var changes = AttributeChanges()
        if toSet & FUSE_SET_ATTR_MODE != 0 { changes.permissions = attr.st_mode & 0o7777 }
        if toSet & FUSE_SET_ATTR_UID != 0 { changes.uid = attr.st_uid }
        if toSet & FUSE_SET_ATTR_GID != 0 { changes.gid = attr.st_gid }
        if toSet & FUSE_SET_ATTR_SIZE != 0 { changes.size = UInt64(attr.st_size) }
        // UTIME_OMIT arrives as the flag left unset; UTIME_NOW as the _NOW flag.
        if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 {
            changes.mtime = .now()
        } else if toSet & FUSE_SET_ATTR_MTIME != 0 {
            changes.mtime = FileTime(seconds: Int64(attr.st_mtim.tv_sec), nanoseconds: UInt32(attr.st_mtim.tv_nsec))
        }
        if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 {
            changes.atime = .now()
        } else if toSet & FUSE_SET_ATTR_ATIME != 0 {
            changes.atime = FileTime(seconds: Int64(attr.st_atim.tv_sec), nanoseconds: UInt32(attr.st_atim.tv_nsec))
        }
        return changes
    }
}
