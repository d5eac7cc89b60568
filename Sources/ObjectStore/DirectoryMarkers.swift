import Foundation

/// Directory markers (`a/b/`, zero bytes) and where a directory's metadata lives.
///
/// S3, GCS, moto and the local backends keep a marker's user metadata. SeaweedFS does not: it stores `a/b/` as a
/// directory of its own and drops the metadata (and answers CopyObject of a marker with NoSuchKey). There a
/// directory's metadata goes into a sidecar, an ordinary zero-byte object inside the directory,
/// `a/b/.bucketfs-dir`, with the same metadata a marker would carry. The sidecar is listed with the directory's
/// content (a lookup that lists `a/b/` sees it without another request), moves with the directory (it is an object
/// under its prefix) and goes away with it. Its name is reserved: hidden from listings, refused as a file name.
public enum DirectoryMarkers {
    public static let sidecarName = ".bucketfs-dir"

    /// `a/b/` → `a/b/.bucketfs-dir`.
    public static func sidecarKey(forMarker marker: String) -> String {
        marker + sidecarName
    }

    public static func isSidecar(_ key: String) -> Bool {
        key == sidecarName || key.hasSuffix("/" + sidecarName)
    }

    /// Whether `store` keeps a marker's metadata: writes a marker with metadata at `probeKey` (which must end in
    /// `/`, e.g. `<prefix>.bucketfs/probe-<id>/`), reads it back and deletes it. Three requests, once per mount.
    public static func markersKeepMetadata(_ store: any ObjectStore, probeKey: String) throws(ObjectStoreError) -> Bool
    {
        precondition(probeKey.hasSuffix("/"), "a marker key ends in /")
        try store.put(probeKey, body: .data(Data()), options: PutOptions(metadata: ["bucketfs-probe": "1"]))
        let kept = try store.head(probeKey).metadata?["bucketfs-probe"] == "1"
        try store.delete(probeKey)
        return kept
    }
}
