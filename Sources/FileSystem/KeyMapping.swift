/// Paths under the mount ↔ keys in the store. A path is relative to the mount root with no leading
/// slash (`""` is the root); its key is `prefix + path`, and a directory's children live under `key + "/"`.
struct KeyMapping: Sendable {
    let prefix: String

    func key(for path: String) -> String { prefix + path }

    /// The listing prefix of a directory's children (also the key of its explicit marker).
    func directoryPrefix(for path: String) -> String { path.isEmpty ? prefix : prefix + path + "/" }

    static func join(_ parent: String, _ name: String) -> String { parent.isEmpty ? name : parent + "/" + name }

    // The last `/` byte, not `Character`: a name may start with a combining mark, which makes one grapheme of
    // the slash before it (`/\u{301}`).
    static func parent(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return "" }
        return String(path.unicodeScalars[..<slash])
    }

    static func name(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return path }
        return String(path.unicodeScalars[path.utf8.index(after: slash)...])
    }

    /// `key` without its first `count` UTF-8 bytes (a listing prefix it starts with), whatever graphemes span them.
    static func dropping(_ count: Int, of key: String) -> Substring {
        Substring(key.unicodeScalars[key.utf8.index(key.startIndex, offsetBy: count)...])
    }

    /// Whether a name taken from a key can be shown as a directory entry.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && name.utf8.count <= 255 && !name.utf8.contains(0)
    }
}
