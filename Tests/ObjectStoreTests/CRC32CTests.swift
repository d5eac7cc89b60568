import Foundation
import XCTest

@testable import ObjectStore

/// CRC-32C as S3 computes it (x-amz-checksum-crc32c): known values, the instruction path against the table at
/// every alignment and length around its block boundaries, joining, and S3's base64 of the big-endian bytes.
final class CRC32CTests: XCTestCase {
    func testKnownValues() {
        // RFC 3720 (iSCSI) B.4 and the usual check value.
        XCTAssertEqual(CRC32C.checksum(Data("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum(Data(repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum(Data(repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum(Data((0..<32).map { UInt8($0) })), 0x46DD_794E)
        XCTAssertEqual(CRC32C.checksum(Data()), 0)
    }

    func testTheFastPathAgreesWithTheTableEverywhere() {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<(3 * 8192 * 2 + 100)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { all in
            for length in [0, 1, 7, 8, 9, 100, 8191, 24_575, 24_576, 24_577, 3 * 8192 * 2 + 90] {
                for offset in 0..<8 where offset + length <= all.count {
                    let slice = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                    XCTAssertEqual(
                        CRC32C.update(0, slice), CRC32C.software(0, slice), "length \(length) offset \(offset)")
                    // Continuing from a CRC: the same as one pass.
                    let half = length / 3
                    let first = CRC32C.update(0, UnsafeRawBufferPointer(rebasing: slice[..<half]))
                    let second = UnsafeRawBufferPointer(rebasing: slice[half...])
                    XCTAssertEqual(CRC32C.update(first, second), CRC32C.software(0, slice))
                    XCTAssertEqual(
                        CRC32C.combine(first, CRC32C.update(0, second), secondLength: UInt64(second.count)),
                        CRC32C.software(0, slice))
                }
            }
        }
    }

    func testS3WritesItAsTheBigEndianBytesInBase64() {
        XCTAssertEqual(CRC32C.base64(0xE306_9283), "4waSgw==")
        XCTAssertEqual(CRC32C.base64(0), "AAAAAA==")
    }

    func testTheChecksumOfAFileRangeIsThatOfItsBytes() throws {
        let bytes = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("crc-\(UUID().uuidString)").path
        try bytes.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertEqual(try CRC32C.checksum(of: .file(path: path)), CRC32C.checksum(bytes))
        XCTAssertEqual(
            try CRC32C.checksum(of: .fileRange(path: path, offset: 5, length: 2_000_000)),
            CRC32C.checksum(bytes[5..<2_000_005]))
        XCTAssertThrowsError(
            try CRC32C.checksum(of: .fileRange(path: path, offset: 2_999_000, length: 2000)), "past the end")
    }
}
