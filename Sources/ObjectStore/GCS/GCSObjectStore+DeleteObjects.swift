import Foundation

extension GCSObjectStore {
    /// The JSON API's batch endpoint is not served by fake-gcs-server: deletes go in parallel instead, on up to 8
    /// threads of their own (never Swift's cooperative pool), each a plain DELETE.
    public func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>] {
        guard keys.count > 1 else {
            return keys.map { key in Result { () throws(ObjectStoreError) in try delete(key, condition: .none) } }
        }
        let results = BatchResults(count: keys.count)
        let threads = min(8, keys.count)
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<threads {
            let thread = Thread { [self] in
                while let index = results.take() {
                    results.store(
                        Result { () throws(ObjectStoreError) in try delete(keys[index], condition: .none) },
                        at: index)
                }
                done.signal()
            }
            thread.name = "bucketfs-gcs-delete"
            thread.start()
        }
        for _ in 0..<threads { done.wait() }
        return results.all
    }
}

/// Indices handed out to the delete threads and their results.
private final class BatchResults: @unchecked Sendable {
    private let lock = NSLock()
    private var next = 0
    private var results: [Result<Void, ObjectStoreError>]

    init(count: Int) { results = Array(repeating: .success(()), count: count) }

    func take() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard next < results.count else { return nil }
        next += 1
        return next - 1
    }

    func store(_ result: Result<Void, ObjectStoreError>, at index: Int) {
        lock.lock()
        results[index] = result
        lock.unlock()
    }

    var all: [Result<Void, ObjectStoreError>] {
        lock.lock()
        defer { lock.unlock() }
        return results
    }
}
