import FileSystem
import Foundation
import Glibc
import ObjectStore
import Synchronization
import XCTest

/// A random read hands the whole cached block around it to the kernel's page cache (`PageCacheFiller`, through the
/// store callback the FUSE layer sets), and no push lands after a change of the file that the kernel hears of.
final class PageCacheFillerTests: FileSystemTestCase {
    /// Pushes as the kernel's store would receive them; `hold` keeps the first one in the callback until released.
    final class KernelPages: Sendable {
        let pushes = Mutex<[(offset: UInt64, data: Data)]>([])
        let arrived = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let holdFirst: Bool
        init(holdFirst: Bool = false) { self.holdFirst = holdFirst }

        func store(_ ino: UInt64, _ offset: UInt64, _ data: Data) {
            let first = pushes.withLock { list in
                list.append((offset, data))
                return list.count == 1
            }
            arrived.signal()
            if holdFirst && first { release.wait() }
        }

        /// Waits for the next push and gives its offset.
        func next(file: StaticString = #filePath, line: UInt = #line) -> UInt64? {
            guard arrived.wait(timeout: .now() + 10) == .success else {
                XCTFail("no push arrived", file: file, line: line)
                return nil
            }
            return pushes.withLock { $0.last?.offset }
        }
    }

    static let mebibyte: UInt64 = 1 << 20

    func makeFile(_ store: MemoryObjectStore, size: Int = 16 << 20) throws -> Data {
        var body = Data(count: size)
        body.withUnsafeMutableBytes { bytes in
            var generator = SystemRandomNumberGenerator()
            for i in 0..<size / 8 {
                bytes.storeBytes(of: generator.next() as UInt64, toByteOffset: i * 8, as: UInt64.self)
            }
        }
        try store.put("big", data: body)
        return body
    }

    func testASeekPushesTheCachedBlockAroundItOnce() throws {
        let store = MemoryObjectStore()
        let body = try makeFile(store)
        let fs = try makeFileSystem(store)
        let pages = KernelPages()
        fs.setKernelPageStore { pages.store($0, $1, $2) }
        defer { fs.setKernelPageStore(nil) }
        let invalidated = Mutex<[UInt64]>([])
        fs.setKernelCacheInvalidator { ino in invalidated.withLock { $0.append(ino) } }
        let file = try fs.lookup(parent: Self.root, name: "big")
        let handle = try fs.open(file.ino, flags: O_RDONLY).handle

        let offset = 9 * Self.mebibyte + 5000
        XCTAssertEqual(
            try fs.read(file.ino, handle: handle, offset: offset, size: 4096), body[Int(offset)..<Int(offset) + 4096])
        XCTAssertEqual(pages.next(), 9 * Self.mebibyte)
        XCTAssertEqual(pages.pushes.withLock { $0[0].data }, body[(9 << 20)..<(10 << 20)], "the whole block, as stored")
        // Another seek into the same block is not pushed again; the next block is (pushes keep their order).
        _ = try fs.read(file.ino, handle: handle, offset: 9 * Self.mebibyte + 700_000, size: 4096)
        _ = try fs.read(file.ino, handle: handle, offset: 2 * Self.mebibyte + 1, size: 4096)
        XCTAssertEqual(pages.next(), 2 * Self.mebibyte)
        XCTAssertEqual(pages.pushes.withLock { $0.count }, 2)
        XCTAssertEqual(invalidated.withLock { $0 }, [], "pushes of the current version invalidate nothing")
        fs.release(file.ino, handle: handle)
    }

    /// A filesystem whose kernel store holds the push of block 9 of "big" (read by `reader`), with block 5's
    /// offered behind it.
    func holdingAPush(_ store: MemoryObjectStore = MemoryObjectStore(), metadataTTL: Double = 60) throws -> (
        FileSystem, KernelPages, FileAttributes, UInt64
    ) {
        _ = try makeFile(store)
        let fs = try makeFileSystem(store, metadataTTL: metadataTTL)
        let pages = KernelPages(holdFirst: true)
        fs.setKernelPageStore { pages.store($0, $1, $2) }
        let file = try fs.lookup(parent: Self.root, name: "big")
        let reader = try fs.open(file.ino, flags: O_RDONLY).handle
        _ = try fs.read(file.ino, handle: reader, offset: 9 * Self.mebibyte + 1, size: 4096)
        XCTAssertEqual(pages.next(), 9 * Self.mebibyte)  // held in the kernel's store
        _ = try fs.read(file.ino, handle: reader, offset: 5 * Self.mebibyte + 1, size: 4096)  // queued behind it
        return (fs, pages, file, reader)
    }

    /// A writable open waits for the push in flight and drops those queued: the kernel writes that handle's data into
    /// its pages, and an older push landing after would put the old bytes back. While it is open nothing is pushed.
    func testAWritableOpenFencesThePushes() throws {
        let (fs, pages, file, reader) = try holdingAPush()
        defer { fs.setKernelPageStore(nil) }

        let opened = DispatchSemaphore(value: 0)
        let writer = Mutex<UInt64?>(nil)
        DispatchQueue.global().async {
            let handle = try? fs.open(file.ino, flags: O_RDWR).handle
            writer.withLock { $0 = handle }
            opened.signal()
        }
        XCTAssertEqual(opened.wait(timeout: .now() + 0.3), .timedOut, "the open waits for the push in flight")
        pages.release.signal()
        XCTAssertEqual(opened.wait(timeout: .now() + 10), .success)
        let handle = try XCTUnwrap(writer.withLock { $0 })

        _ = try fs.read(file.ino, handle: reader, offset: 13 * Self.mebibyte + 1, size: 4096)  // not offered
        fs.release(file.ino, handle: handle)
        _ = try fs.read(file.ino, handle: reader, offset: 1 * Self.mebibyte + 1, size: 4096)
        XCTAssertEqual(pages.next(), 1 * Self.mebibyte)
        XCTAssertEqual(
            pages.pushes.withLock { $0.map(\.offset) }, [9 * Self.mebibyte, 1 * Self.mebibyte],
            "the push queued before the writable open, and the seek while it was open, were never made")
        fs.release(file.ino, handle: reader)
    }

    /// truncate(2) by path: the kernel truncates its pages after the reply, so a push queued before it is dropped.
    func testATruncateDropsQueuedPushes() throws {
        let (fs, pages, file, reader) = try holdingAPush()
        defer { fs.setKernelPageStore(nil) }

        let truncated = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? fs.setattr(file.ino, AttributeChanges(size: 3 << 20))
            truncated.signal()
        }
        XCTAssertEqual(truncated.wait(timeout: .now() + 0.3), .timedOut, "the truncate waits for the push in flight")
        pages.release.signal()
        XCTAssertEqual(truncated.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(pages.pushes.withLock { $0.map(\.offset) }, [9 * Self.mebibyte])
        fs.release(file.ino, handle: reader)
    }

    /// Another host shrinks the file and this mount hears of it (a getattr: the kernel then drops its pages past the
    /// new end) while a push of the old version waits its turn: it is dropped. Pushed, it would have put the old
    /// bytes back and moved the kernel's end of the file past the new one, until the next attribute refresh.
    func testAPushOfAVersionReplacedSinceItWasOfferedIsDropped() throws {
        let store = MemoryObjectStore()
        let (fs, pages, file, reader) = try holdingAPush(store, metadataTTL: 0)
        defer { fs.setKernelPageStore(nil) }
        try store.put("big", data: Data(count: 2 << 20))
        XCTAssertEqual(try fs.getattr(file.ino).size, 2 << 20)
        // Another file's push, queued behind, tells when the turn of block 5's has come and gone.
        try store.put("other", data: Data(repeating: 1, count: 16 << 20))
        let other = try fs.lookup(parent: Self.root, name: "other")
        let handle = try fs.open(other.ino, flags: O_RDONLY).handle
        _ = try fs.read(other.ino, handle: handle, offset: 11 * Self.mebibyte + 1, size: 4096)
        pages.release.signal()
        while let offset = pages.next(), offset != 11 * Self.mebibyte {}
        XCTAssertEqual(
            pages.pushes.withLock { $0.map(\.offset) }, [9 * Self.mebibyte, 11 * Self.mebibyte],
            "block 5 of the old version was not pushed")
        fs.release(other.ino, handle: handle)
        fs.release(file.ino, handle: reader)
    }

    /// Another host replaces the file and this mount takes the new version while a push of the old one is already in
    /// the kernel's store (past its version check: a refresh holds the state lock and cannot wait for it). Once the
    /// push is made, the inode's pages are invalidated: the old bytes, and an end of file the push may have moved past
    /// the new one, do not stay.
    func testAPushInFlightWhenAnotherVersionIsTakenIsFollowedByAnInvalidation() throws {
        let store = MemoryObjectStore()
        let (fs, pages, file, reader) = try holdingAPush(store, metadataTTL: 0)
        defer { fs.setKernelPageStore(nil) }
        let invalidated = Mutex<[UInt64]>([])
        let heard = DispatchSemaphore(value: 0)
        fs.setKernelCacheInvalidator { ino in
            invalidated.withLock { $0.append(ino) }
            heard.signal()
        }
        try store.put("big", data: Data(count: 2 << 20))
        XCTAssertEqual(try fs.getattr(file.ino).size, 2 << 20)
        XCTAssertEqual(invalidated.withLock { $0 }, [], "not before the push is made")
        pages.release.signal()
        XCTAssertEqual(heard.wait(timeout: .now() + 10), .success, "the outdated push was followed by an invalidation")
        XCTAssertEqual(invalidated.withLock { $0 }, [file.ino])
        XCTAssertEqual(pages.pushes.withLock { $0.map(\.offset) }, [9 * Self.mebibyte], "block 5's offer was dropped")
        fs.release(file.ino, handle: reader)
    }
}
