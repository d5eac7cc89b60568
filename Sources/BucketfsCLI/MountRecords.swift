import FileSystem
import Foundation
import Locking
import ObjectStore
import Prometheus
import Records
import Yams

/// What the mount keeps in records and shows in its control directory.
extension MountCommand {
    /// The records backend: `records_url` if set, else the mounted store under `<prefix><records_prefix>`.
    static func recordStores(configuration: Configuration, location: StoreLocation,
                             store: any ObjectStore) throws(CLIError) -> RecordStores {
        let m = configuration.mount
        guard let url = m.recordsURL else {
            return RecordStores(store: store, mountPrefix: location.prefix, recordsPrefix: m.recordsPrefix)
        }
        do {
            let backend = try RecordStores.backend(url: url, recordsPrefix: m.recordsPrefix) { other in
                try openStore(other, configuration: configuration)
            }
            // A bad URL, wrong password or missing database ends here, before anything is mounted (PostgreSQL:
            // the first connection also creates or migrates the schema).
            try backend.ping()
            return RecordStores(backend: backend)
        } catch {
            throw CLIError("records_url \(Configuration.redactedURL(url)): \(error)")
        }
    }

    /// nil when `control_dir` is empty (no control directory).
    static func controlSettings(configuration: Configuration, source: String, records: RecordStores, separateRecords: Bool,
                                registry: PrometheusCollectorRegistry, meter: MeteredStore,
                                locking: LockSetup) -> ControlDirectory.Settings? {
        let name = configuration.mount.controlDir
        guard !name.isEmpty else { return nil }
        let config = configJSON(configuration, source: source)
        return ControlDirectory.Settings(
            name: name, records: separateRecords ? records.backend : nil,
            metrics: {
                var text: [UInt8] = []
                DaemonMetrics.shared.refresh()
                registry.emit(into: &text)
                let c = meter.snapshot
                return String(decoding: text, as: UTF8.self) + """
                    # TYPE bucketfs_store_requests_total counter
                    bucketfs_store_requests_total \(c.requests)
                    # TYPE bucketfs_store_errors_total counter
                    bucketfs_store_errors_total \(c.errors)
                    # TYPE bucketfs_store_request_seconds_total counter
                    bucketfs_store_request_seconds_total \(c.seconds)

                    """
            },
            health: { healthJSON(meter: meter, records: records, locking: locking) },
            config: { config }, fileMode: configuration.mount.controlDirMode)
    }

    /// `health.json`: one LIST to the store, the records backend and the lock strategy each.
    static func healthJSON(meter: MeteredStore, records: RecordStores, locking: LockSetup) -> Data {
        func check(_ body: () throws -> Void) -> JSONValue {
            do {
                try body()
                return ["reachable": true]
            } catch {
                return ["reachable": false, "error": .string("\(error)")]
            }
        }
        let counters = meter.snapshot
        var lock = check { _ = try locking.strategy?.holders() }
        if case .object(var fields) = lock { fields["strategy"] = .string(locking.strategyName); lock = .object(fields) }
        var document: [String: JSONValue] = [
            "schema_version": .integer(Int64(RecordCoding.schemaVersion)),
            "checked_at": .string(RecordCoding.format(Date())),
            "backend": check { _ = try meter.base.list(ListRequest(prefix: "", delimiter: "/", maxKeys: 1)) },
            "records": check { try records.backend.ping() },
            "lock_strategy": lock,
            "requests": .integer(Int64(counters.requests)),
            "errors": .integer(Int64(counters.errors)),
            "last_error": counters.lastError.map { .string($0) } ?? .null,
            "last_error_at": counters.lastErrorAt.map { .string(RecordCoding.format($0)) } ?? .null,
        ]
        let healthy = ["backend", "records", "lock_strategy"].allSatisfy {
            if case .object(let fields) = document[$0] { return fields["reachable"] == .bool(true) }
            return false
        }
        document["status"] = .string(healthy ? "healthy" : "unhealthy")
        return (try? RecordCoding.encode(JSONValue.object(document))) ?? Data("{}\n".utf8)
    }

    /// `config.json`: `config print`'s redacted YAML, as JSON.
    static func configJSON(_ configuration: Configuration, source: String) -> Data {
        let yaml = configuration.redactedYAML(source: source)
        guard let loaded = try? Yams.load(yaml: yaml), let value = jsonValue(loaded),
              let data = try? RecordCoding.encode(value) else { return Data("{}\n".utf8) }
        return data
    }

    private static func jsonValue(_ any: Any?) -> JSONValue? {
        switch any {
        case nil, is NSNull: return .null
        case let value as Bool: return .bool(value)
        case let value as Int: return .integer(Int64(value))
        case let value as Double: return .number(value)
        case let value as String: return .string(value)
        case let value as [Any]: return .array(value.map { jsonValue($0) ?? .null })
        case let value as [String: Any]: return .object(value.mapValues { jsonValue($0) ?? .null })
        default: return .string("\(any!)")
        }
    }
}
