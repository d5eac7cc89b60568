/// Key layout under the records prefix (DESIGN.md "Records") and the escaping of ids into key segments.
public enum RecordKey {
    public static func session(_ id: String) -> String { "sessions/\(segment(id)).json" }
    public static func conversation(_ session: String) -> String { "conversations/\(segment(session))/" }
    public static func message(_ session: String, sequence: Int) -> String {
        conversation(session) + padded(sequence) + ".json"
    }
    public static func checkpoints(_ thread: String) -> String { "checkpoints/\(segment(thread))/" }
    public static func checkpoint(_ thread: String, _ checkpoint: String) -> String {
        checkpoints(thread) + segment(checkpoint) + ".json"
    }
    public static func writes(_ thread: String, _ checkpoint: String) -> String {
        checkpoints(thread) + segment(checkpoint) + ".writes.json"
    }
    public static func task(_ session: String) -> String { "tasks/\(segment(session)).json" }
    public static func upload(_ id: String) -> String { "uploads/\(segment(id)).json" }
    public static func buffer(_ thread: String) -> String { "buffers/\(segment(thread))/" }
    public static func slot(_ thread: String, index: Int) -> String { buffer(thread) + padded(index) + ".json" }
    public static func registryEntry(_ uuid: String) -> String { "registry/\(segment(uuid)).json" }
    /// The reverse index chain → uuid, so a chain is found with one read.
    public static func registryChain(_ chain: String) -> String { "registry/chains/\(segment(chain)).json" }

    public static func events(_ stream: String) -> String { "events/\(segment(stream))/" }
    public static func event(_ stream: String, sequence: Int) -> String { events(stream) + padded(sequence) + ".json" }

    /// Every kind of record, by its first key segment (what `records migrate` walks).
    public static let folders = [
        "sessions/", "conversations/", "checkpoints/", "tasks/", "uploads/", "buffers/", "registry/",
        "events/",
    ]

    /// An id as one key segment: letters, digits and `-_.:@+=` stay, everything else (`/`, spaces, `%`…) is
    /// percent-encoded, and the names `.`/`..` are encoded too, so every id maps to one valid file name.
    public static func segment(_ id: String) -> String {
        var out = ""
        for byte in id.utf8 {
            let c = Character(UnicodeScalar(byte))
            if byte < 0x80, c.isLetter || c.isNumber || "-_.:@+=".contains(c) {
                out.append(c)
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        if out == "." || out == ".." { out = out.replacingDots() }
        return out
    }

    /// Ids must be non-empty and free of NUL.
    static func validate(_ id: String, _ what: String) throws(RecordError) {
        guard !id.isEmpty, !id.utf8.contains(0) else {
            throw .invalid("\(what) must be a non-empty string without NUL")
        }
    }

    /// The id a segment was made from.
    public static func id(fromSegment segment: String) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(segment.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%"), utf8.count >= 2,
                let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Sequence numbers are zero-padded so that key order is numeric order.
    static func padded(_ number: Int) -> String { String(number).leftPadded(to: 10) }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }

    fileprivate func replacingDots() -> String { map { _ in "%2E" }.joined() }
}
