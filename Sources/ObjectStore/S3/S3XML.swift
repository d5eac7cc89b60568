import Foundation

/// A small XML reader for S3's response documents (list results, multipart results, errors).
///
/// Hand-written rather than FoundationXML's `XMLParser`: these documents are small, element-only (no mixed content,
/// the only attribute is a namespace we ignore), and a 100-line scanner avoids a runtime dependency on libxml2 and
/// a delegate class per document. It handles the prolog, comments, CDATA, self-closing tags, the five predefined
/// entities and numeric character references; anything malformed yields `nil`.
struct S3XML: Sendable {
    var name: String
    var text: String
    var children: [S3XML]

    /// The first child with this name.
    subscript(_ childName: String) -> S3XML? {
        children.first { $0.name == childName }
    }

    func all(_ childName: String) -> [S3XML] {
        children.filter { $0.name == childName }
    }

    /// Text of the first child with this name.
    func value(_ childName: String) -> String? {
        self[childName]?.text
    }

    static func parse(_ data: Data) -> S3XML? {
        var scanner = Scanner(bytes: Array(data))
        return scanner.document()
    }

    /// Escapes text for an element's content.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(character)
            }
        }
        return out
    }

    private struct Scanner {
        let bytes: [UInt8]
        var index = 0

        init(bytes: [UInt8]) {
            self.bytes = bytes
        }

        mutating func document() -> S3XML? {
            while true {
                skipWhitespace()
                if starts(with: "<?") {
                    guard skip(past: "?>") else { return nil }
                } else if starts(with: "<!--") {
                    guard skip(past: "-->") else { return nil }
                } else if starts(with: "<!") {
                    guard skip(past: ">") else { return nil }
                }  // DOCTYPE
                else {
                    break
                }
            }
            guard peek == UInt8(ascii: "<") else { return nil }
            return element()
        }

        /// Nesting deeper than any S3 document: a hostile one could otherwise overflow the stack.
        static let maxDepth = 32

        /// At `<name ...>`: reads the element and everything up to its end tag.
        mutating func element(depth: Int = 1) -> S3XML? {
            guard depth <= Self.maxDepth else { return nil }
            index += 1
            let name = readName()
            guard !name.isEmpty, skip(past: ">") else { return nil }
            if bytes[index - 2] == UInt8(ascii: "/") { return S3XML(name: name, text: "", children: []) }
            var node = S3XML(name: name, text: "", children: [])
            var text: [UInt8] = []
            while index < bytes.count {
                if bytes[index] != UInt8(ascii: "<") {
                    text.append(bytes[index])
                    index += 1
                } else if starts(with: "</") {
                    index += 2
                    let closing = readName()
                    guard closing == name, skip(past: ">") else { return nil }
                    node.text = decodeEntities(text)
                    return node
                } else if starts(with: "<!--") {
                    guard skip(past: "-->") else { return nil }
                } else if starts(with: "<![CDATA[") {
                    index += 9
                    let start = index
                    guard skip(past: "]]>") else { return nil }
                    // CDATA is literal: escape `&` so that entity decoding leaves it as it was.
                    for byte in bytes[start..<(index - 3)] {
                        if byte == UInt8(ascii: "&") { text += Array("&amp;".utf8) } else { text.append(byte) }
                    }
                } else {
                    guard let child = element(depth: depth + 1) else { return nil }
                    node.children.append(child)
                }
            }
            return nil
        }

        var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

        func starts(with literal: StaticString) -> Bool {
            let count = literal.utf8CodeUnitCount
            guard index + count <= bytes.count else { return false }
            // Byte by byte, without copying: this runs at every `<` of a page of 1,000 keys.
            return literal.withUTF8Buffer { expected in
                for offset in 0..<count where bytes[index + offset] != expected[offset] { return false }
                return true
            }
        }

        mutating func skip(past literal: StaticString) -> Bool {
            let first = literal.withUTF8Buffer { $0[0] }
            while index < bytes.count {
                if bytes[index] == first && starts(with: literal) {
                    index += literal.utf8CodeUnitCount
                    return true
                }
                index += 1
            }
            return false
        }

        mutating func skipWhitespace() {
            while let byte = peek, byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d { index += 1 }
        }

        mutating func readName() -> String {
            let start = index
            while let byte = peek, byte != UInt8(ascii: ">"), byte != UInt8(ascii: "/"), byte > 0x20 { index += 1 }
            // Namespaced names (`s3:Key`) are matched by their local part.
            let local = bytes[start..<index].lastIndex(of: UInt8(ascii: ":")).map { $0 + 1 } ?? start
            return String(decoding: bytes[local..<index], as: UTF8.self)
        }

        func decodeEntities(_ raw: [UInt8]) -> String {
            guard raw.contains(UInt8(ascii: "&")) else { return String(decoding: raw, as: UTF8.self) }
            var out: [UInt8] = []
            out.reserveCapacity(raw.count)
            var i = 0
            while i < raw.count {
                guard raw[i] == UInt8(ascii: "&"), let semicolon = raw[i...].firstIndex(of: UInt8(ascii: ";")),
                    semicolon - i <= 10
                else {
                    out.append(raw[i])
                    i += 1
                    continue
                }
                let entity = String(decoding: raw[(i + 1)..<semicolon], as: UTF8.self)
                var replacement: [UInt8]?
                switch entity {
                case "amp": replacement = [UInt8(ascii: "&")]
                case "lt": replacement = [UInt8(ascii: "<")]
                case "gt": replacement = [UInt8(ascii: ">")]
                case "quot": replacement = [UInt8(ascii: "\"")]
                case "apos": replacement = [UInt8(ascii: "'")]
                default:
                    if entity.hasPrefix("#") {
                        let digits = entity.dropFirst()
                        let scalarValue =
                            digits.hasPrefix("x") || digits.hasPrefix("X")
                            ? UInt32(digits.dropFirst(), radix: 16) : UInt32(digits, radix: 10)
                        if let scalarValue, let scalar = Unicode.Scalar(scalarValue) {
                            replacement = Array(String(Character(scalar)).utf8)
                        }
                    }
                }
                if let replacement {
                    out += replacement
                    i = semicolon + 1
                } else {
                    out.append(raw[i])
                    i += 1
                }
            }
            return String(decoding: out, as: UTF8.self)
        }
    }
}
