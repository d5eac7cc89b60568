import FileSystem
import Foundation
import Glibc
import ObjectStore
import XCTest

/// What `stat` and `readlink` report beyond mode, owner and times: a directory's link count (2 plus its
/// subdirectories), symlink targets too long for object metadata, and the blocks a sparse staged file takes.
final class PosixAttributeTests: FileSystemTestCase {
    // MARK: Directory link count

    func testDirectoryLinkCountFollowsMkdirRmdirAndRename() throws {
        let fs = try makeFileSystem(MemoryObjectStore())
        let a = try fs.mkdir(parent: Self.root, name: "a", permissions: 0o755, caller: caller)
        let d = try fs.mkdir(parent: Self.root, name: "d", permissions: 0o755, caller: caller)
        XCTAssertEqual(a.linkCount, 2)
        _ = try fs.mkdir(parent: a.ino, name: "b", permissions: 0o755, caller: caller)
        _ = try fs.mkdir(parent: a.ino, name: "c", permissions: 0o755, caller: caller)
        let file = try fs.create(parent: a.ino, name: "f", permissions: 0o644, flags: O_WRONLY, caller: caller)
        try fs.flush(file.attributes.ino, handle: file.handle)
        fs.release(file.attributes.ino, handle: file.handle)
        _ = try fs.symlink(parent: a.ino, name: "l", target: "b", caller: caller)
        XCTAssertEqual(try fs.getattr(a.ino).linkCount, 4, "2 + b + c; files and symlinks do not count")

        try fs.rmdir(parent: a.ino, name: "c")
        XCTAssertEqual(try fs.getattr(a.ino).linkCount, 3)

        // rename(2) of a subdirectory moves its ".." link from one parent to the other (pjdfstest rename/24).
        try fs.rename(parent: a.ino, name: "b", newParent: d.ino, newName: "b", noReplace: false)
        XCTAssertEqual(try fs.getattr(a.ino).linkCount, 2)
        XCTAssertEqual(try fs.getattr(d.ino).linkCount, 3)

        // Within one parent, and over an empty directory: the count stays.
        try fs.rename(parent: d.ino, name: "b", newParent: d.ino, newName: "b2", noReplace: false)
        XCTAssertEqual(try fs.getattr(d.ino).linkCount, 3)
        _ = try fs.mkdir(parent: d.ino, name: "e", permissions: 0o755, caller: caller)
        _ = try fs.mkdir(parent: a.ino, name: "x", permissions: 0o755, caller: caller)
        XCTAssertEqual(try fs.getattr(d.ino).linkCount, 4)
        try fs.rename(parent: a.ino, name: "x", newParent: d.ino, newName: "e", noReplace: false)
        XCTAssertEqual(try fs.getattr(d.ino).linkCount, 4)
        XCTAssertEqual(try fs.getattr(a.ino).linkCount, 2)

        // The moved directory keeps its own count.
        let b2 = try fs.lookup(parent: d.ino, name: "b2")
        _ = try fs.mkdir(parent: b2.ino, name: "inner", permissions: 0o755, caller: caller)
        try fs.rename(parent: d.ino, name: "b2", newParent: Self.root, newName: "top", noReplace: false)
        XCTAssertEqual(try fs.getattr(b2.ino).linkCount, 3)
        XCTAssertEqual(try fs.getattr(d.ino).linkCount, 3)
    }

    func testLinkCountOfADirectoryNotListedYetIsTwoThenCountedByItsListing() throws {
        let store = MemoryObjectStore()
        for key in ["t/", "t/sub1/", "t/sub2/deep/file", "t/file", "t/sub3/x"] { try put(store, key, "") }
        let fs = try makeFileSystem(store)
        let t = try fs.lookup(parent: Self.root, name: "t")
        XCTAssertEqual(t.linkCount, 2, "never 0 or 1 for a directory, even before its listing")
        XCTAssertEqual(try names(fs, t.ino), [".", "..", "file", "sub1", "sub2", "sub3"])
        XCTAssertEqual(try fs.getattr(t.ino).linkCount, 5)
        XCTAssertEqual(try entries(fs, Self.root).first { $0.name == "t" }?.attributes.linkCount, 5)

        // Another host adds a subdirectory: seen at the next listing.
        try put(store, "t/sub4/")
        _ = try names(fs, t.ino)
        XCTAssertEqual(try fs.getattr(t.ino).linkCount, 6)
    }

    // MARK: Inode numbers

    /// The kernel forgets inodes it no longer uses (its dentry cache shrinks under memory pressure): looked up
    /// again, a name that stayed keeps its number, as on a local filesystem (pjdfstest rename/09 and rename/10
    /// compare `st_ino` across steps). A name that went, or now names another kind, gets a new one.
    func testInodeNumberSurvivesTheKernelForgettingIt() throws {
        let store = MemoryObjectStore()
        for key in ["f", "g", "h", "d/x"] { try put(store, key, "x") }
        let fs = try makeFileSystem(store)
        let d = try fs.lookup(parent: Self.root, name: "d")
        let x = try fs.lookup(parent: d.ino, name: "x")
        let f = try fs.lookup(parent: Self.root, name: "f")
        let g = try fs.lookup(parent: Self.root, name: "g")
        let h = try fs.lookup(parent: Self.root, name: "h")
        for node in [x, d, f, g, h] { fs.forget(node.ino, count: 1) }

        XCTAssertEqual(try fs.lookup(parent: Self.root, name: "f").ino, f.ino)
        let d2 = try fs.lookup(parent: Self.root, name: "d")
        XCTAssertEqual(d2.ino, d.ino)
        XCTAssertEqual(try fs.lookup(parent: d2.ino, name: "x").ino, x.ino)

        // g becomes a directory elsewhere: another kind, another number.
        try store.delete("g")
        try put(store, "g/inside", "y")
        let g2 = try fs.lookup(parent: Self.root, name: "g")
        XCTAssertEqual(g2.kind, .directory)
        XCTAssertNotEqual(g2.ino, g.ino)

        // h removed here and made again: a new file, a new number.
        try fs.unlink(parent: Self.root, name: "h")
        let made = try fs.create(parent: Self.root, name: "h", permissions: 0o644, flags: O_WRONLY, caller: caller)
        XCTAssertNotEqual(made.attributes.ino, h.ino)
        fs.release(made.attributes.ino, handle: made.handle)
    }

    // MARK: Long symlink targets

    func testSymlinkTargetTooLongForMetadataIsTheObjectBody() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)
        // PATH_MAX - 1 bytes, as pjdfstest symlink/03 makes, with bytes that percent-encoding triples.
        let component = String(repeating: "é", count: 100) + "/"
        let target = String(
            (String(repeating: component, count: 20) + String(repeating: "x", count: 4_095)).utf8
                .prefix(4_095))!
        XCTAssertEqual(target.utf8.count, 4_095)

        let link = try fs.symlink(parent: Self.root, name: "ln", target: target, caller: caller)
        XCTAssertEqual(link.kind, .symlink)
        XCTAssertEqual(link.size, 4_095)
        XCTAssertEqual(try fs.readlink(link.ino), target)

        let object = try store.head("ln")
        XCTAssertEqual(object.size, 4_095)
        XCTAssertNil(object.metadata?["symlink"], "too long for S3's 2 KB of metadata")
        XCTAssertEqual(object.metadata?["symlink-body"], "1")
        XCTAssertEqual(object.metadata?["mode"], String(UInt32(S_IFLNK) | 0o777))
        XCTAssertEqual(try store.get("ln").body, Data(target.utf8))

        // Another mount, by lookup and by listing; a chown (a copy onto itself) keeps the body.
        let other = try makeFileSystem(store)
        // S3's LIST carries no metadata and the object is not empty: until a stat asks, the kernel must not
        // cache the entry.
        let listed = try XCTUnwrap(try entries(other, Self.root).first { $0.name == "ln" })
        XCTAssertTrue(listed.attributes.kind == .symlink || !listed.complete)
        let seen = try other.lookup(parent: Self.root, name: "ln")
        XCTAssertEqual(seen.kind, .symlink)
        XCTAssertEqual(seen.size, 4_095)
        _ = try other.setattr(seen.ino, AttributeChanges(uid: 42))
        XCTAssertEqual(try other.readlink(seen.ino), target)
        let third = try makeFileSystem(store)
        let again = try third.lookup(parent: Self.root, name: "ln")
        XCTAssertEqual(again.uid, 42)
        XCTAssertEqual(try third.readlink(again.ino), target)

        // A short target stays in metadata, with an empty object.
        let short = try fs.symlink(parent: Self.root, name: "short", target: "a/b", caller: caller)
        XCTAssertEqual(try store.head("short").size, 0)
        XCTAssertEqual(try store.head("short").metadata?["symlink"], "a/b")
        XCTAssertEqual(try fs.readlink(short.ino), "a/b")
    }

    func testSymlinkWrittenByS3fsHasItsTargetInTheBody() throws {
        let store = MemoryObjectStore()
        try put(store, "s3fs-link", "../target", metadata: ["mode": String(UInt32(S_IFLNK) | 0o777)])
        let fs = try makeFileSystem(store)
        let link = try fs.lookup(parent: Self.root, name: "s3fs-link")
        XCTAssertEqual(link.kind, .symlink)
        XCTAssertEqual(link.size, 9)
        XCTAssertEqual(try fs.readlink(link.ino), "../target")
    }

    // MARK: Sparse staged files

    func testTruncateUpAndWritePastTheEndLeaveHolesInTheStagedCopy() throws {
        let store = MemoryObjectStore()
        let fs = try makeFileSystem(store)
        let file = try fs.create(parent: Self.root, name: "sparse", permissions: 0o644, flags: O_RDWR, caller: caller)
        let ino = file.attributes.ino
        let size: UInt64 = 48 << 20
        _ = try fs.setattr(ino, AttributeChanges(size: size))
        try write(fs, ino, handle: file.handle, at: size + (16 << 20), "tail")
        let attributes = try fs.getattr(ino)
        XCTAssertEqual(attributes.size, size + (16 << 20) + 4)
        let blocks = try XCTUnwrap(attributes.blocks, "the staged copy is local: its allocation is known")
        XCTAssertLessThan(blocks, 1_024, "64 MiB of holes take no disk")
        XCTAssertEqual(attributes.allocatedBlocks, blocks)
        fs.release(ino, handle: file.handle)
    }
}
