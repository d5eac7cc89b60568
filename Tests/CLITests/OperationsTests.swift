import Foundation
import Glibc
import Logging
import XCTest

@testable import BucketfsCLI

/// mount(8) integration, systemd readiness, logging and the operator CLI, without mounting.
final class OperationsTests: XCTestCase {
    private var paths: [String] = []

    override func tearDown() {
        for path in paths { try? FileManager.default.removeItem(atPath: path) }
        paths = []
        super.tearDown()
    }

    private func temporaryFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bucketfs-ops-\(UUID().uuidString)")
            .path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        paths.append(path)
        return path
    }

    // MARK: mount.fuse3's command line

    func testTwoOperandsWithoutSubcommandMeanMount() {
        XCTAssertEqual(
            MountHelperInvocation.arguments(["s3://b/p/", "/mnt/p", "-o", "rw,dev,suid"]),
            ["mount", "s3://b/p/", "/mnt/p", "-o", "rw,dev,suid"])
        XCTAssertEqual(
            MountHelperInvocation.arguments(["file:///srv/b/", "/mnt/b"]), ["mount", "file:///srv/b/", "/mnt/b"])
    }

    func testSubcommandsAndOptionsAreLeftAlone() {
        for arguments in [
            ["mount", "memory://", "/mnt/x"], ["unmount", "/mnt/x"], ["status", "/mnt/x"],
            ["config", "print", "memory://"], ["recover", "push", "id"], ["help", "mount"],
            ["--version"], ["--generate-completion-script", "bash"], ["memory://"], [],
            ["memory://", "--json"],
        ] {
            XCTAssertEqual(MountHelperInvocation.arguments(arguments), arguments)
        }
    }

    func testImplicitMountParses() throws {
        let parsed = try BucketfsCommand.parseAsRoot(
            MountHelperInvocation.arguments(["file:///srv/b/", "/mnt/b", "-o", "rw,nosuid,nodev,debug"]))
        let mount = try XCTUnwrap(parsed as? MountCommand)
        XCTAssertEqual(mount.source, "file:///srv/b/")
        XCTAssertEqual(mount.mountpoint, "/mnt/b")
        XCTAssertEqual(try mount.settings.resolve().mount.logLevel, "debug")
    }

    // MARK: mount(8) options

    func testMountCommandOptionsAreAcceptedAndIgnored() throws {
        var configuration = Configuration()
        let defaults = configuration
        try configuration.apply(
            mountOptions:
                "rw,defaults,nosuid,nodev,noauto,auto,_netdev,nofail,user,users,exec,noexec,suid,dev,async,atime,"
                + "noatime,relatime,x-systemd.automount,x-systemd.requires=network-online.target,x-gvfs-hide,"
                + "comment=systemd.automount"
        )
        XCTAssertEqual(configuration, defaults)
    }

    func testUnknownOptionsAreStillRefused() {
        var configuration = Configuration()
        XCTAssertThrowsError(try configuration.apply(mountOptions: "rw,nosuid,bogus=1")) { error in
            XCTAssertEqual((error as? CLIError)?.description, "unknown mount option \"bogus\"")
        }
        XCTAssertThrowsError(try configuration.apply(mountOptions: "sync"))
    }

    func testConfigOptionReadsTheFileAndDebugSetsTheLevel() throws {
        let file = try temporaryFile("mount:\n  metadata_ttl: 7\n  uid: 4242\n")
        let options = try ConfigurationOptions.parse(["-o", "_netdev,config=\(file),debug,ro"])
        let configuration = try options.resolve()
        XCTAssertEqual(configuration.mount.metadataTTL, 7)
        XCTAssertEqual(configuration.mount.uid, 4242)
        XCTAssertEqual(configuration.mount.logLevel, "debug")
        XCTAssertTrue(configuration.mount.readOnly)
    }

    // MARK: allow_other

    func testFuseConfParsing() throws {
        XCTAssertFalse(
            FuseConfiguration.allowsOther(configPath: try temporaryFile("#user_allow_other\nmount_max = 10\n")))
        XCTAssertTrue(FuseConfiguration.allowsOther(configPath: try temporaryFile("# fuse\n  user_allow_other  \n")))
        XCTAssertTrue(FuseConfiguration.allowsOther(configPath: try temporaryFile("user_allow_other # for bucketfs\n")))
        XCTAssertFalse(FuseConfiguration.allowsOther(configPath: "/nonexistent/fuse.conf"))
    }

    func testAllowOtherRefusedForUsersWithoutUserAllowOther() throws {
        let refusing = try temporaryFile("#user_allow_other\n")
        XCTAssertThrowsError(
            try FuseConfiguration.requireAllowOtherPermitted(
                allowOther: true, uid: 1000,
                configPath: refusing)
        ) { error in
            let text = (error as? CLIError)?.description ?? ""
            XCTAssertTrue(text.contains("user_allow_other"), text)
            XCTAssertTrue(text.contains(refusing), text)
            XCTAssertFalse(text.contains("\n"))
        }
        XCTAssertNoThrow(
            try FuseConfiguration.requireAllowOtherPermitted(allowOther: true, uid: 0, configPath: refusing))
        XCTAssertNoThrow(
            try FuseConfiguration.requireAllowOtherPermitted(allowOther: false, uid: 1000, configPath: refusing))
        let allowing = try temporaryFile("user_allow_other\n")
        XCTAssertNoThrow(
            try FuseConfiguration.requireAllowOtherPermitted(allowOther: true, uid: 1000, configPath: allowing))
    }

    // MARK: systemd readiness

    /// A datagram socket bound where `NOTIFY_SOCKET` points, as systemd binds it.
    private final class NotifySocket {
        let fd: Int32
        let name: String

        init(name: String) throws {
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            self.name = name
            var (address, length) = try XCTUnwrap(SystemdNotifier.address(name))
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
            }
            XCTAssertEqual(bound, 0, String(cString: strerror(errno)))
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        func receive() -> String? {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n < 0 ? nil : String(decoding: buffer[0..<n], as: UTF8.self)
        }

        deinit {
            close(fd)
            if name.hasPrefix("/") { unlink(name) }
        }
    }

    func testReadyAndStoppingReachAPathSocket() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "notify-\(getpid())-\(UUID().uuidString.prefix(8))"
        ).path
        let socket = try NotifySocket(name: path)
        let notifier = try XCTUnwrap(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": path]))
        XCTAssertTrue(notifier.ready(status: "serving"))
        let ready = try XCTUnwrap(socket.receive())
        XCTAssertTrue(ready.split(separator: "\n").contains("READY=1"), ready)
        XCTAssertTrue(ready.contains("MAINPID=\(getpid())"), ready)
        XCTAssertTrue(ready.contains("STATUS=serving"), ready)
        XCTAssertTrue(notifier.stopping())
        XCTAssertEqual(socket.receive(), "STOPPING=1")
    }

    func testAbstractSocketNameStartsWithAt() throws {
        let name = "@bucketfs-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        let socket = try NotifySocket(name: name)
        XCTAssertTrue(try XCTUnwrap(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": name])).ready())
        XCTAssertTrue(socket.receive()?.hasPrefix("READY=1") == true)
        // The abstract address counts exactly the name's bytes: no trailing NUL, the `@` turned into one in front.
        let (address, length) = try XCTUnwrap(SystemdNotifier.address(name))
        XCTAssertEqual(Int(length), MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + name.utf8.count)
        var copy = address
        let first = withUnsafeBytes(of: &copy.sun_path) { $0[0] }
        XCTAssertEqual(first, 0)
    }

    func testNoNotifySocketMeansNoNotifier() {
        XCTAssertNil(SystemdNotifier.fromEnvironment([:]))
        XCTAssertNil(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": "relative"]))
        XCTAssertFalse(SystemdNotifier(socketPath: "/nonexistent/notify").ready())
    }

    // MARK: logging

    func testLogLinesForTerminalAndJournal() {
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        let metadata: Logger.Metadata = ["key": "a b.txt", "status": "503", "operation": "PutObject", "retries": "3"]
        let plain = DaemonLogHandler.format(
            level: .warning, label: "bucketfs.s3", message: "store request failed",
            metadata: metadata, journal: false, date: date)
        XCTAssertEqual(
            plain,
            "2027-01-15T08:00:00.000Z warning bucketfs.s3: store request failed key=\"a b.txt\" "
                + "operation=PutObject retries=3 status=503\n"
        )
        let journal = DaemonLogHandler.format(
            level: .warning, label: "bucketfs.s3", message: "store request\nfailed",
            metadata: metadata, journal: true, date: date)
        XCTAssertEqual(
            journal,
            "<4>warning bucketfs.s3: store request failed key=\"a b.txt\" operation=PutObject retries=3 status=503\n")
        XCTAssertTrue(DaemonLogHandler.underSystemd(["JOURNAL_STREAM": "8:1234"]))
        XCTAssertTrue(DaemonLogHandler.underSystemd(["INVOCATION_ID": "abc"]))
        XCTAssertFalse(DaemonLogHandler.underSystemd(["TERM": "xterm"]))
    }

    // MARK: status and progress

    func testRegistryRefreshAndLiveRecords() throws {
        let mountpoint = "/nonexistent/bucketfs-test-\(UUID().uuidString)"
        let registry = try XCTUnwrap(MountRegistry.register(source: "memory://", mountpoint: mountpoint))
        defer { registry.remove() }
        registry.update(pendingUploads: 3, heldLocks: ["a/b.txt"])
        let record = try XCTUnwrap(MountRegistry.record(at: registry.file))
        XCTAssertEqual(record.pid, getpid())
        XCTAssertEqual(record.pendingUploads, 3)
        XCTAssertEqual(record.heldLocks, ["a/b.txt"])
        XCTAssertTrue(MountRegistry.liveRecords().contains(record))
        registry.remove()
        XCTAssertNil(MountRegistry.record(at: registry.file))
        registry.update(pendingUploads: 1, heldLocks: [])
        XCTAssertNil(MountRegistry.record(at: registry.file), "an update after remove must not bring the entry back")
    }

    func testDeadDaemonsAreLeftOut() throws {
        let mountpoint = "/nonexistent/bucketfs-dead-\(UUID().uuidString)"
        let file = MountRegistry.file(for: mountpoint)
        try FileManager.default.createDirectory(atPath: MountRegistry.directory, withIntermediateDirectories: true)
        // A pid far above pid_max: no such process.
        let stale = MountRecord(
            pid: 99_999_999, source: "memory://", mountpoint: mountpoint, started: "2026-01-01T00:00:00Z")
        try JSONEncoder().encode(stale).write(to: URL(fileURLWithPath: file))
        paths.append(file)
        XCTAssertFalse(MountRegistry.liveRecords().contains { $0.mountpoint == mountpoint })
    }

    func testStatusTable() {
        let record = MountRecord(
            pid: 42, source: "s3://team/alice/", mountpoint: "/mnt/alice",
            started: "2026-01-01T00:00:00Z", pendingUploads: 2, heldLocks: ["x.lock"])
        let table = StatusCommand.table([StatusCommand.Row(record: record, uptimeSeconds: 3725, mounted: true)])
        let lines = table.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 2)
        XCTAssertTrue(lines[0].hasPrefix("MOUNTPOINT"))
        XCTAssertEqual(
            lines[1].split(separator: " ", omittingEmptySubsequences: true),
            ["/mnt/alice", "s3://team/alice/", "42", "1h02m", "2", "1:", "x.lock"])
    }

    func testHumanSizesAndDurations() {
        XCTAssertEqual(ProgressLine.bytes(512), "512 B")
        XCTAssertEqual(ProgressLine.bytes(3 << 20), "3.0 MiB")
        XCTAssertEqual(ProgressLine.duration(4.9), "4s")
        XCTAssertEqual(ProgressLine.duration(125), "2m05s")
        XCTAssertEqual(ProgressLine.duration(90_000), "1d01h")
    }

    func testProgressLineOffATerminalRunsTheWorkQuietly() {
        let progress = ProgressLine(enabled: false)
        XCTAssertFalse(progress.isEnabled)
        XCTAssertEqual(progress.repeating({ "never shown" }) { 7 }, 7)
    }
}
