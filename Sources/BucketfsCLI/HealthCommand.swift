import ArgumentParser
import Foundation
import ObjectStore
import Records

/// `bucketfs health SOURCE`: what `.bucketfs/health.json` says, without a mount.
struct HealthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health", abstract: "Check that SOURCE's store, records and lock strategy answer; JSON, exit 1 if not.")
    @Argument(help: "s3://bucket/prefix/, gs://…, file:///dir/ — as for mount.") var source: String
    @OptionGroup var settings: ConfigurationOptions

    func run() throws {
        let configuration = try settings.resolve()
        let location: StoreLocation
        do { location = try StoreLocation(parsing: source) } catch { throw CLIError("\(error)") }
        let store = try MountCommand.openStore(location, configuration: configuration)
        let records = try MountCommand.recordStores(configuration: configuration, location: location, store: store)
        let locking = try LockSetup(configuration: configuration, location: location, store: store)
        let data = MountCommand.healthJSON(meter: MeteredStore(store), records: records, locking: locking)
        FileHandle.standardOutput.write(data)
        if !String(decoding: data, as: UTF8.self).contains("\"status\" : \"healthy\"") { throw ExitCode(1) }
    }
}
