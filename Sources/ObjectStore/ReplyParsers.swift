import Foundation

/// The parsers that read what a server sends, callable from outside the module: the fuzz targets (Fuzz/) drive
/// them with arbitrary bytes. Each returns a small number derived from what it parsed, so the work is not
/// optimised away; none may trap, hang or recurse without bound.
public enum ReplyParsers {
    /// An S3 response document (list results, errors, multipart results).
    public static func s3XML(_ data: Data) -> Int {
        guard let document = S3XML.parse(data) else { return 0 }
        func count(_ node: S3XML) -> Int { node.children.reduce(1) { $0 + count($1) } }
        _ = document.value("NextContinuationToken")
        return count(document) + document.all("Contents").compactMap { $0.value("Size").flatMap { UInt64($0) } }.count
    }

    /// A GCS JSON API document: an object resource or a list of them, or an error.
    public static func gcsJSON(_ data: Data) -> Int {
        guard let document = GCSJSON.object(data) else { return 0 }
        let items = (document["items"] as? [[String: Any]]) ?? [document]
        let infos = items.filter { !GCSJSON.hasBadSize($0) }.compactMap { GCSJSON.objectInfo($0) }
        return infos.count + (GCSJSON.errorDetail(data) == nil ? 0 : 1)
    }

    /// A mount source URL (`s3://`, `gs://`, `file://`, `memory://`).
    public static func sourceURL(_ text: String) -> Int {
        guard let location = try? StoreLocation(parsing: text) else { return 0 }
        return location.prefix.utf8.count + URLRedaction.redact(text).utf8.count
    }
}
