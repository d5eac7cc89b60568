import Foundation

/// A server a test class starts once, at its first test, and stops in its class `tearDown`: the tests of the class
/// share it, and a server that could not start fails (or, where its program is missing outside CI, skips) each of
/// them with the same error.
///
///     private static let moto = SharedServer { try MotoServer() }
///     override class func tearDown() { moto.stop(); super.tearDown() }
///     override func setUpWithError() throws { let moto = try Self.moto.get() … }
public final class SharedServer<Server: ServerProcess>: @unchecked Sendable {
    // Sendable by its lock: `started` is only touched under it, and `start` only called under it.
    private let lock = NSLock()
    private let start: () throws -> Server
    private var started: Result<Server, any Error>?

    public init(_ start: @escaping () throws -> Server) { self.start = start }

    /// The server, started on the first call; the error of a start that failed, on every call.
    public func get() throws -> Server {
        try lock.withLock {
            let result = started ?? Result { try start() }
            started = result
            return try result.get()
        }
    }

    /// Stops it if it started; a later `get` starts another.
    public func stop() {
        lock.withLock {
            if case .success(let server)? = started { server.stop() }
            started = nil
        }
    }
}
