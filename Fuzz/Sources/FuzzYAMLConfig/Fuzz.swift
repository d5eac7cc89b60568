import BucketfsCLI

/// Config files (YAML) from arbitrary text: a bad one must be a CLIError, never a trap.
func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    var configuration = Configuration()
    do {
        try configuration.apply(yamlText: text, path: "fuzz.yaml")
        _ = configuration.redactedYAML(source: configuration.sourceFromStorage())
    } catch {
        _ = error.description
    }
    return 0
}

/// The symbol libFuzzer's own main (pulled in by the linker in some builds) calls; main.swift runs the driver.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { fuzz(data, size) }
