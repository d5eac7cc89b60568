import Foundation
import Synchronization

/// Where a file's content stands between this mount and the store: the one state machine that every operation
/// touching a file's content or its object goes through (docs/DEVELOPMENT.md, "File lifecycle").
///
///     clean ──write, truncate, create──▶ pending ──upload begins──▶ uploading ──stored──▶ clean
///       ▲                                   ▲  ▲                     │  │
///       │                                   │  └──store unreachable──┘  └─written meanwhile─▶ uploading(rewritten)
///       │                                   │                                   │ stored
///       │                                   └───────────────────────────────────┘
///       └── inRecovery ◀──another writer won, or the last close failed (content kept in the recovery folder)
///     any ──unlink, replaced by a rename──▶ detached (serves its open descriptors; never uploaded again)
///
/// Which condition an upload carries is not part of the state: it is the node's `base` (absent, or the last
/// version this mount read or wrote), which every upload, copy and rename moves forward.
enum ContentState: Hashable {
    /// Nothing to upload: the local copy, if any, is the stored version.
    case clean
    /// Local changes (or a new file) not in the store yet.
    case pending
    /// An upload is running; `rewritten`: the content changed after it read it, so another must follow.
    case uploading(rewritten: Bool)
    /// The last upload lost to another writer (or failed with no descriptor left to retry it); the content is in
    /// the recovery folder. A new write starts over from the stored version.
    case inRecovery
    /// Out of the namespace (unlinked, or replaced by a rename) while open: its bytes serve open descriptors only.
    case detached

    /// Whether the store lacks what the descriptors see (for `bucketfs status`, and lock hand-over).
    var hasUnstoredChanges: Bool {
        switch self {
        case .pending, .uploading: return true
        case .clean, .inRecovery, .detached: return false
        }
    }

    /// A write or truncate changed the local content. Returns whether the store just fell behind (the file was
    /// clean or in recovery): the moment its staged copy must become crash-safe (`StagingJournal`).
    @discardableResult
    mutating func contentChanged() -> Bool {
        let before = self
        switch self {
        case .clean, .pending, .inRecovery: self = .pending
        case .uploading: self = .uploading(rewritten: true)
        case .detached: break
        }
        return !before.hasUnstoredChanges && hasUnstoredChanges
    }

    /// An upload may begin: returns false (and stays put) when there is nothing to upload.
    mutating func beginUpload() -> Bool {
        guard self == .pending else { return false }
        self = .uploading(rewritten: false)
        return true
    }

    /// The upload that began stored the content it read.
    mutating func uploadStored() {
        switch self {
        case .uploading(let rewritten): self = rewritten ? .pending : .clean
        default: break  // detached meanwhile: stays so
        }
    }

    /// The upload that began failed; a conflict is final, anything else is tried again by the next flush.
    mutating func uploadFailed(conflict: Bool) {
        guard case .uploading = self else { return }
        self = conflict ? .inRecovery : .pending
    }

    /// Leaves the namespace: nothing more is ever uploaded from this node.
    mutating func detach() { self = .detached }

    /// The upload failed but nobody is left to retry it (the last descriptor closed): the recovery folder has it.
    mutating func abandon() {
        if self == .pending { self = .inRecovery }
    }
}

/// Serialises everything that changes one file's object in the store — uploads, metadata copies, the copy and
/// delete of a rename, the delete of an unlink — so that none of them runs on a stale idea of the others
/// (an unlink cannot race an upload into re-creating the file; a rename cannot copy a half-made version).
///
/// Lock order: `FileSerial`s (several only in ascending inode order, see `FileSystem.serialised`) before the
/// staged file's content lock, before `FileSystem.state`. Never taken with `state` held.
final class FileSerial: Sendable {
    /// A `Mutex` in the object itself: every node has one, and an `NSLock` costs three more heap blocks on Linux
    /// (its mutex and a condition for timed waits), ~200 bytes a node in a listing of 100,000.
    private let mutex = Mutex(())

    func run<T>(_ body: () throws(FSError) -> T) throws(FSError) -> T {
        try mutex.withLock { _ throws(FSError) -> T in try body() }
    }
}
