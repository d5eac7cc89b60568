import Foundation
import Glibc
import Prometheus

/// `--metrics-addr HOST:PORT`: serves the daemon's metrics as Prometheus text (`GET /metrics`, or any path) on a
/// thread of its own, one connection at a time — a scrape every few seconds is all it has to bear.
final class MetricsEndpoint: Sendable {
    let registry: PrometheusCollectorRegistry
    private let socket: Int32

    /// Binds at once, so that a bad or busy address fails the mount with one line.
    init(address: String, registry: PrometheusCollectorRegistry) throws(CLIError) {
        self.registry = registry
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw CLIError("bad metrics address \"\(address)\" (expected HOST:PORT, e.g. 127.0.0.1:9464)")
        }
        let host = String(address[..<colon])
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host.isEmpty ? "0.0.0.0" : host, &sin.sin_addr) == 1 else {
            throw CLIError("bad metrics address \"\(address)\": \(host) is not an IPv4 address")
        }
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard fd >= 0, bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            if fd >= 0 { close(fd) }
            throw CLIError("cannot serve metrics on \(address): \(reason)")
        }
        socket = fd
    }

    func start() {
        let thread = Thread { [self] in
            while true {
                let client = accept(socket, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return
                }
                answer(client)
                close(client)
            }
        }
        thread.name = "bucketfs-metrics"
        thread.start()
    }

    private func answer(_ client: Int32) {
        // The request itself does not matter; read what came so the client sees an orderly close.
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request = [UInt8](repeating: 0, count: 4096)
        _ = recv(client, &request, request.count, 0)
        var body: [UInt8] = []
        DaemonMetrics.shared.refresh()
        registry.emit(into: &body)
        let head =
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        let reply = Array(head.utf8) + body
        var sent = 0
        while sent < reply.count {
            let n = reply[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }
}
