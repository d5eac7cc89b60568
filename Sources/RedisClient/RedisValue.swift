/// A Redis reply, copied out of hiredis' reply object.
package enum RedisValue: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case string(String)
    case null
    case array([RedisValue])

    package var text: String? {
        switch self {
        case .string(let text), .status(let text): return text
        case .integer(let number): return String(number)
        default: return nil
        }
    }
}
