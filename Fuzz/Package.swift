// swift-tools-version:6.0
// libFuzzer targets for the parsers that read what a server (or a config file) sends. Built and run by
// scripts/fuzz.sh with `-sanitize=fuzzer` (the toolchain ships clang's libFuzzer runtime); not part of the
// ordinary build.
import PackageDescription

let targets = ["FuzzS3XML", "FuzzGCSJSON", "FuzzRESP", "FuzzYAMLConfig", "FuzzSourceURL"]

let package = Package(
    name: "bucketfs-fuzz",
    dependencies: [.package(name: "bucketfs", path: "..")],
    targets: targets.map { name in
        .executableTarget(
            name: name,
            dependencies: [
                .product(name: "ObjectStore", package: "bucketfs"),
                .product(name: "Locking", package: "bucketfs"),
                .product(name: "RedisClient", package: "bucketfs"),
                .product(name: "BucketfsCLI", package: "bucketfs"),
            ])
    },
    swiftLanguageModes: [.v6]
)
