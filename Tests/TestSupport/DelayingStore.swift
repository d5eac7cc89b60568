import Foundation
import Glibc
import ObjectStore
import Synchronization

/// Forwards to another store, with delays and failures a test can switch on.
public final class DelayingStore: ForwardingObjectStore {
    public let base: any ObjectStore
    /// Seconds the next puts wait, one entry a put.
    public let putDelays = Mutex<[Double]>([])
    /// Seconds every multipart creation waits.
    public let createDelay = Mutex(0.0)
    /// Seconds every get waits (so that concurrent reads overlap).
    public let getDelay = Mutex(0.0)
    /// How many of the next gets fail with `.transport("flaky")`.
    public let failGets = Mutex(0)

    public init(_ base: any ObjectStore) { self.base = base }

    public var supportsConditionalWrites: Bool { true }

    private static func pause(_ seconds: Double) {
        if seconds > 0 { usleep(UInt32(seconds * 1e6)) }
    }

    public func get(_ key: String, range: Range<UInt64>?) throws(ObjectStoreError) -> ObjectData {
        let fail = failGets.withLock { n -> Bool in
            guard n > 0 else { return false }
            n -= 1
            return true
        }
        if fail { throw .transport("flaky") }
        Self.pause(getDelay.withLock { $0 })
        return try base.get(key, range: range)
    }

    /// Through `get`, so that its delays and failures apply.
    public func getStreaming(
        _ key: String, range: Range<UInt64>, version: String?,
        consumer: @escaping (UnsafeRawBufferPointer) -> Bool
    ) throws(ObjectStoreError) {
        try getStreamingByRanges(key, range: range, version: version, consumer: consumer)
    }

    /// Through `get`, so that its delays and failures apply.
    public func uploadPartCopy(
        _ key: String, uploadID: String, number: Int, source: String, range: Range<UInt64>,
        sourceVersion: String?
    ) throws(ObjectStoreError) -> CompletedPart {
        try uploadPartCopyByReading(
            key, uploadID: uploadID, number: number, source: source, range: range,
            sourceVersion: sourceVersion)
    }

    public func put(_ key: String, body: PutBody, options: PutOptions) throws(ObjectStoreError) -> ObjectInfo {
        Self.pause(putDelays.withLock { $0.isEmpty ? 0 : $0.removeFirst() })
        return try base.put(key, body: body, options: options)
    }

    public func createMultipartUpload(_ key: String, options: PutOptions) throws(ObjectStoreError) -> String {
        Self.pause(createDelay.withLock { $0 })
        return try base.createMultipartUpload(key, options: options)
    }
}
