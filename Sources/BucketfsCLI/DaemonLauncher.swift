import Foundation
import Glibc
import Locking

/// Starts the daemon in the background without forking a process that runs Swift threads: a fresh copy of
/// this binary is spawned with `--foreground`, and reports over a pipe once the mount is ready or has failed.
///
/// The caller's arguments may hold secrets (`--redis-url redis://:pw@…`, `-o records_url=…`), and a process's
/// argv is readable by every local user (`ps`, /proc/PID/cmdline) for as long as it runs. So the daemon's argv is
/// only `mount SOURCE MOUNTPOINT --foreground` (what `ps` readers and scripts look for); the real arguments reach
/// it through a second pipe (fd 4), read and closed before anything else.
public enum DaemonLauncher {
    static let readyFD: Int32 = 3
    static let argumentsFD: Int32 = 4
    static let argumentsEnvironmentKey = "BUCKETFS_ARGUMENTS_FD"
    /// POSIX_SPAWN_SETSID from <spawn.h> (glibc ≥ 2.26), hidden from Swift behind a feature macro.
    static let spawnSetSID: Int16 = 0x80

    static func launch(source: String, mountpoint: String, arguments: [String], logDirectory: String) throws(CLIError) {
        // Logs name keys: the log directory is 0700, the log file 0600 (also one an older version made 0644).
        do {
            try PrivateDirectory.prepare(
                (logDirectory as NSString).deletingLastPathComponent,
                sub: (logDirectory as NSString).lastPathComponent)
        } catch {
            throw CLIError("log directory: \(error)")
        }
        try MountRegistry.prepareDirectory()
        let logFile = logDirectory + "/mount-" + MountRegistry.fileName(for: mountpoint) + ".log"
        _ = chmod(logFile, 0o600)

        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw CLIError("cannot create a pipe: \(String(cString: strerror(errno)))") }
        var argumentFDs: [Int32] = [0, 0]
        guard pipe(&argumentFDs) == 0 else {
            close(fds[0])
            close(fds[1])
            throw CLIError("cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        // Only the dup2'ed copies (fds 3 and 4) may reach the daemon: any other descriptor it inherited would keep
        // our pipe, or our caller's stdout, open for as long as the mount lives.
        markAllDescriptorsCloseOnExec()
        let readEnd = fds[0]
        // Both sources of dup2 above fd 4, so that the first dup2 cannot overwrite the second's source.
        let writeEnd = aboveSpawnedDescriptors(fds[1])
        let argumentsRead = aboveSpawnedDescriptors(argumentFDs[0])
        defer { close(readEnd) }
        defer { close(argumentsRead) }
        // Written before the spawn (a pipe holds 64 KiB), so a daemon that dies early cannot SIGPIPE us.
        let written = writeArguments(arguments + ["--foreground"], to: argumentFDs[1])
        close(argumentFDs[1])
        guard written else {
            close(writeEnd)
            throw CLIError("cannot hand the arguments to the daemon (more than 60 KiB of them?)")
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, logFile, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0o600)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, readyFD)
        posix_spawn_file_actions_adddup2(&actions, argumentsRead, argumentsFD)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A session of its own: closing the terminal that mounted does not take the daemon down.
        posix_spawnattr_setflags(&attributes, Self.spawnSetSID)

        // What `ps` shows: no option, so no secret (the source is a bucket or directory, its URL has no password).
        let argv = ["/proc/self/exe", "mount", Configuration.redactedURL(source), mountpoint, "--foreground"]
        var environment = ProcessInfo.processInfo.environment
        environment[ReadinessPipe.environmentKey] = String(readyFD)
        environment[Self.argumentsEnvironmentKey] = String(argumentsFD)
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
            print(
                "bucketfs: mounted \(source) at \(mountpoint) (pid \(pid), log \(logFile)); "
                    + "unmount with: bucketfs unmount \(mountpoint)"
            )
            return
        }
        var exitStatus: Int32 = 0
        waitpid(pid, &exitStatus, 0)
        if answer.hasPrefix(ReadinessPipe.errorPrefix) {
            throw CLIError(String(answer.dropFirst(ReadinessPipe.errorPrefix.count)) + " (log: \(logFile))")
        }
        throw CLIError("the daemon exited before the mount was ready (status \(exitStatus)); see \(logFile)")
    }

    /// The cache directory holds staged data, recovery copies and logs (keys, contents): 0700, ours, and
    /// writable by nobody else, or the mount is refused in one line.
    static func prepareCacheDirectory(_ path: String) throws(CLIError) {
        do { try PrivateDirectory.prepare(path) } catch { throw CLIError("cache directory: \(error)") }
    }

    /// The arguments the launcher handed over, when this process is a daemon it spawned; nil otherwise.
    /// Read to the end and closed at once, before any other descriptor is opened.
    public static func handedArguments() -> [String]? {
        guard let text = ProcessInfo.processInfo.environment[argumentsEnvironmentKey], let fd = Int32(text) else {
            return nil
        }
        unsetenv(argumentsEnvironmentKey)
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n > 0 {
                data += buffer[0..<n]
                continue
            }
            if n < 0 && errno == EINTR { continue }
            break
        }
        close(fd)
        guard data.last == 0 else { return nil }
        return data.dropLast().split(separator: 0, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
    }

    /// Each argument NUL-terminated; false if they do not fit in the pipe.
    static func writeArguments(_ arguments: [String], to fd: Int32) -> Bool {
        var data: [UInt8] = []
        for argument in arguments { data += Array(argument.utf8) + [0] }
        guard data.count <= 60 * 1024 else { return false }
        var offset = 0
        while offset < data.count {
            let n = data[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// `fd`, or a close-on-exec copy of it above the descriptors the daemon is given (0–4).
    private static func aboveSpawnedDescriptors(_ fd: Int32) -> Int32 {
        guard fd <= argumentsFD else { return fd }
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, argumentsFD + 1)
        close(fd)
        return copy
    }

    private static func markAllDescriptorsCloseOnExec() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for fd in entries.compactMap({ Int32($0) }) where fd > 2 {
            _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        }
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R)
        -> R
    {
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
