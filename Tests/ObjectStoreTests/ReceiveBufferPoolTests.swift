import CLibc
import Foundation
import ObjectStore
import XCTest

final class ReceiveBufferPoolTests: XCTestCase {
    func testABufferComesBackOnlyWhenItsLastViewIsGone() {
        let pool = ReceiveBufferPool(retainedBytes: 4 << 20)
        var buffer: ReceiveBuffer? = pool.take(capacity: 1 << 20)
        let address = buffer!.bytes
        let text = Array(repeating: Array("hello".utf8), count: 100).flatMap { $0 }
        text.withUnsafeBytes { buffer!.append($0) }
        // (A view of a few bytes is copied inline by Data, which lets go of the buffer at once: take 499.)
        var view: Data? = buffer!.data(1..<500)
        buffer = nil
        // The view still holds it: a new buffer is another one, and the view's bytes are intact.
        let other = pool.take(capacity: 1 << 20)
        XCTAssertNotEqual(other.bytes, address)
        XCTAssertEqual(view.map(Array.init), Array(text[1..<500]))
        XCTAssertEqual(pool.retained, 0)
        view = nil
        XCTAssertEqual(pool.retained, 1 << 20)
        XCTAssertEqual(pool.take(capacity: 1 << 20).bytes, address)  // reused, no fresh pages
    }

    func testSizesRoundUpAndWhatIsKeptIsBounded() {
        let pool = ReceiveBufferPool(retainedBytes: 3 << 20)
        var buffers = [pool.take(capacity: (1 << 20) + 1), pool.take(capacity: 2 << 20)]
        XCTAssertEqual(buffers.map(\.capacity), [2 << 20, 2 << 20])
        buffers = []
        XCTAssertEqual(pool.retained, 2 << 20)  // the second one did not fit under 3 MiB: freed
        // Below 1 MiB: exactly the size asked, never kept.
        var small: ReceiveBuffer? = pool.take(capacity: 1000)
        XCTAssertEqual(small?.capacity, 1000)
        small = nil
        XCTAssertEqual(pool.retained, 2 << 20)
    }

    /// A fresh buffer comes with the pages asked for mapped (MADV_POPULATE_WRITE): receiving into it costs no page
    /// fault per 4 KiB. Before, none of them was resident until written. (Whether the rest of its size class is
    /// resident is malloc's business: a big free chunk left in the heap by earlier tests is reused whatever the mmap
    /// threshold, with its pages resident; CI failed an assertion of it twice.) Skipped on kernels without it
    /// (before 5.14).
    func testAFreshBufferIsAlreadyMapped() throws {
        let size = 2 << 20
        let probe = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { probe.deallocate() }
        try XCTSkipUnless(madvise(probe, size, 23) == 0, "no MADV_POPULATE_WRITE here")
        // The daemon's malloc policy (MountCommand): blocks of 1 MiB or more are mmapped when the heap has no room.
        XCTAssertEqual(mallopt(M_MMAP_THRESHOLD, 1 << 20), 1)
        let buffer = ReceiveBufferPool(retainedBytes: 0).take(capacity: size - 4096 * 10 - 1)
        XCTAssertEqual(buffer.capacity, size)
        var resident = [UInt8](repeating: 0, count: size / 4096)
        XCTAssertEqual(mincore(buffer.bytes, size, &resident), 0)
        XCTAssertEqual(resident.prefix(size / 4096 - 10).filter { $0 & 1 != 0 }.count, size / 4096 - 10, "asked for")
    }

    func testFillAndViewsCoverOnlyFilledBytes() {
        let pool = ReceiveBufferPool(retainedBytes: 0)
        let buffer = pool.take(capacity: 1 << 20)
        buffer.bytes.storeBytes(of: 7, as: UInt8.self)
        buffer.fill(1)
        XCTAssertEqual(buffer.room, (1 << 20) - 1)
        XCTAssertEqual(Array(buffer.filled), [7])
    }

    func testJoinedCopiesSeveralPiecesAndPassesOneThrough() {
        let pool = ReceiveBufferPool(retainedBytes: 0)
        let a = Data(repeating: 1, count: 700_000)
        let b = Data(repeating: 2, count: 600_000)
        let joined = pool.joined([a, b])
        XCTAssertEqual(joined.count, 1_300_000)
        XCTAssertEqual(joined.prefix(700_000), a)
        XCTAssertEqual(joined.suffix(600_000), b)
        XCTAssertEqual(pool.joined([a]), a)
        XCTAssertEqual(pool.joined([]), Data())
    }
}
