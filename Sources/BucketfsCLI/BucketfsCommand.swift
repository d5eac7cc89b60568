import ArgumentParser
import Foundation

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
        subcommands: [
            MountCommand.self, UnmountCommand.self, StatusCommand.self, LockCommand.self, ConfigCommand.self,
            RecoverCommand.self, SessionsCommand.self, CheckpointsCommand.self, RecordsCommand.self,
            HealthCommand.self, UploadsCommand.self, EventsCommand.self,
        ]
    )

    public init() {}

    /// As ArgumentParser's `main`, except that a usage error (a bad or out-of-range flag value, a missing
    /// argument) is one line naming the flag, without the help and usage lines after it: bad input gets one
    /// readable line and a non-zero exit (64), as everywhere else. `--help` and `--version` are unchanged.
    public static func main(_ arguments: [String]?) {
        let command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            FileHandle.standardError.write(Data(("Error: " + message(for: error) + "\n").utf8))
            exit(withError: ExitCode.validationFailure)
        }
        var runnable = command
        do {
            try runnable.run()
        } catch {
            exit(withError: error)
        }
    }
}
