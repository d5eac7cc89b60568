import Foundation
import Glibc
import ObjectStore

/// Appending to (or changing the end of) a large object: the parts before the first changed byte are copied
/// on the server (UploadPartCopy) and only the rest goes up from the staged file.
extension FileSystem {
    /// The whole upload as a multipart upload reusing the stored version's unchanged parts, when that saves at
    /// least one part; nil when it does not apply or fails (the caller then uploads the staged file as usual,
    /// which also handles conflicts and recovery).
    func uploadReusingStoredParts(
        _ job: (staged: StagedFile, node: Node, options: PutOptions),
        key: String
    ) -> ObjectInfo? {
        guard let partSize = options.multipartPartSize.map(UInt64.init), job.node.inStore,
            case .ifVersionMatches(let version) = job.options.condition, job.node.version == version
        else { return nil }
        let unchanged = min(job.node.changedFrom ?? job.node.size, job.node.storedSize, job.node.size)
        let copyEnd = unchanged / partSize * partSize
        guard copyEnd >= partSize else { return nil }
        var uploadID: String?
        do throws(ObjectStoreError) {
            // Part checksums, as a streamed upload has: each part uploaded carries its CRC-32C (the server checks
            // it), each copied part the CRC the server answers for its copy (the completion must list every one
            // where the server gives them: SeaweedFS refuses it otherwise).
            var options = job.options
            options.partChecksums = true
            let id = try store.createMultipartUpload(key, options: options)
            uploadID = id
            var parts: [CompletedPart] = []
            var offset: UInt64 = 0
            while offset < copyEnd {
                parts.append(
                    try store.uploadPartCopy(
                        key, uploadID: id, number: parts.count + 1, source: key,
                        range: offset..<(offset + partSize), sourceVersion: version))
                offset += partSize
            }
            while offset < job.node.size {
                let count = Int(min(partSize, job.node.size - offset))
                let body = try readStaged(job.staged, at: offset, count: count)
                let number = parts.count + 1
                let crc = CRC32C.checksum(body)
                let etag = try store.uploadPart(key, uploadID: id, number: number, body: .data(body), crc32c: crc)
                parts.append(CompletedPart(number: number, etag: etag, crc32c: crc))
                offset += UInt64(count)
            }
            var info = try store.completeMultipartUpload(
                key, uploadID: id, parts: parts,
                condition: .ifVersionMatches(version))
            if info.size == 0 { info.size = job.node.size }  // completion could not HEAD: we know the size
            logger.debug(
                "upload reused stored parts",
                metadata: [
                    "key": "\(key)", "copied": "\(copyEnd)",
                    "uploaded": "\(job.node.size - copyEnd)",
                ])
            return info
        } catch {
            if let uploadID { try? store.abortMultipartUpload(key, uploadID: uploadID) }
            logger.debug(
                "upload reusing stored parts failed; uploading the whole file",
                metadata: ["key": "\(key)", "error": "\(error)"])
            return nil
        }
    }

    private func readStaged(_ staged: StagedFile, at offset: UInt64, count: Int) throws(ObjectStoreError) -> Data {
        let data: Data
        do { data = try staged.read(at: offset, count: count) } catch { throw .other("staging read: \(error)") }
        guard data.count == count else { throw .other("staged file shorter than expected") }
        return data
    }
}
