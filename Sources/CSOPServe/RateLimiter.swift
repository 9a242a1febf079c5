import CSOPCore
import Synchronization

/// Token buckets, one per key (a token's subject, or a client address without auth): each
/// holds up to `burst` requests and refills at `rate` per second. Thread-safe.
public final class RateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: Double
    }

    private let rate: Double
    private let burst: Double
    private let buckets = Mutex<[String: Bucket]>([:])
    /// Past this many keys, buckets that have refilled completely are forgotten.
    private static let maxKeys = 100_000

    /// Takes that were refused (each answered `RATE_LIMITED`), for the metrics.
    public var refusedCount: Int { refused.load(ordering: .relaxed) }
    private let refused = Atomic<Int>(0)

    /// Whether any request can be limited (a rate was set).
    public var isEnabled: Bool { rate > 0 }

    /// - Parameter rate: requests per second per key; 0 lets everything through.
    public init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = max(1, burst)
    }

    /// Takes `count` requests from `key`'s bucket.
    /// - Returns: nil when allowed; else the seconds until that many are available.
    public func take(_ key: String, count: Int = 1, now: Double? = nil) -> Double? {
        guard rate > 0 else { return nil }
        let now = now ?? monotonicMilliseconds() / 1000
        let wanted = Double(count)
        return buckets.withLock { buckets in
            var bucket = buckets[key] ?? Bucket(tokens: burst, updated: now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            defer {
                if buckets.count >= Self.maxKeys && buckets[key] == nil { prune(&buckets, now: now) }
                buckets[key] = bucket
            }
            guard bucket.tokens >= wanted else {
                refused.add(1, ordering: .relaxed)
                return (min(wanted, burst) - bucket.tokens) / rate
            }
            bucket.tokens -= wanted
            return nil
        }
    }

    private func prune(_ buckets: inout [String: Bucket], now: Double) {
        buckets = buckets.filter { min(burst, $0.value.tokens + (now - $0.value.updated) * rate) < burst }
    }
}
