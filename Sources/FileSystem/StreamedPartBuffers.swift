import Foundation

/// The bytes of a streamed upload's next parts as they were written, so that a part goes up from memory rather
/// than being read back from the staged file (one copy and one 8 MiB allocation less per part, and no read on
/// the writer's thread). Only exactly sequential writes are kept: a write that leaves a gap or lands on bytes
/// already kept drops what it touches, and those parts are read back from the staged file, which always holds
/// every byte. Not thread-safe: `StreamingUpload` holds its lock around every call.
struct StreamedPartBuffers {
    let partSize: Int
    /// Full parts not yet handed to an upload, by part number (1-based).
    private var ready: [Int: Data] = [:]
    /// The part being filled: its number and the bytes from its start.
    private var filling: (number: Int, data: Data)?
    /// The buffer of an uploaded part, kept for the next part (its pages stay mapped: no zeroing, no faults).
    private var spare: [Data] = []
    /// At most this many full parts wait here; past that, parts are read back.
    private let maxReady: Int

    init(partSize: Int, maxReady: Int) {
        self.partSize = partSize
        self.maxReady = max(1, maxReady)
    }

    /// Takes in a write at `offset` (already in the staged file). `streamed`: bytes already handed to parts.
    mutating func absorb(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, streamed: UInt64) {
        let end = offset + UInt64(buffer.count)
        let size = UInt64(partSize)
        // Kept bytes this write replaces are stale: drop them (their parts are read back).
        for number in ready.keys where overlaps(number, offset, end) { ready[number] = nil }
        if let part = filling, start(of: part.number) + UInt64(part.data.count) != offset,
            overlaps(part.number, offset, end)
        {
            filling = nil
        }
        var position = offset
        var rest = buffer[...]
        while !rest.isEmpty {
            let number = Int(position / size) + 1
            let partStart = start(of: number)
            let count = min(rest.count, Int(partStart + size - position))
            keep(UnsafeRawBufferPointer(rebasing: rest.prefix(count)), at: position, in: number, streamed: streamed)
            rest = rest.dropFirst(count)
            position += UInt64(count)
        }
    }

    /// One write's bytes that fall in part `number`.
    private mutating func keep(_ bytes: UnsafeRawBufferPointer, at position: UInt64, in number: Int, streamed: UInt64) {
        let partStart = start(of: number)
        if filling?.number != number {
            filling = nil
            // A part is kept only from its first byte on, and only while the uploads keep up.
            guard position == partStart, partStart >= streamed, ready.count < maxReady, ready[number] == nil
            else { return }
            filling = (number, freshBuffer(first: number == 1))
        }
        guard var part = filling, partStart + UInt64(part.data.count) == position else {
            filling = nil
            return
        }
        filling = nil  // unique while appending: no copy
        part.data.append(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        if part.data.count == partSize {
            ready[number] = part.data
        } else {
            filling = part
        }
    }

    /// The full part `number`, if kept; it is no longer kept after this.
    mutating func take(_ number: Int) -> Data? {
        guard let part = ready.removeValue(forKey: number) else { return nil }
        FileSystemMetrics.shared.streamedPartsFromMemory.add(1, ordering: .relaxed)
        return part
    }

    /// The last part: `number` holding exactly `count` bytes, if kept.
    mutating func takeLast(_ number: Int, count: Int) -> Data? {
        if count == partSize { return take(number) }
        guard let part = filling, part.number == number, part.data.count == count else { return nil }
        filling = nil
        FileSystemMetrics.shared.streamedPartsFromMemory.add(1, ordering: .relaxed)
        return part.data
    }

    /// A part's buffer after its upload: kept for a later part.
    mutating func recycle(_ data: Data) {
        guard data.count == partSize, spare.isEmpty else { return }
        var data = data
        data.removeAll(keepingCapacity: true)
        spare.append(data)
    }

    /// Everything kept is dropped (a truncate, the stream given up).
    mutating func clear() {
        ready = [:]
        filling = nil
        spare = []
    }

    private func start(of number: Int) -> UInt64 { UInt64(number - 1) * UInt64(partSize) }

    private func overlaps(_ number: Int, _ offset: UInt64, _ end: UInt64) -> Bool {
        offset < start(of: number) + UInt64(partSize) && end > start(of: number)
    }

    /// The first part grows as written (most files never fill one); later ones get a whole part's room at once.
    private mutating func freshBuffer(first: Bool) -> Data {
        if let reused = spare.popLast() { return reused }
        return first ? Data() : Data(capacity: partSize)
    }
}
