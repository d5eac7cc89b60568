import Foundation
import Glibc
import Logging
import ObjectStore

/// The daemon's log lines, one per event, on stderr: `2026-11-22T03:18:32.123Z warning bucketfs: message k=v`.
/// Under systemd (stderr goes to the journal, which stamps each line itself) the timestamp is left out and the
/// line starts with the syslog priority (`<4>`), which journald reads as the entry's priority.
/// In the background the launcher points stderr at `CACHE_DIR/logs/`.
struct DaemonLogHandler: LogHandler {
    let label: String
    let journal: Bool
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, level: Logger.Level, journal: Bool) {
        self.label = label
        self.logLevel = level
        self.journal = journal
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Installs the handler for every logger of the process, at `level` (`trace` … `critical`).
    static func bootstrap(level: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
        let parsed = Logger.Level(rawValue: level) ?? .info
        let journal = underSystemd(environment)
        LoggingSystem.bootstrap { label in DaemonLogHandler(label: label, level: parsed, journal: journal) }
    }

    /// systemd sets `JOURNAL_STREAM` when stderr is connected to the journal and `INVOCATION_ID` for every
    /// service it runs.
    static func underSystemd(_ environment: [String: String]) -> Bool {
        environment["JOURNAL_STREAM"] != nil || environment["INVOCATION_ID"] != nil
    }

    func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        let line = Self.format(
            level: event.level, label: label, message: event.message.description,
            metadata: all, journal: journal, date: Date())
        // One write(2) per line, so that lines of concurrent threads never interleave.
        _ = line.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
    }

    static func format(
        level: Logger.Level, label: String, message: String, metadata: Logger.Metadata,
        journal: Bool, date: Date
    ) -> String {
        let fields = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\(quoted("\($0.value)"))" }
        // No URL password reaches a log, whoever wrote the message.
        let text = URLRedaction.redact(([oneLine(message)] + fields).joined(separator: " "))
        if journal { return "<\(syslogPriority(level))>\(level) \(label): \(text)\n" }
        return "\(timestamp(date)) \(level) \(label): \(text)\n"
    }

    /// A value with spaces or quotes is quoted, so that `key=value` pairs stay readable and parseable.
    static func quoted(_ value: String) -> String {
        let flat = oneLine(value)
        guard flat.isEmpty || flat.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) else { return flat }
        return "\"" + flat.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            + "\""
    }

    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    /// syslog(3) priorities: journald maps `<N>` at the start of a line to the entry's priority.
    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}
