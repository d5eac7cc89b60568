import ArgumentParser

public struct BucketfsCommand: ParsableCommand {
    public static let version = "0.1.0"

    public static let configuration = CommandConfiguration(
        commandName: "bucketfs",
        abstract: "Mount a bucket prefix (S3, GCS) or a local directory as a filesystem.",
        discussion: """
        Examples:
          bucketfs mount file:///srv/bucket/ /mnt/bucket
          bucketfs mount memory:// /tmp/scratch --foreground
          bucketfs mount file:///srv/bucket/ /mnt/ro -o ro,uid=1000,gid=1000
          bucketfs mount file:///srv/bucket/ /mnt/bucket --config /etc/bucketfs/team.yaml
          bucketfs config print file:///srv/bucket/ -o metadata_ttl=5
          bucketfs unmount /mnt/bucket
          bucketfs status
          mount -t bucketfs file:///srv/bucket/ /mnt/bucket -o ro,uid=1000
        """,
        version: version,
        subcommands: [MountCommand.self, UnmountCommand.self, StatusCommand.self, LockCommand.self, ConfigCommand.self,
                      RecoverCommand.self, SessionsCommand.self, CheckpointsCommand.self, RecordsCommand.self,
                      HealthCommand.self, UploadsCommand.self, EventsCommand.self]
    )

    public init() {}
}
