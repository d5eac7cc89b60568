import Foundation
import Glibc

/// A server subprocess on 127.0.0.1, ready once `ready` answers (by default: its port accepts connections),
/// stopped by `stop()`. Subclasses name the program and its arguments.
open class ServerProcess: @unchecked Sendable {
    public let port: Int
    public let process = Process()
    public var endpoint: String { "http://127.0.0.1:\(port)" }

    /// `port`: nil picks a free one. `prepare` may set up the process further (working directory, stdin) before
    /// it runs. `ready` is polled every 50 ms for up to `timeout` seconds; a server that exits or is not ready by
    /// then is a failure (the program is installed, so it should start).
    public init(
        name: String, executable: String, port: Int? = nil, environment: [String: String] = [:],
        arguments: (Int) -> [String], stderr: FileHandle = .nullDevice, timeout: Double = 60,
        prepare: ((Process) throws -> Void)? = nil, ready: ((Int) -> Bool)? = nil
    ) throws {
        let port = try port ?? Loopback.freePort()
        self.port = port
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments(port)
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = stderr
        try prepare?(process)
        try process.run()
        let isReady = ready ?? { Loopback.accepts(port: $0) }
        let deadline = Date().addingTimeInterval(timeout)
        while !isReady(port) {
            guard process.isRunning, Date() < deadline else {
                terminate()
                throw ServerFailure("\(name) did not start on port \(port)")
            }
            usleep(50_000)
        }
    }

    /// Stops the server; subclasses that leave files behind remove them after calling this.
    open func stop() {
        terminate()
    }

    private func terminate() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}
