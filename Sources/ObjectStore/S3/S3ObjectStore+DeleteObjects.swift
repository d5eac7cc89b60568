import Foundation

extension S3ObjectStore {
    /// DeleteObjects in quiet mode (the answer lists failures only), up to `deleteBatchSize` keys a request, with
    /// the Content-MD5 S3 requires. Keys XML 1.0 cannot carry (control characters) are deleted one by one. A
    /// request that fails as a whole (after retries) fails its keys; the other requests still go.
    public func deleteObjects(_ keys: [String]) -> [Result<Void, ObjectStoreError>] {
        var results = [Result<Void, ObjectStoreError>](repeating: .success(()), count: keys.count)
        var batch: [Int] = []
        func flush() {
            guard !batch.isEmpty else { return }
            for (index, result) in zip(batch, deleteBatch(batch.map { keys[$0] })) { results[index] = result }
            batch = []
        }
        for (index, key) in keys.enumerated() {
            do throws(ObjectStoreError) {
                try checkKey(key)
            } catch {
                results[index] = .failure(error)
                continue
            }
            if key.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" && $0 != "\n" && $0 != "\r" })
                || key.contains("\r")
            {
                results[index] = Result { () throws(ObjectStoreError) in try delete(key, condition: .none) }
                continue
            }
            batch.append(index)
            if batch.count == deleteBatchSize { flush() }
        }
        flush()
        return results
    }

    private func deleteBatch(_ keys: [String]) -> [Result<Void, ObjectStoreError>] {
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
        xml += "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>"
        for key in keys { xml += "<Object><Key>\(S3XML.escape(key))</Key></Object>" }
        xml += "</Delete>"
        let body = Data(xml.utf8)
        let headers = [
            ("content-type", "application/xml"),
            ("content-md5", Data(Hashing.md5(body)).base64EncodedString()),
        ]
        let answer: S3XML
        do throws(ObjectStoreError) {
            let sent = try send(
                Request(
                    method: "POST", key: nil, query: [("delete", "")], headers: headers,
                    body: .data(body)))
            guard sent.response.status == 200 else { throw mapError(sent.response, key: keys.first) }
            guard let parsed = S3XML.parse(sent.response.body), parsed.name == "DeleteResult" else {
                throw .other("S3 DeleteObjects on \(bucket): unreadable response")
            }
            answer = parsed
        } catch {
            return keys.map { _ in .failure(error) }
        }
        var failed: [String: ObjectStoreError] = [:]
        for error in answer.all("Error") {
            guard let key = error.value("Key") else { continue }
            let code = error.value("Code") ?? ""
            // A key that is already gone is deleted, as DELETE of a missing key is.
            if code == "NoSuchKey" { continue }
            failed[key] =
                code == "AccessDenied"
                ? .accessDenied(key)
                : .other("DeleteObjects \(key): \(code) \(error.value("Message") ?? "")")
        }
        return keys.map { key in failed[key].map { .failure($0) } ?? .success(()) }
    }
}
