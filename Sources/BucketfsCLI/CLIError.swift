import ObjectStore

/// A failure the user must fix: printed as one line (`Error: …`) with a non-zero exit. URL passwords in the text
/// (an error quoting a Redis or endpoint URL) are replaced by `<redacted>`.
public struct CLIError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = URLRedaction.redact(description) }
}
