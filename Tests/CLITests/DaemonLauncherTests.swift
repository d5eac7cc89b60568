import Foundation
import Glibc
import XCTest

@testable import BucketfsCLI

final class DaemonLauncherTests: XCTestCase {
    /// The launcher's arguments reach the daemon through a pipe, byte for byte.
    func testArgumentsRoundTripThroughThePipe() throws {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let arguments = ["mount", "s3://b/p/", "/mnt/x", "--redis-url", "redis://:pw@h:1/0", "", "-o", "a=b,c"]
        XCTAssertTrue(DaemonLauncher.writeArguments(arguments, to: fds[1]))
        close(fds[1])
        setenv(DaemonLauncher.argumentsEnvironmentKey, String(fds[0]), 1)
        XCTAssertEqual(DaemonLauncher.handedArguments(), arguments)
        XCTAssertNil(ProcessInfo.processInfo.environment[DaemonLauncher.argumentsEnvironmentKey])
    }
}
