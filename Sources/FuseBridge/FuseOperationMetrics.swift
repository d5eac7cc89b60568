import Synchronization

/// Where FUSE operations are reported once answered: the operation's name (`lookup`, `read`, …), the errno of
/// its reply (0 for success) and the seconds from the callback's start to the end of its handling. The daemon
/// installs an observer that feeds its Prometheus metrics; without one nothing is measured.
public enum FuseOperationMetrics {
    public typealias Observer = @Sendable (_ operation: String, _ errno: Int32, _ seconds: Double) -> Void

    /// The observer, held in a struct, not as `Mutex<Closure?>`: each `withLock { $0 }` of a bare closure wrapped it in
    /// two more reabstraction thunks and wrote it back, so every call grew slower until the stack overflowed (a daemon
    /// crash after a few million FUSE operations; see docs/DEVELOPMENT.md, "Closures behind a Mutex").
    private struct Installed: Sendable {
        var observer: Observer?
    }

    private static let installed = Mutex(Installed())

    public static func install(_ observer: Observer?) {
        installed.withLock { $0.observer = observer }
    }

    static var observer: Observer? { installed.withLock { $0.observer } }
}
