import Foundation
import ObjectStore
import Synchronization
import TestSupport
import XCTest

/// The behaviour every backend must show, run the same way on each. A backend's test case adds one line:
///
///     try ObjectStoreConformance(makeStore: { MemoryObjectStore() }).run()
///
/// Each check gets a store from `makeStore` and writes only under its own fresh key prefix
/// (`<keyPrefix><check>-<random>-`), so a shared bucket works as well as a fresh store.
struct ObjectStoreConformance {
    /// Where keys go, e.g. `conformance/` in a shared test bucket.
    var keyPrefix = ""
    /// Size of the parts in the multipart checks (S3 wants 5 MiB for all but the last part).
    var partSize = 5 << 20
    /// The version is a hash of the content (an S3 ETag): identical bytes, or a copy onto itself with new
    /// metadata, keep it. Otherwise every write must make a new version.
    var versionsAreContentHashes = false
    /// A directory marker (`d/`) keeps the metadata it was written with. SeaweedFS drops it (it keeps `d/` as a
    /// directory of its own): bucketfs then keeps a directory's metadata in the sidecar object beside the marker.
    var markersKeepMetadata = true
    /// A part whose CRC32C does not match its bytes is refused. moto takes it (it checks no checksum); GCS is not
    /// sent it.
    var checksPartChecksums = true
    var makeStore: () throws -> any ObjectStore

    typealias Check = (ObjectStoreConformance) -> (any ObjectStore, String) throws -> Void

    static var checks: [(name: String, check: Check)] {
        [
            ("roundTrip", roundTrip),
            ("headMetadata", headMetadata),
            ("rangedGet", rangedGet),
            ("missingKeys", missingKeys),
            ("versions", versions),
            ("putIfAbsent", putIfAbsent),
            ("putIfVersionMatches", putIfVersionMatches),
            ("conditionalDelete", conditionalDelete),
            ("racingIfAbsent", racingIfAbsent),
            ("listWithDelimiter", listWithDelimiter),
            ("pagination", pagination),
            ("startAfter", startAfter),
            ("copy", copy),
            ("multipart", multipart),
            ("multipartConditionAndAbort", multipartConditionAndAbort),
            ("uploadPartCopy", uploadPartCopy),
            ("uploadPartCopyWithChecksums", uploadPartCopyWithChecksums),
            ("streamingGet", streamingGet),
            ("multipartErrors", multipartErrors),
            ("putFromFile", putFromFile),
            ("partsFromFileRanges", partsFromFileRanges),
            ("partChecksums", partChecksums),
            ("directoryMarker", directoryMarker),
            ("deleteObjects", deleteObjects),
        ]
    }

    /// Runs every check; a check that throws fails the current test with its name and goes on to the next.
    func run(file: StaticString = #filePath, line: UInt = #line) {
        for (name, check) in Self.checks {
            do {
                let store = try makeStore()
                let random = UUID().uuidString.prefix(8).lowercased()
                try check(self)(store, "\(keyPrefix)\(name)-\(random)-")
            } catch {
                XCTFail("\(name): unexpected error: \(error)", file: file, line: line)
            }
        }
    }

    // MARK: Reading and writing

    func roundTrip(_ store: any ObjectStore, _ p: String) throws {
        let bytes = Data((0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let info = try store.put(p + "bytes", data: bytes)
        XCTAssertEqual(info.key, p + "bytes")
        XCTAssertEqual(info.size, 1000)
        let read = try store.get(p + "bytes")
        XCTAssertEqual(read.body, bytes)
        XCTAssertEqual(read.info.size, 1000)
        XCTAssertEqual(read.info.version, info.version)

        try store.put(p + "empty", data: Data())
        XCTAssertEqual(try store.get(p + "empty").body, Data())
        XCTAssertEqual(try store.head(p + "empty").size, 0)
    }

    func headMetadata(_ store: any ObjectStore, _ p: String) throws {
        let metadata = ["mode": "100644", "uid": "1000"]
        let put = try store.put(
            p + "meta", data: Data("hello".utf8),
            options: PutOptions(contentType: "text/plain", metadata: metadata))
        let head = try store.head(p + "meta")
        XCTAssertEqual(head.size, 5)
        XCTAssertEqual(head.contentType, "text/plain")
        XCTAssertEqual(head.metadata, metadata)
        XCTAssertEqual(head.version, put.version)
        XCTAssertEqual(try store.get(p + "meta").info.metadata, metadata)

        try store.put(p + "plain", data: Data("x".utf8))
        XCTAssertEqual(try store.head(p + "plain").metadata, [:], "an object without metadata reports [:]")
    }

    func rangedGet(_ store: any ObjectStore, _ p: String) throws {
        try store.put(p + "digits", data: Data("0123456789".utf8))
        func read(_ range: Range<UInt64>) throws -> String {
            String(decoding: try store.get(p + "digits", range: range).body, as: UTF8.self)
        }
        XCTAssertEqual(try read(2..<5), "234")
        XCTAssertEqual(try read(7..<100), "789", "a range past the end is clamped")
        XCTAssertEqual(try read(0..<10), "0123456789")
        XCTAssertEqual(try read(10..<20), "", "a range starting at the end is empty")
        XCTAssertEqual(try store.get(p + "digits", range: 3..<4).info.size, 10, "info gives the whole object's size")
    }

    func missingKeys(_ store: any ObjectStore, _ p: String) throws {
        expectError(.notFound(key: p + "nothing")) { try store.head(p + "nothing") }
        expectError(.notFound(key: p + "nothing")) { try store.get(p + "nothing") }
        expectError(.notFound(key: p + "nothing")) { try store.get(p + "nothing", range: 0..<1) }
        // Deleting a missing key is not an error (as on S3).
        try store.delete(p + "nothing")
    }

    func versions(_ store: any ObjectStore, _ p: String) throws {
        let first = try store.put(p + "v", data: Data("one".utf8))
        XCTAssertEqual(try store.head(p + "v").version, first.version)
        XCTAssertEqual(try store.head(p + "v").version, first.version, "version is stable between heads")
        let second = try store.put(p + "v", data: Data("two".utf8))
        XCTAssertNotEqual(second.version, first.version, "an overwrite with same size gets a new version")
        XCTAssertEqual(try store.head(p + "v").version, second.version)
        let third = try store.put(p + "v", data: Data("two".utf8))
        if versionsAreContentHashes {
            XCTAssertEqual(third.version, second.version, "same bytes, same content hash")
        } else {
            XCTAssertNotEqual(third.version, second.version, "rewriting the same bytes still gets a new version")
        }
    }

    // MARK: Conditions

    func putIfAbsent(_ store: any ObjectStore, _ p: String) throws {
        try store.put(p + "once", data: Data("first".utf8), options: PutOptions(condition: .ifAbsent))
        expectError(.preconditionFailed(key: p + "once")) {
            try store.put(p + "once", data: Data("second".utf8), options: PutOptions(condition: .ifAbsent))
        }
        XCTAssertEqual(try store.get(p + "once").body, Data("first".utf8))
    }

    func putIfVersionMatches(_ store: any ObjectStore, _ p: String) throws {
        let first = try store.put(p + "cas", data: Data("1".utf8))
        let second = try store.put(
            p + "cas", data: Data("2".utf8),
            options: PutOptions(condition: .ifVersionMatches(first.version)))
        expectError(.preconditionFailed(key: p + "cas")) {
            try store.put(
                p + "cas", data: Data("3".utf8), options: PutOptions(condition: .ifVersionMatches(first.version)))
        }
        XCTAssertEqual(try store.get(p + "cas").body, Data("2".utf8))
        XCTAssertEqual(try store.head(p + "cas").version, second.version)
        expectError(.notFound(key: p + "absent")) {
            try store.put(p + "absent", data: Data(), options: PutOptions(condition: .ifVersionMatches(first.version)))
        }
    }

    func conditionalDelete(_ store: any ObjectStore, _ p: String) throws {
        let first = try store.put(p + "del", data: Data("1".utf8))
        let second = try store.put(p + "del", data: Data("2".utf8))
        expectError(.preconditionFailed(key: p + "del")) {
            try store.delete(p + "del", condition: .ifVersionMatches(first.version))
        }
        XCTAssertEqual(try store.head(p + "del").version, second.version, "a failed delete leaves the object")
        try store.delete(p + "del", condition: .ifVersionMatches(second.version))
        expectError(.notFound(key: p + "del")) { try store.head(p + "del") }
        expectError(.notFound(key: p + "del")) {
            try store.delete(p + "del", condition: .ifVersionMatches(second.version))
        }
    }

    func racingIfAbsent(_ store: any ObjectStore, _ p: String) throws {
        let winners = Mutex<[Int]>([])
        let losers = Atomic<Int>(0)
        let unexpected = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { writer in
            do {
                try store.put(
                    p + "race", data: Data("writer \(writer)".utf8), options: PutOptions(condition: .ifAbsent))
                winners.withLock { $0.append(writer) }
            } catch ObjectStoreError.preconditionFailed {
                losers.add(1, ordering: .relaxed)
            } catch {
                unexpected.withLock { $0.append("\(error)") }
            }
        }
        let won = winners.withLock { $0 }
        XCTAssertEqual(won.count, 1, "exactly one writer wins")
        XCTAssertEqual(losers.load(ordering: .relaxed), 15)
        XCTAssertEqual(unexpected.withLock { $0 }, [])
        if let winner = won.first {
            XCTAssertEqual(try store.get(p + "race").body, Data("writer \(winner)".utf8))
        }
    }

    // MARK: Listing

    func listWithDelimiter(_ store: any ObjectStore, _ p: String) throws {
        // "-" < "/" < "0" in byte order, and upper case before lower case.
        for key in ["b.txt", "a.txt", "Z", "dir/x", "dir/sub/y", "dir-1", "dir0", "dir2/z"] {
            try store.put(p + key, data: Data(key.utf8))
        }
        let top = try store.list(ListRequest(prefix: p, delimiter: "/"))
        XCTAssertEqual(top.objects.map(\.key), ["Z", "a.txt", "b.txt", "dir-1", "dir0"].map { p + $0 })
        XCTAssertEqual(top.commonPrefixes, [p + "dir/", p + "dir2/"])
        XCTAssertNil(top.nextContinuationToken)
        XCTAssertEqual(top.objects.first?.size, 1)
        if let listed = top.objects.first?.metadata {
            XCTAssertEqual(listed, try store.head(p + "Z").metadata, "list entries carry no metadata or the object's")
        }
        XCTAssertEqual(top.objects.first?.version, try store.head(p + "Z").version, "list and head agree on versions")

        let all = try store.list(ListRequest(prefix: p))
        XCTAssertEqual(
            withoutImplicitMarkers(all.objects.map(\.key)),
            ["Z", "a.txt", "b.txt", "dir-1", "dir/sub/y", "dir/x", "dir0", "dir2/z"].map { p + $0 })
        XCTAssertEqual(all.commonPrefixes, [])

        let inner = try store.list(ListRequest(prefix: p + "dir/", delimiter: "/"))
        XCTAssertEqual(inner.objects.map(\.key).filter { $0 != p + "dir/" }, [p + "dir/x"])
        XCTAssertEqual(inner.commonPrefixes, [p + "dir/sub/"])

        let partial = try store.list(ListRequest(prefix: p + "dir", delimiter: "/"))
        XCTAssertEqual(partial.objects.map(\.key), [p + "dir-1", p + "dir0"])
        XCTAssertEqual(partial.commonPrefixes, [p + "dir/", p + "dir2/"])
    }

    func pagination(_ store: any ObjectStore, _ p: String) throws {
        let keys = (1...5).map { p + "k\($0)" }
        for key in keys { try store.put(key, data: Data(key.utf8)) }
        XCTAssertEqual(try collectPages(store, ListRequest(prefix: p, maxKeys: 2)), keys)

        // Common prefixes count as entries and are not repeated across pages.
        for key in ["g/a/1", "g/a/2", "g/b/1", "g/c", "g/d/1"] { try store.put(p + key, data: Data()) }
        let grouped = try collectPages(store, ListRequest(prefix: p + "g/", delimiter: "/", maxKeys: 1))
        XCTAssertEqual(grouped.filter { $0 != p + "g/" }, ["g/a/", "g/b/", "g/c", "g/d/"].map { p + $0 })
    }

    func startAfter(_ store: any ObjectStore, _ p: String) throws {
        for i in 1...5 { try store.put(p + "k\(i)", data: Data()) }
        let page = try store.list(ListRequest(prefix: p, startAfter: p + "k2"))
        XCTAssertEqual(page.objects.map(\.key), [p + "k3", p + "k4", p + "k5"])
        let between = try store.list(ListRequest(prefix: p, startAfter: p + "k3x"))
        XCTAssertEqual(between.objects.map(\.key), [p + "k4", p + "k5"], "startAfter need not be an existing key")
    }

    // MARK: Copy

    func copy(_ store: any ObjectStore, _ p: String) throws {
        let body = Data("copy me".utf8)
        try store.put(p + "src", data: body, options: PutOptions(contentType: "text/plain", metadata: ["a": "1"]))

        let kept = try store.copy(from: p + "src", to: p + "kept", metadata: nil, condition: .none)
        XCTAssertEqual(kept.size, UInt64(body.count))
        XCTAssertEqual(try store.get(p + "kept").body, body)
        XCTAssertEqual(try store.head(p + "kept").metadata, ["a": "1"])
        XCTAssertEqual(try store.head(p + "kept").contentType, "text/plain")

        try store.copy(from: p + "src", to: p + "replaced", metadata: ["b": "2"], condition: .none)
        XCTAssertEqual(try store.head(p + "replaced").metadata, ["b": "2"])
        XCTAssertEqual(try store.get(p + "replaced").body, body)

        let before = try store.head(p + "src")
        let after = try store.copy(
            from: p + "src", to: p + "src", metadata: ["c": "3"],
            condition: .ifVersionMatches(before.version))
        XCTAssertEqual(try store.head(p + "src").metadata, ["c": "3"])
        XCTAssertEqual(try store.head(p + "src").version, after.version)
        XCTAssertEqual(try store.get(p + "src").body, body)
        if versionsAreContentHashes {
            XCTAssertEqual(after.version, before.version, "a metadata change keeps the content hash")
            return
        }
        XCTAssertNotEqual(after.version, before.version, "copy onto itself makes a new version")
        expectError(.preconditionFailed(key: p + "src")) {
            try store.copy(
                from: p + "src", to: p + "src", metadata: ["d": "4"], condition: .ifVersionMatches(before.version))
        }

        expectError(.preconditionFailed(key: p + "kept")) {
            try store.copy(from: p + "src", to: p + "kept", metadata: nil, condition: .ifAbsent)
        }
        expectError(.notFound(key: p + "missing")) {
            try store.copy(from: p + "missing", to: p + "other", metadata: nil, condition: .none)
        }
    }

    // MARK: Multipart

    func multipart(_ store: any ObjectStore, _ p: String) throws {
        let key = p + "big"
        let uploadID = try store.createMultipartUpload(
            key, options: PutOptions(contentType: "application/x-test", metadata: ["parts": "3"]))
        let inProgress = try store.listMultipartUploads(prefix: p)
        XCTAssertEqual(inProgress.map(\.uploadID), [uploadID])
        XCTAssertEqual(inProgress.first?.key, key)

        let bodies = [Data(repeating: 1, count: partSize), Data(repeating: 2, count: partSize), Data("tail".utf8)]
        // Uploaded out of order; completed in order.
        var etags: [Int: String] = [:]
        for number in [2, 3, 1] {
            etags[number] = try store.uploadPart(
                key, uploadID: uploadID, number: number, body: .data(bodies[number - 1]))
        }
        let parts = (1...3).map { CompletedPart(number: $0, etag: etags[$0]!) }
        let info = try store.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: .ifAbsent)
        XCTAssertEqual(info.size, UInt64(2 * partSize + 4))
        XCTAssertEqual(try store.get(key).body, bodies[0] + bodies[1] + bodies[2])
        let head = try store.head(key)
        XCTAssertEqual(head.metadata, ["parts": "3"])
        XCTAssertEqual(head.contentType, "application/x-test")
        XCTAssertEqual(head.version, info.version)
        XCTAssertEqual(try store.listMultipartUploads(prefix: p), [], "a completed upload is gone")
    }

    /// Parts copied from ranges of an existing object, then a new tail: the append path of a staged file.
    func uploadPartCopy(_ store: any ObjectStore, _ p: String) throws {
        let key = p + "log"
        let first = Data((0..<(2 * partSize)).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let old = try store.put(key, data: first)
        let uploadID = try store.createMultipartUpload(key, options: PutOptions())
        let size = UInt64(partSize)
        let part1 = try store.uploadPartCopy(
            key, uploadID: uploadID, number: 1, source: key, range: 0..<size,
            sourceVersion: old.version)
        let part2 = try store.uploadPartCopy(
            key, uploadID: uploadID, number: 2, source: key, range: size..<(2 * size),
            sourceVersion: old.version)
        XCTAssertEqual([part1.number, part2.number], [1, 2])
        let etag3 = try store.uploadPart(key, uploadID: uploadID, number: 3, body: .data(Data("appended".utf8)))
        try store.completeMultipartUpload(
            key, uploadID: uploadID,
            parts: [
                CompletedPart(number: 1, etag: part1.etag),
                CompletedPart(number: 2, etag: part2.etag), CompletedPart(number: 3, etag: etag3),
            ],
            condition: .ifVersionMatches(old.version))
        XCTAssertEqual(try store.get(key).body, first + Data("appended".utf8))
    }

    /// Copied parts in an upload declared with part checksums, beside an uploaded part with its CRC-32C (an append
    /// to a large object): the completion lists each copy as the store answered it. Where the store gives a copy's
    /// CRC it is that of the bytes copied (SeaweedFS refuses a completion that leaves it out).
    func uploadPartCopyWithChecksums(_ store: any ObjectStore, _ p: String) throws {
        let key = p + "log"
        let first = Data((0..<(2 * partSize)).map { UInt8(truncatingIfNeeded: ($0 &* 11) ^ ($0 >> 8)) })
        let old = try store.put(key, data: first)
        let uploadID = try store.createMultipartUpload(key, options: PutOptions(partChecksums: true))
        let size = UInt64(partSize)
        var parts: [CompletedPart] = []
        for (index, range) in [0..<size, size..<(2 * size)].enumerated() {
            let part = try store.uploadPartCopy(
                key, uploadID: uploadID, number: index + 1, source: key, range: range, sourceVersion: old.version)
            if let crc = part.crc32c {
                XCTAssertEqual(crc, CRC32C.checksum(first[Int(range.lowerBound)..<Int(range.upperBound)]))
            }
            parts.append(part)
        }
        let tail = Data("appended".utf8)
        let etag = try store.uploadPart(
            key, uploadID: uploadID, number: 3, body: .data(tail), crc32c: CRC32C.checksum(tail))
        parts.append(CompletedPart(number: 3, etag: etag, crc32c: CRC32C.checksum(tail)))
        try store.completeMultipartUpload(
            key, uploadID: uploadID, parts: parts, condition: .ifVersionMatches(old.version))
        XCTAssertEqual(try store.get(key).body, first + tail)
    }

    /// A range handed over in pieces; a consumer that stops ends it; another version is refused.
    func streamingGet(_ store: any ObjectStore, _ p: String) throws {
        let key = p + "stream"
        let body = Data((0..<(3 << 20) + 17).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        let info = try store.put(key, data: body)
        let received = Locked(Data())
        try store.getStreaming(key, range: 100..<UInt64(body.count), version: info.version) { piece in
            received.update { $0.append(contentsOf: piece) }
            return true
        }
        XCTAssertEqual(received.value, body.subdata(in: 100..<body.count))
        let pieces = Locked(0)
        try store.getStreaming(key, range: 0..<UInt64(body.count), version: nil) { _ in
            pieces.update { $0 += 1 }
            return false
        }
        XCTAssertEqual(pieces.value, 1)
        try store.put(key, data: Data("changed".utf8))
        expectError(.preconditionFailed(key: key)) {
            try store.getStreaming(key, range: 0..<7, version: info.version) { _ in true }
        }
    }

    func multipartConditionAndAbort(_ store: any ObjectStore, _ p: String) throws {
        let key = p + "taken"
        try store.put(key, data: Data("already here".utf8))
        let uploadID = try store.createMultipartUpload(key, options: PutOptions())
        let etag = try store.uploadPart(key, uploadID: uploadID, number: 1, body: .data(Data("new".utf8)))
        expectError(.preconditionFailed(key: key)) {
            try store.completeMultipartUpload(
                key, uploadID: uploadID, parts: [CompletedPart(number: 1, etag: etag)],
                condition: .ifAbsent)
        }
        XCTAssertEqual(try store.get(key).body, Data("already here".utf8))
        try store.abortMultipartUpload(key, uploadID: uploadID)
        XCTAssertEqual(try store.listMultipartUploads(prefix: p), [])
    }

    func multipartErrors(_ store: any ObjectStore, _ p: String) throws {
        let key = p + "bad"
        let uploadID = try store.createMultipartUpload(key, options: PutOptions())
        let one = try store.uploadPart(
            key, uploadID: uploadID, number: 1, body: .data(Data(repeating: 7, count: partSize)))
        let two = try store.uploadPart(key, uploadID: uploadID, number: 2, body: .data(Data("end".utf8)))
        expectInvalidRequest("parts out of order") {
            try store.completeMultipartUpload(
                key, uploadID: uploadID,
                parts: [CompletedPart(number: 2, etag: two), CompletedPart(number: 1, etag: one)],
                condition: .none)
        }
        expectInvalidRequest("wrong etag") {
            try store.completeMultipartUpload(
                key, uploadID: uploadID,
                parts: [CompletedPart(number: 1, etag: two), CompletedPart(number: 2, etag: two)],
                condition: .none)
        }
        expectInvalidRequest("part never uploaded") {
            try store.completeMultipartUpload(
                key, uploadID: uploadID,
                parts: [CompletedPart(number: 1, etag: one), CompletedPart(number: 3, etag: two)],
                condition: .none)
        }
        expectError(.notFound(key: key)) {
            try store.uploadPart(key, uploadID: "no-such-upload", number: 1, body: .data(Data()))
        }
        expectError(.notFound(key: key)) {
            try store.completeMultipartUpload(
                key, uploadID: "no-such-upload", parts: [CompletedPart(number: 1, etag: one)],
                condition: .none)
        }
        expectError(.notFound(key: key)) { try store.abortMultipartUpload(key, uploadID: "no-such-upload") }
        expectError(.notFound(key: key)) { try store.head(key) }
        try store.abortMultipartUpload(key, uploadID: uploadID)
    }

    // MARK: Bodies from files, directory markers

    /// Parts with their CRC32C, as a streamed upload sends them (declared at creation, given at completion): the
    /// object is their bytes; a part whose checksum is wrong is refused where the store checks.
    func partChecksums(_ store: any ObjectStore, _ p: String) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("crc-\(UUID().uuidString)").path
        let body = Data((0..<(partSize + 3000)).map { UInt8(truncatingIfNeeded: ($0 &* 13) ^ ($0 >> 7)) })
        try body.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let key = p + "checksummed"
        let uploadID = try store.createMultipartUpload(key, options: PutOptions(partChecksums: true))
        let whole = body.startIndex
        let ranges = [0..<partSize, partSize..<body.count]
        var parts: [CompletedPart] = []
        for (index, range) in ranges.enumerated() {
            let crc = CRC32C.checksum(Data(body[(whole + range.lowerBound)..<(whole + range.upperBound)]))
            let etag = try store.uploadPart(
                key, uploadID: uploadID, number: index + 1,
                body: .fileRange(path: path, offset: UInt64(range.lowerBound), length: UInt64(range.count)),
                crc32c: crc)
            parts.append(CompletedPart(number: index + 1, etag: etag, crc32c: crc))
        }
        if checksPartChecksums {
            XCTAssertThrowsError(
                try store.uploadPart(
                    key, uploadID: uploadID, number: 2, body: .data(Data("damaged".utf8)),
                    crc32c: CRC32C.checksum(Data("damages".utf8))),
                "a part whose bytes do not match its CRC32C is refused")
        }
        try store.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: .ifAbsent)
        XCTAssertEqual(try store.get(key).body, body, "the refused part replaced nothing")
    }

    func putFromFile(_ store: any ObjectStore, _ p: String) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("body-\(UUID().uuidString)").path
        let body = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try body.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let info = try store.put(p + "from-file", body: .file(path: path), options: PutOptions())
        XCTAssertEqual(info.size, UInt64(body.count))
        XCTAssertEqual(try store.get(p + "from-file").body, body)
    }

    /// Parts (and a PUT) sent as ranges of one local file, as a streamed upload sends its staged file: exactly the
    /// bytes of each range go up, and a range past the end of the file is refused rather than sent short.
    func partsFromFileRanges(_ store: any ObjectStore, _ p: String) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ranges-\(UUID().uuidString)").path
        let body = Data((0..<(2 * partSize + 1000)).map { UInt8(truncatingIfNeeded: ($0 &* 7) ^ ($0 >> 9)) })
        try body.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let key = p + "ranged"
        let uploadID = try store.createMultipartUpload(key, options: PutOptions())
        // Part 1 is the file's second stretch, part 2 its first: the offsets, not the file position, decide.
        let second = try store.uploadPart(
            key, uploadID: uploadID, number: 2,
            body: .fileRange(path: path, offset: 0, length: UInt64(partSize)))
        let first = try store.uploadPart(
            key, uploadID: uploadID, number: 1,
            body: .fileRange(path: path, offset: UInt64(partSize), length: UInt64(partSize)))
        let tail = try store.uploadPart(
            key, uploadID: uploadID, number: 3,
            body: .fileRange(path: path, offset: UInt64(2 * partSize + 10), length: 990))
        let parts = [
            CompletedPart(number: 1, etag: first), CompletedPart(number: 2, etag: second),
            CompletedPart(number: 3, etag: tail),
        ]
        try store.completeMultipartUpload(key, uploadID: uploadID, parts: parts, condition: .ifAbsent)
        let whole = body.startIndex
        let expected =
            body[(whole + partSize)..<(whole + 2 * partSize)] + body[whole..<(whole + partSize)]
            + body[(whole + 2 * partSize + 10)...]
        XCTAssertEqual(try store.get(key).body, Data(expected))

        let info = try store.put(
            p + "put-range", body: .fileRange(path: path, offset: 5, length: 300), options: PutOptions())
        XCTAssertEqual(info.size, 300)
        XCTAssertEqual(try store.get(p + "put-range").body, Data(body[(whole + 5)..<(whole + 305)]))
        XCTAssertThrowsError(
            try store.put(
                p + "past-end", body: .fileRange(path: path, offset: UInt64(body.count - 10), length: 20),
                options: PutOptions()),
            "a range past the end of the file is refused")
        XCTAssertThrowsError(try store.head(p + "past-end"), "nothing stored from a short range")
    }

    func directoryMarker(_ store: any ObjectStore, _ p: String) throws {
        try store.put(p + "d/", data: Data(), options: PutOptions(metadata: ["mode": "40755"]))
        let head = try store.head(p + "d/")
        XCTAssertEqual(head.size, 0)
        XCTAssertEqual(head.metadata, markersKeepMetadata ? ["mode": "40755"] : [:])
        XCTAssertEqual(try DirectoryMarkers.markersKeepMetadata(store, probeKey: p + "probe/"), markersKeepMetadata)

        let top = try store.list(ListRequest(prefix: p, delimiter: "/"))
        XCTAssertEqual(top.commonPrefixes, [p + "d/"])
        XCTAssertEqual(top.objects.map(\.key), [], "with a delimiter the marker is a common prefix, not an object")
        XCTAssertEqual(try store.list(ListRequest(prefix: p + "d/")).objects.map(\.key), [p + "d/"])

        try store.put(p + "d/file", data: Data("x".utf8))
        let inside = try store.list(ListRequest(prefix: p + "d/", delimiter: "/"))
        XCTAssertEqual(inside.objects.map(\.key), [p + "d/", p + "d/file"])

        // Deleting the marker of a directory with content leaves the directory listable.
        try store.delete(p + "d/")
        XCTAssertEqual(try store.list(ListRequest(prefix: p, delimiter: "/")).commonPrefixes, [p + "d/"])
        XCTAssertEqual(try store.get(p + "d/file").body, Data("x".utf8))

        // The sidecar is an ordinary object: it keeps metadata everywhere, and travels with a copy.
        let sidecar = DirectoryMarkers.sidecarKey(forMarker: p + "s/d/")
        try store.put(sidecar, data: Data(), options: PutOptions(metadata: ["mode": "40700"]))
        XCTAssertEqual(try store.head(sidecar).metadata, ["mode": "40700"])
        try store.copy(
            from: sidecar, to: DirectoryMarkers.sidecarKey(forMarker: p + "s/e/"), metadata: nil, condition: .none)
        XCTAssertEqual(try store.head(p + "s/e/" + DirectoryMarkers.sidecarName).metadata, ["mode": "40700"])
        try store.delete(sidecar)
        try store.delete(p + "s/e/" + DirectoryMarkers.sidecarName)
    }

    /// Many keys at once (S3: one DeleteObjects request per 1,000), missing ones included, one result per key.
    func deleteObjects(_ store: any ObjectStore, _ p: String) throws {
        let keys = (0..<23).map { p + "k\($0)" } + [p + "d/x", p + "odd &<'\">", p + "d/"]
        for key in keys { try store.put(key, data: Data(key.hasSuffix("/") ? [] : [1])) }
        try store.put(p + "kept", data: Data("stay".utf8))
        let results = store.deleteObjects(keys + [p + "missing"])
        XCTAssertEqual(results.count, keys.count + 1)
        for (key, result) in zip(keys + [p + "missing"], results) {
            if case .failure(let error) = result { XCTFail("\(key): \(error)") }
        }
        XCTAssertEqual(try store.listAll(prefix: p).objects.map(\.key), [p + "kept"])
        XCTAssertEqual(store.deleteObjects([]).count, 0)
    }

    // MARK: Helpers

    /// A backend may list directories that exist only implicitly as marker objects (the local backend lists every
    /// directory so); S3 does not. Checks that wrote no markers ignore them.
    private func withoutImplicitMarkers(_ keys: [String]) -> [String] {
        keys.filter { !$0.hasSuffix("/") }
    }

    /// Follows continuation tokens, checking each page's size; returns objects and common prefixes in order.
    private func collectPages(
        _ store: any ObjectStore, _ first: ListRequest,
        file: StaticString = #filePath, line: UInt = #line
    ) throws -> [String] {
        var request = first
        var entries: [String] = []
        for _ in 0..<20 {
            let page = try store.list(request)
            let pageEntries = (page.objects.map(\.key) + page.commonPrefixes).sorted {
                Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8))
            }
            XCTAssertLessThanOrEqual(pageEntries.count, request.maxKeys, "page too large", file: file, line: line)
            entries += pageEntries
            guard let token = page.nextContinuationToken else { return entries }
            request.continuationToken = token
        }
        XCTFail("listing did not end after 20 pages", file: file, line: line)
        return entries
    }

    private func expectError<T>(
        _ expected: ObjectStoreError, file: StaticString = #filePath, line: UInt = #line,
        _ body: () throws -> T
    ) {
        do {
            _ = try body()
            XCTFail("expected \(expected), but it succeeded", file: file, line: line)
        } catch let error as ObjectStoreError {
            XCTAssertEqual(error, expected, file: file, line: line)
        } catch {
            XCTFail("expected \(expected), got \(error)", file: file, line: line)
        }
    }

    private func expectInvalidRequest<T>(
        _ what: String, file: StaticString = #filePath, line: UInt = #line,
        _ body: () throws -> T
    ) {
        do {
            _ = try body()
            XCTFail("\(what): expected invalidRequest, but it succeeded", file: file, line: line)
        } catch ObjectStoreError.invalidRequest {
            return
        } catch {
            XCTFail("\(what): expected invalidRequest, got \(error)", file: file, line: line)
        }
    }
}

final class MemoryObjectStoreConformanceTests: XCTestCase {
    func testConformance() {
        ObjectStoreConformance(partSize: 64 << 10, makeStore: { MemoryObjectStore() }).run()
    }

    func testConformanceUnderAKeyPrefix() {
        let shared = MemoryObjectStore()
        ObjectStoreConformance(keyPrefix: "some/prefix/", partSize: 64 << 10, makeStore: { shared }).run()
    }

    /// Keys are bytes, as in a bucket: `caf\u{e9}` (NFC) and `cafe\u{301}` (NFD), equal as Swift strings, are two
    /// objects, each written, read, copied onto, uploaded to and deleted apart from the other.
    func testCanonicallyEquivalentKeysAreTwoObjects() throws {
        let store = MemoryObjectStore()
        let composed = "d/caf\u{e9}"
        let decomposed = "d/cafe\u{301}"
        try store.put(composed, data: Data("composed".utf8))
        try store.put(decomposed, data: Data("decomposed".utf8), options: PutOptions(condition: .ifAbsent))
        XCTAssertEqual(try store.get(composed).body, Data("composed".utf8))
        XCTAssertEqual(try store.get(decomposed).body, Data("decomposed".utf8))
        XCTAssertEqual(
            try store.listAll(prefix: "d/").objects.map { Array($0.key.utf8) },
            [decomposed, composed].map { Array($0.utf8) })
        try store.put(composed + "/x", data: Data())
        try store.put(decomposed + "/x", data: Data())
        XCTAssertEqual(
            try store.listAll(prefix: "d/", delimiter: "/").commonPrefixes.map { Array($0.utf8) },
            [decomposed + "/", composed + "/"].map { Array($0.utf8) }, "two directories")

        try store.copy(from: composed, to: decomposed, metadata: nil, condition: .none)
        XCTAssertEqual(try store.get(decomposed).body, Data("composed".utf8))
        let upload = try store.createMultipartUpload(composed, options: PutOptions())
        XCTAssertThrowsError(
            try store.uploadPart(decomposed, uploadID: upload, number: 1, body: .data(Data()), crc32c: nil))
        try store.abortMultipartUpload(composed, uploadID: upload)

        try store.delete(decomposed)
        XCTAssertEqual(try store.get(composed).body, Data("composed".utf8))
        XCTAssertThrowsError(try store.head(decomposed))
    }
}
