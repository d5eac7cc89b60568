import Foundation

/// Whole contents of small files, fetched by the lookup that revalidated them (one ranged GET instead of a HEAD), or
/// just uploaded by this mount (the bytes sent): the open that usually follows reads them from here, so a cold `cat`
/// of a small file costs one request, and reading back a file just written none.
/// Bounded in bytes; the oldest entries go first. An entry is used once, and only for the version it was read at.
struct SmallContentCache {
    private var entries: [UInt64: (version: String, data: Data)] = [:]
    /// Insertion order, oldest first (may name inodes already taken).
    private var order: [UInt64] = []
    private(set) var bytes = 0
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    mutating func put(_ ino: UInt64, version: String, data: Data) {
        guard data.count <= capacity else { return }
        if let old = entries.removeValue(forKey: ino) { bytes -= old.data.count }
        while bytes + data.count > capacity, !order.isEmpty {
            let oldest = order.removeFirst()
            if let dropped = entries.removeValue(forKey: oldest) { bytes -= dropped.data.count }
        }
        entries[ino] = (version, data)
        order.append(ino)
        bytes += data.count
    }

    /// The content of `ino` if it was read at `version`; removed either way.
    mutating func take(_ ino: UInt64, version: String?) -> Data? {
        guard let entry = entries.removeValue(forKey: ino) else {
            FileSystemMetrics.shared.smallContent(hit: false)
            return nil
        }
        bytes -= entry.data.count
        if let index = order.firstIndex(of: ino) { order.remove(at: index) }
        FileSystemMetrics.shared.smallContent(hit: entry.version == version)
        return entry.version == version ? entry.data : nil
    }
}
