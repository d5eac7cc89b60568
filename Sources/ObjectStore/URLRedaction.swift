/// Finds the passwords of URLs (`scheme://user:password@host…`) inside any text — a URL, an error message that
/// quotes one, a command-line argument such as `redis_url=redis://:pw@h` — so that no secret is printed,
/// logged or left on the process list. It works on bytes and needs no parsable URL: a URL that fails to parse
/// is exactly the one an error message quotes. It errs on the side of hiding too much.
public enum URLRedaction {
    public static let placeholder = "<redacted>"

    /// Byte ranges of every URL password in `bytes`.
    public static func passwordRanges<C: Collection>(in bytes: C) -> [Range<Int>] where C.Element == UInt8 {
        let text = Array(bytes)
        var ranges: [Range<Int>] = []
        var index = 0
        while index + 3 <= text.count {
            guard text[index] == UInt8(ascii: ":"), text[index + 1] == UInt8(ascii: "/"),
                text[index + 2] == UInt8(ascii: "/")
            else {
                index += 1
                continue
            }
            let start = index + 3
            // The userinfo may hold unescaped '/' or '@' (that is why the URL did not parse): look as far as the
            // end of the word for its last '@'.
            var end = start
            while end < text.count, !isWordEnd(text[end]) { end += 1 }
            if let at = text[start..<end].lastIndex(of: UInt8(ascii: "@")),
                let colon = text[start..<at].firstIndex(of: UInt8(ascii: ":")), colon + 1 < at
            {
                ranges.append((colon + 1)..<at)
            }
            index = max(end, start)
        }
        return ranges
    }

    /// `text` with every URL password replaced by `<redacted>`.
    public static func redact(_ text: String) -> String {
        let bytes = Array(text.utf8)
        let ranges = passwordRanges(in: bytes)
        guard !ranges.isEmpty else { return text }
        var result: [UInt8] = []
        var position = 0
        for range in ranges {
            result += bytes[position..<range.lowerBound]
            result += Array(placeholder.utf8)
            position = range.upperBound
        }
        result += bytes[position...]
        return String(decoding: result, as: UTF8.self)
    }

    /// Whether `text` holds a URL password.
    public static func containsPassword(_ text: String) -> Bool { !passwordRanges(in: text.utf8).isEmpty }

    private static func isWordEnd(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\""),
            UInt8(ascii: "'"), UInt8(ascii: "<"), UInt8(ascii: ">"):
            return true
        default:
            return false
        }
    }
}
