import Synchronization

/// Where FUSE operations are reported once answered: the operation's name (`lookup`, `read`, …), the errno of
/// its reply (0 for success) and the seconds from the callback's start to the end of its handling. The daemon
/// installs an observer that feeds its Prometheus metrics; without one nothing is measured.
public enum FuseOperationMetrics {
    public typealias Observer = @Sendable (_ operation: String, _ errno: Int32, _ seconds: Double) -> Void

    private static let installed = Mutex<Observer?>(nil)

    public static func install(_ observer: Observer?) {
        installed.withLock { $0 = observer }
    }

    static var observer: Observer? { installed.withLock { $0 } }
}
