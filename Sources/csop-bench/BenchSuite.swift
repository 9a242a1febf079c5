import CSOPCore
import CSOPHost

/// A capability's benchmark rows in `csop bench`.
protocol BenchSuite: Sendable {
    /// Short name used by `--only`, e.g. "storage".
    var name: String { get }
    /// Measures and returns rows. Each row should carry a baseline measured in the same run.
    func run(_ context: BenchContext) async throws -> [BenchRow]
}

/// Latency percentiles in microseconds.
struct LatencyStats: Sendable {
    var p50: Double
    var p95: Double
    var p99: Double
    var mean: Double
    var count: Int
}

/// One line of the benchmark table.
struct BenchRow: Sendable {
    var suite: String
    var name: String
    var stats: LatencyStats?
    /// Operations (or messages) per second, for throughput rows.
    var throughput: Double?
    /// What the row is compared with, e.g. "raw SQLite insert".
    var baseline: String?
    var baselineStats: LatencyStats?
    var baselineThroughput: Double?
    /// Any other figure (memory per connection…), for rows that are neither latency nor throughput.
    var value: BenchValue?
    var baselineValue: BenchValue?
    /// Floors the row must meet; the table says whether each was met.
    var targets: [BenchTarget]
    /// A remark, e.g. "includes the child's stdout pipe".
    var note: String?
    /// A comparable system measured in the same run (else ``PeerFigure/table`` may name one).
    var peer: PeerFigure?

    init(
        suite: String, name: String, stats: LatencyStats? = nil, throughput: Double? = nil, baseline: String? = nil,
        baselineStats: LatencyStats? = nil, baselineThroughput: Double? = nil, value: BenchValue? = nil,
        baselineValue: BenchValue? = nil, targets: [BenchTarget] = [], note: String? = nil, peer: PeerFigure? = nil
    ) {
        self.suite = suite
        self.name = name
        self.stats = stats
        self.throughput = throughput
        self.baseline = baseline
        self.baselineStats = baselineStats
        self.baselineThroughput = baselineThroughput
        self.value = value
        self.baselineValue = baselineValue
        self.targets = targets
        self.note = note
        self.peer = peer
    }

    /// Row over baseline: p50 ratio for latency rows (lower is better, 1.0 = as fast as the
    /// baseline), throughput ratio for throughput rows (higher is better), value ratio otherwise.
    var ratio: Double? {
        if let throughput, let baselineThroughput, baselineThroughput > 0 { return throughput / baselineThroughput }
        if let stats, let baselineStats, baselineStats.p50 > 0 { return stats.p50 / baselineStats.p50 }
        if let value, let baselineValue, baselineValue.amount > 0 { return value.amount / baselineValue.amount }
        return nil
    }
}

/// A figure with its unit, e.g. 14.2 KiB per connection.
struct BenchValue: Sendable {
    var amount: Double
    /// Printed after the amount: "KiB/connection".
    var unit: String
}
