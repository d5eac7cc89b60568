import Foundation
import Glibc

/// Starts the daemon in the background without forking a process that runs Swift threads: a fresh copy of
/// this binary is spawned with `--foreground`, and reports over a pipe once the mount is ready or has failed.
enum DaemonLauncher {
    static let readyFD: Int32 = 3
    /// POSIX_SPAWN_SETSID from <spawn.h> (glibc ≥ 2.26), hidden from Swift behind a feature macro.
    static let spawnSetSID: Int16 = 0x80

    static func launch(source: String, mountpoint: String, arguments: [String], logDirectory: String) throws(CLIError) {
        do { try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true) } catch {
            throw CLIError("cannot create log directory \(logDirectory): \(error.localizedDescription)")
        }
        let logFile = logDirectory + "/mount-" + MountRegistry.fileName(for: mountpoint) + ".log"

        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw CLIError("cannot create a pipe: \(String(cString: strerror(errno)))") }
        // Only the dup2'ed copy (fd 3) may reach the daemon: any other descriptor it inherited would keep our
        // pipe, or our caller's stdout, open for as long as the mount lives.
        markAllDescriptorsCloseOnExec()
        let readEnd = fds[0]
        let writeEnd = fds[1] == readyFD ? fcntl(fds[1], F_DUPFD_CLOEXEC, readyFD + 1) : fds[1]
        if writeEnd != fds[1] { close(fds[1]) }
        defer { close(readEnd) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, logFile, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, readyFD)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A session of its own: closing the terminal that mounted does not take the daemon down.
        posix_spawnattr_setflags(&attributes, Self.spawnSetSID)

        let argv = ["/proc/self/exe"] + arguments + ["--foreground"]
        var environment = ProcessInfo.processInfo.environment
        environment[ReadinessPipe.environmentKey] = String(readyFD)
        // Its stderr is the log file, not the journal: keep the timestamps on its lines (see DaemonLogHandler).
        environment["JOURNAL_STREAM"] = nil
        environment["INVOCATION_ID"] = nil
        let envp = environment.map { "\($0.key)=\($0.value)" }

        var pid: pid_t = 0
        let status = withCStrings(argv) { cArgv in
            withCStrings(envp) { cEnvp in
                posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, cArgv, cEnvp)
            }
        }
        close(writeEnd)
        guard status == 0 else { throw CLIError("cannot start the daemon: \(String(cString: strerror(status)))") }

        var message = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(readEnd, &buffer, buffer.count)
            if n > 0 {
                message.append(contentsOf: buffer[0..<n])
                if message.last == UInt8(ascii: "\n") { break }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            break
        }
        let answer = String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if answer == ReadinessPipe.readyMessage {
            print("bucketfs: mounted \(source) at \(mountpoint) (pid \(pid), log \(logFile)); unmount with: bucketfs unmount \(mountpoint)")
            return
        }
        var exitStatus: Int32 = 0
        waitpid(pid, &exitStatus, 0)
        if answer.hasPrefix(ReadinessPipe.errorPrefix) {
            throw CLIError(String(answer.dropFirst(ReadinessPipe.errorPrefix.count)) + " (log: \(logFile))")
        }
        throw CLIError("the daemon exited before the mount was ready (status \(exitStatus)); see \(logFile)")
    }

    private static func markAllDescriptorsCloseOnExec() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for fd in entries.compactMap({ Int32($0) }) where fd > 2 {
            _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        }
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        let pointers = strings.map { strdup($0) } + [nil]
        defer { pointers.forEach { free($0) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

/// The daemon's side of the launcher's pipe.
struct ReadinessPipe {
    static let environmentKey = "BUCKETFS_READY_FD"
    static let readyMessage = "ready"
    static let errorPrefix = "error: "
    let fd: Int32

    static func fromEnvironment() -> ReadinessPipe? {
        guard let text = ProcessInfo.processInfo.environment[environmentKey], let fd = Int32(text) else { return nil }
        unsetenv(environmentKey)
        return ReadinessPipe(fd: fd)
    }

    func signalReady() { send(Self.readyMessage) }

    func signalFailure(_ message: String) { send(Self.errorPrefix + message) }

    private func send(_ text: String) {
        let line = text.split(whereSeparator: \.isNewline).joined(separator: " ") + "\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }
}
