import Foundation
import Glibc
import Synchronization

/// One line of progress on stderr, rewritten in place (`\r`), for commands that take a while. Silent when stderr
/// is not a terminal, so that scripts, pipes and logs see only the command's result.
final class ProgressLine: Sendable {
    private let enabled: Bool
    /// The width of the last line written, so that a shorter one can blank out its tail.
    private let lastWidth = Mutex(0)

    init(enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.enabled = enabled
    }

    var isEnabled: Bool { enabled }

    /// Replaces the line with `text` (cut to the terminal's width, so it never wraps).
    func update(_ text: String) {
        guard enabled else { return }
        let shown = String(text.prefix(Self.terminalWidth() - 1))
        lastWidth.withLock { width in
            let padding = String(repeating: " ", count: max(0, width - shown.count))
            Self.write("\r" + shown + padding)
            width = shown.count
        }
    }

    /// Blanks the line, leaving the cursor at its start for the command's own output.
    func clear() {
        guard enabled else { return }
        lastWidth.withLock { width in
            if width > 0 { Self.write("\r" + String(repeating: " ", count: width) + "\r") }
            width = 0
        }
    }

    /// Repeats `text()` every `interval` seconds while `body` runs (for work that reports no progress of its
    /// own, such as one large upload), then clears the line.
    func repeating<T>(
        _ text: @escaping @Sendable () -> String, every interval: Double = 0.5,
        _ body: () throws -> T
    ) rethrows -> T {
        guard enabled else { return try body() }
        let done = Mutex(false)
        update(text())
        let ticker = Thread { [self] in
            while true {
                Thread.sleep(forTimeInterval: interval)
                if done.withLock({ $0 }) { return }
                update(text())
            }
        }
        ticker.start()
        defer {
            done.withLock { $0 = true }
            clear()
        }
        return try body()
    }

    static func terminalWidth() -> Int {
        var size = winsize()
        if ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        return 80
    }

    private static func write(_ text: String) {
        _ = text.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
    }
}

extension ProgressLine {
    /// `1.5 MiB`, `320 B`: sizes as a person reads them.
    static func bytes(_ count: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f", value) + " " + units[unit]
    }

    /// `4s`, `2m05s`, `1h02m`, `3d04h`.
    static func duration(_ seconds: Double) -> String {
        let s = max(0, Int(seconds))
        if s < 60 { return "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        if s < 86400 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
        return String(format: "%dd%02dh", s / 86400, (s % 86400) / 3600)
    }
}
