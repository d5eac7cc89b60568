import Foundation
import ObjectStore
import TestSupport
import XCTest

@testable import FileSystem

/// The streaming GET under readers that wait for its bytes.
final class SequentialStreamReaderTests: XCTestCase {
    /// Streams an object in `piece`-byte pieces, each sent only once the test signals `next`.
    final class PacedStreamStore: ForwardingObjectStore, @unchecked Sendable {
        let base: any ObjectStore
        let piece: Int
        let next = DispatchSemaphore(value: 0)
        init(_ base: any ObjectStore, piece: Int) {
            self.base = base
            self.piece = piece
        }
        var description: String { "paced-stream" }
        func getStreaming(
            _ key: String, range: Range<UInt64>, version: String?,
            consumer: @escaping (UnsafeRawBufferPointer) -> Bool
        ) throws(ObjectStoreError) {
            let body = try base.get(key, range: range).body
            var offset = 0
            while offset < body.count {
                next.wait()
                let count = min(piece, body.count - offset)
                let going = body.withUnsafeBytes {
                    consumer(UnsafeRawBufferPointer(rebasing: $0[offset..<offset + count]))
                }
                guard going else { return }
                offset += count
            }
        }
    }

    /// Readers waiting at once for different ranges (the kernel's read-ahead sends several) each get their bytes as
    /// soon as they are in, the furthest asked first: the stream wakes waiting readers only when the smallest end any
    /// of them waits for is reached, and each one still short of its range asks again.
    func testReadersWaitingForDifferentRangesAllGetTheirBytes() throws {
        let memory = MemoryObjectStore()
        let size = (3 << 20) + 500
        let body = ReadPrefetcherTests.content(size)
        let info = try memory.put("s", data: body)
        let store = PacedStreamStore(memory, piece: 48 << 10)
        let stream = try XCTUnwrap(
            SequentialStream.start(
                store: store, key: "s", version: info.version, from: 0, size: UInt64(size),
                budget: PrefetchBudget(bytes: 64 << 20)))
        defer { stream.close() }
        let ranges = [(3 << 20, 500), (2 << 20, 1 << 20), (1 << 20, 1 << 20), (0, 1 << 20), (4096, 8192)]
        let results = Locked<[Int: Data]>([:])
        let started = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        for (index, range) in ranges.enumerated() {
            DispatchQueue.global().async(group: done) {
                started.signal()
                let got = try? stream.read(offset: UInt64(range.0), count: range.1)
                results.withLock { $0[index] = got ?? Data("nil".utf8) }
            }
        }
        for _ in ranges { started.wait() }
        // Piece after piece, while the readers wait (none is done before the bytes it asked for are sent).
        for _ in 0..<((size + store.piece - 1) / store.piece) { store.next.signal() }
        done.wait()
        for (index, range) in ranges.enumerated() {
            XCTAssertEqual(results.withLock { $0[index] }, body.subdata(in: range.0..<(range.0 + range.1)), "\(range)")
        }
    }
}
