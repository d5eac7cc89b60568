import Foundation

/// One HTTP request for `HTTPClient`. Header names are sent as given; `host` should be among them when the request
/// is signed, so that the signed value and the sent value are the same string.
struct HTTPRequest: Sendable {
    var method: String
    var url: String
    var headers: [(String, String)]
    var body: HTTPBody
    /// Bytes to reserve for the response body up front (a ranged GET knows its size), so it grows without copies.
    var expectedResponseSize: Int?

    init(
        method: String, url: String, headers: [(String, String)] = [], body: HTTPBody = .none,
        expectedResponseSize: Int? = nil
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.expectedResponseSize = expectedResponseSize
    }

    /// `host[:port]` of the URL, for error messages.
    var host: String {
        let afterScheme = url.range(of: "://").map { url[$0.upperBound...] } ?? url[...]
        return String(afterScheme.prefix { $0 != "/" && $0 != "?" })
    }
}

enum HTTPBody: Sendable {
    case none
    case data(Data)
    /// `length` bytes of a file from `offset`, streamed from disk while sending (never read into memory whole).
    case file(path: String, offset: UInt64 = 0, length: UInt64)
}

struct HTTPResponse: Sendable {
    var status: Int
    /// Lower-cased names; repeated headers joined with ", ".
    var headers: [String: String]
    var body: Data
}
