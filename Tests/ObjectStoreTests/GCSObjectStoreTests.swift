import Foundation
import TestSupport
import XCTest

@testable import ObjectStore

/// The GCS backend against a real `fake-gcs-server` on loopback (one server for the class, a fresh bucket per test).
final class GCSObjectStoreTests: XCTestCase {
    private static let server = SharedServer { try FakeGCSServer() }

    override class func tearDown() {
        server.stop()
        super.tearDown()
    }

    private var server: FakeGCSServer!
    private var bucket = ""

    override func setUpWithError() throws {
        server = try Self.server.get()
        bucket = "bucketfs-test-\(UUID().uuidString.prefix(8).lowercased())"
        try server.createBucket(bucket)
    }

    /// Small resumable chunks, so that modest bodies take the resumable path in several chunks.
    private func configuration(bucket: String? = nil, maxRetries: Int = 5) -> GCSConfiguration {
        GCSConfiguration(
            bucket: bucket ?? self.bucket, endpointURL: server.endpoint, maxRetries: maxRetries,
            resumableThreshold: 256 << 10, resumableChunkSize: 256 << 10, environment: [:])
    }

    private func makeStore() throws -> GCSObjectStore {
        try GCSObjectStore(configuration: configuration())
    }

    // MARK: The shared suite

    func testConformance() throws {
        let store = try makeStore()
        ObjectStoreConformance(
            keyPrefix: "conformance/", partSize: 64 << 10, checksPartChecksums: false, makeStore: { store }
        ).run()
    }

    // MARK: GCS specifics

    func testVersionsAreGenerations() throws {
        let store = try makeStore()
        let first = try store.put("v", data: Data("one".utf8))
        XCTAssertTrue(first.version.allSatisfy(\.isNumber), first.version)
        XCTAssertEqual(try store.list(ListRequest(prefix: "v")).objects.first?.version, first.version)
        XCTAssertEqual(try store.get("v", range: 0..<1).info.version, first.version)
        let same = try store.put("v", data: Data("one".utf8))
        XCTAssertNotEqual(same.version, first.version, "same bytes, new generation")
    }

    /// What another GCS client sees: the resource's `metadata` map and content type.
    func testMetadataInTheObjectResource() throws {
        let store = try makeStore()
        let metadata = [
            "mode": "33188", "uid": "1000", "mtime": "1700000000.123456789", "symlink": "target%20with%20spaces",
        ]
        let put = try store.put(
            "meta/file", data: Data("x".utf8), options: PutOptions(contentType: "text/x", metadata: metadata))
        XCTAssertEqual(put.metadata, metadata)
        XCTAssertEqual(try store.head("meta/file").metadata, metadata)
        XCTAssertEqual(try store.get("meta/file", range: 0..<1).info.metadata, metadata)
        XCTAssertEqual(
            try store.list(ListRequest(prefix: "meta/")).objects.first?.metadata, metadata,
            "listings carry the metadata GCS returns with them")
        let raw = try server.request("GET", "/storage/v1/b/\(bucket)/o/meta%2Ffile")
        let resource = try XCTUnwrap(try JSONSerialization.jsonObject(with: raw.body) as? [String: Any])
        XCTAssertEqual(resource["metadata"] as? [String: String], metadata)
        XCTAssertEqual(resource["contentType"] as? String, "text/x")
    }

    /// Bodies over the threshold go resumable: several chunks from a file, with metadata; conditions apply.
    func testResumableUploadInChunks() throws {
        let store = try makeStore()
        let path = NSTemporaryDirectory() + "gcs-big-\(UUID().uuidString)"
        let body = Data((0..<(5 * (256 << 10) + 12345)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 >> 9) })
        try body.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let before = store.attemptCount
        let info = try store.put(
            "big", body: .file(path: path),
            options: PutOptions(contentType: "application/x-big", metadata: ["mode": "33188"]))
        XCTAssertEqual(store.attemptCount - before, 7, "one start and six chunks")
        XCTAssertEqual(info.size, UInt64(body.count))
        XCTAssertEqual(try store.get("big").body, body)
        let head = try store.head("big")
        XCTAssertEqual(head.metadata, ["mode": "33188"])
        XCTAssertEqual(head.contentType, "application/x-big")
        XCTAssertEqual(head.version, info.version)
        XCTAssertEqual(try store.get("big", range: 300_000..<300_010).body, body.subdata(in: 300_000..<300_010))

        XCTAssertThrowsError(try store.put("big", body: .file(path: path), options: PutOptions(condition: .ifAbsent))) {
            XCTAssertEqual($0 as? ObjectStoreError, .preconditionFailed(key: "big"))
        }
        let replaced = try store.put(
            "big", body: .data(body), options: PutOptions(condition: .ifVersionMatches(info.version)))
        XCTAssertNotEqual(replaced.version, info.version)
        XCTAssertThrowsError(
            try store.put("big", body: .data(body), options: PutOptions(condition: .ifVersionMatches(info.version)))
        ) {
            XCTAssertEqual($0 as? ObjectStoreError, .preconditionFailed(key: "big"))
        }
        // Exactly one chunk's worth: the last chunk is the whole body.
        let exact = Data(repeating: 9, count: 2 * (256 << 10))
        XCTAssertEqual(try store.put("exact", body: .data(exact), options: PutOptions()).size, UInt64(exact.count))
        XCTAssertEqual(try store.get("exact").body, exact)
    }

    /// More than 32 parts: composed in rounds through intermediate objects, all of which are removed.
    func testManyPartsComposeInRounds() throws {
        let store = try makeStore()
        let uploadID = try store.createMultipartUpload(
            "many", options: PutOptions(contentType: "text/plain", metadata: ["n": "40"]))
        var parts: [CompletedPart] = []
        var expected = Data()
        for number in 1...40 {
            let chunk = Data("part \(number);".utf8)
            expected += chunk
            parts.append(
                CompletedPart(
                    number: number,
                    etag: try store.uploadPart(
                        "many", uploadID: uploadID, number: number,
                        body: .data(chunk))))
        }
        let info = try store.completeMultipartUpload("many", uploadID: uploadID, parts: parts, condition: .ifAbsent)
        XCTAssertEqual(info.size, UInt64(expected.count))
        XCTAssertEqual(try store.get("many").body, expected)
        XCTAssertEqual(try store.head("many").metadata, ["n": "40"])
        XCTAssertEqual(try store.head("many").contentType, "text/plain")
        XCTAssertEqual(try store.listAll(prefix: ".bucketfs/").objects.map(\.key), [], "temporary objects are gone")
        XCTAssertEqual(try store.listMultipartUploads(prefix: ""), [])
    }

    /// An upload started by another store (another daemon) is found through its manifest.
    func testUploadsAreSharedThroughTheBucket() throws {
        let first = try makeStore()
        let uploadID = try first.createMultipartUpload("shared/key", options: PutOptions())
        let second = try makeStore()
        XCTAssertEqual(try second.listMultipartUploads(prefix: "shared/").map(\.uploadID), [uploadID])
        XCTAssertEqual(try second.listMultipartUploads(prefix: "other/"), [])
        let etag = try second.uploadPart("shared/key", uploadID: uploadID, number: 1, body: .data(Data("x".utf8)))
        XCTAssertThrowsError(try second.uploadPart("shared/wrong", uploadID: uploadID, number: 1, body: .data(Data())))
        {
            XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "shared/wrong"), "an upload belongs to its key")
        }
        try second.completeMultipartUpload(
            "shared/key", uploadID: uploadID, parts: [CompletedPart(number: 1, etag: etag)],
            condition: .none)
        XCTAssertEqual(try first.get("shared/key").body, Data("x".utf8))
    }

    func testPaginationWithStartAfterAndDelimiter() throws {
        let store = try makeStore()
        for key in ["a/1", "a/2", "b", "c/1", "d", "e/1/x"] { try store.put("p/" + key, data: Data()) }
        var seen: [String] = []
        var request = ListRequest(prefix: "p/", delimiter: "/", maxKeys: 2)
        repeat {
            let page = try store.list(request)
            XCTAssertLessThanOrEqual(page.objects.count + page.commonPrefixes.count, 2)
            seen += page.objects.map(\.key) + page.commonPrefixes
            request.continuationToken = page.nextContinuationToken
        } while request.continuationToken != nil
        XCTAssertEqual(seen.sorted(), ["p/a/", "p/b", "p/c/", "p/d", "p/e/"])
        let after = try store.list(ListRequest(prefix: "p/", delimiter: "/", startAfter: "p/b"))
        XCTAssertEqual(after.objects.map(\.key), ["p/d"])
        XCTAssertEqual(after.commonPrefixes, ["p/c/", "p/e/"])
        XCTAssertThrowsError(try store.list(ListRequest(prefix: "p/", continuationToken: "bogus"))) {
            guard case ObjectStoreError.invalidRequest = $0 else { return XCTFail("got \($0)") }
        }
    }

    func testOddNames() throws {
        let store = try makeStore()
        let body = Data("odd".utf8)
        try store.put("odd/a b+c%é?#&=", data: body)
        XCTAssertEqual(try store.get("odd/a b+c%é?#&=").body, body)
        try store.copy(from: "odd/a b+c%é?#&=", to: "odd/copied & renamed", metadata: nil, condition: .ifAbsent)
        XCTAssertEqual(try store.get("odd/copied & renamed").body, body)
        XCTAssertEqual(try store.list(ListRequest(prefix: "odd/a b")).objects.map(\.key), ["odd/a b+c%é?#&="])
        try store.delete("odd/a b+c%é?#&=")
        XCTAssertThrowsError(try store.head("odd/a b+c%é?#&=")) {
            XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "odd/a b+c%é?#&="))
        }
    }

    func testValidateBucket() throws {
        try makeStore().validate()
        let missing = try GCSObjectStore(configuration: configuration(bucket: "no-such-bucket-here"))
        XCTAssertThrowsError(try missing.validate()) {
            guard case ObjectStoreError.noSuchBucket(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("no-such-bucket-here"), detail)
        }
        let port = try Loopback.freePort()
        let unreachable = try GCSObjectStore(
            configuration: GCSConfiguration(
                bucket: bucket, endpointURL: "http://127.0.0.1:\(port)", connectTimeout: 1, maxRetries: 4,
                environment: [:]))
        XCTAssertThrowsError(try unreachable.validate()) {
            guard case ObjectStoreError.transport(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.hasPrefix("cannot reach GCS endpoint http://127.0.0.1:\(port)"), detail)
        }
        XCTAssertEqual(unreachable.attemptCount, 2, "the pre-mount check retries once")
    }

    func testEndpointAndCredentialResolution() throws {
        let emulated = try GCSObjectStore(
            configuration: GCSConfiguration(
                bucket: "b", environment: ["STORAGE_EMULATOR_HOST": "127.0.0.1:9023"]))
        XCTAssertEqual(emulated.endpoint, "http://127.0.0.1:9023")
        XCTAssertTrue(emulated.emulator)
        XCTAssertNil(emulated.tokens, "emulators get no authentication")
        let real = try GCSObjectStore(
            configuration: GCSConfiguration(
                bucket: "b", environment: ["GCE_METADATA_HOST": "10.0.0.1:8080", "HOME": "/nonexistent"]))
        XCTAssertEqual(real.endpoint, "https://storage.googleapis.com")
        XCTAssertFalse(real.emulator)
        XCTAssertEqual(real.tokens?.credentials, .metadataServer(host: "10.0.0.1:8080"))
        XCTAssertThrowsError(
            try GCSObjectStore(
                configuration: GCSConfiguration(
                    bucket: "b", credentialsFile: "/nonexistent/sa.json", environment: [:]))
        ) {
            guard case ObjectStoreError.unauthorized(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("/nonexistent/sa.json"), detail)
        }

        let dir = NSTemporaryDirectory() + "gcs-creds-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/.config/gcloud", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try
            (#"{"type":"authorized_user","client_id":"id","client_secret":"s","refresh_token":"r","#
            + #""quota_project_id":"q"}"#)
            .write(
                toFile: dir + "/.config/gcloud/application_default_credentials.json", atomically: true, encoding: .utf8)
        let user = try GCSObjectStore(configuration: GCSConfiguration(bucket: "b", environment: ["HOME": dir]))
        XCTAssertEqual(user.projectID, "q")
        guard case .authorizedUser(let resolved)? = user.tokens?.credentials else {
            return XCTFail("not authorized_user")
        }
        XCTAssertEqual(resolved.refreshToken, "r")
        XCTAssertEqual(resolved.tokenURI, GCSCredentials.defaultTokenURI)
        try #"{"type":"external_account"}"#.write(toFile: dir + "/other.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(
            try GCSObjectStore(
                configuration: GCSConfiguration(
                    bucket: "b", environment: ["GOOGLE_APPLICATION_CREDENTIALS": dir + "/other.json"]))
        ) {
            guard case ObjectStoreError.unauthorized(let detail) = $0 else { return XCTFail("got \($0)") }
            // external_account files are supported: one without its required fields says which are missing.
            XCTAssertTrue(detail.contains("credential_source"), detail)
        }
    }

    func testMakeStoreFromLocation() throws {
        let location = try StoreLocation(parsing: "gs://\(bucket)/some/prefix/")
        var settings = configuration()
        settings.bucket = "ignored"
        let store = try location.makeStore(s3: nil, gcs: settings)
        XCTAssertTrue(store is GCSObjectStore)
        XCTAssertEqual(store.description, "gs://\(bucket)/")
        try store.put("some/prefix/k", data: Data("v".utf8))
        XCTAssertEqual(try store.list(ListRequest(prefix: "some/")).objects.map(\.key), ["some/prefix/k"])
    }
}
