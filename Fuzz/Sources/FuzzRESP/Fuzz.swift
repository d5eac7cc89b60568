import Locking
import RedisClient

/// Redis replies (RESP) from arbitrary bytes, through hiredis' reader and our conversion.
func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = RedisReplyReader.countReplies(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// The symbol libFuzzer's own main (pulled in by the linker in some builds) calls; main.swift runs the driver.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { fuzz(data, size) }
