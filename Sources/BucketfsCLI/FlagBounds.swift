import ArgumentParser

/// The allowed range of every numeric command-line flag that is not a `-o` option (those are in `Bounds`):
/// a value outside it — negative, zero where zero means nothing, `inf`, `nan`, absurdly large — is one line
/// naming the flag and the range (a `ValidationError`, so exit 64), never a trap or a busy loop.
enum FlagBounds {
    /// `unmount --timeout`: waiting 0 s would always fail; a day is plenty for the last uploads.
    static let unmountTimeout = 0.001...86_400
    /// `lock run --wait`: 0 tries once.
    static let lockWait = 0.0...86_400
    /// `events tail -n`: 0 with --follow prints new events only.
    static let eventLines = 0...1_000_000
    /// `events tail --interval`: a poll every 10 ms is already a busy loop.
    static let pollInterval = 0.01...3_600
    static let listLimit = 1...1_000_000
    /// `sessions cleanup --max-idle-hours`, `uploads cleanup --older-than`: 0 is "all of them, now" (asked for
    /// explicitly, e.g. to abort an upload left in flight); at most ten years.
    static let idleHours = 0.0...87_600

    static func check(_ value: Double?, flag: String, in range: ClosedRange<Double>, unit: String) throws {
        guard let value else { return }
        guard value.isFinite, range.contains(value) else {
            // Whole numbers without ".0"; anything huge or not finite as Swift prints it (Int(1e300) would trap).
            let shown = value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
            throw ValidationError(
                "bad value for \(flag): \(shown) (expected \(unit) from "
                    + "\(Bounds.text(range.lowerBound)) to \(Bounds.text(range.upperBound)))")
        }
    }

    static func check(_ value: Int?, flag: String, in range: ClosedRange<Int>) throws {
        guard let value else { return }
        guard range.contains(value) else {
            throw ValidationError(
                "bad value for \(flag): \(value) (expected an integer from \(range.lowerBound) "
                    + "to \(range.upperBound))")
        }
    }
}
