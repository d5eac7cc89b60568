import Foundation
import ObjectStore

/// S3 response documents (ListObjectsV2 results, errors) from arbitrary bytes.
func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = ReplyParsers.s3XML(Data(bytes: data, count: size))
    return 0
}

/// The symbol libFuzzer's own main (pulled in by the linker in some builds) calls; main.swift runs the driver.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { fuzz(data, size) }
