import CLibc
import Foundation
import Glibc

/// Bytes in and out of object files: bodies written, and copies that keep a sparse file's holes (data extents
/// found with SEEK_DATA/SEEK_HOLE), so a mostly empty file is not filled with zeros in the bucket.
extension LocalDirectoryObjectStore {
    func write(_ body: PutBody, to fd: Int32) throws(ObjectStoreError) {
        switch body {
        case .data(let data):
            // withUnsafeBytes only rethrows untyped errors, hence the Result.
            try data.withUnsafeBytes { buffer -> Result<Void, ObjectStoreError> in
                guard let base = buffer.baseAddress else { return .success(()) }
                return Result { () throws(ObjectStoreError) in try writeAll(fd, base, buffer.count) }
            }.get()
        case .file(let path):
            let source = open(path, O_RDONLY | O_CLOEXEC)
            guard source >= 0 else {
                throw .invalidRequest("cannot read body file \(path): \(String(cString: strerror(errno)))")
            }
            defer { close(source) }
            try copyAll(from: source, to: fd, describing: path)
        case .fileRange(let path, let offset, let length):
            let data = try PutBody.read(path: path, offset: offset, length: length)
            try write(.data(data), to: fd)
        }
    }

    /// Copies the rest of `input` to `output` at its position, leaving `output` positioned after it. The holes of a
    /// sparse input (a file truncated up, written past its end) stay holes: only its data extents are read and
    /// written (SEEK_DATA/Self.seekHole), so a 10 GiB `truncate -s` costs no disk and no time.
    func copyAll(from input: Int32, to output: Int32, describing source: String) throws(ObjectStoreError) {
        var status = stat()
        let start = lseek(input, 0, SEEK_CUR)
        let base = lseek(output, 0, SEEK_CUR)
        guard fstat(input, &status) == 0, status.st_mode & S_IFMT == S_IFREG, start >= 0, base >= 0,
            lseek(input, start, Self.seekData) >= 0 || errno == ENXIO
        else { return try copyStream(from: input, to: output, describing: source) }
        let end = status.st_size
        var offset = start
        while offset < end {
            let data = lseek(input, offset, Self.seekData)
            if data < 0 && errno == ENXIO { break }  // only a hole is left
            guard data >= 0 else { throw failure("lseek", source, key: source) }
            let hole = min(end, max(data, lseek(input, data, Self.seekHole)))
            try copyRange(from: input, data..<(hole == data ? end : hole), to: output, at: base - start)
            offset = hole == data ? end : hole
        }
        let total = base + (end - max(start, 0))
        var written = stat()
        guard fstat(output, &written) == 0 else { throw failure("fstat", "temp file", key: "temp file") }
        if written.st_size < total && ftruncate(output, total) != 0 {
            throw failure("ftruncate", "temp file", key: "temp file")
        }
        guard lseek(output, total, SEEK_SET) == total, lseek(input, end, SEEK_SET) == end else {
            throw failure("lseek", source, key: source)
        }
    }

    /// Linux's lseek whences (Glibc exports them only with _GNU_SOURCE).
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4

    /// `range` of `input` to `output` at the same offsets moved by `shift`.
    private func copyRange(from input: Int32, _ range: Range<off_t>, to output: Int32, at shift: off_t)
        throws(ObjectStoreError)
    {
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        var offset = range.lowerBound
        while offset < range.upperBound {
            let n = pread(input, buffer, min(size, Int(range.upperBound - offset)), offset)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw failure("read", "body file", key: "body file") }
            if n == 0 { return }
            var done = 0
            while done < n {
                let w = pwrite(output, buffer + done, n - done, offset + shift + off_t(done))
                if w < 0 && errno == EINTR { continue }
                if w < 0 { throw failure("write", "temp file", key: "temp file") }
                done += w
            }
            offset += off_t(n)
        }
    }

    private func copyStream(from input: Int32, to output: Int32, describing source: String) throws(ObjectStoreError) {
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(input, buffer, size)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw failure("read", source, key: source) }
            if n == 0 { return }
            try writeAll(output, buffer, n)
        }
    }

    private func writeAll(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) throws(ObjectStoreError) {
        var done = 0
        while done < count {
            let n = Glibc.write(fd, bytes + done, count - done)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw failure("write", "temp file", key: "temp file") }
            done += n
        }
    }

    static func isEmpty(_ body: PutBody) throws(ObjectStoreError) -> Bool {
        switch body {
        case .data(let data):
            return data.isEmpty
        case .file(let path):
            var status = stat()
            guard stat(path, &status) == 0 else {
                throw .invalidRequest("cannot read body file \(path): \(String(cString: strerror(errno)))")
            }
            return status.st_size == 0
        case .fileRange(_, _, let length):
            return length == 0
        }
    }
}
