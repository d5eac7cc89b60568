import Foundation

/// Where Redis is: `redis_host`, `redis_port`, `redis_password`, `redis_db` of seed 000, or a URL.
public struct RedisEndpoint: Sendable, Equatable, CustomStringConvertible {
    /// TLS settings of a `rediss://` endpoint. The server's certificate is always verified, against `caFile`
    /// or else the system's CA store, and must name the host (DNS name or IP address) connected to.
    public struct TLS: Sendable, Equatable {
        /// PEM file of the CA(s) to trust instead of the system store (`?ca=`).
        public var caFile: String?
        /// Client certificate chain and key (PEM) for servers that ask for one (`?cert=`, `?key=`).
        public var certFile: String?
        public var keyFile: String?

        public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
        }
    }

    public var host: String
    public var port: Int
    /// Redis 6 ACL user; `nil` authenticates as `default` with the password alone.
    public var username: String?
    public var password: String?
    public var db: Int
    /// `nil`: plain TCP (`redis://`).
    public var tls: TLS?

    public init(
        host: String = "127.0.0.1", port: Int = 6379, username: String? = nil, password: String? = nil,
        db: Int = 0, tls: TLS? = nil
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.db = db
        self.tls = tls
    }

    static let urlForm = "redis[s]://[user:password@]host[:port][/db][?ca=FILE&cert=FILE&key=FILE]"

    /// `redis://[[user]:password@]host[:port][/db]`, or `rediss://…` for TLS with the optional query
    /// parameters `ca`, `cert` and `key` (file paths).
    public init(url: String) throws(RedisError) {
        // Never quote the URL in an error: it may hold the password (and does, when it failed to parse).
        guard let components = URLComponents(string: url) else {
            throw .invalid("not a valid URL (\(Self.urlForm); percent-encode special characters)")
        }
        let scheme = components.scheme?.lowercased()
        guard scheme == "redis" || scheme == "rediss" else {
            throw .invalid("not a redis:// or rediss:// URL (scheme \"\(components.scheme ?? "")\")")
        }
        guard let host = components.host, !host.isEmpty else { throw .invalid("no host in the Redis URL") }
        self.host = host
        guard (components.port ?? 6379) > 0 else { throw .invalid("bad port in the Redis URL") }
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
        self.tls = try Self.tls(scheme: scheme, query: components.queryItems ?? [])
    }

    private static func tls(scheme: String?, query: [URLQueryItem]) throws(RedisError) -> TLS? {
        guard scheme == "rediss" else {
            if let item = query.first { throw .invalid("'\(item.name)' in a Redis URL needs rediss:// (TLS)") }
            return nil
        }
        var tls = TLS()
        for item in query {
            guard let value = item.value, !value.isEmpty else {
                throw .invalid("'\(item.name)' in the Redis URL needs a file path")
            }
            switch item.name {
            case "ca": tls.caFile = value
            case "cert": tls.certFile = value
            case "key": tls.keyFile = value
            default: throw .invalid("unknown parameter '\(item.name)' in the Redis URL (known: ca, cert, key)")
            }
        }
        if (tls.certFile == nil) != (tls.keyFile == nil) {
            throw .invalid("a Redis client certificate needs both 'cert' and 'key'")
        }
        return tls
    }

    /// Without the password, for logs.
    public var description: String {
        "\(tls == nil ? "redis" : "rediss")://\(password == nil ? "" : "***@")\(host):\(port)/\(db)"
    }
}
