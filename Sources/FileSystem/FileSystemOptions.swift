import Foundation

/// How a mount presents the store: defaults for objects without metadata, caching, read-only.
public struct FileSystemOptions: Sendable, Equatable {
    /// Key prefix of the mount root: empty, or ending with `/`.
    public var prefix: String
    public var uid: UInt32
    public var gid: UInt32
    public var filePermissions: UInt32
    public var directoryPermissions: UInt32
    public var readOnly: Bool
    /// How long attributes and directory entries are trusted before asking the store again (also the
    /// kernel's entry/attr timeout).
    public var metadataTTL: Double
    /// How long "does not exist" is trusted.
    public var negativeTTL: Double
    /// Staged writes and the recovery folder live here.
    public var cacheDirectory: String
    /// Bytes that read-ahead may hold for all open files together.
    public var readAheadBudget: Int
    /// Part size for streaming a sequentially written file as a multipart upload; nil uploads at close with
    /// one PUT (best for the local backend, where assembling parts is a copy).
    public var multipartPartSize: Int?
    /// Parts uploaded at once per file; the writer waits beyond that.
    public var multipartMaxInFlight: Int
    /// Parts uploaded at once for the whole mount (`UploadLane`), whatever the number of files streaming.
    public var uploadPartsInFlightLimit = 16
    /// Objects copied (then deleted) at once when a directory is renamed.
    public var renameParallelism: Int
    /// Bytes that files being written may hold in the staging area together; 0 means no bound but the disk's.
    /// A write beyond it fails with ENOSPC.
    public var stagingLimit: UInt64
    /// Written beside each saved upload (e.g. the S3 endpoint and region), so that it can be pushed back later. Its
    /// `endpoint_url` also names the store of the block cache's entries.
    public var recoveryContext: [String: String]
    /// Keep the metadata index (`MetadataIndex`) in the cache directory across mounts; off, it lives in memory.
    public var persistMetadataIndex: Bool
    /// Bytes the on-disk block cache (`<cacheDirectory>/blocks`) may hold; 0 turns it off.
    public var blockCacheSize: UInt64
    /// Keep a directory's mode, owner and times in a sidecar object `dir/.bucketfs-dir` as well as in its marker:
    /// for stores that drop a marker's metadata (SeaweedFS; `DirectoryMarkers.markersKeepMetadata` tells).
    public var directoryMetadataInSidecar = false
    /// The longest key the store takes, in bytes (S3 and GCS: 1,024); a longer path is ENAMETOOLONG, not EIO.
    public var maxKeyLength: Int?

    public init(
        prefix: String = "", uid: UInt32 = getuid(), gid: UInt32 = getgid(),
        filePermissions: UInt32 = 0o644, directoryPermissions: UInt32 = 0o755, readOnly: Bool = false,
        metadataTTL: Double = 1, negativeTTL: Double = 1, cacheDirectory: String,
        readAheadBudget: Int = 128 << 20, multipartPartSize: Int? = nil, multipartMaxInFlight: Int = 4,
        renameParallelism: Int = 16, stagingLimit: UInt64 = 0,
        recoveryContext: [String: String] = [:], blockCacheSize: UInt64 = 1 << 30,
        persistMetadataIndex: Bool = true
    ) {
        self.prefix = prefix
        self.uid = uid
        self.gid = gid
        self.filePermissions = filePermissions
        self.directoryPermissions = directoryPermissions
        self.readOnly = readOnly
        self.metadataTTL = metadataTTL
        self.negativeTTL = negativeTTL
        self.cacheDirectory = cacheDirectory
        self.readAheadBudget = readAheadBudget
        self.multipartPartSize = multipartPartSize
        self.multipartMaxInFlight = multipartMaxInFlight
        self.renameParallelism = renameParallelism
        self.stagingLimit = stagingLimit
        self.recoveryContext = recoveryContext
        self.blockCacheSize = blockCacheSize
        self.persistMetadataIndex = persistMetadataIndex
    }
}
