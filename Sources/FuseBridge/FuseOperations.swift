import CFuse
import FileSystem
import Foundation
import Glibc

/// The `fuse_lowlevel_ops` table. Each callback runs on a libfuse worker thread, finds the `FuseContext`
/// through the request's userdata, calls `FileSystem` (which may block on the store — fine on these threads)
/// and replies once.
enum FuseOperations {
    /// `renameat2` flags (linux/fs.h), which Glibc's module does not export.
    static let renameNoReplace: UInt32 = 1 << 0
    static let renameExchange: UInt32 = 1 << 1

    static func context(_ req: fuse_req_t?) -> FuseContext {
        Unmanaged<FuseContext>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    static func reply(_ req: fuse_req_t?) -> (FileSystem, FuseReply) {
        let ctx = context(req)
        return (ctx.fileSystem, FuseReply(request: req!, timeout: ctx.fileSystem.options.metadataTTL))
    }

    static func caller(_ req: fuse_req_t?) -> Caller {
        let ctx = fuse_req_ctx(req)!.pointee
        return Caller(uid: ctx.uid, gid: ctx.gid)
    }

    static func name(_ cString: UnsafePointer<CChar>?) -> String {
        String(cString: cString!)
    }

    static func makeTable() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            guard let conn else { return }
            // Larger requests than the 128 KiB default: fewer round trips through the kernel (NOTES: 1 MiB max).
            conn.pointee.max_write = 1 << 20
            conn.pointee.max_readahead = 1 << 20
            if conn.pointee.capable & UInt32(FUSE_CAP_ASYNC_READ) != 0 {
                conn.pointee.want |= UInt32(FUSE_CAP_ASYNC_READ)
            }
            _ = userdata
        }
        ops.lookup = { req, parent, cName in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in r.entry(try fs.lookup(parent: parent, name: FuseOperations.name(cName))) }
        }
        ops.forget = { req, ino, count in
            FuseOperations.context(req).fileSystem.forget(ino, count: count)
            fuse_reply_none(req)
        }
        ops.forget_multi = { req, count, forgets in
            let fs = FuseOperations.context(req).fileSystem
            for i in 0..<count {
                fs.forget(forgets![i].ino, count: forgets![i].nlookup)
            }
            fuse_reply_none(req)
        }
        ops.getattr = { req, ino, _ in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in r.attributes(try fs.getattr(ino)) }
        }
        ops.setattr = { req, ino, attr, toSet, _ in
            let (fs, r) = FuseOperations.reply(req)
            let changes = FuseOperations.attributeChanges(attr!.pointee, toSet)
            r.run { () throws(FSError) in r.attributes(try fs.setattr(ino, changes)) }
        }
        ops.readlink = { req, ino in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                let target = try fs.readlink(ino)
                fuse_reply_readlink(req, target)
            }
        }
        ops.mknod = { req, parent, cName, mode, _ in
            let (fs, r) = FuseOperations.reply(req)
            // Only regular files can live in a bucket; mknod of one is a create without an open.
            guard mode & UInt32(Glibc.S_IFMT) == UInt32(Glibc.S_IFREG) else { return r.error(.notSupported) }
            r.run { () throws(FSError) in
                let created = try fs.create(parent: parent, name: FuseOperations.name(cName), permissions: mode, flags: O_WRONLY,
                                            caller: FuseOperations.caller(req))
                try fs.flush(created.attributes.ino, handle: created.handle)
                fs.release(created.attributes.ino, handle: created.handle)
                r.entry(try fs.getattr(created.attributes.ino))
            }
        }
        ops.mkdir = { req, parent, cName, mode in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                r.entry(try fs.mkdir(parent: parent, name: FuseOperations.name(cName), permissions: mode, caller: FuseOperations.caller(req)))
            }
        }
        ops.unlink = { req, parent, cName in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                try fs.unlink(parent: parent, name: FuseOperations.name(cName))
                r.ok()
            }
        }
        ops.rmdir = { req, parent, cName in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                try fs.rmdir(parent: parent, name: FuseOperations.name(cName))
                r.ok()
            }
        }
        ops.symlink = { req, target, parent, cName in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                r.entry(try fs.symlink(parent: parent, name: FuseOperations.name(cName), target: FuseOperations.name(target), caller: FuseOperations.caller(req)))
            }
        }
        ops.rename = { req, parent, cName, newParent, cNewName, flags in
            let (fs, r) = FuseOperations.reply(req)
            guard flags & FuseOperations.renameExchange == 0 else { return r.error(.invalidArgument) }
            r.run { () throws(FSError) in
                try fs.rename(parent: parent, name: FuseOperations.name(cName), newParent: newParent, newName: FuseOperations.name(cNewName),
                              noReplace: flags & FuseOperations.renameNoReplace != 0)
                r.ok()
            }
        }
        ops.link = { req, _, _, _ in
            // Objects cannot share content by reference.
            fuse_reply_err(req, EPERM)
        }
        ops.open = { req, ino, fi in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                let opened = try fs.open(ino, flags: fi!.pointee.flags)
                fi!.pointee.fh = opened.handle
                fi!.pointee.keep_cache = opened.keepCache ? 1 : 0
                fuse_reply_open(req, fi)
            }
        }
        ops.create = { req, parent, cName, mode, fi in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                let created = try fs.create(parent: parent, name: FuseOperations.name(cName), permissions: mode,
                                            flags: fi!.pointee.flags, caller: FuseOperations.caller(req))
                fi!.pointee.fh = created.handle
                var param = FuseReply.entryParam(created.attributes, timeout: r.timeout)
                fuse_reply_create(req, &param, fi)
            }
        }
        ops.read = { req, ino, size, offset, fi in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                let data = try fs.read(ino, handle: fi!.pointee.fh, offset: UInt64(offset), size: size)
                _ = data.withUnsafeBytes { fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
            }
        }
        ops.write = { req, ino, buffer, size, offset, fi in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                let written = try fs.write(ino, handle: fi!.pointee.fh, offset: UInt64(offset),
                                           data: UnsafeRawBufferPointer(start: buffer, count: size))
                fuse_reply_write(req, written)
            }
        }
        ops.flush = { req, ino, fi in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                try fs.flush(ino, handle: fi!.pointee.fh)
                r.ok()
            }
        }
        ops.fsync = { req, ino, _, fi in
            let (fs, r) = FuseOperations.reply(req)
            r.run { () throws(FSError) in
                try fs.fsync(ino, handle: fi!.pointee.fh)
                r.ok()
            }
        }
        ops.release = { req, ino, fi in
            let (fs, r) = FuseOperations.reply(req)
            fs.release(ino, handle: fi!.pointee.fh)
            r.ok()
        }
        ops.opendir = { req, ino, fi in
            let (fs, r) = FuseOperations.reply(req)
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
        ops.releasedir = { req, _, fi in
            let (fs, r) = FuseOperations.reply(req)
            fs.releaseDirectory(handle: fi!.pointee.fh)
            r.ok()
        }
        ops.fsyncdir = { req, _, _, _ in
            fuse_reply_err(req, 0)
        }
        ops.statfs = { req, _ in
            let (fs, _) = FuseOperations.reply(req)
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

    static func readDirectory(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t,
                              _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool) {
        let (fs, r) = FuseOperations.reply(req)
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buffer.deallocate() }
        var used = 0
        r.run { () throws(FSError) in
            try fs.readDirectory(ino, handle: fi!.pointee.fh, offset: UInt64(offset), plus: plus) { entry in
                let needed: Int
                if plus {
                    var param = FuseReply.entryParam(entry.attributes, timeout: r.timeout)
                    needed = fuse_add_direntry_plus(req, buffer + used, size - used, entry.name, &param,
                                                    off_t(entry.nextOffset))
                } else {
                    var st = FuseReply.stat(entry.attributes)
                    needed = fuse_add_direntry(req, buffer + used, size - used, entry.name, &st, off_t(entry.nextOffset))
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
        if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 {
            changes.mtime = .now()
        } else if toSet & FUSE_SET_ATTR_MTIME != 0 {
            changes.mtime = FileTime(seconds: Int64(attr.st_mtim.tv_sec), nanoseconds: UInt32(attr.st_mtim.tv_nsec))
        }
        return changes
    }
}
