import CFuse
import FileSystem

/// A request answered later, from another thread (a lock that had to wait). libfuse allows a reply from any
/// thread, exactly once; `FileLockCoordinator` calls `answer` exactly once per request.
struct PendingRequest: @unchecked Sendable {
    let request: fuse_req_t

    /// The process that asked was signalled (FUSE_INTERRUPT arrived for this request).
    var interrupted: Bool {
        fuse_req_interrupted(request) != 0
    }

    func answer(_ error: FSError?) {
        fuse_reply_err(request, error?.errno ?? 0)
    }
}
