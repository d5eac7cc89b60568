import Foundation

/// Where Redis is: `redis_host`, `redis_port`, `redis_password`, `redis_db` of seed 000, or a URL.
public struct RedisEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// Redis 6 ACL user; `nil` authenticates as `default` with the password alone.
    public var username: String?
    public var password: String?
    public var db: Int

    public init(host: String = "127.0.0.1", port: Int = 6379, username: String? = nil, password: String? = nil, db: Int = 0) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.db = db
    }

    /// `redis://[[user]:password@]host[:port][/db]`.
    public init(url: String) throws(RedisError) {
        // Never quote the URL in an error: it may hold the password (and does, when it failed to parse).
        guard let components = URLComponents(string: url) else {
            throw .invalid("not a valid URL (redis://[user:password@]host[:port][/db]; percent-encode special characters)")
        }
        guard components.scheme?.lowercased() == "redis" else {
            throw .invalid("not a redis:// URL (scheme \"\(components.scheme ?? "")\")")
        }
        guard let host = components.host, !host.isEmpty else { throw .invalid("no host in the Redis URL") }
        self.host = host
        self.port = components.port ?? 6379
        let user = components.percentEncodedUser.flatMap { $0.removingPercentEncoding }
        self.username = user?.isEmpty == false ? user : nil
        self.password = components.percentEncodedPassword.flatMap { $0.removingPercentEncoding }
        let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if path.isEmpty {
            self.db = 0
        } else if let db = Int(path), db >= 0 {
            self.db = db
        } else {
            throw .invalid("bad database number '\(path)' in the Redis URL (expected 0 or more)")
        }
    }

    /// Without the password, for logs.
    public var description: String {
        "redis://\(password == nil ? "" : "***@")\(host):\(port)/\(db)"
    }
}
