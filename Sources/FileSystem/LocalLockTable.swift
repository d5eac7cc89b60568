/// `flock(2)` locks and POSIX (`fcntl`, `lockf`, OFD) locks are separate families, as in Linux: one never
/// conflicts with the other.
public enum LockKind: Sendable, Equatable {
    case flock
    case posix
}

public enum LockMode: Sendable, Equatable {
    case shared
    case exclusive
}

/// One lock held within this mount on one file.
public struct FileLock: Sendable, Equatable {
    /// The kernel's lock owner: the open file description for `flock` and OFD locks, the process's file table
    /// for classic POSIX locks.
    public var owner: UInt64
    public var kind: LockKind
    public var mode: LockMode
    /// Byte range, both ends included; `end == .max` reaches past any end of file. `flock` locks cover 0...max.
    public var start: UInt64
    public var end: UInt64
    /// The process that asked, reported by `F_GETLK`.
    public var pid: UInt32
    /// The open file handle the lock came through: OFD locks go when it is released.
    public var handle: UInt64

    public init(
        owner: UInt64, kind: LockKind, mode: LockMode, start: UInt64 = 0, end: UInt64 = .max,
        pid: UInt32 = 0, handle: UInt64 = 0
    ) {
        self.owner = owner
        self.kind = kind
        self.mode = mode
        self.start = start
        self.end = end
        self.pid = pid
        self.handle = handle
    }

    func overlaps(_ start: UInt64, _ end: UInt64) -> Bool {
        self.start <= end && start <= self.end
    }

    /// Whether `other`, of another owner, cannot be held at the same time as this lock.
    func conflicts(with other: FileLock) -> Bool {
        guard kind == other.kind, owner != other.owner else { return false }
        guard mode == .exclusive || other.mode == .exclusive else { return false }
        return kind == .flock || overlaps(other.start, other.end)
    }
}

/// The locks held within this mount on one file, with the POSIX rules: a request conflicts with overlapping
/// locks of other owners when either is exclusive; an owner's new lock replaces its own locks on that range
/// (splitting them), and adjacent or overlapping ranges of one owner and mode merge, as the kernel does.
struct LocalLockTable: Sendable, Equatable {
    private(set) var locks: [FileLock] = []

    var isEmpty: Bool { locks.isEmpty }

    /// The first lock that stops `request` being granted, for `F_GETLK` and for the grant itself.
    func conflict(with request: FileLock) -> FileLock? {
        locks.first { $0.conflicts(with: request) }
    }

    /// Grants `request`; the caller checked `conflict(with:)` first.
    mutating func apply(_ request: FileLock) {
        switch request.kind {
        case .flock:
            // One flock per open file description: a second call converts it.
            locks.removeAll { $0.kind == .flock && $0.owner == request.owner }
            locks.append(
                FileLock(
                    owner: request.owner, kind: .flock, mode: request.mode, pid: request.pid,
                    handle: request.handle))
        case .posix:
            remove(owner: request.owner, kind: .posix, start: request.start, end: request.end)
            var merged = request
            // Absorb this owner's locks of the same mode that touch the new range.
            locks.removeAll { lock in
                guard lock.kind == .posix, lock.owner == request.owner, lock.mode == request.mode else { return false }
                let touches = lock.overlaps(
                    merged.start == 0 ? 0 : merged.start - 1,
                    merged.end == .max ? .max : merged.end + 1)
                if touches {
                    merged.start = min(merged.start, lock.start)
                    merged.end = max(merged.end, lock.end)
                }
                return touches
            }
            locks.append(merged)
        }
    }

    /// Drops `owner`'s locks of `kind` on `start...end`, splitting a lock that reaches beyond it. Returns whether
    /// anything changed.
    @discardableResult
    mutating func remove(owner: UInt64, kind: LockKind, start: UInt64 = 0, end: UInt64 = .max) -> Bool {
        var kept: [FileLock] = []
        var changed = false
        for lock in locks {
            guard lock.kind == kind, lock.owner == owner, lock.overlaps(start, end) else {
                kept.append(lock)
                continue
            }
            changed = true
            if lock.start < start {
                var left = lock
                left.end = start - 1
                kept.append(left)
            }
            if lock.end > end {
                var right = lock
                right.start = end + 1
                kept.append(right)
            }
        }
        locks = kept
        return changed
    }

    /// Drops every lock that came through `handle` (OFD locks when their open file description goes).
    @discardableResult
    mutating func remove(handle: UInt64) -> Bool {
        let before = locks.count
        locks.removeAll { $0.handle == handle }
        return locks.count != before
    }
}
