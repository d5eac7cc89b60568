import Foundation
import ObjectStore
import Records

/// Opens the records of SOURCE for the records commands: a mount source (records under
/// `<prefix><records_prefix>`, with the configured S3/GCS settings) or a `redis://` URL.
enum RecordsAccess {
    static func backend(_ source: String, settings: ConfigurationOptions) throws(CLIError) -> any RecordBackend {
        let configuration = try settings.resolve()
        do {
            return try RecordStores.backend(url: source, recordsPrefix: configuration.mount.recordsPrefix) { location in
                try MountAssembly.openStore(location, configuration: configuration)
            }
        } catch {
            throw CLIError("\(error)")
        }
    }

    static func stores(_ source: String, settings: ConfigurationOptions) throws(CLIError) -> RecordStores {
        RecordStores(backend: try backend(source, settings: settings))
    }

    /// Runs a records call; its failure becomes one line.
    static func attempt<T>(_ body: () throws -> T) throws(CLIError) -> T {
        do { return try body() } catch { throw CLIError("\(error)") }
    }

    static func printJSON<T: Encodable>(_ value: T) throws(CLIError) {
        let data = try attempt { try RecordCoding.encode(value) }
        FileHandle.standardOutput.write(data)
    }
}
