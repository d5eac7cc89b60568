import Foundation
import Glibc

/// The two timestamp forms S3 and GCS send, parsed by hand (no shared, non-Sendable formatters):
/// HTTP dates in headers (`Wed, 21 Oct 2015 07:28:00 GMT`) and ISO 8601 in XML (`2015-10-21T07:28:00.000Z`).
enum HTTPTimestamp {
    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    static func parseHTTPDate(_ text: String) -> Date? {
        // RFC 7231 IMF-fixdate: day-name, DD Mon YYYY HH:MM:SS GMT
        let parts = text.split(separator: " ")
        guard parts.count >= 5, let day = Int(parts[1]),
            let month = months.firstIndex(of: parts[2].lowercased()), let year = Int(parts[3])
        else { return nil }
        let clock = parts[4].split(separator: ":").compactMap { Int($0) }
        guard clock.count == 3 else { return nil }
        return make(
            year: year, month: month + 1, day: day, hour: clock[0], minute: clock[1], second: clock[2],
            fraction: 0)
    }

    static func parseISO8601(_ text: String) -> Date? {
        // YYYY-MM-DDTHH:MM:SS[.fff](Z|+00:00)
        let bytes = Array(text.utf8)
        guard bytes.count >= 19 else { return nil }
        func number(_ range: Range<Int>) -> Int? { Int(String(decoding: bytes[range], as: UTF8.self)) }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19)
        else { return nil }
        var fraction = 0.0
        if bytes.count > 20, bytes[19] == UInt8(ascii: ".") {
            let digits = bytes[20...].prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
            fraction = Double("0." + String(decoding: digits, as: UTF8.self)) ?? 0
        }
        return make(year: year, month: month, day: day, hour: hour, minute: minute, second: second, fraction: fraction)
    }

    private static func make(
        year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int,
        fraction: Double
    ) -> Date? {
        var t = tm()
        t.tm_year = Int32(year - 1900)
        t.tm_mon = Int32(month - 1)
        t.tm_mday = Int32(day)
        t.tm_hour = Int32(hour)
        t.tm_min = Int32(minute)
        t.tm_sec = Int32(second)
        let seconds = timegm(&t)
        guard seconds != -1 else { return nil }
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }
}
