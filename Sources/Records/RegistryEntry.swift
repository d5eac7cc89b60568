import Foundation

/// One chain ↔ uuid mapping of seed 004's thread registry, `registry/<uuid>.json`; the reverse index
/// `registry/chains/<chain>.json` holds the same record.
public struct RegistryEntry: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var uuid: String
    /// A dot-separated call chain, e.g. `console.router.greeter`.
    public var chain: String
    public var createdAt: Date
    public var expiresAt: Date?

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case uuid, chain
        case createdAt = "created_at"
        case expiresAt = "expires_at"
    }

    func isExpired(at now: Date) -> Bool { expiresAt.map { $0 <= now } ?? false }
}
