/// Exponential backoff with jitter: attempt n (from 0) waits
/// `min(cap, base × 2ⁿ) × (1 − jitter + jitter × r)` for a random r in [0, 1).
public struct BackoffPolicy: Sendable, Hashable {
    public var baseMilliseconds: Double
    public var capMilliseconds: Double
    /// Fraction of the delay that is randomized (0 = none, 0.5 = "equal jitter").
    public var jitter: Double

    public static let standard = BackoffPolicy(baseMilliseconds: 100, capMilliseconds: 10_000, jitter: 0.5)

    public init(baseMilliseconds: Double, capMilliseconds: Double, jitter: Double) {
        self.baseMilliseconds = baseMilliseconds
        self.capMilliseconds = capMilliseconds
        self.jitter = jitter
    }

    /// The wait before retry number `attempt + 1`, given a random `r` in [0, 1).
    public func delay(afterAttempt attempt: Int, random r: Double) -> Double {
        let exponential = baseMilliseconds * Double(1 << min(max(attempt, 0), 30))
        let capped = min(capMilliseconds, exponential)
        return capped * (1 - jitter + jitter * r)
    }
}
