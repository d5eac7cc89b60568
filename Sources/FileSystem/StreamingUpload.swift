import Foundation
import ObjectStore
import Synchronization

/// Streams a sequentially written new (or truncated) file to the store as a multipart upload while it is
/// being written: each time the staged file holds another full part, that part is uploaded on a thread of the mount's
/// `UploadLane` straight from the staged file (`PutBody.fileRange`: the HTTP client reads it from the page cache as it
/// sends, so a part in flight holds no copy in memory), at most `maxInFlight` at once and only while it holds one of
/// the lane's slots (the writer waits beyond either).
/// The bytes of a part cannot change while it is sent: writes and truncates below `streamed` end the stream.
/// At close the rest goes up as the last part and the upload completes with the file's condition. A file that
/// never filled a part is left to a single PUT.
///
/// The staged file still holds every byte, so if anything goes wrong the caller aborts the stream and
/// uploads the staged file the ordinary way.
///
/// Parts go up unsigned (`UNSIGNED-PAYLOAD`) with their CRC-32C, which the server checks: computed here as the
/// bytes arrive from the kernel (hot in the cache: ~0.07 CPU s per GiB), for as long as the file is written
/// strictly in order; after any other write (a gap, a rewrite of what is not yet sent, a truncate) the CRC of each
/// part still to go is read back from the staged file on the worker before it is sent.
final class StreamingUpload: @unchecked Sendable {
    private let store: any ObjectStore
    let key: String
    private let partSize: Int
    private let maxInFlight: Int
    private let lane: UploadLane
    private let journal: (any UploadJournal)?
    /// Sent with CreateMultipartUpload; mtime is left out so that the store's Last-Modified (completion) is it.
    let metadata: ObjectMetadata

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var uploadID: String?
    /// This upload's entry in the journal, while it is in flight.
    private var journalID: String?
    /// Bytes handed to parts so far; the writer must continue exactly here for the stream to stay valid.
    private var streamed: UInt64 = 0
    private var etags: [Int: String] = [:]
    private var inFlight = 0
    /// Callers waiting for a slot of the lane, the condition let go meanwhile: `finish` and `abort` wait for them to
    /// give up or submit, as for parts in flight.
    private var awaitingSlot = 0
    private var failure: ObjectStoreError?
    /// CRCs of the parts uploaded, for the completion.
    private var crcs: [Int: UInt32] = [:]
    /// The running CRC-32C: `crcEnd` is where in-order writes have reached, `crcRunning` the CRC of the bytes from
    /// the start of its part to there, `crcDone` the CRCs of full parts not yet sent; nil once a write was out
    /// of order (the rest are read back).
    private var running: (crcEnd: UInt64, crcRunning: UInt32, crcDone: [Int: UInt32])? = (0, 0, [:])

    init(
        store: any ObjectStore, key: String, metadata: ObjectMetadata, partSize: Int, maxInFlight: Int,
        lane: UploadLane, journal: (any UploadJournal)? = nil
    ) {
        self.store = store
        self.journal = journal
        self.key = key
        self.metadata = metadata
        self.partSize = partSize
        self.maxInFlight = maxInFlight
        self.lane = lane
    }

    /// Writes into the staged file if that keeps the stream valid (nothing already streamed may change) and
    /// returns true; returns false, writing nothing, otherwise. Holding the lock across the write keeps a part
    /// from being read back while a write into it is still landing.
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, into staged: StagedFile) throws(FSError) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard failure == nil && offset >= streamed else { return false }
        try staged.write(buffer, at: offset)
        if let current = running {
            running = current.crcEnd == offset ? fold(buffer, into: current) : nil
        }
        return true
    }

    /// The running CRC with `buffer` appended at its end, a part's CRC set aside at each part boundary.
    private func fold(
        _ buffer: UnsafeRawBufferPointer, into current: (crcEnd: UInt64, crcRunning: UInt32, crcDone: [Int: UInt32])
    ) -> (crcEnd: UInt64, crcRunning: UInt32, crcDone: [Int: UInt32]) {
        var next = current
        var rest = buffer
        while !rest.isEmpty {
            let partEnd = (next.crcEnd / UInt64(partSize) + 1) * UInt64(partSize)
            let count = Int(min(UInt64(rest.count), partEnd - next.crcEnd))
            next.crcRunning = CRC32C.update(next.crcRunning, UnsafeRawBufferPointer(rebasing: rest[..<count]))
            next.crcEnd += UInt64(count)
            if next.crcEnd == partEnd {
                next.crcDone[Int(partEnd / UInt64(partSize))] = next.crcRunning
                next.crcRunning = 0
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[count...])
        }
        return next
    }

    /// Whether any part has been sent. Until then a flush (dd and shells close a duplicate descriptor before
    /// writing) uploads the file with a PUT and the stream stays usable for the writes that follow.
    var hasStarted: Bool { started.load(ordering: .acquiring) }

    /// Set once CreateMultipartUpload succeeded. Atomic rather than under `condition`, because callers ask while
    /// holding the filesystem's state lock and `condition` may be held across a CreateMultipartUpload.
    private let started = Atomic<Bool>(false)

    /// Whether truncating to `size` leaves the bytes already streamed alone (dd truncates its output at open).
    /// The caller truncates next: unless that changes nothing the running CRC stops (the rest is read back).
    func allowsTruncate(to size: UInt64) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if running?.crcEnd != size { running = nil }
        return failure == nil && size >= streamed
    }

    /// Uploads every full part below `end` (the staged file's contiguous size). Blocks while too many parts
    /// are in flight.
    func advance(staged: StagedFile, contiguousEnd end: UInt64) {
        condition.lock()
        defer { condition.unlock() }
        while failure == nil && end - min(end, streamed) >= UInt64(partSize) {
            while inFlight >= maxInFlight && failure == nil { condition.wait() }
            guard failure == nil else { return }
            if uploadID == nil {
                do throws(ObjectStoreError) {
                    let id = try store.createMultipartUpload(
                        key, options: PutOptions(metadata: metadata, partChecksums: true))
                    uploadID = id
                    journalID = journal?.begun(key: key, uploadID: id, stagedPath: staged.path)
                    started.store(true, ordering: .releasing)
                } catch {
                    failure = error
                    return
                }
            }
            guard takeSlot(while: { end - min(end, streamed) >= UInt64(partSize) && inFlight < maxInFlight }) else {
                continue
            }
            let offset = streamed
            streamed += UInt64(partSize)
            let number = Int(offset / UInt64(partSize)) + 1
            let crc = running?.crcDone.removeValue(forKey: number)
            submit(
                part: .fileRange(path: staged.path, offset: offset, length: UInt64(partSize)), number: number,
                crc32c: crc)
        }
    }

    /// Uploads the remaining bytes up to `size` as the last part and completes. Returns nil when no part was
    /// ever started (the caller does a single PUT); throws when the stream failed (the caller aborts and falls back).
    func finish(staged: StagedFile, size: UInt64, condition putCondition: PutCondition) throws(ObjectStoreError)
        -> ObjectInfo?
    {
        condition.lock()
        defer { condition.unlock() }
        guard let uploadID else { return nil }
        if failure == nil && size > streamed && takeSlot(while: { size > streamed }) {
            let number = Int(streamed / UInt64(partSize)) + 1
            let part = PutBody.fileRange(path: staged.path, offset: streamed, length: size - streamed)
            // The running CRC is this part's if in-order writes reached exactly `size` from its start.
            let crc = running.flatMap { $0.crcEnd == size && size - streamed < UInt64(partSize) ? $0.crcRunning : nil }
            streamed = size
            submit(part: part, number: number, crc32c: crc)
        }
        while inFlight > 0 || awaitingSlot > 0 { condition.wait() }
        if let failure { throw failure }
        guard streamed == size else { throw .other("stream of \(key) does not match the file size") }
        let parts = etags.keys.sorted().map { CompletedPart(number: $0, etag: etags[$0]!, crc32c: crcs[$0]) }
        let info = try store.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: putCondition)
        if let journalID { journal?.ended(journalID) }
        journalID = nil
        return info
    }

    /// Gives up the stream (waiting for parts in flight) and aborts the multipart upload, if any.
    func abort() {
        condition.lock()
        if failure == nil { failure = .other("stream abandoned") }
        while inFlight > 0 || awaitingSlot > 0 { condition.wait() }
        let id = uploadID
        let entry = journalID
        uploadID = nil
        journalID = nil
        condition.unlock()
        if let id { try? store.abortMultipartUpload(key, uploadID: id) }
        if let entry { journal?.ended(entry) }
    }

    /// Takes a slot of the lane for the next part: called with the lock held, which it lets go while it waits (parts
    /// finishing need it). True with the slot taken if the stream has not failed and `stillDue` holds once the lock is
    /// back (another writer of the file, or the close, may have moved it on meanwhile); false with no slot otherwise.
    private func takeSlot(while stillDue: () -> Bool) -> Bool {
        awaitingSlot += 1
        condition.unlock()
        lane.acquire()
        condition.lock()
        awaitingSlot -= 1
        condition.broadcast()
        guard failure == nil && stillDue() else {
            lane.release()
            return false
        }
        return true
    }

    /// Called with the lock held and a slot of the lane taken, which the part gives back when the store has answered.
    /// `crc32c` nil: read back from the staged file (its bytes there cannot change).
    private func submit(part: PutBody, number: Int, crc32c: UInt32?) {
        inFlight += 1
        let (store, key, id, lane) = (store, key, uploadID!, lane)
        lane.submit { [self] in
            let result: Result<(String, UInt32), ObjectStoreError>
            do throws(ObjectStoreError) {
                var crc = crc32c ?? 0
                if crc32c == nil { crc = try CRC32C.checksum(of: part) }
                result = .success(
                    (try store.uploadPart(key, uploadID: id, number: number, body: part, crc32c: crc), crc))
            } catch {
                result = .failure(error)
            }
            lane.release()
            condition.lock()
            switch result {
            case .success(let (etag, crc)):
                etags[number] = etag
                crcs[number] = crc
            case .failure(let error): if failure == nil { failure = error }
            }
            inFlight -= 1
            condition.broadcast()
            condition.unlock()
        }
    }
}
