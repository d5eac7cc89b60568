import CCurl
import Foundation
import Glibc
import Synchronization

/// A blocking HTTP/1.1 client over libcurl easy handles.
///
/// `perform` blocks the calling thread until the whole response is in. That is by design: callers are libfuse
/// worker threads or threads of their own — never Swift's cooperative pool, which has one thread per core and must
/// not be blocked. Finished handles go back to a pool, so their connections (and TLS sessions, DNS cache) are
/// reused by the next request on any thread; a handle is used by one thread at a time.
final class HTTPClient: Sendable {
    struct Options: Sendable {
        var connectTimeout: Double = 10
        var lowSpeedLimit: Int = 1024
        var lowSpeedTime: Int = 30
        /// CA bundle for https (e.g. `AWS_CA_BUNDLE`); ignored when the file does not exist or for plain http.
        var caBundle: String?
    }

    private let options: Options
    private let caBundleExists: Bool
    private let idle = Mutex<[CurlHandle]>([])
    private static let maxIdleHandles = 64

    /// `curl_global_init` is not thread-safe: run it exactly once, before the first handle (a lazy static is).
    private static let globalInit: Bool = curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK

    init(options: Options) {
        _ = Self.globalInit
        self.options = options
        caBundleExists = options.caBundle.map { FileManager.default.fileExists(atPath: $0) } ?? false
    }

    /// With `bodySink`, a response body whose status is in `sinkStatuses` goes to the sink piece by piece as it
    /// arrives instead of into `HTTPResponse.body`; the sink returns false to stop the transfer (the response then
    /// comes back normally, with what headers it had). Other statuses (errors) are collected as usual.
    func perform(
        _ request: HTTPRequest, sinkStatuses: Set<Int> = [],
        bodySink: ((UnsafeRawBufferPointer) -> Bool)? = nil
    ) throws(ObjectStoreError) -> HTTPResponse {
        let handle = try checkOut()
        defer { checkIn(handle) }
        let transfer = Transfer(reserveFromContentLength: request.method != "HEAD" && bodySink == nil)
        transfer.sink = bodySink
        transfer.sinkStatuses = sinkStatuses
        if let expected = request.expectedResponseSize, expected > 0 { transfer.reserve(expected) }
        defer { if transfer.uploadFD >= 0 { close(transfer.uploadFD) } }

        let curl = handle.pointer
        curl_easy_reset(curl)
        handle.errorBuffer.initialize(to: 0)
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        // An empty `Expect:` stops curl from waiting for `100 Continue` before sending a body.
        for line in request.headers.map({ "\($0.0): \($0.1)" }) + ["Expect:"] {
            headerList = curl_slist_append(headerList, line)
        }

        let box = Unmanaged.passUnretained(transfer).toOpaque()
        ccurl_easy_setopt_string(curl, CURLOPT_URL, request.url)
        ccurl_easy_setopt_long(curl, CURLOPT_NOSIGNAL, 1)  // many threads: no SIGALRM-based DNS timeouts
        ccurl_easy_setopt_long(curl, CURLOPT_PATH_AS_IS, 1)  // keys may contain `.`/`..` segments: send as given
        ccurl_easy_setopt_long(curl, CURLOPT_TCP_KEEPALIVE, 1)
        ccurl_easy_setopt_long(curl, CURLOPT_CONNECTTIMEOUT_MS, max(1, Int(options.connectTimeout * 1000)))
        ccurl_easy_setopt_long(curl, CURLOPT_LOW_SPEED_LIMIT, max(1, options.lowSpeedLimit))
        ccurl_easy_setopt_long(curl, CURLOPT_LOW_SPEED_TIME, max(1, options.lowSpeedTime))
        ccurl_easy_setopt_pointer(curl, CURLOPT_ERRORBUFFER, UnsafeMutableRawPointer(handle.errorBuffer))
        ccurl_easy_setopt_slist(curl, CURLOPT_HTTPHEADER, headerList)
        if request.url.lowercased().hasPrefix("https:"), caBundleExists, let caBundle = options.caBundle {
            ccurl_easy_setopt_string(curl, CURLOPT_CAINFO, caBundle)
        }
        ccurl_easy_setopt_callback(curl, CURLOPT_WRITEFUNCTION) { buffer, size, count, userdata in
            let transfer = Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
            let total = size * count
            if let buffer, total > 0 {
                if let sink = transfer.sink, transfer.sinkStatuses.contains(transfer.status) {
                    guard sink(UnsafeRawBufferPointer(start: buffer, count: total)) else {
                        transfer.sinkStopped = true
                        return 0  // curl ends the transfer with CURLE_WRITE_ERROR
                    }
                    return total
                }
                transfer.receive(UnsafeRawBufferPointer(start: buffer, count: total))
            }
            return total
        }
        ccurl_easy_setopt_pointer(curl, CURLOPT_WRITEDATA, box)
        if bodySink != nil { ccurl_easy_setopt_long(curl, CURLOPT_BUFFERSIZE, 512 << 10) }
        ccurl_easy_setopt_callback(curl, CURLOPT_HEADERFUNCTION) { buffer, size, count, userdata in
            let transfer = Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
            let total = size * count
            if let buffer, total > 0 {
                let line = UnsafeRawBufferPointer(start: buffer, count: total)
                transfer.receiveHeaderLine(line)
            }
            return total
        }
        ccurl_easy_setopt_pointer(curl, CURLOPT_HEADERDATA, box)

        switch request.method {
        case "HEAD":
            ccurl_easy_setopt_long(curl, CURLOPT_NOBODY, 1)
        case "GET":
            ccurl_easy_setopt_long(curl, CURLOPT_HTTPGET, 1)
        case "PUT", "POST":
            // Upload mode even for empty bodies, so that `Content-Length: 0` is sent (S3 wants a length).
            let length: UInt64
            switch request.body {
            case .none:
                length = 0
            case .data(let data):
                transfer.uploadData = data
                length = UInt64(data.count)
            case .file(let path, let offset, let fileLength):
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0, lseek(fd, off_t(offset), SEEK_SET) == off_t(offset) else {
                    let reason = String(cString: strerror(errno))
                    if fd >= 0 { close(fd) }
                    throw .invalidRequest("cannot read body file \(path): \(reason)")
                }
                transfer.uploadFD = fd
                transfer.uploadPath = path
                length = fileLength
            }
            transfer.uploadRemaining = length
            ccurl_easy_setopt_long(curl, CURLOPT_UPLOAD, 1)
            ccurl_easy_setopt_off_t(curl, CURLOPT_INFILESIZE_LARGE, curl_off_t(length))
            ccurl_easy_setopt_callback(curl, CURLOPT_READFUNCTION) { buffer, size, count, userdata in
                let transfer = Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
                return transfer.fill(buffer, capacity: size * count)
            }
            ccurl_easy_setopt_pointer(curl, CURLOPT_READDATA, box)
            ccurl_easy_setopt_string(curl, CURLOPT_CUSTOMREQUEST, request.method)
        default:
            ccurl_easy_setopt_string(curl, CURLOPT_CUSTOMREQUEST, request.method)
        }

        let code = withExtendedLifetime(transfer) { curl_easy_perform(curl) }
        if let readError = transfer.readError { throw .invalidRequest(readError) }
        guard code == CURLE_OK || (code == CURLE_WRITE_ERROR && transfer.sinkStopped) else {
            let detail = String(cString: handle.errorBuffer)
            let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            throw .transport("\(request.method) \(request.host): \(text) (curl error \(code.rawValue))")
        }
        var status = 0
        ccurl_easy_getinfo_long(curl, CURLINFO_RESPONSE_CODE, &status)
        return HTTPResponse(status: status, headers: transfer.headers, body: transfer.receivedBody)
    }

    private func checkOut() throws(ObjectStoreError) -> CurlHandle {
        if let handle = idle.withLock({ $0.popLast() }) { return handle }
        guard Self.globalInit, let handle = CurlHandle() else { throw .transport("libcurl could not be initialised") }
        return handle
    }

    private func checkIn(_ handle: CurlHandle) {
        idle.withLock { handles in
            if handles.count < Self.maxIdleHandles { handles.append(handle) }
        }
    }
}

/// An easy handle and its error buffer; owned by one thread at a time (the pool hands it over under its lock).
private final class CurlHandle: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    let errorBuffer: UnsafeMutablePointer<CChar>

    init?() {
        guard let pointer = curl_easy_init() else { return nil }
        self.pointer = pointer
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_easy_cleanup(pointer)
        errorBuffer.deallocate()
    }
}

/// State of one transfer, reached from the C callbacks through their user-data pointer.
private final class Transfer {
    var body = Data()
    var headers: [String: String] = [:]
    let reserveFromContentLength: Bool
    var uploadData: Data?
    var uploadOffset = 0
    var uploadFD: Int32 = -1
    var uploadPath = ""
    var uploadRemaining: UInt64 = 0
    var readError: String?
    /// The status of the response being received (from its status line), for the sink's decision.
    var status = 0
    var sink: ((UnsafeRawBufferPointer) -> Bool)?
    var sinkStatuses: Set<Int> = []
    var sinkStopped = false
    private var reserved = false

    init(reserveFromContentLength: Bool) {
        self.reserveFromContentLength = reserveFromContentLength
    }

    /// A body of 1 to 64 MiB is received into a pooled buffer (`ReceiveBufferPool`), not a fresh allocation.
    private var pooled: ReceiveBuffer?

    func reserve(_ count: Int) {
        reserved = true
        if count >= ReceiveBufferPool.minimumSize && count <= ReceiveBufferPool.maximumSize {
            pooled = ReceiveBufferPool.shared.take(capacity: count)
        } else {
            body.reserveCapacity(count)
        }
    }

    func receive(_ piece: UnsafeRawBufferPointer) {
        if let buffer = pooled {
            if piece.count <= buffer.room {
                buffer.append(piece)
                return
            }
            // More than announced (a server that ignored the range): on in an ordinary Data.
            body = Data(capacity: buffer.count + piece.count)
            body.append(buffer.filled)
            pooled = nil
        }
        body.append(contentsOf: piece)
    }

    var receivedBody: Data { pooled?.filled ?? body }

    /// Without ASCII spaces, tabs, CR and LF at either end.
    private static func trimmed(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> UnsafeBufferPointer<UInt8> {
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0d || byte == 0x0a }
        var bytes = bytes
        while let first = bytes.first, isSpace(first) { bytes = bytes.dropFirst() }
        while let last = bytes.last, isSpace(last) { bytes = bytes.dropLast() }
        return UnsafeBufferPointer(rebasing: bytes)
    }

    /// One header line as libcurl hands it (with its CRLF). Parsed as bytes: Foundation's `trimmingCharacters`
    /// went through NSString and was a fifth of the daemon's CPU during `ls -l` of 100,000 entries (a HEAD each).
    func receiveHeaderLine(_ raw: UnsafeRawBufferPointer) {
        let line = Self.trimmed(raw.assumingMemoryBound(to: UInt8.self)[...])
        if line.starts(with: "HTTP/".utf8) {
            headers = [:]  // a new response (after an interim one): forget the previous headers
            let fields = line.split(separator: UInt8(ascii: " "))
            status = fields.dropFirst().first.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
            return
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return }
        let name = String(decoding: Self.trimmed(line[..<colon]), as: UTF8.self).lowercased()
        let value = String(decoding: Self.trimmed(line[(colon + 1)...]), as: UTF8.self)
        headers[name] = headers[name].map { "\($0), \(value)" } ?? value
        if name == "content-length", reserveFromContentLength, let length = Int(value), !reserved,
            length <= Int(Int32.max)
        {
            reserve(length)
        }
    }

    func fill(_ buffer: UnsafeMutablePointer<CChar>?, capacity: Int) -> Int {
        guard let buffer, capacity > 0, uploadRemaining > 0 else { return 0 }
        let wanted = Int(min(UInt64(capacity), uploadRemaining))
        if let data = uploadData {
            let copied = data.withUnsafeBytes { bytes -> Int in
                let source = bytes.baseAddress!.advanced(by: uploadOffset)
                UnsafeMutableRawPointer(buffer).copyMemory(from: source, byteCount: wanted)
                return wanted
            }
            uploadOffset += copied
            uploadRemaining -= UInt64(copied)
            return copied
        }
        while true {
            let count = read(uploadFD, buffer, wanted)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 {
                readError =
                    count < 0
                    ? "cannot read body file \(uploadPath): \(String(cString: strerror(errno)))"
                    : "body file \(uploadPath) shrank while it was being uploaded"
                return Int(CURL_READFUNC_ABORT)
            }
            uploadRemaining -= UInt64(count)
            return count
        }
    }
}
