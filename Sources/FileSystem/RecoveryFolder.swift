import Foundation
import Logging

/// Where the content of a file whose upload failed is kept, so that nothing is lost silently:
/// `<cache>/recovery/<time>-<n>.data` with `<time>-<n>.json` naming the store, the key and the reason.
/// `bucketfs recover list|push` reads them.
struct RecoveryFolder: Sendable {
    let directory: String
    /// The store's URL (`s3://bucket/`), so that `bucketfs recover push` knows where the key goes.
    let store: String
    /// How the store was reached (endpoint, region…), so that a push goes to the same place.
    let context: [String: String]
    let logger: Logger

    /// Copies `stagedPath` into the folder. Returns the copy's path, or nil if even that failed (logged).
    @discardableResult
    func save(stagedPath: String, key: String, reason: String) -> String? {
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        let base = "\(directory)/\(stamp)-\(UUID().uuidString.prefix(8))"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: stagedPath, toPath: base + ".data")
            let info = context.merging(["store": store, "key": key, "reason": reason, "saved": stamp,
                                        "data": base + ".data"]) { _, fixed in fixed }
            let json = try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys])
            try json.write(to: URL(fileURLWithPath: base + ".json"))
            logger.error("upload failed; content kept for recovery", metadata: [
                "key": "\(key)", "reason": "\(reason)", "saved": "\(base).data"])
            return base + ".data"
        } catch {
            logger.critical("upload failed and the content could not be saved for recovery", metadata: [
                "key": "\(key)", "reason": "\(reason)", "error": "\(error)", "staged": "\(stagedPath)"])
            return nil
        }
    }
}
