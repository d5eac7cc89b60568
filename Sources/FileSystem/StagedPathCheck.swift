import Foundation
import Glibc

/// A staged path read from a record, accepted only as a regular file directly inside the staging folder, opened
/// without following links (so a forged record cannot make the daemon copy or delete anything else).
struct StagedPathCheck {
    private let folder: Int32
    private let name: String
    /// The open file, or nil when it is already gone.
    let fd: Int32?

    init?(_ recorded: String, stagingDirectory: String) {
        let url = URL(fileURLWithPath: recorded)
        let name = url.lastPathComponent
        let folderPath = URL(fileURLWithPath: stagingDirectory).path
        guard recorded.hasPrefix("/"), url.deletingLastPathComponent().path == folderPath,
            url.standardized.path == recorded, StagingJournal.isStagedFileName(name)
        else { return nil }
        let folder = open(stagingDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard folder >= 0 else { return nil }
        let fd = openat(folder, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            guard errno == ENOENT else {
                Glibc.close(folder)
                return nil
            }
            self.fd = nil
        } else {
            var status = stat()
            guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
                Glibc.close(fd)
                Glibc.close(folder)
                return nil
            }
            self.fd = fd
        }
        self.folder = folder
        self.name = name
    }

    func remove() {
        unlinkat(folder, name, 0)
    }

    func close() {
        if let fd { Glibc.close(fd) }
        Glibc.close(folder)
    }
}
