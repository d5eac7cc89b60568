import CHiredis
import Foundation
import Glibc
import Synchronization

/// One synchronous Redis connection, shared by every thread of the process through a mutex: a lock
/// operation is a round trip or three, so one connection serves a mount well. Calls block the calling
/// thread (never use it from Swift's cooperative pool).
///
/// Commands go out as RESP over our own socket, plain or TLS (`rediss://`; hiredis 0.14 of Debian 12 has no
/// TLS), and replies are parsed by hiredis' reader (the parser the RESP fuzz target exercises).
///
/// A broken connection (server restarted, idle socket closed) is replaced and the command sent once more; if
/// that fails too the error is `RedisError.unavailable`. A command may therefore run twice when the first
/// attempt reached the server before the connection broke: callers keep that harmless (see `RedisLockStrategy`).
package final class RedisConnection: Sendable {
    package let endpoint: RedisEndpoint
    private let connectTimeout: Double
    private let commandTimeout: Double

    private struct State: ~Copyable {
        var session: Session?
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
                if state.session == nil { state.session = try connect() }
                guard let session = state.session else { break }
                do throws(RedisError) {
                    return try session.call(arguments)
                } catch {
                    lastFailure = error.description
                }
                state.session = nil
                brokenConnections.add(1, ordering: .releasing)
            }
            throw .unavailable("\(endpoint): \(lastFailure)")
        }
    }

    /// Drops the connection; the next command connects again.
    package func disconnect() {
        state.withLock { $0.session = nil }
    }

    private func connect() throws(RedisError) -> Session {
        let socket: RedisSocket
        do {
            socket = try RedisSocket.connect(host: endpoint.host, port: endpoint.port, timeout: connectTimeout)
        } catch {
            throw .unavailable("\(endpoint): \(error.description)")
        }
        let stream: any RedisStream
        if let tls = endpoint.tls {
            // The handshake is part of connecting, so it gets the connect timeout.
            socket.setTimeout(connectTimeout)
            do {
                stream = try RedisTLSStream(socket: socket, host: endpoint.host, settings: tls)
            } catch .invalid(let detail) {
                throw .invalid("\(endpoint): \(detail)")
            } catch {
                throw .unavailable("\(endpoint): \(error.description)")
            }
        } else {
            stream = socket
        }
        socket.setTimeout(commandTimeout)
        let session = try Session(stream: stream)
        var setup: [[String]] = []
        if let password = endpoint.password {
            setup.append(endpoint.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
        }
        if endpoint.db != 0 { setup.append(["SELECT", String(endpoint.db)]) }
        for arguments in setup {
            let reply: RedisValue
            do {
                reply = try session.call(arguments)
            } catch {
                throw .unavailable("\(endpoint): \(arguments[0]): \(error.description)")
            }
            if case .error(let message) = reply {
                // A refused password or database is a configuration error, not an outage.
                throw .invalid("\(endpoint): \(arguments[0]) refused: \(message)")
            }
        }
        return session
    }

    /// RESP: `*<count>` then `$<length>` and the bytes of each argument (binary-safe).
    static func encode(_ arguments: [String]) -> [UInt8] {
        var bytes = Array("*\(arguments.count)\r\n".utf8)
        for argument in arguments {
            let utf8 = Array(argument.utf8)
            bytes += Array("$\(utf8.count)\r\n".utf8)
            bytes += utf8
            bytes += [13, 10]
        }
        return bytes
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

    /// One open stream and the reader of its replies; used under the connection's mutex only.
    private final class Session {
        private let stream: any RedisStream
        private let reader: UnsafeMutablePointer<redisReader>

        init(stream: any RedisStream) throws(RedisError) {
            guard let reader = redisReaderCreate() else { throw .unavailable("cannot allocate a reply reader") }
            self.stream = stream
            self.reader = reader
        }

        deinit { redisReaderFree(reader) }

        /// Any failure (I/O, a reply that is not RESP) leaves the session unusable: the caller drops it.
        func call(_ arguments: [String]) throws(RedisError) -> RedisValue {
            try stream.write(RedisConnection.encode(arguments))
            while true {
                var raw: UnsafeMutableRawPointer?
                guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
                    let text = withUnsafeBytes(of: reader.pointee.errstr) { bytes in
                        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                    }
                    throw .unavailable("protocol error: \(text)")
                }
                if let raw {
                    defer { freeReplyObject(raw) }
                    return RedisConnection.convert(raw.assumingMemoryBound(to: redisReply.self))
                }
                let bytes = try stream.read()
                let fed = bytes.withUnsafeBufferPointer { buffer in
                    buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                        redisReaderFeed(reader, $0, buffer.count)
                    }
                }
                guard fed == REDIS_OK else { throw .unavailable("protocol error: cannot buffer the reply") }
            }
        }
    }
}
