import Foundation
import ObjectStore
import XCTest

@testable import BucketfsCLI

/// GCS keys (`credentials_file`, `project_id`, `endpoint_url`) from YAML and flags into the store's configuration,
/// and what a saved upload remembers of a gs:// mount.
final class GCSConfigurationTests: XCTestCase {
    func testYAMLAndFlagsReachTheGCSConfiguration() throws {
        let path = NSTemporaryDirectory() + "bucketfs-gcs-\(UUID().uuidString).yaml"
        try """
        storage:
          type: gcs
          bucket: team-data
          prefix: alice/
          credentials_file: /etc/bucketfs/sa.json
          project_id: from-yaml
        """.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var configuration = Configuration()
        try configuration.apply(yamlFile: path)
        XCTAssertEqual(configuration.sourceFromStorage(), "gs://team-data/alice/")
        var gcs = configuration.gcsConfiguration(bucket: "team-data")
        XCTAssertEqual(gcs.credentialsFile, "/etc/bucketfs/sa.json")
        XCTAssertEqual(gcs.projectID, "from-yaml")
        XCTAssertNil(gcs.endpointURL)

        let flags = try ConfigurationOptions.parse([
            "--config", path, "--project-id", "from-flag",
            "--credentials-file", "/other.json",
            "--endpoint-url", "http://127.0.0.1:4443",
        ]).resolve()
        gcs = flags.gcsConfiguration(bucket: "b")
        XCTAssertEqual(gcs.projectID, "from-flag")
        XCTAssertEqual(gcs.credentialsFile, "/other.json")
        XCTAssertEqual(gcs.endpointURL, "http://127.0.0.1:4443")
        XCTAssertTrue(flags.redactedYAML(source: nil).contains("credentials_file: \"/other.json\""))
    }

    /// A gs:// mount's saved uploads remember its endpoint and credentials file, never an AWS endpoint.
    func testStoreContextOfAGCSMount() throws {
        var configuration = Configuration()
        configuration.storage.credentialsFile = "/sa.json"
        configuration.storage.endpointURL = "http://127.0.0.1:4443"
        let location = try StoreLocation(parsing: "gs://b/p/")
        let context = configuration.storeContext(for: location)
        XCTAssertEqual(context["endpoint_url"], "http://127.0.0.1:4443")
        XCTAssertEqual(context["credentials_file"], "/sa.json")
        XCTAssertNil(context["region"])
        var restored = Configuration()
        restored.adopt(storeContext: context)
        XCTAssertEqual(restored.gcsConfiguration(bucket: "b").credentialsFile, "/sa.json")
        XCTAssertEqual(restored.gcsConfiguration(bucket: "b").endpointURL, "http://127.0.0.1:4443")
    }
}
