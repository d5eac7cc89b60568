import ArgumentParser

/// mount.fuse3 runs a `fuse.TYPE` filesystem as `TYPE SOURCE MOUNTPOINT -o OPTIONS` (the fstab form
/// `s3://b/p/ /mnt/p fuse.bucketfs _netdev,… 0 0`), with no subcommand: such a command line means `mount`.
public enum MountHelperInvocation {
    /// The arguments (without the program name) with `mount` put in front when they start with two operands
    /// and the first names no subcommand; anything else is left as it is.
    public static func arguments(_ arguments: [String]) -> [String] {
        guard arguments.count >= 2, !arguments[0].hasPrefix("-"), !arguments[1].hasPrefix("-"),
            !subcommandNames.contains(arguments[0])
        else { return arguments }
        return ["mount"] + arguments
    }

    static var subcommandNames: Set<String> {
        Set(BucketfsCommand.configuration.subcommands.map { $0._commandName } + ["help"])
    }
}
