import CFuse
import FileSystem
import Glibc

/// Turns `FileSystem` answers into libfuse replies. Every request gets exactly one reply, and every
/// failure goes through `error(_:_:)`, whose errno comes from `FSError.errno`.
///
/// A class so that its end is the end of the operation's handling: `deinit` reports the operation, its errno
/// and its duration to `FuseOperationMetrics` (a lock that waits is answered later; its wait is not included).
final class FuseReply {
    let request: fuse_req_t
    let timeout: Double
    let operation: String
    private let start = ContinuousClock.now
    private let observer = FuseOperationMetrics.observer
    private var replied: Int32 = 0

    init(request: fuse_req_t, timeout: Double, operation: String = "other") {
        self.request = request
        self.timeout = timeout
        self.operation = operation
    }

    deinit {
        guard let observer else { return }
        let elapsed = ContinuousClock.now - start
        observer(operation, replied, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    func error(_ error: FSError) {
        replied = error.errno
        fuse_reply_err(request, error.errno)
    }

    func ok() {
        fuse_reply_err(request, 0)
    }

    func entry(_ attributes: FileAttributes) {
        var param = FuseReply.entryParam(attributes, timeout: timeout)
        fuse_reply_entry(request, &param)
    }

    func attributes(_ attributes: FileAttributes) {
        var st = FuseReply.stat(attributes)
        fuse_reply_attr(request, &st, timeout)
    }

    /// Runs `body` and replies with the error it throws, if any; `body` sends the success reply itself.
    func run(_ body: () throws(FSError) -> Void) {
        do {
            try body()
        } catch let failure {
            error(failure)
        }
    }

    static func entryParam(_ attributes: FileAttributes, timeout: Double) -> fuse_entry_param {
        var param = fuse_entry_param()
        param.ino = attributes.ino
        param.generation = 1
        param.attr = stat(attributes)
        param.attr_timeout = timeout
        param.entry_timeout = timeout
        return param
    }

    static func stat(_ attributes: FileAttributes) -> Glibc.stat {
        var st = Glibc.stat()
        st.st_ino = UInt(attributes.ino)
        st.st_mode = attributes.mode
        st.st_nlink = UInt(attributes.linkCount)
        st.st_uid = attributes.uid
        st.st_gid = attributes.gid
        // Sizes come from the store; one above Int64.max (the stores refuse them, this is the last guard) must
        // not trap the daemon.
        st.st_size = Int(clamping: attributes.size)
        st.st_blksize = 128 * 1024
        st.st_blocks = Int(clamping: attributes.allocatedBlocks)
        st.st_mtim = timespec(tv_sec: Int(attributes.mtime.seconds), tv_nsec: Int(attributes.mtime.nanoseconds))
        st.st_atim = timespec(tv_sec: Int(attributes.atime.seconds), tv_nsec: Int(attributes.atime.nanoseconds))
        st.st_rdev = UInt(attributes.rdev)
        st.st_ctim = timespec(tv_sec: Int(attributes.ctime.seconds), tv_nsec: Int(attributes.ctime.nanoseconds))
        return st
    }
}
