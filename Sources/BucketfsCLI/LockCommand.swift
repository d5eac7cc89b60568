import ArgumentParser
import Foundation
import Glibc
import Locking
import Logging
import ObjectStore
import Synchronization

/// The distributed locks without a mount: `lock run` is flock(1) across hosts, `lock list` shows the holders.
/// Both name a file as a path under SOURCE, so they meet flock/fcntl locks taken on that file through a mount
/// of SOURCE with the same strategy.
struct LockCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock", abstract: "Run a command under a distributed lock, or list who holds locks.",
        subcommands: [Run.self, List.self])

    /// The store and strategy of SOURCE under the configuration given.
    static func setup(source: String, settings: ConfigurationOptions) throws(CLIError) -> LockSetup {
        let configuration = try settings.resolve()
        let setup = try MountAssembly(source: source, configuration: configuration).lockSetup()
        guard setup.strategy != nil else { throw CLIError("lock strategy \"none\" holds nothing outside a mount") }
        return setup
    }

    static func path(_ resource: String) -> String {
        String(resource.drop { $0 == "/" })
    }

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run COMMAND while holding the lock on RESOURCE (a path under SOURCE).",
            discussion: """
                Waits for the lock as the configuration says (retry_attempts tries, retry_delay_seconds apart) unless
                --wait is given; exits 1 without running COMMAND if the lock cannot be had. Otherwise exits with
                COMMAND's status, or 1 if the lease was lost while COMMAND ran (it was then not protected).
                COMMAND gets the lease's fencing token in BUCKETFS_LOCK_TOKEN: it grows with every new holder.
                Example: bucketfs lock run s3://team/data/ jobs/nightly -- ./nightly.sh
                """)

        @Argument(help: "s3://bucket/prefix/, gs://…, file:///dir/ — as for mount.")
        var source: String
        @Argument(help: "The file to lock, as a path under SOURCE (e.g. data/counter).")
        var resource: String
        @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.")
        var command: [String] = []

        @Option(help: "Seconds to wait for the lock (0: try once); default: the configured retries.")
        var wait: Double?

        @Flag(help: "Take the lock shared (like flock -s): shared holders coexist, exclusive ones wait for them.")
        var shared = false

        @OptionGroup var settings: ConfigurationOptions

        func validate() throws {
            if command.isEmpty { throw ValidationError("no command given (put it after --)") }
            try FlagBounds.check(wait, flag: "--wait", in: FlagBounds.lockWait, unit: "seconds")
        }

        func run() throws {
            let setup = try LockCommand.setup(source: source, settings: settings)
            var logger = Logger(label: "bucketfs.lock")
            logger.logLevel = .warning
            guard let manager = setup.makeManager(logger: logger) else { throw ExitCode.failure }
            let name = setup.resourceName(LockCommand.path(resource))
            let status: Int32
            let mode: LeaseMode = shared ? .shared : .exclusive
            do {
                if let wait {
                    let lease: Lease?
                    do { lease = try manager.acquire(name, mode: mode, timeout: wait) } catch {
                        throw LockAcquisitionError(resource: name, attempts: 1, lastError: error)
                    }
                    guard let lease else { throw LockAcquisitionError(resource: name, attempts: 1, lastError: nil) }
                    status = ChildProcess.run(command, token: lease.token)
                    try manager.release(lease)
                } else {
                    // The library's `withLock`: `retry_attempts` tries, `retry_delay_seconds` apart (seed 000).
                    status = try withLock(
                        name, manager: manager, mode: mode, retryAttempts: setup.retryAttempts,
                        retryDelay: setup.retryDelay
                    ) { lease in
                        ChildProcess.run(command, token: lease.token)
                    }
                }
            } catch let error as LockAcquisitionError where error.lastError == nil {
                FileHandle.standardError.write(Data("bucketfs: \(resource) is locked by another holder\n".utf8))
                throw ExitCode.failure
            } catch let error as LockAcquisitionError {
                throw CLIError("cannot take the lock on \(resource): \(error)")
            } catch {
                // Only a release fails here: the lease was gone (or unreachable) before the command ended.
                FileHandle.standardError.write(
                    Data("bucketfs: the lock on \(resource) was lost while the command ran: \(error)\n".utf8))
                throw ExitCode.failure
            }
            manager.shutdown()
            if status != 0 { throw ExitCode(status) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the current holders of locks under SOURCE as a JSON array.")

        @Argument(help: "s3://bucket/prefix/, gs://…, file:///dir/ — as for mount.")
        var source: String

        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let setup = try LockCommand.setup(source: source, settings: settings)
            let records: [LockRecord]
            do { records = try setup.strategy!.holders() } catch { throw CLIError("cannot list locks: \(error)") }
            // Redis and lock files are shared by every source: keep this one's, named by path.
            let scope = String(setup.resourceName("x").dropLast())
            let mine = records.filter { $0.resource.hasPrefix(scope) }.map { record -> LockRecord in
                var shown = record
                shown.resource = String(record.resource.dropFirst(scope.count))
                return shown
            }
            let data = (try? LockRecord.encoder.encode(mine)) ?? Data("[]".utf8)
            print(String(decoding: data, as: UTF8.self))
        }
    }
}

/// A child process that shares our terminal; while it runs, SIGINT/SIGTERM/SIGHUP sent to us are passed on to
/// it instead of killing us, so that the lock is released after it ends.
enum ChildProcess {
    private static let child = Atomic<Int32>(0)

    /// `token`: exported to the command as `BUCKETFS_LOCK_TOKEN`.
    static func run(_ argv: [String], token: UInt64? = nil) -> Int32 {
        let forwarded: [Int32] = [SIGINT, SIGTERM, SIGHUP]
        for sig in forwarded {
            signal(sig) { received in
                let pid = ChildProcess.child.load(ordering: .relaxed)
                if pid > 0 && received != SIGINT { kill(pid, received) }  // SIGINT reaches the group already
            }
        }
        var pid: pid_t = 0
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var environment = ProcessInfo.processInfo.environment
        if let token { environment["BUCKETFS_LOCK_TOKEN"] = String(token) }
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cEnv.forEach { free($0) } }
        let spawned = posix_spawnp(&pid, argv[0], nil, nil, cArgs, cEnv)
        guard spawned == 0 else {
            FileHandle.standardError.write(
                Data("bucketfs: cannot run \(argv[0]): \(String(cString: strerror(spawned)))\n".utf8))
            return 127
        }
        child.store(pid, ordering: .relaxed)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        child.store(0, ordering: .relaxed)
        for sig in forwarded { signal(sig, SIG_DFL) }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }  // exited
        return 128 + (status & 0x7f)  // killed by a signal
    }
}
