import Foundation
import Locking
import Records

/// What the control directory (`ControlDirectory`, laid over the root by `MountTree`) shows of this mount's locks.
extension FileSystem {
    /// One JSON document per file this mount holds locks on or waits for, named `<escaped path>.json`.
    func lockDocuments() -> [String: Data] {
        let snapshot = locks.snapshot
        let paths = state.withLock { s in
            Dictionary(
                (snapshot.held.map(\.ino) + snapshot.waiting.map(\.ino)).map { ino in (ino, s.table[ino]?.path ?? "?")
                },
                uniquingKeysWith: { first, _ in first })
        }
        var documents: [UInt64: LockDocument] = [:]
        for held in snapshot.held {
            let path = paths[held.ino] ?? "?"
            var document = documents[held.ino] ?? LockDocument(path: path, resource: locks.resourceName(path))
            document.lease = held.lease.map(LockDocument.LeaseInfo.init)
            document.held = held.locks.map(LockDocument.Range.init)
            documents[held.ino] = document
        }
        for waiting in snapshot.waiting {
            let path = paths[waiting.ino] ?? "?"
            var document = documents[waiting.ino] ?? LockDocument(path: path, resource: locks.resourceName(path))
            document.waiting.append(LockDocument.Range(waiting.request))
            documents[waiting.ino] = document
        }
        var files: [String: Data] = [:]
        for document in documents.values {
            let name = RecordKey.segment(document.path.isEmpty ? "." : document.path) + ".json"
            files[name] = (try? RecordCoding.encode(document)) ?? Data()
        }
        return files
    }
}

/// `.bucketfs/locks/<file>.json`: a file's locks on this mount — held and waited for — and its lease.
struct LockDocument: Encodable {
    struct LeaseInfo: Encodable {
        var owner: String
        var host: String
        var pid: Int32
        var token: UInt64
        var acquiredAt: Date
        var expiresAt: Date

        init(_ lease: Lease) {
            owner = lease.owner.id
            host = lease.owner.host
            pid = lease.owner.pid
            token = lease.token
            acquiredAt = lease.acquired
            expiresAt = lease.expires
        }

        enum CodingKeys: String, CodingKey {
            case owner, host, pid, token
            case acquiredAt = "acquired_at"
            case expiresAt = "expires_at"
        }
    }

    struct Range: Encodable {
        var kind: String
        var mode: String
        var start: UInt64
        /// nil: to the end of any file.
        var end: UInt64?
        var pid: UInt32

        init(_ lock: FileLock) {
            kind = "\(lock.kind)"
            mode = "\(lock.mode)"
            start = lock.start
            end = lock.end == .max ? nil : lock.end
            pid = lock.pid
        }
    }

    var schemaVersion = RecordCoding.schemaVersion
    var path: String
    var resource: String
    var lease: LeaseInfo?
    var held: [Range] = []
    var waiting: [Range] = []

    init(path: String, resource: String) {
        self.path = path
        self.resource = resource
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case path, resource, lease, held, waiting
    }
}
