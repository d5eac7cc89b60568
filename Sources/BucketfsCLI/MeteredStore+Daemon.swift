import ObjectStore

extension DaemonMetrics: StoreMeterObserver {}

extension MeteredStore {
    /// The daemon's meter: its requests also feed the `bucketfs_store_*` metrics (see `DaemonMetrics`).
    convenience init(_ base: any ObjectStore) { self.init(base, observer: DaemonMetrics.shared) }
}
