import Foundation

/// Reading and writing the JSON API's documents: object resources, lists, errors.
enum GCSJSON {
    static func object(_ data: Data) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    static func encode(_ object: [String: Any]) throws(ObjectStoreError) -> Data {
        do {
            return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        } catch {
            throw .invalidRequest("cannot encode GCS request: \(error)")
        }
    }

    /// An object resource as `ObjectInfo`; the version is the generation. `nil` if it has no name or generation.
    static func objectInfo(_ resource: [String: Any], withMetadata: Bool = true) -> ObjectInfo? {
        guard let name = resource["name"] as? String, let generation = string(resource["generation"]) else {
            return nil
        }
        var metadata: ObjectMetadata? = nil
        if withMetadata {
            metadata = [:]
            for (key, value) in resource["metadata"] as? [String: Any] ?? [:] {
                if let text = string(value) { metadata?[key] = text }
            }
        }
        let updated =
            (resource["updated"] as? String).flatMap(HTTPTimestamp.parseISO8601)
            ?? (resource["timeCreated"] as? String).flatMap(HTTPTimestamp.parseISO8601)
            ?? Date(timeIntervalSince1970: 0)
        guard !hasBadSize(resource) else { return nil }
        return ObjectInfo(
            key: name, size: string(resource["size"]).flatMap { UInt64($0) } ?? 0, lastModified: updated,
            version: generation, contentType: resource["contentType"] as? String, metadata: metadata)
    }

    /// A size that is not a number, or that no file can have (above Int64.max): a hostile or broken reply.
    static func hasBadSize(_ resource: [String: Any]) -> Bool {
        guard let value = resource["size"] else { return false }
        guard let size = string(value).flatMap({ UInt64($0) }) else { return true }
        return size > UInt64(Int64.max)
    }

    /// The base64 MD5 of an object, if the resource has one (composite objects have none).
    static func md5(_ resource: [String: Any]) -> String? {
        resource["md5Hash"] as? String
    }

    /// `reason: message` of an error document, e.g. `conditionNotMet: At least one of the pre-conditions…`.
    static func errorDetail(_ data: Data) -> (reason: String, message: String)? {
        guard let error = object(data)?["error"] as? [String: Any] else { return nil }
        let message = error["message"] as? String ?? ""
        let reason = ((error["errors"] as? [[String: Any]])?.first?["reason"] as? String) ?? ""
        return (reason, message)
    }

    /// JSON numbers and numeric strings (int64 fields come as strings) as text.
    static func string(_ value: Any?) -> String? {
        switch value {
        case let text as String: return text
        case let number as NSNumber: return number.stringValue
        default: return nil
        }
    }
}
