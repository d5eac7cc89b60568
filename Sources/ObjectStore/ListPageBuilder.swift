import Foundation
import Synchronization

// MARK: - Shared by the in-process backends (memory and local directory)

extension String {
    /// Byte-wise UTF-8 order: the order S3 lists keys in. (`<` on String compares normalised Unicode.)
    func precedesInKeyOrder(_ other: String) -> Bool {
        utf8.lexicographicallyPrecedes(other.utf8)
    }

    /// A byte-wise prefix test, consistent with `precedesInKeyOrder`.
    func hasKeyPrefix(_ prefix: String) -> Bool {
        utf8.starts(with: prefix.utf8)
    }
}

extension PutCondition {
    /// Throws unless the condition holds for an object whose current version is `currentVersion` (nil: absent).
    func check(key: String, currentVersion: String?) throws(ObjectStoreError) {
        switch self {
        case .none:
            return
        case .ifAbsent:
            if currentVersion != nil { throw .preconditionFailed(key: key) }
        case .ifVersionMatches(let expected):
            guard let currentVersion else { throw .notFound(key: key) }
            if currentVersion != expected { throw .preconditionFailed(key: key) }
        }
    }
}

extension MultipartUploadInfo {
    /// By key, then oldest first — the order S3 lists uploads in.
    static func listOrder(_ a: MultipartUploadInfo, _ b: MultipartUploadInfo) -> Bool {
        if !a.key.utf8.elementsEqual(b.key.utf8) { return a.key.precedesInKeyOrder(b.key) }  // (`!=`: canonical)
        return a.initiated < b.initiated
    }
}

/// Checks what every backend requires of a part list: at least one part, numbers strictly ascending.
func validatePartList(_ parts: [CompletedPart]) throws(ObjectStoreError) {
    guard !parts.isEmpty else { throw .invalidRequest("a multipart upload needs at least one part") }
    for (previous, next) in zip(parts, parts.dropFirst()) where next.number <= previous.number {
        throw .invalidRequest("parts must be listed in ascending order (part \(next.number) after \(previous.number))")
    }
}

/// Builds one page of a listing from keys fed in ascending byte order: applies the prefix, delimiter grouping,
/// the start position (continuation token or `startAfter`) and `maxKeys`.
///
/// The continuation token is simply the last key or common prefix returned; callers treat it as opaque.
struct ListPageBuilder {
    let prefix: String
    /// nil when the request has no (or an empty) delimiter.
    let delimiter: String?
    /// Only entries strictly after this key are returned.
    let marker: String?
    private let limit: Int
    private(set) var page = ListPage()
    private var count = 0
    private var lastEntry: String?
    private var lastCommonPrefix: String?

    init(_ request: ListRequest) {
        prefix = request.prefix
        delimiter = request.delimiter.flatMap { $0.isEmpty ? nil : $0 }
        marker = request.continuationToken ?? request.startAfter
        // A page holds at least one entry so that paging always makes progress.
        limit = max(1, request.maxKeys)
    }

    /// Offers the next key. `info` is called only if the key becomes an object entry of this page (it may return
    /// nil to skip a key that vanished). Returns false once the page is full: stop feeding then.
    mutating func add(key: String, info: () -> ObjectInfo?) -> Bool {
        guard key.hasKeyPrefix(prefix) else { return true }
        if let commonPrefix = commonPrefix(of: key) {
            // Byte for byte (`!=` is canonical): `caf\u{e9}/` and `cafe\u{301}/` are two prefixes.
            let repeated = lastCommonPrefix.map { $0.utf8.elementsEqual(commonPrefix.utf8) } ?? false
            guard !repeated, isAfterMarker(commonPrefix) else { return true }
            guard makeRoom() else { return false }
            lastCommonPrefix = commonPrefix
            page.commonPrefixes.append(commonPrefix)
            record(commonPrefix)
            return true
        }
        guard isAfterMarker(key) else { return true }
        guard makeRoom() else { return false }
        guard let entry = info() else { return true }
        page.objects.append(entry)
        record(key)
        return true
    }

    /// Whether keys under `directoryKey` (which ends with `/`) all come at or before the marker.
    func skipsEverything(under directoryKey: String) -> Bool {
        guard let marker else { return false }
        return directoryKey.precedesInKeyOrder(marker) && !marker.hasKeyPrefix(directoryKey)
    }

    private func isAfterMarker(_ key: String) -> Bool {
        guard let marker else { return true }
        return marker.precedesInKeyOrder(key)
    }

    /// False (and the continuation token set) when the page is already full.
    private mutating func makeRoom() -> Bool {
        guard count < limit else {
            page.nextContinuationToken = lastEntry
            return false
        }
        return true
    }

    private mutating func record(_ entry: String) {
        count += 1
        lastEntry = entry
    }

    /// The prefix plus everything up to and including the first delimiter after it, if there is one.
    private func commonPrefix(of key: String) -> String? {
        guard let delimiter else { return nil }
        let bytes = Array(key.utf8)
        let separator = Array(delimiter.utf8)
        var index = prefix.utf8.count
        while index + separator.count <= bytes.count {
            if bytes[index..<(index + separator.count)].elementsEqual(separator) {
                return String(decoding: bytes[..<(index + separator.count)], as: UTF8.self)
            }
            index += 1
        }
        return nil
    }
}
