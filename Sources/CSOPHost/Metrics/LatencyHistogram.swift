import CSOPCore
import Prometheus
import Synchronization

/// `csop_request_duration_seconds` for one action: a Prometheus histogram recorded with one
/// relaxed atomic add per bucket hit and one for the sum, no lock.
///
/// Hand-written because it is on every request's path: swift-prometheus's histogram takes a
/// lock and scans every bucket with 128-bit `Duration` arithmetic, which made a metered
/// no-op dispatch about 0.3 µs slower; this costs a binary search over 23 integers and two
/// atomic adds. The buckets are ``MetricsRegistry/durationBuckets``, written as
/// swift-prometheus writes them, and ``HostMetrics`` emits these beside the registry's series.
final class LatencyHistogram: Sendable {
    let action: String
    /// Hits per bucket (not cumulative); the last is past the largest bound (`+Inf`).
    private let buckets: [Slot]
    private let sumNanoseconds = Atomic<Int>(0)

    private final class Slot: Sendable {
        let count = Atomic<Int>(0)
    }

    /// Upper bounds in nanoseconds, ascending.
    static let bounds: [Int] = MetricsRegistry.durationBuckets.map { duration in
        Int(duration.components.seconds) * 1_000_000_000 + Int(duration.components.attoseconds / 1_000_000_000)
    }
    /// The `le` labels, as swift-prometheus writes durations (seconds, fraction without trailing zeros).
    static let labels: [String] = MetricsRegistry.durationBuckets.map(\.bucketRepresentation)

    init(action: String) {
        self.action = action
        buckets = (0...Self.bounds.count).map { _ in Slot() }
    }

    /// Counts one answer that took `nanoseconds`.
    func record(nanoseconds: Int) {
        let bounds = Self.bounds
        var low = 0
        var high = bounds.count
        while low < high {
            let middle = (low + high) / 2
            if nanoseconds <= bounds[middle] { high = middle } else { low = middle + 1 }
        }
        buckets[low].count.add(1, ordering: .relaxed)
        sumNanoseconds.add(max(0, nanoseconds), ordering: .relaxed)
    }

    /// Appends this action's `_bucket`, `_sum` and `_count` lines (no `# TYPE`).
    func emit(name: String, into buffer: inout [UInt8]) {
        let label = "{action=\"\(Self.escape(action))\""
        var cumulative = 0
        for index in 0...Self.bounds.count {
            cumulative += buckets[index].count.load(ordering: .relaxed)
            let le = index < Self.labels.count ? Self.labels[index] : "+Inf"
            buffer.append(contentsOf: "\(name)_bucket\(label),le=\"\(le)\"} \(cumulative)\n".utf8)
        }
        let sum = Double(sumNanoseconds.load(ordering: .relaxed)) / 1e9
        buffer.append(contentsOf: "\(name)_sum\(label)} \(sum)\n\(name)_count\(label)} \(cumulative)\n".utf8)
    }

    /// A label value as the text format wants it: backslash, quote and newline escaped.
    static func escape(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}
