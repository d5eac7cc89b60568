/// A failure the user must fix: printed as one line (`Error: …`) with a non-zero exit.
public struct CLIError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
