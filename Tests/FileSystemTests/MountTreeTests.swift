import FileSystem
import Foundation
import Glibc
import ObjectStore
import XCTest

/// The control directory laid over the bucket's root by `MountTree`: routing by inode and by name, the root
/// listing, and every change refused inside it.
final class MountTreeTests: FileSystemTestCase {
    private func makeTree(_ store: MemoryObjectStore) throws -> MountTree {
        MountTree(
            files: try makeFileSystem(store),
            control: ControlDirectory.Settings(metrics: { "requests_total 7\n" }))
    }

    /// All names of a directory, read one entry per call as a tiny reply buffer would, following the cookies.
    private func namesOnePerCall(_ tree: MountTree, _ ino: UInt64) throws(FSError) -> [String] {
        let handle = try tree.openDirectory(ino)
        defer { tree.releaseDirectory(ino, handle: handle) }
        var names: [String] = []
        var offset: UInt64 = 0
        while true {
            var got: DirectoryEntry?
            try tree.readDirectory(ino, handle: handle, offset: offset, plus: true) { entry in
                guard got == nil else { return false }
                got = entry
                return true
            }
            guard let entry = got else { return names }
            names.append(entry.name)
            offset = entry.nextOffset
        }
    }

    func testTheRootListsTheBucketThenTheControlDirectoryAndShadowsARealKeyOfItsName() throws {
        let store = MemoryObjectStore()
        try put(store, "a.txt", "a")
        try put(store, "z.txt", "z")
        try put(store, ".bucketfs", "a real key the control directory shadows")
        let tree = try makeTree(store)
        XCTAssertEqual(try namesOnePerCall(tree, Self.root), [".", "..", "a.txt", "z.txt", ".bucketfs"])
        let control = try tree.lookup(parent: Self.root, name: ".bucketfs")
        XCTAssertEqual(control.kind, .directory, "the control directory, not the shadowed object")
        XCTAssertEqual(try tree.getattr(control.ino).kind, .directory)
        XCTAssertTrue(try namesOnePerCall(tree, control.ino).contains("metrics"))
        // The bucket's tree alone knows nothing of it: the real key is what FileSystem shows.
        XCTAssertEqual(try tree.files.lookup(parent: Self.root, name: ".bucketfs").kind, .file)
    }

    func testAControlFileReadsItsGeneratedTextAndOpensOnlyForReading() throws {
        let tree = try makeTree(MemoryObjectStore())
        let control = try tree.lookup(parent: Self.root, name: ".bucketfs")
        let metrics = try tree.lookup(parent: control.ino, name: "metrics")
        let opened = try tree.open(metrics.ino, flags: O_RDONLY)
        let text = String(
            decoding: try tree.read(metrics.ino, handle: opened.handle, offset: 0, size: 4096), as: UTF8.self)
        XCTAssertEqual(text, "requests_total 7\n")
        try tree.flush(metrics.ino, handle: opened.handle)
        tree.release(metrics.ino, handle: opened.handle)
        XCTAssertThrowsError(try tree.open(metrics.ino, flags: O_WRONLY)) { XCTAssertEqual($0 as? FSError, .readOnly) }
    }

    func testEveryChangeInsideOrOfTheControlDirectoryIsReadOnly() throws {
        let store = MemoryObjectStore()
        try put(store, "f", "f")
        let tree = try makeTree(store)
        let control = try tree.lookup(parent: Self.root, name: ".bucketfs")
        let metrics = try tree.lookup(parent: control.ino, name: "metrics")
        let refusals: [(String, () throws -> Void)] = [
            (
                "mkdir inside",
                { _ = try tree.mkdir(parent: control.ino, name: "d", permissions: 0o755, caller: self.caller) }
            ),
            (
                "mkdir of its name",
                { _ = try tree.mkdir(parent: Self.root, name: ".bucketfs", permissions: 0o755, caller: self.caller) }
            ),
            (
                "create inside",
                {
                    _ = try tree.create(
                        parent: control.ino, name: "x", permissions: 0o644, flags: O_WRONLY, caller: self.caller)
                }
            ),
            ("unlink inside", { try tree.unlink(parent: control.ino, name: "metrics") }),
            ("rmdir of it", { try tree.rmdir(parent: Self.root, name: ".bucketfs") }),
            (
                "rename into it",
                {
                    try tree.rename(
                        parent: Self.root, name: "f", newParent: control.ino, newName: "f", noReplace: false)
                }
            ),
            (
                "rename onto its name",
                {
                    try tree.rename(
                        parent: Self.root, name: "f", newParent: Self.root, newName: ".bucketfs", noReplace: false)
                }
            ),
            (
                "symlink inside",
                { _ = try tree.symlink(parent: control.ino, name: "l", target: "/", caller: self.caller) }
            ),
            ("chmod of a file", { _ = try tree.setattr(metrics.ino, AttributeChanges(permissions: 0o666)) }),
        ]
        for (what, change) in refusals {
            XCTAssertThrowsError(try change(), what) { XCTAssertEqual($0 as? FSError, .readOnly, what) }
        }
        XCTAssertEqual(try keys(store), ["f"], "nothing reached the store")
    }
}
