import CHiredis
import Foundation
import Glibc
import Synchronization

/// One synchronous hiredis connection, shared by every thread of the process through a mutex: a lock
/// operation is a round trip or three, so one connection serves a mount well. Calls block the calling
/// thread (never use it from Swift's cooperative pool).
///
/// A broken connection (server restarted, idle socket closed) is replaced and the command sent once more; if
/// that fails too the error is `LockError.unavailable`. A command may therefore run twice when the first
/// attempt reached the server before the connection broke: callers keep that harmless (see `RedisLockStrategy`).
package final class RedisConnection: Sendable {
    package let endpoint: RedisEndpoint
    private let connectTimeout: Double
    private let commandTimeout: Double

    private struct State: ~Copyable {
        var context: UnsafeMutablePointer<redisContext>?
        deinit { if let context { redisFree(context) } }
    }

    private let state = Mutex(State())
    private let brokenConnections = Atomic<UInt64>(0)

    /// Grows whenever a command found its connection broken and had to reconnect: callers compare it before
    /// and after a command to know whether the command may have run twice.
    package var reconnections: UInt64 { brokenConnections.load(ordering: .acquiring) }

    package init(endpoint: RedisEndpoint, connectTimeout: Double = 2, commandTimeout: Double = 5) {
        self.endpoint = endpoint
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
    }

    /// Sends one command; an error reply from the server is returned as `.error`, not thrown.
    package func command(_ arguments: [String]) throws(RedisError) -> RedisValue {
        try state.withLock { (state: inout State) throws(RedisError) -> RedisValue in
            var lastFailure = ""
            for _ in 0..<2 {
                if state.context == nil { state.context = try connect() }
                guard let context = state.context else { break }
                if let reply = send(context, arguments) { return reply }
                lastFailure = Self.errorText(context)
                redisFree(context)
                state.context = nil
                brokenConnections.add(1, ordering: .releasing)
            }
            throw .unavailable("\(endpoint): \(lastFailure)")
        }
    }

    /// Drops the connection; the next command connects again.
    package func disconnect() {
        state.withLock { state in
            if let context = state.context { redisFree(context) }
            state.context = nil
        }
    }

    // MARK: hiredis

    private func connect() throws(RedisError) -> UnsafeMutablePointer<redisContext> {
        guard let context = redisConnectWithTimeout(endpoint.host, Int32(endpoint.port), Self.timeval(connectTimeout)) else {
            throw .unavailable("\(endpoint): cannot allocate a connection")
        }
        guard context.pointee.err == 0 else {
            let detail = Self.errorText(context)
            redisFree(context)
            throw .unavailable("\(endpoint): \(detail)")
        }
        // A server that stops answering must not hang a renewal or a FUSE request forever.
        _ = redisSetTimeout(context, Self.timeval(commandTimeout))
        var setup: [[String]] = []
        if let password = endpoint.password {
            setup.append(endpoint.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
        }
        if endpoint.db != 0 { setup.append(["SELECT", String(endpoint.db)]) }
        for arguments in setup {
            guard let reply = send(context, arguments) else {
                let detail = Self.errorText(context)
                redisFree(context)
                throw .unavailable("\(endpoint): \(arguments[0]): \(detail)")
            }
            if case .error(let message) = reply {
                redisFree(context)
                // A refused password or database is a configuration error, not an outage.
                throw .invalid("\(endpoint): \(arguments[0]) refused: \(message)")
            }
        }
        return context
    }

    /// `nil` when the connection failed (the context's `err` says why).
    private func send(_ context: UnsafeMutablePointer<redisContext>, _ arguments: [String]) -> RedisValue? {
        // redisCommandArgv is binary-safe: it takes lengths, so the C strings need no terminator handling.
        let buffers = arguments.map { Array($0.utf8) }
        let lengths = buffers.map { $0.count }
        let raw: UnsafeMutableRawPointer? = withPointers(buffers) { pointers in
            var argv = pointers
            return argv.withUnsafeMutableBufferPointer { argvBuffer in
                lengths.withUnsafeBufferPointer { lengthBuffer in
                    redisCommandArgv(context, Int32(arguments.count), argvBuffer.baseAddress, lengthBuffer.baseAddress)
                }
            }
        }
        guard let raw else { return nil }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return Self.convert(reply)
    }

    /// Pins every argument's bytes while `body` runs and hands it their addresses.
    private func withPointers<R>(_ buffers: [[UInt8]], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        var pointers: [UnsafePointer<CChar>?] = []
        func pin(_ index: Int) -> R {
            if index == buffers.count { return body(pointers) }
            return buffers[index].withUnsafeBufferPointer { buffer in
                // An empty argument still needs a valid address.
                let address = buffer.baseAddress.map { UnsafeRawPointer($0) } ?? UnsafeRawPointer(("" as StaticString).utf8Start)
                pointers.append(address.assumingMemoryBound(to: CChar.self))
                return pin(index + 1)
            }
        }
        return pin(0)
    }

    static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let value = reply.pointee
        func string() -> String {
            guard let pointer = value.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: pointer, count: Int(value.len)), as: UTF8.self)
        }
        switch value.type {
        case REDIS_REPLY_STATUS: return .status(string())
        case REDIS_REPLY_ERROR: return .error(string())
        case REDIS_REPLY_INTEGER: return .integer(value.integer)
        case REDIS_REPLY_STRING: return .string(string())
        case REDIS_REPLY_ARRAY:
            var elements: [RedisValue] = []
            for index in 0..<Int(value.elements) {
                if let element = value.element[index] { elements.append(convert(element)) }
            }
            return .array(elements)
        default: return .null
        }
    }

    private static func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
        let text = withUnsafeBytes(of: context.pointee.errstr) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        return text.isEmpty ? "connection error \(context.pointee.err)" : text
    }

    private static func timeval(_ seconds: Double) -> Glibc.timeval {
        let whole = seconds.rounded(.down)
        return Glibc.timeval(tv_sec: Int(whole), tv_usec: Int((seconds - whole) * 1_000_000))
    }
}
