import FileSystem
import Foundation
import Glibc
import ObjectStore
import XCTest

/// Names: lookup, implicit and explicit directories, invalid keys, mkdir/rmdir/unlink, rename, symlinks,
/// read-only mounts and the inode lifecycle.
final class NamespaceTests: FileSystemTestCase {
    // MARK: Lookup

    func testLookupOfMissingNameIsNotFound() throws {
        let fs = try makeFileSystem(MemoryObjectStore())
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "missing") }
        XCTAssertEqual(FSError.notFound.errno, ENOENT)
    }

    func testLookupOfNameOver255BytesIsNameTooLong() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)
        assertFails(.nameTooLong) { () throws(FSError) in
            try fs.lookup(parent: Self.root, name: String(repeating: "a", count: 256))
        }
        // 255 bytes is still a name: it is simply absent. Multi-byte characters count in bytes.
        assertFails(.notFound) { () throws(FSError) in
            try fs.lookup(parent: Self.root, name: String(repeating: "a", count: 255))
        }
        assertFails(.nameTooLong) { () throws(FSError) in
            try fs.lookup(parent: Self.root, name: String(repeating: "é", count: 128))
        }
    }

    // MARK: Directories from keys

    func testNestedKeyMakesImplicitDirectories() throws {
        let store = MemoryObjectStore()
        try put(store, "a/b/c.txt", "content")
        let fs = try makeFileSystem(store)

        let a = try fs.lookup(parent: Self.root, name: "a")
        XCTAssertEqual(a.kind, .directory)
        XCTAssertEqual(a.mode & UInt32(S_IFMT), UInt32(S_IFDIR))
        let b = try fs.lookup(parent: a.ino, name: "b")
        XCTAssertEqual(b.kind, .directory)
        let c = try fs.lookup(parent: b.ino, name: "c.txt")
        XCTAssertEqual(c.kind, .file)
        XCTAssertEqual(c.size, 7)
        XCTAssertEqual(Set([a.ino, b.ino, c.ino]).count, 3)

        let rootEntries = try entries(fs, Self.root)
        XCTAssertEqual(rootEntries.map(\.name), [".", "..", "a"])
        XCTAssertEqual(rootEntries.last?.attributes.kind, .directory)
        XCTAssertEqual(rootEntries.last?.attributes.ino, a.ino)
        XCTAssertEqual(try names(fs, b.ino), [".", "..", "c.txt"])
    }

    func testKeysWithInvalidSegmentsAreSkippedInListings() throws {
        let store = MemoryObjectStore()
        for key in ["good.txt", "x//y", "../evil", "d/../e", "d/ok", "d/."] { try put(store, key, "v") }
        let fs = try makeFileSystem(store)

        XCTAssertEqual(try names(fs, Self.root), [".", "..", "d", "good.txt", "x"])
        let d = try fs.lookup(parent: Self.root, name: "d")
        XCTAssertEqual(try names(fs, d.ino), [".", "..", "ok"])
        let x = try fs.lookup(parent: Self.root, name: "x")
        XCTAssertEqual(x.kind, .directory)
        XCTAssertEqual(try names(fs, x.ino), [".", ".."])
        // Listing again (the invalid keys are only logged once) still skips them.
        XCTAssertEqual(try names(fs, d.ino), [".", "..", "ok"])
    }

    func testDirectoryShadowsObjectOfSameName() throws {
        let store = MemoryObjectStore()
        try put(store, "n", "a file")
        try put(store, "n/x", "inside")
        let fs = try makeFileSystem(store)

        let n = try fs.lookup(parent: Self.root, name: "n")
        XCTAssertEqual(n.kind, .directory)
        let listing = try entries(fs, Self.root)
        XCTAssertEqual(listing.map(\.name), [".", "..", "n"])
        XCTAssertEqual(listing.last?.attributes.kind, .directory)
        XCTAssertEqual(listing.last?.attributes.ino, n.ino)
        XCTAssertEqual(try fs.lookup(parent: n.ino, name: "x").kind, .file)
    }

    // MARK: mkdir, rmdir, unlink

    func testMkdirWritesMarkerAndRmdirDeletesIt() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)

        let dir = try fs.mkdir(parent: Self.root, name: "dir", permissions: 0o750, caller: caller)
        XCTAssertEqual(dir.kind, .directory)
        XCTAssertEqual(dir.permissions, 0o750)
        XCTAssertEqual(dir.uid, caller.uid)
        XCTAssertEqual(try keys(store), ["dir/"])
        let marker = try store.head("dir/")
        XCTAssertEqual(marker.size, 0)
        XCTAssertEqual(marker.metadata?["mode"], String(UInt32(S_IFDIR) | 0o750))
        XCTAssertEqual(marker.metadata?["uid"], "1234")
        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "dir").ino, dir.ino)

        try fs.rmdir(parent: Self.root, name: "dir")
        XCTAssertEqual(try keys(store), [])
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "dir") }
    }

    func testMkdirAttributesSurviveANewMount() throws {
        let store = MemoryObjectStore()
        let first = try makeFileSystem(store)
        _ = try first.mkdir(parent: Self.root, name: "dir", permissions: 0o700, caller: caller)

        let second = try makeFileSystem(store)
        let dir = try second.lookup(parent: Self.root, name: "dir")
        XCTAssertEqual(dir.kind, .directory)
        XCTAssertEqual(dir.permissions, 0o700)
        XCTAssertEqual(dir.uid, caller.uid)
        XCTAssertEqual(dir.gid, caller.gid)
    }

    func testRmdirOfNonEmptyDirectoryIsNotEmpty() throws {
        let store = MemoryObjectStore()
        try put(store, "full/")
        try put(store, "full/file", "x")
        try put(store, "implicit/deeper/file", "x")
        let fs = try makeFileSystem(store)

        assertFails(.notEmpty) { () throws(FSError) in try fs.rmdir(parent: Self.root, name: "full") }
        assertFails(.notEmpty) { () throws(FSError) in try fs.rmdir(parent: Self.root, name: "implicit") }
        XCTAssertEqual(try keys(store), ["full/", "full/file", "implicit/deeper/file"])
    }

    func testRmdirOfDirectoryHoldingAnUnflushedFileIsNotEmpty() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)
        let dir = try fs.mkdir(parent: Self.root, name: "dir", permissions: 0o755, caller: caller)
        _ = try fs.create(parent: dir.ino, name: "pending", permissions: 0o644, flags: O_WRONLY, caller: caller)

        assertFails(.notEmpty) { () throws(FSError) in try fs.rmdir(parent: Self.root, name: "dir") }
        XCTAssertEqual(try keys(store), ["dir/"])
    }

    func testRmdirOfFileIsNotDirectory() throws {
        let store = MemoryObjectStore()
        try put(store, "file", "x")
        let fs = try makeFileSystem(store)
        assertFails(.notDirectory) { () throws(FSError) in try fs.rmdir(parent: Self.root, name: "file") }
        XCTAssertEqual(try keys(store), ["file"])
    }

    func testUnlinkOfDirectoryIsIsDirectory() throws {
        let store = MemoryObjectStore()
        try put(store, "dir/")
        try put(store, "implicit/file", "x")
        let fs = try makeFileSystem(store)
        assertFails(.isDirectory) { () throws(FSError) in try fs.unlink(parent: Self.root, name: "dir") }
        assertFails(.isDirectory) { () throws(FSError) in try fs.unlink(parent: Self.root, name: "implicit") }
        XCTAssertEqual(try keys(store), ["dir/", "implicit/file"])
    }

    func testUnlinkDeletesObject() throws {
        let store = MemoryObjectStore()
        try put(store, "gone", "x")
        try put(store, "kept", "y")
        let fs = try makeFileSystem(store)
        try fs.unlink(parent: Self.root, name: "gone")
        XCTAssertEqual(try keys(store), ["kept"])
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "gone") }
        assertFails(.notFound) { () throws(FSError) in try fs.unlink(parent: Self.root, name: "gone") }
    }

    func testUnlinkedOpenFileStaysReadable() throws {
        let store = MemoryObjectStore()
        try put(store, "open", "still here")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "open")
        let handle = try fs.open(file.ino, flags: O_RDONLY).handle

        try fs.unlink(parent: Self.root, name: "open")

        XCTAssertEqual(try keys(store), [])
        XCTAssertEqual(try readAll(fs, file.ino, handle: handle), "still here")
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(try keys(store), [], "an unlinked file is never uploaded again")
    }

    func testUnlinkOfUnflushedFileUploadsNothing() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)
        let (file, handle) = try fs.create(
            parent: Self.root, name: "tmp", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try write(fs, file.ino, handle: handle, at: 0, "scratch")
        try fs.unlink(parent: Self.root, name: "tmp")
        try fs.flush(file.ino, handle: handle)
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(try keys(store), [])
        XCTAssertEqual(try names(fs, Self.root), [".", ".."])
    }

    func testMkdirOfExistingNameIsExists() throws {
        let store = MemoryObjectStore()
        try put(store, "file", "x")
        try put(store, "implicit/file", "x")
        let fs = try makeFileSystem(store)
        _ = try fs.mkdir(parent: Self.root, name: "made", permissions: 0o755, caller: caller)

        for name in ["file", "implicit", "made"] {
            assertFails(.exists) { () throws(FSError) in
                try fs.mkdir(parent: Self.root, name: name, permissions: 0o755, caller: caller)
            }
        }
        XCTAssertEqual(try keys(store), ["file", "implicit/file", "made/"])
    }

    // MARK: Rename

    func testRenameFileMovesObjectWithItsMetadata() throws {
        let store = MemoryObjectStore()
        let metadata = ["mode": String(UInt32(S_IFREG) | 0o600), "uid": "7", "gid": "8", "mtime": "1700000000"]
        try put(store, "old.txt", "content", metadata: metadata)
        let fs = try makeFileSystem(store)
        let before = try fs.lookup(parent: Self.root, name: "old.txt")

        try fs.rename(parent: Self.root, name: "old.txt", newParent: Self.root, newName: "new.txt", noReplace: false)

        XCTAssertEqual(try keys(store), ["new.txt"])
        XCTAssertEqual(try store.head("new.txt").metadata, metadata)
        XCTAssertEqual(try body(store, "new.txt"), "content")
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "old.txt") }
        let after = try fs.lookup(parent: Self.root, name: "new.txt")
        XCTAssertEqual(after.ino, before.ino)
        XCTAssertEqual(after.permissions, 0o600)
        XCTAssertEqual(after.uid, 7)
    }

    func testRenameFileReplacesExistingFile() throws {
        let store = MemoryObjectStore()
        try put(store, "tmp", "new content")
        try put(store, "final", "old content")
        let fs = try makeFileSystem(store)
        try fs.rename(parent: Self.root, name: "tmp", newParent: Self.root, newName: "final", noReplace: false)
        XCTAssertEqual(try keys(store), ["final"])
        XCTAssertEqual(try body(store, "final"), "new content")
    }

    func testRenameDirectoryMovesEveryKey() throws {
        let store = MemoryObjectStore()
        try put(store, "d/")
        try put(store, "d/a.txt", "A", metadata: ["uid": "9"])
        try put(store, "d/sub/b.txt", "B")
        try put(store, "d/sub/deeper/c.txt", "C")
        try put(store, "dx", "not inside d")
        let fs = try makeFileSystem(store)
        let d = try fs.lookup(parent: Self.root, name: "d")
        let e = try fs.mkdir(parent: Self.root, name: "target-parent", permissions: 0o755, caller: caller)

        try fs.rename(parent: Self.root, name: "d", newParent: e.ino, newName: "e", noReplace: false)

        XCTAssertEqual(
            try keys(store),
            [
                "dx", "target-parent/", "target-parent/e/", "target-parent/e/a.txt",
                "target-parent/e/sub/b.txt", "target-parent/e/sub/deeper/c.txt",
            ])
        XCTAssertEqual(try body(store, "target-parent/e/sub/deeper/c.txt"), "C")
        XCTAssertEqual(try store.head("target-parent/e/a.txt").metadata?["uid"], "9")
        assertFails(.notFound) { () throws(FSError) in try fs.lookup(parent: Self.root, name: "d") }
        let moved = try fs.lookup(parent: e.ino, name: "e")
        XCTAssertEqual(moved.ino, d.ino)
        XCTAssertEqual(try names(fs, moved.ino), [".", "..", "a.txt", "sub"])
    }

    func testRenameWithNoReplaceOntoExistingNameIsExists() throws {
        let store = MemoryObjectStore()
        try put(store, "a", "A")
        try put(store, "b", "B")
        let fs = try makeFileSystem(store)
        assertFails(.exists) { () throws(FSError) in
            try fs.rename(parent: Self.root, name: "a", newParent: Self.root, newName: "b", noReplace: true)
        }
        XCTAssertEqual(try body(store, "a"), "A")
        XCTAssertEqual(try body(store, "b"), "B")
    }

    func testRenameOntoNonEmptyDirectoryIsNotEmpty() throws {
        let store = MemoryObjectStore()
        try put(store, "src/x", "X")
        try put(store, "dst/y", "Y")
        let fs = try makeFileSystem(store)
        assertFails(.notEmpty) { () throws(FSError) in
            try fs.rename(parent: Self.root, name: "src", newParent: Self.root, newName: "dst", noReplace: false)
        }
        XCTAssertEqual(try keys(store), ["dst/y", "src/x"])
    }

    func testRenameOntoEmptyDirectoryReplacesIt() throws {
        let store = MemoryObjectStore()
        try put(store, "src/x", "X")
        try put(store, "dst/")
        let fs = try makeFileSystem(store)
        try fs.rename(parent: Self.root, name: "src", newParent: Self.root, newName: "dst", noReplace: false)
        XCTAssertEqual(try keys(store), ["dst/x"])
    }

    func testRenameDirectoryIntoItselfIsInvalid() throws {
        let store = MemoryObjectStore()
        try put(store, "d/x", "X")
        let fs = try makeFileSystem(store)
        let d = try fs.lookup(parent: Self.root, name: "d")
        assertFails(.invalidArgument) { () throws(FSError) in
            try fs.rename(parent: Self.root, name: "d", newParent: d.ino, newName: "inner", noReplace: false)
        }
        XCTAssertEqual(try keys(store), ["d/x"])
    }

    // MARK: Symlinks

    func testSymlinkRoundTrip() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)
        let target = "../some dir/target"

        let link = try fs.symlink(parent: Self.root, name: "ln", target: target, caller: caller)
        XCTAssertEqual(link.kind, .symlink)
        XCTAssertEqual(link.size, UInt64(target.utf8.count))
        XCTAssertEqual(try fs.readlink(link.ino), target)
        XCTAssertEqual(try fs.getattr(link.ino).kind, .symlink)

        let object = try store.head("ln")
        XCTAssertEqual(object.size, 0)
        let stored = try XCTUnwrap(object.metadata?["symlink"])
        XCTAssertEqual(stored.removingPercentEncoding, target)

        // Another mount reads the link back from the object's metadata.
        let other = try makeFileSystem(store)
        let seen = try other.lookup(parent: Self.root, name: "ln")
        XCTAssertEqual(seen.kind, .symlink)
        XCTAssertEqual(try other.readlink(seen.ino), target)
        XCTAssertEqual(try other.getattr(seen.ino).kind, .symlink)
    }

    func testSymlinkStaysASymlinkInListings() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)
        let link = try fs.symlink(parent: Self.root, name: "ln", target: "target", caller: caller)

        let entry = try XCTUnwrap(try entries(fs, Self.root).first { $0.name == "ln" })
        XCTAssertEqual(entry.attributes.kind, .symlink)
        XCTAssertEqual(entry.attributes.ino, link.ino)
        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "ln").kind, .symlink)

        // Another mount that lists first with readdirplus (as the kernel does for `ls -l`), then looks it up.
        let other = try makeFileSystem(store)
        let handle = try other.openDirectory(Self.root)
        var listed: [DirectoryEntry] = []
        try other.readDirectory(Self.root, handle: handle, offset: 0, plus: true) {
            listed.append($0)
            return true
        }
        other.releaseDirectory(handle: handle)
        XCTAssertEqual(listed.first { $0.name == "ln" }?.attributes.kind, .symlink)
        let seen = try other.lookup(parent: Self.root, name: "ln")
        XCTAssertEqual(seen.kind, .symlink)
        XCTAssertEqual(try other.readlink(seen.ino), "target")
    }

    func testReadlinkOfFileIsInvalid() throws {
        let store = MemoryObjectStore()
        try put(store, "plain", "x")
        let fs = try makeFileSystem(store)
        let plain = try fs.lookup(parent: Self.root, name: "plain")
        assertFails(.invalidArgument) { () throws(FSError) in try fs.readlink(plain.ino) }
    }

    func testSymlinkOverExistingNameIsExists() throws {
        let store = MemoryObjectStore()
        try put(store, "taken", "x")
        let fs = try makeFileSystem(store)
        assertFails(.exists) { () throws(FSError) in
            try fs.symlink(parent: Self.root, name: "taken", target: "t", caller: caller)
        }
        XCTAssertEqual(try body(store, "taken"), "x")
    }

    // MARK: Read-only

    func testReadOnlyMountRefusesChangesButReads() throws {
        let store = MemoryObjectStore()
        try put(store, "r.txt", "readable")
        try put(store, "dir/")
        let fs = try makeFileSystem(store, readOnly: true)
        let file = try fs.lookup(parent: Self.root, name: "r.txt")

        assertFails(.readOnly) { () throws(FSError) in
            try fs.create(parent: Self.root, name: "new", permissions: 0o644, flags: O_WRONLY | O_CREAT, caller: caller)
        }
        assertFails(.readOnly) { () throws(FSError) in
            try fs.mkdir(parent: Self.root, name: "d2", permissions: 0o755, caller: caller)
        }
        assertFails(.readOnly) { () throws(FSError) in try fs.unlink(parent: Self.root, name: "r.txt") }
        assertFails(.readOnly) { () throws(FSError) in try fs.rmdir(parent: Self.root, name: "dir") }
        assertFails(.readOnly) { () throws(FSError) in try fs.setattr(file.ino, AttributeChanges(size: 0)) }
        assertFails(.readOnly) { () throws(FSError) in try fs.setattr(file.ino, AttributeChanges(permissions: 0o600)) }
        assertFails(.readOnly) { () throws(FSError) in try fs.open(file.ino, flags: O_WRONLY) }
        assertFails(.readOnly) { () throws(FSError) in try fs.open(file.ino, flags: O_RDWR) }
        assertFails(.readOnly) { () throws(FSError) in
            try fs.rename(parent: Self.root, name: "r.txt", newParent: Self.root, newName: "s.txt", noReplace: false)
        }
        assertFails(.readOnly) { () throws(FSError) in
            try fs.symlink(parent: Self.root, name: "ln", target: "r.txt", caller: caller)
        }
        XCTAssertEqual(FSError.readOnly.errno, EROFS)

        let handle = try fs.open(file.ino, flags: O_RDONLY).handle
        XCTAssertEqual(try readAll(fs, file.ino, handle: handle), "readable")
        XCTAssertEqual(try fs.read(file.ino, handle: handle, offset: 2, size: 4), Data("adab".utf8))
        fs.release(file.ino, handle: handle)
        XCTAssertEqual(try names(fs, Self.root), [".", "..", "dir", "r.txt"])
        XCTAssertEqual(try keys(store), ["dir/", "r.txt"])
        XCTAssertEqual(try body(store, "r.txt"), "readable")
    }

    // MARK: Inode lifecycle

    func testForgetToZeroEvictsNodeAndNextLookupGetsItsNumberBack() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "x")
        let fs = try makeFileSystem(store)
        let first = try fs.lookup(parent: Self.root, name: "f")
        XCTAssertEqual(try fs.getattr(first.ino).ino, first.ino)

        fs.forget(first.ino, count: 1)

        assertFails(.notFound) { () throws(FSError) in try fs.getattr(first.ino) }
        let second = try fs.lookup(parent: Self.root, name: "f")
        XCTAssertEqual(second.ino, first.ino, "st_ino is stable while the name stays (PosixAttributeTests)")
        XCTAssertEqual(second.kind, .file)
        XCTAssertEqual(second.size, 1)
    }

    func testForgetBelowLookupCountKeepsNode() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "x")
        let fs = try makeFileSystem(store)
        let first = try fs.lookup(parent: Self.root, name: "f")
        _ = try fs.lookup(parent: Self.root, name: "f")

        fs.forget(first.ino, count: 1)

        XCTAssertEqual(try fs.getattr(first.ino).ino, first.ino)
        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "f").ino, first.ino)
    }

    func testForgetOfOpenFileKeepsNodeUntilRelease() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "content")
        let fs = try makeFileSystem(store)
        let file = try fs.lookup(parent: Self.root, name: "f")
        let handle = try fs.open(file.ino, flags: O_RDONLY).handle

        fs.forget(file.ino, count: 1)
        XCTAssertEqual(try readAll(fs, file.ino, handle: handle), "content")
        XCTAssertEqual(try fs.getattr(file.ino).ino, file.ino)
        fs.release(file.ino, handle: handle)
    }

    func testRootIsADirectoryAndIsNeverForgotten() throws {
        let fs = try makeFileSystem(MemoryObjectStore())
        fs.forget(Self.root, count: 10)
        let root = try fs.getattr(Self.root)
        XCTAssertEqual(root.ino, Self.root)
        XCTAssertEqual(root.kind, .directory)
        XCTAssertEqual(fs.statfs().maxNameLength, 255)
    }
}
