import ArgumentParser
import Foundation

/// `bucketfs status`: the live mounts of this user (root sees root's), from the registry the daemons keep.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "List live bucketfs mounts: source, mount point, pid, uptime, pending uploads, held locks.",
        discussion: """
            Each daemon refreshes its entry every 2 seconds; pending uploads are files written and not yet in the \
            store (or being uploaded now). Mounts of other users are listed by those users' `bucketfs status`.
            """)

    @Argument(help: "Show only this mount point (exit 1 when it is not a live bucketfs mount).")
    var mountpoint: String?

    @Flag(help: "Print a JSON array instead of a table.")
    var json = false

    /// One row of the answer; the JSON keys are the registry's plus `uptime_seconds` and `mounted`.
    struct Row: Encodable {
        var record: MountRecord
        var uptimeSeconds: Int
        var mounted: Bool

        enum CodingKeys: String, CodingKey {
            case pid, source, mountpoint, started, updated
            case pendingUploads = "pending_uploads"
            case heldLocks = "held_locks"
            case uptimeSeconds = "uptime_seconds"
            case mounted
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(record.pid, forKey: .pid)
            try c.encode(record.source, forKey: .source)
            try c.encode(record.mountpoint, forKey: .mountpoint)
            try c.encode(record.started, forKey: .started)
            try c.encodeIfPresent(record.updated, forKey: .updated)
            try c.encode(record.pendingUploads ?? 0, forKey: .pendingUploads)
            try c.encode(record.heldLocks ?? [], forKey: .heldLocks)
            try c.encode(uptimeSeconds, forKey: .uptimeSeconds)
            try c.encode(mounted, forKey: .mounted)
        }
    }

    func run() throws {
        var records = MountRegistry.liveRecords()
        if let mountpoint {
            let path = MountPointCheck.absolute(mountpoint)
            records = records.filter { $0.mountpoint == path }
            if records.isEmpty { throw CLIError("no live bucketfs mount at \(path) (see `bucketfs status`)") }
        }
        let now = Date()
        let rows = records.map { record in
            Row(
                record: record, uptimeSeconds: Int(now.timeIntervalSince(record.startedDate ?? now)),
                mounted: MountPointCheck.mountType(at: record.mountpoint) == "fuse.bucketfs")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(rows), as: UTF8.self))
        } else if rows.isEmpty {
            print("no live bucketfs mounts")
        } else {
            print(Self.table(rows), terminator: "")
        }
    }

    /// Columns padded to their widest cell; a mount whose daemon lives but whose mount is gone says so.
    static func table(_ rows: [Row]) -> String {
        let header = ["MOUNTPOINT", "SOURCE", "PID", "UPTIME", "PENDING", "LOCKS"]
        let cells = rows.map { row -> [String] in
            let locks = row.record.heldLocks ?? []
            return [
                row.record.mountpoint + (row.mounted ? "" : " (not mounted)"), row.record.source,
                String(row.record.pid), ProgressLine.duration(Double(row.uptimeSeconds)),
                String(row.record.pendingUploads ?? 0),
                locks.isEmpty ? "0" : "\(locks.count): " + locks.joined(separator: ","),
            ]
        }
        let all = [header] + cells
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { line in
            line.enumerated().map { column, cell in
                column == line.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}
