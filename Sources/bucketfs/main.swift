import BucketfsCLI

// A daemon spawned by `bucketfs mount` gets its real arguments through a pipe (its argv shows no secret).
// Then URL passwords in our own argv are overwritten, so `ps` stops showing them (`mount --foreground` run by hand
// or by systemd; the short-lived launcher).
// `bucketfs SOURCE MOUNTPOINT -o …` (how mount.fuse3 calls it) is `bucketfs mount SOURCE MOUNTPOINT -o …`.
let arguments = DaemonLauncher.handedArguments() ?? Array(CommandLine.arguments.dropFirst())
ArgumentVector.scrubPasswords()
BucketfsCommand.main(MountHelperInvocation.arguments(arguments))
