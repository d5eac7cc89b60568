/// A path or name as a dictionary key compared byte for byte. Swift's `String` equality (and hashing) is Unicode
/// canonical equivalence: `caf\u{e9}` and `cafe\u{301}` are equal strings, but they are two keys in a bucket (S3
/// compares bytes, as does a Linux directory). Keyed by `String`, two such objects shared one inode: a read of one
/// served the other's bytes, a write to one replaced the other.
struct ExactPath: Hashable {
    let string: String

    init(_ string: String) { self.string = string }

    static func == (a: ExactPath, b: ExactPath) -> Bool {
        a.string.utf8.count == b.string.utf8.count && a.string.utf8.elementsEqual(b.string.utf8)
    }

    func hash(into hasher: inout Hasher) {
        let hashed = string.utf8.withContiguousStorageIfAvailable { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        if hashed == nil { Array(string.utf8).withUnsafeBytes { hasher.combine(bytes: $0) } }
    }

    /// Whether the path starts with `prefix` byte for byte (`String.hasPrefix` compares canonically).
    func isBelow(_ prefix: String) -> Bool { string.utf8.starts(with: prefix.utf8) }
}
