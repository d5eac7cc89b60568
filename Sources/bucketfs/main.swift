import BucketfsCLI

// `bucketfs SOURCE MOUNTPOINT -o …` (how mount.fuse3 calls it) is `bucketfs mount SOURCE MOUNTPOINT -o …`.
BucketfsCommand.main(MountHelperInvocation.arguments(Array(CommandLine.arguments.dropFirst())))
