import FileSystem
import Foundation
import Locking
import ObjectStore
import Prometheus
import Records
import Yams

/// What the mount shows in its control directory.
extension MountAssembly {
    /// nil when `control_dir` is empty (no control directory).
    func controlSettings(
        records: RecordStores, registry: PrometheusCollectorRegistry, meter: MeteredStore,
        health: MountHealth
    ) -> ControlDirectory.Settings? {
        let name = configuration.mount.controlDir
        guard !name.isEmpty else { return nil }
        let config = Self.configJSON(configuration, source: location.description)
        return ControlDirectory.Settings(
            name: name, records: configuration.mount.recordsURL != nil ? records.backend : nil,
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
            health: health.document,
            config: { config }, fileMode: configuration.mount.controlDirMode)
    }

    /// `config.json`: `config print`'s redacted YAML, as JSON.
    static func configJSON(_ configuration: Configuration, source: String) -> Data {
        let yaml = configuration.redactedYAML(source: source)
        guard let loaded = try? Yams.load(yaml: yaml), let value = jsonValue(loaded),
            let data = try? RecordCoding.encode(value)
        else { return Data("{}\n".utf8) }
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
