import CFuse
import FileSystem
import Foundation
import Glibc
import Logging

/// The session pointer, for notifications sent from lock threads; libfuse's notify calls are thread-safe.
struct SessionHandle: @unchecked Sendable {
    let session: OpaquePointer
}

/// What the callbacks reach through the request's userdata.
final class FuseContext: Sendable {
    let tree: MountTree
    let tuning: FuseTuning
    init(tree: MountTree, tuning: FuseTuning) {
        self.tree = tree
        self.tuning = tuning
    }
}

public struct FuseMountOptions: Sendable {
    /// Shown as the source in `mount` and `/proc/mounts`.
    public var fsName: String
    public var readOnly: Bool
    public var allowOther: Bool
    public var debug: Bool
    public var maxThreads: Int
    /// What FUSE_INIT asks for; nil: the defaults with BUCKETFS_FUSE_TUNING's overrides.
    public var tuning: FuseTuning?

    public init(
        fsName: String, readOnly: Bool = false, allowOther: Bool = false, debug: Bool = false,
        maxThreads: Int = 16, tuning: FuseTuning? = nil
    ) {
        self.tuning = tuning
        self.fsName = fsName
        self.readOnly = readOnly
        self.allowOther = allowOther
        self.debug = debug
        self.maxThreads = maxThreads
    }
}

public struct FuseSessionError: Error, CustomStringConvertible {
    public let description: String
}

/// One libfuse low-level session: mount, serve on a multithreaded loop until unmounted or signalled, then
/// upload what is pending and unmount.
public final class FuseSession {
    private let context: FuseContext
    private let mountpoint: String
    private let logger: Logger
    private var session: OpaquePointer?
    private var operations = FuseOperations.makeTable()

    public init(tree: MountTree, mountpoint: String, options: FuseMountOptions, logger: Logger) throws {
        self.context = FuseContext(tree: tree, tuning: try options.tuning ?? FuseTuning.fromEnvironment())
        self.mountpoint = mountpoint
        self.logger = logger

        var mountOptions = [
            "fsname=\(options.fsName.replacingOccurrences(of: ",", with: "\\,"))",
            "subtype=bucketfs", "default_permissions",
        ]
        if options.readOnly { mountOptions.append("ro") }
        if options.allowOther { mountOptions.append("allow_other") }
        var argv = ["bucketfs", "-o", mountOptions.joined(separator: ",")]
        if options.debug { argv.append("-d") }
        // fuse_session_new keeps nothing of argv after it returns.
        let cArgs = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: argv.count + 1)
        for (i, arg) in argv.enumerated() { cArgs[i] = strdup(arg) }
        cArgs[argv.count] = nil
        defer {
            for i in 0..<argv.count { free(cArgs[i]) }
            cArgs.deallocate()
        }
        var args = fuse_args(argc: Int32(argv.count), argv: cArgs, allocated: 0)
        let userdata = Unmanaged.passUnretained(context).toOpaque()
        session = withUnsafePointer(to: &operations) { ops in
            fuse_session_new(&args, ops, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
        }
        fuse_opt_free_args(&args)
        guard let created = session else { throw FuseSessionError(description: "cannot create the FUSE session") }
        self.maxThreads = options.maxThreads
        let handle = SessionHandle(session: created)
        tree.files.setKernelCacheInvalidator { ino in
            // Attributes and every cached page of the inode (offset 0, length 0: all of it).
            _ = fuse_lowlevel_notify_inval_inode(handle.session, ino, 0, 0)
        }
        if context.tuning.pagePush {
            tree.files.setKernelPageStore { ino, offset, data in
                data.withUnsafeBytes { bytes in
                    var buffers = fuse_bufvec()
                    buffers.count = 1
                    buffers.buf.size = bytes.count
                    buffers.buf.mem = UnsafeMutableRawPointer(mutating: bytes.baseAddress)
                    buffers.buf.fd = -1
                    _ = fuse_lowlevel_notify_store(handle.session, ino, off_t(offset), &buffers, fuse_buf_copy_flags(0))
                }
            }
        }
    }

    private let maxThreads: Int

    /// Mounts; after this returns the mount point serves requests (they queue until `run`).
    public func mount() throws {
        guard fuse_set_signal_handlers(session) == 0 else {
            throw FuseSessionError(description: "cannot install signal handlers")
        }
        // Resolved before mounting: afterwards a stat of the mount point would wait for this daemon's own loop.
        let resolved = realpath(mountpoint, nil).map { path in
            defer { free(path) }
            return String(cString: path)
        }
        guard fuse_session_mount(session, mountpoint) == 0 else {
            fuse_remove_signal_handlers(session)
            throw FuseSessionError(description: "cannot mount on \(mountpoint) (libfuse logged why)")
        }
        if !context.tuning.applyReadAhead(mountpoint: resolved ?? mountpoint) {
            logger.debug("kernel read-ahead left as it is (not root, or the mount's bdi not found)")
        }
    }

    /// Serves until unmounted (`umount`, `bucketfs unmount`) or SIGINT/SIGTERM/SIGHUP; then uploads pending
    /// writes and unmounts. Returns 0, or the signal that ended the loop.
    public func run() -> Int32 {
        let config = fuse_loop_cfg_create()
        fuse_loop_cfg_set_max_threads(config, UInt32(maxThreads))
        fuse_loop_cfg_set_clone_fd(config, 1)
        let result = cfuse_session_loop_mt(session, config)
        fuse_loop_cfg_destroy(config)
        context.tree.files.setKernelPageStore(nil)
        context.tree.files.flushAll()
        // Leases go back after the uploads, so another mount that takes a lock next sees the writes.
        context.tree.files.shutdownLocks()
        context.tree.files.setKernelCacheInvalidator { _ in }
        fuse_remove_signal_handlers(session)
        fuse_session_unmount(session)
        // A push may wait in the kernel for a page whose read nobody answers any more: unmounted, it fails.
        context.tree.files.waitForKernelPageStores()
        fuse_session_destroy(session)
        session = nil
        if result < 0 { logger.error("FUSE loop ended with an error", metadata: ["errno": "\(-result)"]) }
        return result > 0 ? result : 0
    }
}
