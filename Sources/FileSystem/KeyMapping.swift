/// Paths under the mount ↔ keys in the store. A path is relative to the mount root with no leading
/// slash (`""` is the root); its key is `prefix + path`, and a directory's children live under `key + "/"`.
struct KeyMapping: Sendable {
    let prefix: String

    func key(for path: String) -> String { prefix + path }

    /// The listing prefix of a directory's children (also the key of its explicit marker).
    func directoryPrefix(for path: String) -> String { path.isEmpty ? prefix : prefix + path + "/" }

    static func join(_ parent: String, _ name: String) -> String { parent.isEmpty ? name : parent + "/" + name }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[..<slash])
    }

    static func name(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// Whether a name taken from a key can be shown as a directory entry.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && name.utf8.count <= 255 && !name.utf8.contains(0)
    }
}
