import Foundation
import Logging
import ObjectStore
import TestSupport
import XCTest

@testable import FileSystem
@testable import FuseBridge

/// A closure kept behind a `Mutex` must come out as it went in. Kept as a bare `Mutex<Closure?>`, every
/// `withLock { $0 }` wrapped it in two more reabstraction thunks and stored that back: after a few million FUSE
/// operations the daemon's observer call overflowed the stack. The depth of the call stack inside the closure shows it.
final class CallbacksBehindMutexTests: XCTestCase {
    func testTheFuseObserverIsCalledAtTheSameDepthAfterManyReads() {
        let depths = Locked<[Int]>([])
        FuseOperationMetrics.install { _, _, _ in depths.update { $0.append(Thread.callStackSymbols.count) } }
        defer { FuseOperationMetrics.install(nil) }
        FuseOperationMetrics.observer?("lookup", 0, 0)
        for _ in 0..<1_000 { _ = FuseOperationMetrics.observer }
        FuseOperationMetrics.observer?("lookup", 0, 0)
        XCTAssertEqual(depths.value.count, 2)
        XCTAssertEqual(depths.value.first, depths.value.last)
    }

    func testTheKernelCacheInvalidatorIsCalledAtTheSameDepthAfterManyReads() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("callbacks-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let fileSystem = try FileSystem(
            store: MemoryObjectStore(), options: FileSystemOptions(cacheDirectory: directory.path),
            logger: Logger(label: "test"))
        let depths = Locked<[Int]>([])
        fileSystem.kernelCacheInvalidator.withLock { callback in
            callback.invalidate = { _ in depths.update { $0.append(Thread.callStackSymbols.count) } }
        }
        fileSystem.kernelCacheInvalidator.withLock { $0.invalidate }?(1)
        for _ in 0..<1_000 { _ = fileSystem.kernelCacheInvalidator.withLock { $0.invalidate } }
        fileSystem.kernelCacheInvalidator.withLock { $0.invalidate }?(1)
        XCTAssertEqual(depths.value.count, 2)
        XCTAssertEqual(depths.value.first, depths.value.last)
    }
}
