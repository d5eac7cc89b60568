import Glibc

/// A byte stream to a Redis server: plain TCP (`RedisSocket`) or TLS over it (`RedisTLSStream`).
/// Calls block the calling thread, each at most the stream's timeout.
protocol RedisStream: AnyObject {
    func write(_ bytes: [UInt8]) throws(RedisError)
    /// At least one byte; an error when the server closed the connection or said nothing in time.
    func read() throws(RedisError) -> [UInt8]
}

/// A blocking TCP connection with a connect timeout and a per-call send/receive timeout. Writes use
/// `MSG_NOSIGNAL`: a server that went away must give an error, never a SIGPIPE that kills the daemon.
final class RedisSocket: RedisStream {
    let fd: Int32

    private init(fd: Int32) {
        self.fd = fd
    }

    deinit { close(fd) }

    /// Tries each address of `host` in turn.
    static func connect(host: String, port: Int, timeout: Double) throws(RedisError) -> RedisSocket {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let list else {
            throw .unavailable("cannot resolve the host: \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        var failure = "no address"
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let address = entry?.pointee {
            entry = address.ai_next
            let fd = socket(address.ai_family, address.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), address.ai_protocol)
            guard fd >= 0 else {
                failure = Self.errnoText(errno)
                continue
            }
            let connected = RedisSocket(fd: fd)
            if let error = connected.connect(to: address, timeout: timeout) {
                failure = error
                continue
            }
            var yes: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
            return connected
        }
        throw .unavailable("\(failure)")
    }

    /// A non-blocking connect bounded by `timeout`; the error text, or `nil` once connected (blocking again).
    private func connect(to address: addrinfo, timeout: Double) -> String? {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        if Glibc.connect(fd, address.ai_addr, address.ai_addrlen) != 0 {
            guard errno == EINPROGRESS else { return Self.errnoText(errno) }
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            var ready: Int32
            repeat { ready = poll(&poller, 1, Int32(max(1, timeout * 1000))) } while ready < 0 && errno == EINTR
            guard ready > 0 else { return ready == 0 ? "connect timed out after \(timeout) s" : Self.errnoText(errno) }
            var failure: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &length)
            guard failure == 0 else { return Self.errnoText(failure) }
        }
        _ = fcntl(fd, F_SETFL, flags)
        return nil
    }

    /// Bounds every later send and receive: a server that stops answering must not hang a lock renewal or a
    /// FUSE request.
    func setTimeout(_ seconds: Double) {
        let whole = seconds.rounded(.down)
        var value = timeval(tv_sec: Int(whole), tv_usec: Int((seconds - whole) * 1_000_000))
        let size = socklen_t(MemoryLayout<timeval>.size)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, size)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, size)
    }

    func write(_ bytes: [UInt8]) throws(RedisError) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { buffer in
                send(fd, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 {
                if errno == EINTR { continue }
                throw .unavailable("\(Self.ioText(errno, "send"))")
            }
            offset += sent
        }
    }

    func read() throws(RedisError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if received > 0 { return Array(buffer[..<received]) }
            if received == 0 { throw .unavailable("the server closed the connection") }
            if errno != EINTR { throw .unavailable("\(Self.ioText(errno, "receive"))") }
        }
    }

    private static func ioText(_ code: Int32, _ what: String) -> String {
        code == EAGAIN || code == EWOULDBLOCK ? "no answer in time (\(what) timed out)" : errnoText(code)
    }

    static func errnoText(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}
