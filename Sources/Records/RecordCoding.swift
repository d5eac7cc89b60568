import Foundation

/// The one JSON form of every record: pretty-printed with sorted keys (so `cat` and diffs read well), timestamps
/// as ISO-8601 UTC with milliseconds (`2025-01-31T12:00:00.123Z`).
public enum RecordCoding {
    /// The `schema_version` written into every record by this version.
    public static let schemaVersion = 1

    public static func encode<T: Encodable>(_ value: T) throws(RecordError) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(format(date))
        }
        do {
            var data = try encoder.encode(value)
            data.append(0x0A)
            return data
        } catch {
            throw .invalid("cannot encode \(T.self): \(error)")
        }
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, key: String) throws(RecordError) -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = parse(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an ISO-8601 time: \(text)")
            }
            return date
        }
        do {
            return try decoder.decode(type, from: data)
        } catch {
            throw .corrupt("\(key): \(error)")
        }
    }

    public static func format(_ date: Date) -> String {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded())
        let (seconds, fraction) = milliseconds.quotientAndRemainder(dividingBy: 1000)
        let whole = Date(timeIntervalSince1970: Double(seconds)).formatted(Date.ISO8601FormatStyle(timeZone: .gmt))
        return whole.dropLast() + "." + String(1000 + fraction).dropFirst() + "Z"
    }

    /// Accepts times with or without fractional seconds, with `Z` or an offset.
    public static func parse(_ text: String) -> Date? {
        guard let dot = text.firstIndex(of: "."), text.hasSuffix("Z") else {
            return try? Date.ISO8601FormatStyle().parse(text)
        }
        let digits = text[text.index(after: dot)..<text.index(before: text.endIndex)]
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber),
            let whole = try? Date.ISO8601FormatStyle().parse(text[..<dot] + "Z")
        else { return nil }
        let milliseconds = Int64((digits + "000").prefix(3)) ?? 0
        return instant(seconds: Int64(whole.timeIntervalSince1970), milliseconds: milliseconds)
    }

    /// Now, at the millisecond precision the JSON keeps, so that a record read back equals the one written.
    public static func now() -> Date {
        truncated(Date())
    }

    /// `date` at the millisecond precision the JSON keeps.
    public static func truncated(_ date: Date) -> Date {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        let (seconds, fraction) = milliseconds.quotientAndRemainder(dividingBy: 1000)
        return instant(seconds: seconds, milliseconds: fraction)
    }

    private static func instant(seconds: Int64, milliseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(seconds) + Double(milliseconds) / 1000)
    }
}
