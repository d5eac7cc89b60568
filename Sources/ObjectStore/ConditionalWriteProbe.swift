import Foundation

/// Whether a store really honours conditional writes. Some S3-compatible servers accept `If-None-Match` and
/// `If-Match` and ignore them: conflict detection and the object lock strategy would then silently stop working.
/// The probe writes `<folder>probe-<random>`, then writes it again with conditions that must fail (if absent; if it
/// is still an earlier version), and removes it.
public enum ConditionalWriteProbe {
    public enum Outcome: Equatable, Sendable {
        /// Both conditions were enforced.
        case honoured
        /// A write that had to fail succeeded; says which condition was ignored.
        case ignored(String)
        /// The probe could not run (read-only credentials, store down): nothing is known.
        case unknown(String)
    }

    /// Runs the probe under `folder` (e.g. `<prefix>.bucketfs/`), leaving nothing behind when it can delete.
    public static func run(_ store: any ObjectStore, folder: String) -> Outcome {
        let key = "\(folder)probe-\(UUID().uuidString.lowercased())"
        let body = Data("bucketfs conditional write probe\n".utf8)
        defer { try? store.delete(key, condition: .none) }
        let first: ObjectInfo
        do {
            first = try store.put(key, body: .data(body), options: PutOptions(condition: .ifAbsent))
        } catch {
            return .unknown("cannot write \(key): \(error)")
        }
        do {
            _ = try store.put(key, body: .data(body), options: PutOptions(condition: .ifAbsent))
            return .ignored("If-None-Match: * on an existing key")
        } catch .preconditionFailed {
            // as it must
        } catch {
            return .unknown("second write of \(key): \(error)")
        }
        // A version that was current once and is not any more (different bytes: an ETag is a content hash).
        do {
            _ = try store.put(key, body: .data(body + Data("second\n".utf8)), options: PutOptions())
        } catch {
            return .unknown("rewrite of \(key): \(error)")
        }
        do {
            _ = try store.put(key, body: .data(body), options: PutOptions(condition: .ifVersionMatches(first.version)))
            return .ignored("If-Match with a version that is not the current one")
        } catch .preconditionFailed {
            return .honoured
        } catch {
            return .unknown("third write of \(key): \(error)")
        }
    }
}
