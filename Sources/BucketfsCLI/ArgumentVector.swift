import Glibc
import ObjectStore

/// The process's own argv, as the kernel shows it in /proc/PID/cmdline to every local user.
public enum ArgumentVector {
    /// Overwrites, in place, every URL password in argv with '*' (same length: the strings stay where the kernel
    /// expects them). Call it once the arguments have been copied (`CommandLine.arguments` is, at first use).
    /// There is a window between exec and this call: secrets belong in a 0600 config file, not in argv.
    public static func scrubPasswords() {
        _ = CommandLine.arguments  // copied now, before the bytes change (the daemon launcher reads it later)
        for index in 1..<Int(CommandLine.argc) {
            guard let argument = CommandLine.unsafeArgv[index] else { continue }
            let length = strlen(argument)
            let bytes = UnsafeMutableBufferPointer(
                start: UnsafeMutableRawPointer(argument)
                    .assumingMemoryBound(to: UInt8.self), count: length)
            for range in URLRedaction.passwordRanges(in: bytes) {
                for position in range { bytes[position] = UInt8(ascii: "*") }
            }
        }
    }
}
