import Foundation
import Logging
import ObjectStore

extension MountAssembly {
    /// Probes once at mount whether the store enforces conditional writes (see `ConditionalWriteProbe`). A store
    /// that ignores them cannot detect conflicting writers, and the object lock strategy would grant one lock to
    /// several mounts: that strategy is refused unless `lock_mode=best_effort` says to go on; every other case
    /// goes on with one warning. Local stores enforce them by construction and are not probed.
    func checkConditionalWrites(locking: LockSetup, logger: Logger) throws(CLIError) {
        switch location.kind {
        case .s3, .gcs: break
        default: return
        }
        guard !configuration.mount.readOnly else { return }
        switch ConditionalWriteProbe.run(store, folder: location.prefix + ".bucketfs/") {
        case .honoured:
            return
        case .unknown(let reason):
            logger.warning(
                "could not check that the store enforces conditional writes", metadata: ["reason": "\(reason)"])
        case .ignored(let what):
            if locking.strategyName == "object" && configuration.storage.lock.mode != "best_effort" {
                throw CLIError(
                    "\(location) ignores conditional writes (\(what)): the object lock strategy cannot "
                        + "exclude other mounts there; use another lock strategy, or -o lock_mode=best_effort "
                        + "to mount anyway")
            }
            logger.warning(
                "the store ignores conditional writes: conflicts with other writers cannot be detected",
                metadata: ["store": "\(location)", "ignored": "\(what)"])
        }
    }
}

extension MountAssembly {
    /// Whether directory metadata must go into sidecars (`DirectoryMarkers`): probed once at mount on S3 stores,
    /// since S3-compatible servers differ (SeaweedFS drops a marker's metadata). GCS and the local stores keep it.
    /// A read-only mount cannot probe and reads markers only.
    func directoryMetadataInSidecar(logger: Logger) -> Bool {
        guard case .s3 = location.kind, !configuration.mount.readOnly else { return false }
        let probe = location.prefix + ".bucketfs/probe-\(UUID().uuidString.lowercased())/"
        do throws(ObjectStoreError) {
            let kept = try DirectoryMarkers.markersKeepMetadata(store, probeKey: probe)
            if !kept { logger.info("the store drops directory markers' metadata: keeping it in sidecars") }
            return !kept
        } catch {
            logger.warning(
                "could not check whether the store keeps directory markers' metadata",
                metadata: ["reason": "\(error)"])
            return false
        }
    }
}
