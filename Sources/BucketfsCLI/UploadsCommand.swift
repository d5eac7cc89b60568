import ArgumentParser
import Foundation
import ObjectStore
import Records

/// `bucketfs uploads list|cleanup SOURCE`: multipart-upload states kept in records.
struct UploadsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uploads", abstract: "List multipart-upload states, or abort and drop stale ones.",
        subcommands: [List.self, Cleanup.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One line per upload: job id, key, parts, last update.")
        @Argument(help: "s3://bucket/prefix/, gs://…, file:///dir/ — as for mount.") var source: String
        @OptionGroup var settings: ConfigurationOptions

        func run() throws {
            let stores = try RecordsAccess.stores(source, settings: settings)
            for state in try RecordsAccess.attempt({ try stores.uploads.listActive() }) {
                print(
                    "\(state.id)\t\(state.key)\tparts=\(state.parts.count)\t\(RecordCoding.format(state.lastUpdated))")
            }
        }
    }

    struct Cleanup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Abort the multipart uploads of states not updated for --older-than hours, and drop the states.")
        @Argument(help: "s3://bucket/prefix/, gs://…, file:///dir/ — as for mount.") var source: String
        @Option(help: "Hours without an update.") var olderThan: Double = 24
        @OptionGroup var settings: ConfigurationOptions

        func validate() throws {
            try FlagBounds.check(olderThan, flag: "--older-than", in: FlagBounds.idleHours, unit: "hours")
        }

        func run() throws {
            let configuration = try settings.resolve()
            let assembly = try MountAssembly(source: source, configuration: configuration)
            let store = assembly.store
            let stores = try assembly.recordStores()
            for state in try RecordsAccess.attempt({ try stores.uploads.cleanupStale(maxAgeHours: olderThan) }) {
                do {
                    try store.abortMultipartUpload(state.key, uploadID: state.uploadID)
                    print("aborted \(state.id) (\(state.key))")
                } catch {
                    print("dropped \(state.id) (\(state.key)): abort failed: \(error)")
                }
            }
        }
    }
}
