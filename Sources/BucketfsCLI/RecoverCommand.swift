import ArgumentParser
import FileSystem
import Foundation
import ObjectStore

/// Files whose upload failed (conflict, store down) are kept in `CACHE_DIR/recovery/`; this lists them and
/// pushes one back to its key once the user has decided it should win.
struct RecoverCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover", abstract: "List or push back the content of uploads that failed.",
        subcommands: [List.self, Push.self])

    struct Entry {
        var id: String
        var store: String
        var key: String
        var reason: String
        var saved: String
        var dataPath: String
        var size: UInt64
        /// How the store was reached when the upload failed (endpoint, region…).
        var context: [String: String]
    }

    static func entries(in cacheDir: String) -> [Entry] {
        let folder = cacheDir + "/recovery"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0.hasSuffix(".json") }.sorted().compactMap { name in
            guard let data = FileManager.default.contents(atPath: folder + "/" + name),
                let info = try? JSONSerialization.jsonObject(with: data) as? [String: String],
                let key = info["key"], let dataPath = info["data"]
            else { return nil }
            let size = (try? FileManager.default.attributesOfItem(atPath: dataPath)[.size] as? UInt64) ?? 0
            return Entry(
                id: String(name.dropLast(5)), store: info["store"] ?? "?", key: key,
                reason: info["reason"] ?? "", saved: info["saved"] ?? "", dataPath: dataPath, size: size,
                context: info)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List saved uploads: id, store, key, size, reason.")

        @Option(help: "The mount's cache directory.")
        var cacheDir = Configuration.defaultCacheDirectory()

        func run() throws {
            for e in RecoverCommand.entries(in: cacheDir) {
                print("\(e.id)\t\(e.store)\(e.key)\t\(e.size) bytes\t\(e.saved)\t\(e.reason)")
            }
        }
    }

    struct Push: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Upload saved files to their keys, then remove them from the folder.",
            discussion: "A file replaces only the version it was based on (a new file: only an absent key); if the "
                + "object changed since, the push is refused unless --force. "
                + "On a terminal a progress line shows which file is being uploaded, its size and the time so far.")

        @Argument(help: "Ids shown by `bucketfs recover list`.")
        var ids: [String]

        @Option(help: "Upload to this key instead of the original one (one id only).")
        var key: String?

        @Flag(help: "Overwrite the object even if it changed since the copy was saved (or if that is unknown).")
        var force = false

        @OptionGroup var settings: ConfigurationOptions

        func validate() throws {
            if ids.isEmpty { throw ValidationError("give the id of a saved upload (see `bucketfs recover list`)") }
            if key != nil && ids.count > 1 { throw ValidationError("--key applies to one id only") }
        }

        func run() throws {
            let configuration = try settings.resolve()
            let cacheDir = configuration.mount.cacheDir
            let saved = RecoverCommand.entries(in: cacheDir)
            let entries = try ids.map { id throws(CLIError) -> Entry in
                guard let entry = saved.first(where: { $0.id == id }) else {
                    throw CLIError("no saved upload \(id) in \(cacheDir)/recovery (see `bucketfs recover list`)")
                }
                return entry
            }
            let progress = ProgressLine()
            for (index, entry) in entries.enumerated() {
                let started = Date()
                let counter = entries.count > 1 ? "[\(index + 1)/\(entries.count)] " : ""
                let label = "\(counter)pushing \(entry.store)\(key ?? entry.key) (\(ProgressLine.bytes(entry.size)))"
                try progress.repeating({ "\(label) \(ProgressLine.duration(Date().timeIntervalSince(started)))" }) {
                    try push(entry, configuration: configuration, cacheDir: cacheDir)
                }
            }
        }

        private func push(_ entry: Entry, configuration: Configuration, cacheDir: String) throws(CLIError) {
            var configuration = configuration
            let location: StoreLocation
            do { location = try StoreLocation(parsing: entry.store) } catch { throw CLIError("\(error)") }
            if case .memory = location.kind {
                throw CLIError(
                    "cannot push to \(entry.store): that bucket lived in the daemon that saved the file; "
                        + "the data stays at \(entry.dataPath)"
                )
            }
            // The endpoint and region of the mount that saved it, unless given now.
            configuration.adopt(storeContext: entry.context)
            let store = try MountAssembly.openStore(location, configuration: configuration)
            let target = key ?? entry.key
            let condition = force ? PutCondition.none : pushCondition(for: entry, target: target)
            do {
                try store.put(target, body: .file(path: entry.dataPath), options: PutOptions(condition: condition))
            } catch .preconditionFailed, .notFound {
                throw CLIError(
                    "not pushed: \(entry.store)\(target) changed (or was deleted) since this copy was "
                        + "saved; the copy stays in the folder (--force overwrites)")
            } catch {
                throw CLIError("cannot upload \(entry.store)\(target): \(error)")
            }
            // Only files of the recovery folder itself are removed, whatever the record says.
            if (entry.dataPath as NSString).deletingLastPathComponent == "\(cacheDir)/recovery" {
                try? FileManager.default.removeItem(atPath: entry.dataPath)
            }
            try? FileManager.default.removeItem(atPath: "\(cacheDir)/recovery/\(entry.id).json")
            print("pushed \(entry.size) bytes to \(entry.store)\(target)")
        }

        /// Without `--force` a push replaces only what the copy was based on: the version it was read from, or
        /// nothing for a new file (or another key). A copy that does not say is pushed only where the key is free.
        private func pushCondition(for entry: Entry, target: String) -> PutCondition {
            guard target == entry.key else { return .ifAbsent }
            switch RecoveryFolder.Base(recorded: entry.context["base"]) {
            case .absent?: return .ifAbsent
            case .version(let version)?: return .ifVersionMatches(version)
            case nil: return .ifAbsent
            }
        }
    }
}
