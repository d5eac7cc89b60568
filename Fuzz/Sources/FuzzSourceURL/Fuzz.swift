import ObjectStore

/// Mount source URLs (and the redaction of URL passwords) from arbitrary text.
func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = ReplyParsers.sourceURL(String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self))
    return 0
}

/// The symbol libFuzzer's own main (pulled in by the linker in some builds) calls; main.swift runs the driver.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { fuzz(data, size) }
