import FileSystem
import Foundation
import Glibc
import ObjectStore
import TestSupport
import XCTest

/// File content: create and upload on close, overwrites, truncation, metadata changes, conflicts with other
/// writers and what happens to the data when an upload fails.
final class ContentTests: FileSystemTestCase {
    // MARK: Create and upload

    func testCreateWriteFlushUploadsOneObjectWithMetadata() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)

        let (created, handle) = try fs.create(
            parent: Self.root, name: "new.txt", permissions: 0o640,
            flags: O_WRONLY | O_CREAT, caller: caller)
        XCTAssertEqual(created.kind, .file)
        XCTAssertEqual(try write(fs, created.ino, handle: handle, at: 0, "hello "), 6)
        XCTAssertEqual(try write(fs, created.ino, handle: handle, at: 6, "world"), 5)

        // Not uploaded yet, but visible locally.
        XCTAssertEqual(try keys(store), [])
        let seen = try fs.lookup(parent: Self.root, name: "new.txt")
        XCTAssertEqual(seen.ino, created.ino)
        XCTAssertEqual(seen.size, 11)
        let listing = try entries(fs, Self.root)
        XCTAssertEqual(listing.map(\.name), [".", "..", "new.txt"])
        XCTAssertEqual(listing.last?.attributes.ino, created.ino)
        XCTAssertEqual(listing.last?.attributes.kind, .file)
        XCTAssertEqual(try keys(store), [])

        try fs.flush(created.ino, handle: handle)

        XCTAssertEqual(try keys(store), ["new.txt"])
        XCTAssertEqual(try body(store, "new.txt"), "hello world")
        let metadata = try XCTUnwrap(try store.head("new.txt").metadata)
        XCTAssertEqual(Set(metadata.keys), ["mode", "uid", "gid", "mtime", "ctime"])
        XCTAssertEqual(metadata["mode"], String(UInt32(S_IFREG) | 0o640))
        XCTAssertEqual(metadata["uid"], "1234")
        XCTAssertEqual(metadata["gid"], "5678")
        let attributes = try fs.getattr(created.ino)
        XCTAssertEqual(metadata["mtime"].flatMap { FileTime(metadataValue: $0) }, attributes.mtime)

        // A second flush (close of a dup'ed descriptor) with nothing new uploads nothing new.
        let version = try store.head("new.txt").version
        try fs.flush(created.ino, handle: handle)
        fs.release(created.ino, handle: handle)
        XCTAssertEqual(try store.head("new.txt").version, version)
        XCTAssertEqual(try keys(store), ["new.txt"])
    }

    func testReadBackThroughAnotherMountAfterClose() throws {
        let store = MemoryObjectStore()
        let writer = try makeFileSystem(store)
        let (file, handle) = try writer.create(
            parent: Self.root, name: "f", permissions: 0o600, flags: O_WRONLY, caller: caller)
        try write(writer, file.ino, handle: handle, at: 0, "shared")
        try writer.flush(file.ino, handle: handle)
        writer.release(file.ino, handle: handle)

        let reader = try makeFileSystem(store)
        let seen = try reader.lookup(parent: Self.root, name: "f")
        XCTAssertEqual(seen.size, 6)
        XCTAssertEqual(seen.permissions, 0o600)
        XCTAssertEqual(seen.uid, caller.uid)
        let readHandle = try reader.open(seen.ino, flags: O_RDONLY).handle
        XCTAssertEqual(try readAll(reader, seen.ino, handle: readHandle), "shared")
        XCTAssertEqual(try reader.read(seen.ino, handle: readHandle, offset: 6, size: 10), Data())
        reader.release(seen.ino, handle: readHandle)
    }

    // MARK: Overwrite, append, truncate

    func testPartialOverwriteKeepsTheRest() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "abcdefgh", metadata: ["uid": "42"])
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")

        let handle = try fs.open(file.ino, flags: O_WRONLY).handle
        try write(fs, file.ino, handle: handle, at: 2, "XYZ")
        XCTAssertEqual(try body(store, "f"), "abcdefgh")
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)

        XCTAssertEqual(try body(store, "f"), "abXYZfgh")
        XCTAssertEqual(try fs.getattr(file.ino).size, 8)
        XCTAssertEqual(try store.head("f").metadata?["uid"], "42")
    }

    func testAppendBeyondEndGrowsObject() throws {
        let store = MemoryObjectStore()
        try put(store, "log", "line1\n")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "log")

        let handle = try fs.open(file.ino, flags: O_WRONLY | O_APPEND).handle
        try write(fs, file.ino, handle: handle, at: 6, "line2\n")
        XCTAssertEqual(try fs.getattr(file.ino).size, 12)
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(try body(store, "log"), "line1\nline2\n")

        // A write past the end leaves a hole of zero bytes.
        let second = try fs.open(file.ino, flags: O_RDWR).handle
        try write(fs, file.ino, handle: second, at: 14, "!")
        XCTAssertEqual(try readAll(fs, file.ino, handle: second), "line1\nline2\n\0\0!")
        try fs.flush(file.ino, handle: second)
        fs.release(file.ino, handle: second)
        XCTAssertEqual(try store.get("log").body, Data("line1\nline2\n".utf8) + Data([0, 0]) + Data("!".utf8))
    }

    func testOpenWithTruncateAndFlushLeavesEmptyObject() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "old content")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")

        let handle = try fs.open(file.ino, flags: O_WRONLY | O_TRUNC).handle
        XCTAssertEqual(try fs.getattr(file.ino).size, 0)
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)

        XCTAssertEqual(try store.head("f").size, 0)
        XCTAssertEqual(try body(store, "f"), "")
        XCTAssertEqual(try fs.getattr(file.ino).size, 0)
    }

    func testSetattrSizeOnClosedFileUploadsAtOnce() throws {
        let store = MemoryObjectStore()
        try put(store, "t", "0123456789")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "t")

        let shorter = try fs.setattr(file.ino, AttributeChanges(size: 4))
        XCTAssertEqual(shorter.size, 4)
        XCTAssertEqual(try body(store, "t"), "0123")

        let longer = try fs.setattr(file.ino, AttributeChanges(size: 6))
        XCTAssertEqual(longer.size, 6)
        XCTAssertEqual(try store.get("t").body, Data("0123".utf8) + Data([0, 0]))

        _ = try fs.setattr(file.ino, AttributeChanges(size: 0))
        XCTAssertEqual(try store.head("t").size, 0)
    }

    func testSetattrSizeOnOpenFileWaitsForClose() throws {
        let store = MemoryObjectStore()
        try put(store, "t", "0123456789")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "t")
        let handle = try fs.open(file.ino, flags: O_RDWR).handle

        XCTAssertEqual(try fs.setattr(file.ino, AttributeChanges(size: 3)).size, 3)
        XCTAssertEqual(try body(store, "t"), "0123456789")
        XCTAssertEqual(try readAll(fs, file.ino, handle: handle), "012")
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(try body(store, "t"), "012")
    }

    func testSetattrModeAndMtimeOnClosedFileChangesOnlyMetadata() throws {
        let store = MemoryObjectStore()
        try put(store, "m", "body stays", metadata: ["mode": String(UInt32(S_IFREG) | 0o644), "uid": "7"])
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "m")
        let versionBefore = try store.head("m").version
        let mtime = FileTime(seconds: 1_000_000_000, nanoseconds: 5)

        let changed = try fs.setattr(file.ino, AttributeChanges(permissions: 0o600, mtime: mtime))

        XCTAssertEqual(changed.permissions, 0o600)
        XCTAssertEqual(changed.mtime, mtime)
        XCTAssertEqual(changed.size, 10)
        let object = try store.head("m")
        XCTAssertNotEqual(object.version, versionBefore)
        XCTAssertEqual(object.metadata?["mode"], String(UInt32(S_IFREG) | 0o600))
        XCTAssertEqual(object.metadata?["mtime"], "1000000000.000000005")
        XCTAssertEqual(object.metadata?["uid"], "7")
        XCTAssertEqual(try body(store, "m"), "body stays")
        XCTAssertEqual(try keys(store), ["m"])

        // Another mount sees the new attributes.
        let other = try makeFileSystem(store)
        let seen = try other.lookup(parent: Self.root, name: "m")
        XCTAssertEqual(seen.permissions, 0o600)
        XCTAssertEqual(seen.mtime, mtime)
    }

    func testSetattrModeOnDirectoryRewritesMarker() throws {
        let store = MemoryObjectStore()
        try put(store, "d/file", "x")
        let fs = try makeFileSystem(store)
        let dir = try fs.lookup(parent: Self.root, name: "d")

        XCTAssertEqual(try fs.setattr(dir.ino, AttributeChanges(permissions: 0o700)).permissions, 0o700)
        XCTAssertEqual(try keys(store), ["d/", "d/file"])
        XCTAssertEqual(try store.head("d/").metadata?["mode"], String(UInt32(S_IFDIR) | 0o700))
        XCTAssertEqual(try body(store, "d/file"), "x")
    }

    // MARK: Conflicts

    /// The contract (DESIGN.md, "Conflict detection"): the upload is conditional on the version seen at open.
    func testChangeBehindOurBackAfterOpenIsStale() throws {
        let store = MemoryObjectStore()
        try put(store, "c", "original")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "c")
        let handle = try fs.open(file.ino, flags: O_WRONLY).handle

        try put(store, "c", "theirs!!")
        // ESTALE may come from the write (refusing to stage the newer content) or from the flush.
        var failedAt = "nowhere"
        do {
            failedAt = "write"
            try write(fs, file.ino, handle: handle, at: 0, "MINE")
            failedAt = "flush"
            try fs.flush(file.ino, handle: handle)
            XCTFail("writing over a version we did not open succeeded")
        } catch {
            XCTAssertEqual(error.errno, ESTALE, "\(error)")
        }
        fs.release(file.ino, handle: handle)

        XCTAssertEqual(try body(store, "c"), "theirs!!")
        let recovery = recoveryFiles(fs)
        // A refused write took nothing of ours, so there is nothing to keep; a refused upload keeps our copy.
        let expected = failedAt == "write" ? 0 : 1
        XCTAssertEqual(recovery.data.count, expected, "ESTALE at \(failedAt)")
        XCTAssertEqual(recovery.json.count, expected, "ESTALE at \(failedAt)")
    }

    func testChangeBehindOurBackWhileWritingIsStaleAndKeepsOurCopy() throws {
        let store = MemoryObjectStore()
        try put(store, "c", "original")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "c")
        let handle = try fs.open(file.ino, flags: O_WRONLY).handle
        try write(fs, file.ino, handle: handle, at: 0, "MINE")

        try put(store, "c", "theirs!!")
        try write(fs, file.ino, handle: handle, at: 4, "ours")
        do {
            try fs.flush(file.ino, handle: handle)
            XCTFail("flush over another writer's object succeeded")
        } catch {
            XCTAssertEqual(error.errno, ESTALE, "\(error)")
            guard case .stale = error else { return XCTFail("expected .stale, got \(error)") }
        }
        fs.release(file.ino, handle: handle)

        XCTAssertEqual(try body(store, "c"), "theirs!!")
        let recovery = recoveryFiles(fs)
        XCTAssertEqual(recovery.data.count, 1)
        XCTAssertEqual(recovery.json.count, 1)
        let saved = try XCTUnwrap(recovery.data.first)
        XCTAssertEqual(FileManager.default.contents(atPath: saved), Data("MINEours".utf8))
        let json = try XCTUnwrap(FileManager.default.contents(atPath: try XCTUnwrap(recovery.json.first)))
        let info = try XCTUnwrap(JSONSerialization.jsonObject(with: json) as? [String: String])
        XCTAssertEqual(info["key"], "c")
        XCTAssertEqual(info["data"], saved)
    }

    func testTruncatingOpenThenChangeBehindOurBackIsStale() throws {
        let store = MemoryObjectStore()
        try put(store, "c", "original")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "c")
        let handle = try fs.open(file.ino, flags: O_WRONLY | O_TRUNC).handle

        try put(store, "c", "theirs")
        try write(fs, file.ino, handle: handle, at: 0, "replacement")
        assertFails(.stale("")) { () throws(FSError) in try fs.flush(file.ino, handle: handle) }
        fs.release(file.ino, handle: handle)

        XCTAssertEqual(try body(store, "c"), "theirs")
        let saved = try XCTUnwrap(recoveryFiles(fs).data.first)
        XCTAssertEqual(FileManager.default.contents(atPath: saved), Data("replacement".utf8))
    }

    func testCreateOverObjectWrittenMeanwhileIsStale() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "race", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, file.ino, handle: handle, at: 0, "local")

        try put(store, "race", "remote")
        assertFails(.stale("")) { () throws(FSError) in try fs.flush(file.ino, handle: handle) }
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(try body(store, "race"), "remote")
        XCTAssertEqual(recoveryFiles(fs).data.count, 1)
    }

    // MARK: Upload failures

    func testUploadFailureIsReportedAndDataKept() throws {
        let base = MemoryObjectStore()
        let store = FailingStore(base)
        let fs = try makeFileSystem(store)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, file.ino, handle: handle, at: 0, "precious")

        store.failsWrites = true
        do {
            try fs.flush(file.ino, handle: handle)
            XCTFail("flush succeeded while the store was down")
        } catch {
            XCTAssertEqual(error.errno, EIO, "\(error)")
        }
        XCTAssertEqual(try keys(base), [])
        let recovery = recoveryFiles(fs)
        XCTAssertEqual(recovery.data.count, 1)
        XCTAssertEqual(recovery.json.count, 1)
        XCTAssertEqual(recovery.data.first.flatMap { FileManager.default.contents(atPath: $0) }, Data("precious".utf8))
        let json = try XCTUnwrap(recovery.json.first.flatMap { FileManager.default.contents(atPath: $0) })
        XCTAssertEqual((try JSONSerialization.jsonObject(with: json) as? [String: String])?["key"], "f")

        // Still readable locally, and a later write + flush goes through once the store is back.
        XCTAssertEqual(try readAll(fs, file.ino, handle: handle), "precious")
        store.failsWrites = false
        try write(fs, file.ino, handle: handle, at: 0, "PRE")
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(try body(base, "f"), "PREcious")
    }

    func testFsyncReportsUploadFailure() throws {
        let base = MemoryObjectStore()
        try put(base, "f", "abc")
        let store = FailingStore(base)
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")
        let handle = try fs.open(file.ino, flags: O_WRONLY).handle
        try write(fs, file.ino, handle: handle, at: 3, "def")

        store.failsWrites = true
        assertFails(.io("")) { () throws(FSError) in try fs.fsync(file.ino, handle: handle) }
        XCTAssertEqual(try body(base, "f"), "abc")
        XCTAssertEqual(
            recoveryFiles(fs).data.first.flatMap { FileManager.default.contents(atPath: $0) },
            Data("abcdef".utf8))
        store.failsWrites = false
        fs.release(file.ino, handle: handle)
    }

    func testDeleteBehindOurBackFailsFlushAndKeepsData() throws {
        let store = MemoryObjectStore()
        try put(store, "d", "original")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "d")
        let handle = try fs.open(file.ino, flags: O_WRONLY).handle
        try write(fs, file.ino, handle: handle, at: 0, "MINE")

        try store.delete("d")
        do {
            try fs.flush(file.ino, handle: handle)
            XCTFail("flush over a deleted object succeeded")
        } catch {
            XCTAssertTrue([ESTALE, EIO].contains(error.errno), "\(error)")
        }
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(try keys(store), [])
        XCTAssertEqual(
            recoveryFiles(fs).data.first.flatMap { FileManager.default.contents(atPath: $0) },
            Data("MINEinal".utf8))
    }

    func testMetadataChangeFailureIsIO() throws {
        let base = MemoryObjectStore()
        try put(base, "f", "abc")
        let store = FailingStore(base)
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")
        store.failsWrites = true
        assertFails(.io("")) { () throws(FSError) in try fs.setattr(file.ino, AttributeChanges(permissions: 0o600)) }
        XCTAssertEqual(try base.head("f").metadata, [:])
    }

    func testFailedMetadataChangeIsNotShownAsDone() throws {
        let base = MemoryObjectStore()
        try put(base, "f", "abc")
        let store = FailingStore(base)
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")
        store.failsWrites = true
        assertFails(.io("")) { () throws(FSError) in try fs.setattr(file.ino, AttributeChanges(permissions: 0o600)) }
        XCTAssertEqual(try fs.getattr(file.ino).permissions, 0o644)
        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "f").permissions, 0o644)
    }
}
