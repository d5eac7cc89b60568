import XCTest

/// The shared `LockingSuite` as test methods, once: each strategy's test class inherits them and sets `suite` in
/// its `setUp`. The class itself runs nothing.
class LockingStrategyTestCase: XCTestCase {
    var suite: LockingSuite!

    override func setUpWithError() throws {
        if type(of: self) == LockingStrategyTestCase.self { throw XCTSkip("abstract") }
    }

    func testExclusionAndTokens() throws { try suite.exclusionAndTokens() }
    func testExpiryTakeover() throws { try suite.expiryTakeover() }
    func testRenewExtends() throws { try suite.renewExtends() }
    func testHoldersListing() throws { try suite.holdersListing() }
    func testRacingAcquirers() throws { try suite.racingAcquirers() }
    func testManagerRenews() throws { try suite.managerRenews() }
    func testManagerWaits() throws { try suite.managerWaits() }
    func testWithLockHelper() throws { try suite.withLockHelper() }
    func testInvalidRequests() throws { try suite.invalidRequests() }
    func testSharedLeases() throws { try suite.sharedLeases() }
    func testExpiredSharerIsDropped() throws { try suite.expiredSharerIsDropped() }
    func testReleaseFeedHearsRelease() throws { try suite.releaseFeedHearsRelease() }
}
