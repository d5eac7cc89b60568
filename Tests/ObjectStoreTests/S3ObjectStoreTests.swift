import Foundation
import Glibc
import TestSupport
import XCTest

@testable import ObjectStore

/// The S3 backend against a real `moto_server` on loopback (one server for the whole class, a fresh bucket per test).
final class S3ObjectStoreTests: XCTestCase {
    private static let moto = SharedServer { try MotoServer() }

    override class func tearDown() {
        moto.stop()
        super.tearDown()
    }

    private var moto: MotoServer!
    private var bucket = ""

    override func setUpWithError() throws {
        moto = try Self.moto.get()
        bucket = "bucketfs-test-\(UUID().uuidString.prefix(8).lowercased())"
        try moto.createBucket(bucket)
    }

    private func configuration(bucket: String? = nil, maxRetries: Int = 5) -> S3Configuration {
        // Dummy credentials in the configuration, and an empty environment, so nothing of the host's AWS setup leaks
        // in.
        S3Configuration(
            bucket: bucket ?? self.bucket, region: "us-east-1", endpointURL: moto.endpoint,
            accessKeyID: "testing", secretAccessKey: "testing", maxRetries: maxRetries, environment: [:])
    }

    private func makeStore() throws -> S3ObjectStore {
        try S3ObjectStore(configuration: configuration())
    }

    // MARK: The shared suite

    func testConformance() throws {
        let store = try makeStore()
        ObjectStoreConformance(
            keyPrefix: "conformance/", versionsAreContentHashes: true, checksPartChecksums: false, makeStore: { store }
        ).run()
    }

    func testDeleteObjectsInBatches() throws {
        try S3BatchDeleteCheck.run(try makeStore())
    }

    /// The suite's `versions`, except that identical bytes keep their ETag.
    func testVersionsAreETags() throws {
        let store = try makeStore()
        let first = try store.put("v", data: Data("one".utf8))
        XCTAssertEqual(first.version, Hashing.hex(Hashing.md5(Data("one".utf8))))
        XCTAssertEqual(try store.head("v").version, first.version)
        XCTAssertEqual(try store.list(ListRequest(prefix: "v")).objects.first?.version, first.version)
        let second = try store.put("v", data: Data("two".utf8))
        XCTAssertNotEqual(second.version, first.version)
        XCTAssertEqual(try store.head("v").version, second.version)
        let third = try store.put("v", data: Data("two".utf8))
        XCTAssertEqual(third.version, second.version, "S3: same bytes, same ETag")
    }

    /// A copy from a source the caller knows is one request (no HEAD of the source), and ends as a plain copy.
    func testCopyOfAKnownSourceIsOneRequest() throws {
        let store = try makeStore()
        let body = Data("known".utf8)
        let source = try store.put(
            "src", data: body, options: PutOptions(contentType: "text/plain", metadata: ["a": "1"]))
        let before = store.attemptCount
        let copied = try store.copy(from: source, to: "dst", metadata: nil, condition: .none)
        XCTAssertEqual(store.attemptCount - before, 1, "the COPY alone")
        XCTAssertEqual(copied.size, UInt64(body.count))
        XCTAssertEqual(try store.get("dst").body, body)
        XCTAssertEqual(try store.head("dst").metadata, ["a": "1"])
        XCTAssertEqual(try store.head("dst").version, copied.version)
        // Known from a LIST (no content type): replacing metadata asks the source first, and keeps its type.
        let listed = try XCTUnwrap(store.list(ListRequest(prefix: "src")).objects.first)
        try store.copy(from: listed, to: "meta", metadata: ["b": "2"], condition: .none)
        XCTAssertEqual(try store.head("meta").contentType, "text/plain")
        XCTAssertEqual(try store.head("meta").metadata, ["b": "2"])
        // A source gone since: notFound, as for the plain copy.
        try store.delete("src")
        XCTAssertThrowsError(try store.copy(from: source, to: "again", metadata: nil, condition: .none)) { error in
            guard case ObjectStoreError.notFound = error else { return XCTFail("\(error)") }
        }
    }

    /// The suite's `copy`, with the stale condition made stale by a content change (a metadata-only copy keeps the
    /// ETag).
    func testCopy() throws {
        let store = try makeStore()
        let body = Data("copy me".utf8)
        try store.put("src", data: body, options: PutOptions(contentType: "text/plain", metadata: ["a": "1"]))
        let kept = try store.copy(from: "src", to: "kept", metadata: nil, condition: .none)
        XCTAssertEqual(kept.size, UInt64(body.count))
        XCTAssertEqual(kept.metadata, ["a": "1"])
        XCTAssertEqual(try store.get("kept").body, body)
        XCTAssertEqual(try store.head("kept").metadata, ["a": "1"])
        XCTAssertEqual(try store.head("kept").contentType, "text/plain")
        XCTAssertEqual(try store.head("kept").version, kept.version)

        try store.copy(from: "src", to: "replaced", metadata: ["b": "2"], condition: .none)
        XCTAssertEqual(try store.head("replaced").metadata, ["b": "2"])
        XCTAssertEqual(try store.head("replaced").contentType, "text/plain", "REPLACE keeps the source's content type")

        let before = try store.head("src")
        let after = try store.copy(
            from: "src", to: "src", metadata: ["c": "3"], condition: .ifVersionMatches(before.version))
        XCTAssertEqual(try store.head("src").metadata, ["c": "3"])
        XCTAssertEqual(try store.head("src").version, after.version)
        XCTAssertEqual(try store.get("src").body, body)

        let changed = try store.put("src", data: Data("new content".utf8))
        XCTAssertThrowsError(
            try store.copy(from: "src", to: "src", metadata: ["d": "4"], condition: .ifVersionMatches(before.version))
        ) {
            XCTAssertEqual($0 as? ObjectStoreError, .preconditionFailed(key: "src"))
        }
        try store.copy(from: "src", to: "src", metadata: ["d": "4"], condition: .ifVersionMatches(changed.version))
        XCTAssertThrowsError(try store.copy(from: "src", to: "kept", metadata: nil, condition: .ifAbsent)) {
            XCTAssertEqual($0 as? ObjectStoreError, .preconditionFailed(key: "kept"))
        }
        XCTAssertThrowsError(
            try store.copy(from: "src", to: "absent", metadata: nil, condition: .ifVersionMatches(changed.version))
        ) {
            XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "absent"))
        }
        XCTAssertThrowsError(try store.copy(from: "missing", to: "other", metadata: nil, condition: .none)) {
            XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "missing"))
        }

        // x-amz-copy-source is URL-encoded.
        try store.put("odd/a b+c%é?", data: body)
        try store.copy(from: "odd/a b+c%é?", to: "odd/copied & renamed", metadata: nil, condition: .ifAbsent)
        XCTAssertEqual(try store.get("odd/copied & renamed").body, body)
    }

    // MARK: S3 specifics

    func testMetadataRoundTripAsAmzMetaHeaders() throws {
        let store = try makeStore()
        let metadata = [
            "mode": "33188", "uid": "1000", "mtime": "1700000000.123456789", "symlink": "target%20with%20spaces",
        ]
        let put = try store.put("meta/file", data: Data("x".utf8), options: PutOptions(metadata: metadata))
        XCTAssertEqual(put.metadata, metadata)
        XCTAssertEqual(put.contentType, "application/octet-stream")
        XCTAssertEqual(try store.head("meta/file").metadata, metadata)
        XCTAssertEqual(try store.get("meta/file").info.metadata, metadata)
        XCTAssertEqual(try store.get("meta/file", range: 0..<1).info.metadata, metadata)

        // What another S3 client sees: plain x-amz-meta-* headers on the object.
        let raw = try moto.request("HEAD", "/\(bucket)/meta/file")
        XCTAssertEqual(raw.headers["x-amz-meta-mode"], "33188")
        XCTAssertEqual(raw.headers["x-amz-meta-symlink"], "target%20with%20spaces")

        // Values that cannot survive an HTTP header are refused, not altered.
        XCTAssertThrowsError(try store.put("meta/bad", data: Data(), options: PutOptions(metadata: ["k": "é"]))) {
            guard case ObjectStoreError.invalidRequest = $0 else { return XCTFail("got \($0)") }
        }
    }

    func testMultipartWithTwoFiveMiBParts() throws {
        let store = try makeStore()
        let partSize = 5 << 20
        let first = Data((0..<partSize).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        let second = Data((0..<partSize).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) })
        // The second part comes from a file, streamed by the read callback.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("part-\(UUID().uuidString)").path
        try second.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }

        let uploadID = try store.createMultipartUpload(
            "mp/ten", options: PutOptions(contentType: "text/plain", metadata: ["a": "1"]))
        let etag1 = try store.uploadPart("mp/ten", uploadID: uploadID, number: 1, body: .data(first))
        let etag2 = try store.uploadPart("mp/ten", uploadID: uploadID, number: 2, body: .file(path: path))
        let info = try store.completeMultipartUpload(
            "mp/ten", uploadID: uploadID,
            parts: [CompletedPart(number: 1, etag: etag1), CompletedPart(number: 2, etag: etag2)],
            condition: .ifAbsent)
        XCTAssertEqual(info.size, UInt64(2 * partSize))
        XCTAssertTrue(info.version.hasSuffix("-2"), "a multipart ETag names its part count: \(info.version)")
        XCTAssertFalse(info.version.contains("\""))
        let across = try store.get("mp/ten", range: UInt64(partSize - 3)..<UInt64(partSize + 3))
        XCTAssertEqual(across.body, first.suffix(3) + second.prefix(3))
        XCTAssertEqual(across.info.size, UInt64(2 * partSize))
        XCTAssertEqual(try store.head("mp/ten").metadata, ["a": "1"])
        XCTAssertEqual(try store.get("mp/ten").body, first + second)
    }

    func testPaginationWithMaxKeysTwoAndAwkwardKeys() throws {
        let store = try makeStore()
        // Characters that need URL encoding in listings (encoding-type=url) and in paths.
        let names = ["a b", "a+b", "a%b", "é", "q?x", "t&u", "z~"]
        for name in names { try store.put("page/\(name)", data: Data(name.utf8)) }
        var keys: [String] = []
        var request = ListRequest(prefix: "page/", maxKeys: 2)
        var pages = 0
        repeat {
            let page = try store.list(request)
            XCTAssertLessThanOrEqual(page.objects.count, 2)
            keys += page.objects.map(\.key)
            request.continuationToken = page.nextContinuationToken
            pages += 1
        } while request.continuationToken != nil && pages < 10
        XCTAssertEqual(pages, 4)
        let expected = names.map { "page/\($0)" }.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        XCTAssertEqual(keys, expected)
        for name in names { XCTAssertEqual(try store.get("page/\(name)").body, Data(name.utf8), name) }
        XCTAssertEqual(try store.listAll(prefix: "page/a").objects.count, 3)
    }

    func testMissingBucket() throws {
        let store = try S3ObjectStore(
            configuration: configuration(bucket: "no-such-bucket-\(UUID().uuidString.prefix(8).lowercased())"))
        XCTAssertThrowsError(try store.validate()) {
            guard case ObjectStoreError.noSuchBucket(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains(moto.endpoint), detail)
        }
        XCTAssertThrowsError(try store.list(ListRequest(prefix: ""))) {
            guard case ObjectStoreError.noSuchBucket = $0 else { return XCTFail("got \($0)") }
        }
        XCTAssertThrowsError(try store.put("k", data: Data())) {
            guard case ObjectStoreError.noSuchBucket = $0 else { return XCTFail("got \($0)") }
        }
        XCTAssertNoThrow(try makeStore().validate())
    }

    /// The shared server does not check credentials (moto's default); a second one started with
    /// `INITIAL_NO_AUTH_ACTION_COUNT=0` authenticates every request against its IAM, where "testing" is unknown.
    func testWrongCredentialsAreUnauthorized() throws {
        let strict = try MotoServer(environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "0"])
        defer { strict.stop() }
        let store = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "any", region: "us-east-1", endpointURL: strict.endpoint, accessKeyID: "AKIAWRONG",
                secretAccessKey: "wrong", environment: [:]))
        XCTAssertThrowsError(try store.validate()) {
            guard case ObjectStoreError.unauthorized(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("InvalidAccessKeyId"), detail)
        }
    }

    func testNoCredentialsAtAll() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("home-\(UUID().uuidString)").path
        let noMetadata = ["HOME": home, "AWS_EC2_METADATA_DISABLED": "true"]
        XCTAssertThrowsError(try S3ObjectStore(configuration: S3Configuration(bucket: "b", environment: noMetadata))) {
            XCTAssertEqual(
                $0 as? ObjectStoreError,
                .unauthorized(
                    "no AWS credentials found: "
                        + "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or storage.aws_access_key_id"
                ))
        }
        // Anonymous access is allowed when asked for (requests go unsigned).
        let anonymous = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: bucket, endpointURL: moto.endpoint, noSignRequest: true, environment: ["HOME": home]))
        XCTAssertEqual(anonymous.description, "s3://\(bucket)/")
    }

    func testRetriesThenTransportError() throws {
        let port = try Loopback.freePort()  // nobody listens there
        let store = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "b", endpointURL: "http://127.0.0.1:\(port)", accessKeyID: "testing",
                secretAccessKey: "testing",
                maxRetries: 2, environment: [:]))
        XCTAssertThrowsError(try store.head("k")) {
            guard case ObjectStoreError.transport(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.contains("127.0.0.1:\(port)"), detail)
        }
        XCTAssertEqual(store.attemptCount, 3, "one attempt and two retries")

        // The CLI's pre-mount check retries at most once and names the endpoint.
        XCTAssertThrowsError(try store.validate()) {
            guard case ObjectStoreError.transport(let detail) = $0 else { return XCTFail("got \($0)") }
            XCTAssertTrue(detail.hasPrefix("cannot reach S3 endpoint http://127.0.0.1:\(port)"), detail)
        }
        XCTAssertEqual(store.attemptCount, 5)
    }

    func testEmptyObjectAndRanges() throws {
        let store = try makeStore()
        try store.put("empty", data: Data())
        let read = try store.get("empty", range: 0..<10)
        XCTAssertEqual(read.body, Data())
        XCTAssertEqual(read.info.size, 0)
        XCTAssertEqual(try store.get("empty", range: 5..<5).body, Data())
        XCTAssertThrowsError(try store.get("missing", range: 5..<5)) {
            XCTAssertEqual($0 as? ObjectStoreError, .notFound(key: "missing"))
        }
    }

    func testConditionalPutFromFile() throws {
        let store = try makeStore()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("body-\(UUID().uuidString)").path
        try Data("file body".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = try store.put("f", body: .file(path: path), options: PutOptions(condition: .ifAbsent))
        XCTAssertEqual(first.version, Hashing.hex(Hashing.md5(Data("file body".utf8))), "a single-part ETag is the MD5")
        XCTAssertThrowsError(try store.put("f", body: .file(path: path), options: PutOptions(condition: .ifAbsent))) {
            XCTAssertEqual($0 as? ObjectStoreError, .preconditionFailed(key: "f"))
        }
        XCTAssertThrowsError(try store.put("g", body: .file(path: path + "-missing"), options: PutOptions())) {
            guard case ObjectStoreError.invalidRequest = $0 else { return XCTFail("got \($0)") }
        }
    }

    func testMakeStoreFromLocation() throws {
        let location = try StoreLocation(parsing: "s3://\(bucket)/some/prefix/")
        var settings = configuration()
        settings.bucket = "ignored"
        let store = try location.makeStore(s3: settings)
        XCTAssertTrue(store is S3ObjectStore)
        XCTAssertEqual(store.description, "s3://\(bucket)/")
        // The store takes full keys; the prefix is its user's business.
        try store.put("some/prefix/k", data: Data("v".utf8))
        XCTAssertEqual(try store.list(ListRequest(prefix: "some/")).objects.map(\.key), ["some/prefix/k"])
    }

    func testCredentialChain() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aws-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/.aws", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try """
        [default]
        aws_access_key_id = DEFAULTKEY
        aws_secret_access_key = defaultsecret

        [work]
        aws_access_key_id=WORKKEY
        aws_secret_access_key=worksecret
        aws_session_token=worktoken
        """.write(toFile: dir + "/.aws/credentials", atomically: true, encoding: .utf8)
        try """
        [default]
        region = eu-west-1
        [profile work]
        region = ap-south-1
        [profile cfg]
        aws_access_key_id = CFGKEY
        aws_secret_access_key = cfgsecret
        """.write(toFile: dir + "/.aws/config", atomically: true, encoding: .utf8)
        let home = ["HOME": dir]
        let base = S3Configuration(bucket: "b")

        XCTAssertEqual(try S3Credentials.resolve(base, environment: home)?.accessKeyID, "DEFAULTKEY")
        XCTAssertEqual(S3Credentials.region(base, environment: home), "eu-west-1")
        let work = try S3Credentials.resolve(base, environment: home.merging(["AWS_PROFILE": "work"]) { $1 })
        XCTAssertEqual(
            work, S3Credentials(accessKeyID: "WORKKEY", secretAccessKey: "worksecret", sessionToken: "worktoken"))
        XCTAssertEqual(
            S3Credentials.region(base, environment: home.merging(["AWS_PROFILE": "work"]) { $1 }), "ap-south-1")
        XCTAssertEqual(
            try S3Credentials.resolve(base, environment: home.merging(["AWS_PROFILE": "cfg"]) { $1 })?.accessKeyID,
            "CFGKEY")

        // Environment keys beat the profile; explicit ones beat both; region variables likewise.
        var environment = home.merging([
            "AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret",
            "AWS_SESSION_TOKEN": "envtoken", "AWS_DEFAULT_REGION": "us-west-2",
        ]) { $1 }
        XCTAssertEqual(
            try S3Credentials.resolve(base, environment: environment),
            S3Credentials(accessKeyID: "ENVKEY", secretAccessKey: "envsecret", sessionToken: "envtoken"))
        XCTAssertEqual(S3Credentials.region(base, environment: environment), "us-west-2")
        environment["AWS_REGION"] = "ca-central-1"
        XCTAssertEqual(S3Credentials.region(base, environment: environment), "ca-central-1")
        var explicit = base
        explicit.accessKeyID = "CONFIGKEY"
        explicit.secretAccessKey = "configsecret"
        explicit.region = "sa-east-1"
        XCTAssertEqual(try S3Credentials.resolve(explicit, environment: environment)?.accessKeyID, "CONFIGKEY")
        XCTAssertEqual(S3Credentials.region(explicit, environment: environment), "sa-east-1")

        // AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE move the files; nothing found is an error, unless anonymous.
        try "[default]\naws_access_key_id = MOVED\naws_secret_access_key = s\n"
            .write(toFile: dir + "/moved", atomically: true, encoding: .utf8)
        XCTAssertEqual(
            try S3Credentials.resolve(
                base, environment: ["HOME": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": dir + "/moved"])?
                .accessKeyID, "MOVED")
        XCTAssertEqual(S3Credentials.region(base, environment: ["HOME": "/nonexistent"]), "us-east-1")
        XCTAssertThrowsError(try S3Credentials.resolve(base, environment: ["HOME": "/nonexistent"]))
        var anonymous = base
        anonymous.noSignRequest = true
        XCTAssertNil(try S3Credentials.resolve(anonymous, environment: environment))
    }

    func testEndpointAndAddressingStyle() throws {
        let keys: [String: String] = ["AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"]
        let aws = try S3ObjectStore(configuration: S3Configuration(bucket: "b", region: "eu-west-1", environment: keys))
        XCTAssertEqual(aws.endpoint, "https://s3.eu-west-1.amazonaws.com")
        XCTAssertFalse(aws.pathStyle)
        let dotted = try S3ObjectStore(configuration: S3Configuration(bucket: "my.bucket", environment: keys))
        XCTAssertTrue(dotted.pathStyle)
        let custom = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "b", environment: keys.merging(["AWS_ENDPOINT_URL": "http://minio:9000/"]) { $1 }))
        XCTAssertEqual(custom.endpoint, "http://minio:9000")
        XCTAssertTrue(custom.pathStyle)
        let forced = try S3ObjectStore(
            configuration: S3Configuration(
                bucket: "b", endpointURL: "http://minio:9000", pathStyle: false,
                environment: keys))
        XCTAssertFalse(forced.pathStyle)
    }
}
