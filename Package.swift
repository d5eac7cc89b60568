// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "bucketfs",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "bucketfs", targets: ["bucketfs"]),
        .library(name: "ObjectStore", targets: ["ObjectStore"]),
        .library(name: "Locking", targets: ["Locking"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .library(name: "Records", targets: ["Records"]),
        // For the fuzz targets (Fuzz/), which parse config files as the CLI does.
        .library(name: "BucketfsCLI", targets: ["BucketfsCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // Lock metrics through the swift-metrics API; the daemon renders them as Prometheus text.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        // System-library shims: module map + header, no logic.
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CLibc"),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // CRC-32C with SSE4.2 (the checksum of streamed parts): C, since Swift has no portable crc32 intrinsic.
        .target(name: "CCRC32C"),

        // Bottom layer: the ObjectStore contract and its backends. The only layer that does store I/O.
        .target(
            name: "ObjectStore",
            dependencies: [
                "CLibc", "CCurl", "COpenSSL", "CCRC32C", .product(name: "Logging", package: "swift-log"),
            ]),
        // A Redis connection (RESP over TCP or TLS), shared by the redis lock strategy and the Redis record backend.
        .target(name: "RedisClient", dependencies: ["CHiredis", "COpenSSL"]),
        // Distributed advisory locks: file, object and Redis strategies, leases, renewal.
        .target(
            name: "Locking",
            dependencies: [
                "ObjectStore", "RedisClient", .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]),
        // JSON record stores (sessions, checkpoints, upload states…) over any ObjectStore, Redis or PostgreSQL.
        .target(name: "Records", dependencies: ["ObjectStore", "RedisClient", "CPostgres"]),
        // Filesystem behaviour without the kernel: inodes, caches, write staging, errno choice.
        .target(
            name: "FileSystem",
            dependencies: ["ObjectStore", "Locking", "Records", .product(name: "Logging", package: "swift-log")]),
        // libfuse3 low-level adapter: ops table, replies, session lifecycle.
        .target(
            name: "FuseBridge", dependencies: ["FileSystem", "CFuse", .product(name: "Logging", package: "swift-log")]),
        // CLI commands, config, daemon wiring.
        .target(
            name: "BucketfsCLI",
            dependencies: [
                "ObjectStore", "Locking", "RedisClient", "Records", "FileSystem", "FuseBridge", "CLibc",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(name: "bucketfs", dependencies: ["BucketfsCLI"]),

        // Store decorators shared by the test targets (counting, failing, delaying, holding, quirky).
        .target(name: "TestSupport", dependencies: ["ObjectStore"], path: "Tests/TestSupport"),
        .testTarget(name: "ObjectStoreTests", dependencies: ["CLibc", "ObjectStore", "TestSupport"]),
        .testTarget(
            name: "FileSystemTests", dependencies: ["FileSystem", "ObjectStore", "Locking", "Records", "TestSupport"]),
        .testTarget(
            name: "CLITests",
            dependencies: [
                "BucketfsCLI", "FileSystem", "ObjectStore", "Records", "RedisClient",
                "Locking", "TestSupport",
            ]),
        .testTarget(name: "LockingTests", dependencies: ["Locking", "RedisClient", "ObjectStore", "TestSupport"]),
        .testTarget(name: "RecordsTests", dependencies: ["Records", "RedisClient", "ObjectStore", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
