import ArgumentParser
import Foundation
import ObjectStore
import Records

/// `bucketfs health SOURCE`: what `.bucketfs/health.json` says, without a mount.
struct HealthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Check that SOURCE's store, records and lock strategy answer; JSON, exit 1 if not.")
    @Argument(help: "s3://bucket/prefix/, gs://…, file:///dir/ — as for mount.") var source: String
    @OptionGroup var settings: ConfigurationOptions

    func run() throws {
        let configuration = try settings.resolve()
        let assembly = try MountAssembly(source: source, configuration: configuration)
        let health = MountHealth(
            meter: MeteredStore(assembly.store), records: try assembly.recordStores().backend,
            locking: try assembly.lockSetup(), ttl: 0)
        let data = health.document()
        FileHandle.standardOutput.write(data)
        if !String(decoding: data, as: UTF8.self).contains("\"status\" : \"healthy\"") { throw ExitCode(1) }
    }
}
