import Foundation
import ObjectStore

/// What one LIST of the end of a directory told, kept for `negative_ttl` like a full listing.
///
/// A loop creating `f00000`, `f00001`… asks for names after every name the directory had, and `rm -rf` removes names
/// in listing order: one LIST of the keys after such a name (S3 `start-after`, delimiter `/`) answers for all the
/// names to come, where a lookup would otherwise cost a LIST each (a missing name) or a HEAD/GET each (a known file
/// whose attributes aged out). A complete page (no continuation) says that no name after `after` exists but those
/// listed; any page says that the files it lists are still at the versions it shows. Both are observations of the
/// store at the time of the LIST, trusted no longer than a full listing is (docs/SEMANTICS.md).
struct ListedTail {
    /// Names (in byte order of their keys) strictly after this one were listed.
    var after: String
    /// The names listed after `after`, and those this mount made since (byte for byte, as the store tells them).
    var names: Set<ExactPath>
    var until: ContinuousClock.Instant
    /// Whether the page was the last one: no name after `after` exists but `names`. Otherwise only the versions
    /// of the files listed are known.
    var complete: Bool
    /// The greatest name the page listed (`after` if none).
    var through: String

    /// Whether `name` lies after `after` (a directory `name/` sorts after `after` too when `name` does).
    func covers(_ name: String) -> Bool { after.utf8.lexicographicallyPrecedes(name.utf8) }

    /// Whether the page already answered for `name` (a new LIST from the same place would tell no more).
    func listed(_ name: String) -> Bool {
        covers(name) && (complete || !through.utf8.lexicographicallyPrecedes(name.utf8))
    }

    /// The greatest name known here: where the next tail listing starts.
    var last: String { names.reduce(after) { $0.utf8.lexicographicallyPrecedes($1.string.utf8) ? $1.string : $0 } }
}

/// Per-directory tail knowledge, and the run of unlinks in name order that shows an `rm -rf` at work. By directory
/// path byte for byte (`ExactPathMap`): keyed by `String`, a complete tail of `caf\u{e9}` answered ENOENT for names
/// of `cafe\u{301}`, another directory.
struct TailKnowledge {
    var tails: ExactPathMap<ListedTail> = [:]
    /// Directory → the name last unlinked there, how many unlinks in a row went up in name order, when the first of
    /// them was, and until when that counts as a removal in progress.
    var unlinks:
        ExactPathMap<(name: String, run: Int, since: ContinuousClock.Instant, until: ContinuousClock.Instant)> =
            [:]
    /// Directory → the greatest name of its (full) listing, and how many names that listing had then.
    var greatestListed: ExactPathMap<(count: Int, name: String)> = [:]

    mutating func noteExists(name: String, in parent: String) {
        tails[parent]?.names.insert(ExactPath(name))
    }

    func absent(name: String, in parent: String, now: ContinuousClock.Instant) -> Bool {
        guard let tail = tails[parent], now < tail.until, tail.complete, tail.covers(name) else { return false }
        return !tail.names.contains(ExactPath(name))
    }

    mutating func noteUnlinked(
        name: String, in parent: String, at now: ContinuousClock.Instant, until: ContinuousClock.Instant
    ) {
        let previous = unlinks[parent]
        let ascending = previous.map { $0.name.utf8.lexicographicallyPrecedes(name.utf8) } ?? false
        if let previous, ascending {
            unlinks[parent] = (name, previous.run + 1, previous.since, until)
        } else {
            unlinks[parent] = (name, 1, now, until)
        }
    }

    /// Everything known of `path` and below goes (the directory was removed or renamed).
    mutating func forget(_ path: String) {
        let exact = ExactPath(path)
        tails = tails.filter { !($0.key == exact || $0.key.isBelow(path + "/")) }
        unlinks = unlinks.filter { !($0.key == exact || $0.key.isBelow(path + "/")) }
        greatestListed = greatestListed.filter { !($0.key == exact || $0.key.isBelow(path + "/")) }
    }

    /// Unlinks in name order, this many in a row, make the next stale file of the directory revalidate its
    /// successors with one LIST.
    static let removalRun = 8
}

extension FileSystem {
    /// Keys asked for by a tail LIST for a missing name (the end of a directory being filled is usually empty), and
    /// the most and fewest asked for by one revalidating the files an `rm -rf` is about to reach.
    static let tailListingKeys = 64
    static let removalListingKeys = 256
    static let removalListingMinimumKeys = 16

    /// Keys for a LIST revalidating the files a removal run (`run` unlinks, the first at `since`) is about to reach:
    /// as many as it reaches, at its pace so far, while the LIST's answer stays fresh (`metadata_ttl`), and a quarter
    /// more; at least `removalListingMinimumKeys`, at most `removalListingKeys`. Names listed beyond that age out
    /// before `rm` gets to them, and are listed again: on a server whose LIST costs per key listed (moto at load ~9:
    /// 0.63 s for 256 keys, 38 ms for 16, against 14 ms a DELETE) they were most of what a LIST cost.
    func removalListingKeys(run: Int, since: ContinuousClock.Instant, now: ContinuousClock.Instant) -> Int {
        let elapsed = (now - since) / .seconds(1)
        guard elapsed > 0 else { return Self.removalListingKeys }
        let reached = Double(run) / elapsed * options.metadataTTL * 1.25
        guard reached.isFinite, reached < Double(Self.removalListingKeys) else { return Self.removalListingKeys }
        return max(Self.removalListingMinimumKeys, Int(reached.rounded(.up)))
    }

    /// Where a tail LIST for the missing `path` would start: after the greatest name its directory was known to hold
    /// (from a listing or an earlier tail, expired), when `path` sorts after it. nil: no such knowledge.
    func tailStart(forMissing path: String, in s: inout State) -> String? {
        let parent = KeyMapping.parent(of: path)
        let name = KeyMapping.name(of: path)
        let last: String
        if let tail = s.tailKnowledge.tails[parent] {
            last = tail.last
        } else if let listed = s.listed[parent] {
            // Kept while the listing has as many names: a lookup in a large directory does not go through them all.
            if let known = s.tailKnowledge.greatestListed[parent], known.count == listed.names.count {
                last = known.name
            } else {
                last = listed.names.reduce("") { $0.utf8.lexicographicallyPrecedes($1.string.utf8) ? $1.string : $0 }
                s.tailKnowledge.greatestListed[parent] = (listed.names.count, last)
            }
        } else {
            return nil
        }
        return last.utf8.lexicographicallyPrecedes(name.utf8) ? last : nil
    }

    /// Where a LIST revalidating the stale file `path` and its successors would start, and how many keys it asks for:
    /// `rm -rf` is removing the directory's names in order and has just passed the name returned. nil: no removal in
    /// progress.
    func removalStart(forStale path: String, in s: State) -> (after: String, keys: Int)? {
        let now = ContinuousClock.now
        guard let run = s.tailKnowledge.unlinks[KeyMapping.parent(of: path)], now < run.until,
            run.run >= TailKnowledge.removalRun, run.name.utf8.lexicographicallyPrecedes(KeyMapping.name(of: path).utf8)
        else { return nil }
        if let tail = s.tailKnowledge.tails[KeyMapping.parent(of: path)], now < tail.until,
            tail.listed(KeyMapping.name(of: path))
        {
            return nil  // listed already: the file changed since this mount knew it (asked the usual way)
        }
        return (run.name, removalListingKeys(run: run.run, since: run.since, now: now))
    }

    /// One LIST of directory `parent`'s keys after the name `after` (delimiter `/`, `maxKeys`): files listed at the
    /// version a node has are fresh again; a complete page becomes the directory's tail knowledge.
    func listTail(of parent: String, after: String, maxKeys: Int) throws(FSError) {
        let prefix = keys.directoryPrefix(for: parent)
        let page: ListPage
        do throws(ObjectStoreError) {
            page = try store.list(
                ListRequest(prefix: prefix, delimiter: "/", startAfter: prefix + after, maxKeys: maxKeys))
        } catch .invalidKey {
            return
        } catch {
            throw FSError(error)
        }
        var names = Set<ExactPath>()
        var versions: [ExactPath: String] = [:]
        for object in page.objects {
            guard let rest = KeyMapping.relative(object.key, below: prefix) else { continue }
            let name = String(rest)
            guard !name.isEmpty, name != DirectoryMarkers.sidecarName else { continue }
            names.insert(ExactPath(name))
            versions[ExactPath(name)] = object.version
        }
        for commonPrefix in page.commonPrefixes {
            guard let rest = KeyMapping.relative(commonPrefix, below: prefix) else { continue }
            let name = String(rest.dropLast())
            names.insert(ExactPath(name))
            versions.removeValue(forKey: ExactPath(name))  // a directory shadows the object: not a file any more
        }
        let now = ContinuousClock.now
        state.withLock { s in
            for (name, version) in versions {
                guard let node = s.table.node(at: KeyMapping.join(parent, name.string)), node.kind != .directory,
                    node.inStore, node.version == version, node.staged == nil, !node.dirty
                else { continue }
                s.table[node.ino]?.validatedAt = now
            }
            let through = names.reduce(after) { $0.utf8.lexicographicallyPrecedes($1.string.utf8) ? $1.string : $0 }
            s.tailKnowledge.tails[parent] = ListedTail(
                after: after, names: names, until: now + .seconds(options.negativeTTL),
                complete: page.nextContinuationToken == nil, through: through)
        }
    }
}
