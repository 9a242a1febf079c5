/// A floor a row must meet, checked in the same run and printed as met or MISSED.
enum BenchTarget: Sendable {
    /// p50 at most this many microseconds.
    case maxP50(microseconds: Double)
    /// At least this many per second.
    case minThroughput(Double)
    /// p50 at most this many times the baseline's p50.
    case maxRatio(Double)
    /// The baseline's p50 over the row's p50 at least this (a parallel speedup).
    case minSpeedup(Double)
    /// p99 at most this many microseconds.
    case maxP99(microseconds: Double)
    /// The row's ratio to its baseline at least this (throughput rows: a share of the baseline's).
    case minRatio(Double)
    /// The row's ``BenchValue`` at most this (in the row's unit).
    case maxValue(Double, unit: String)
    /// p50 at most this many microseconds above the baseline's p50 (an added cost).
    case maxAddedP50(microseconds: Double)
    /// At least this many times better than the peer measured in the same run (``BenchRow/peer``).
    case minPeerAdvantage(Double)

    var text: String {
        switch self {
        case .maxP50(let us): us >= 1000 ? "≤ \(BenchFormat.number(us / 1000)) ms p50" : "≤ \(BenchFormat.number(us)) µs p50"
        case .minThroughput(let n): "≥ \(BenchFormat.grouped(n))/s"
        case .maxRatio(let r): "≤ \(BenchFormat.number(r))× baseline"
        case .minSpeedup(let s): "speedup ≥ \(BenchFormat.number(s))×"
        case .maxP99(let us): us >= 1000 ? "≤ \(BenchFormat.number(us / 1000)) ms p99" : "≤ \(BenchFormat.number(us)) µs p99"
        case .minRatio(let r): "≥ \(BenchFormat.number(r))× baseline"
        case .maxValue(let amount, let unit): "≤ \(BenchFormat.number(amount)) \(unit)"
        case .maxAddedP50(let us): "≤ +\(BenchFormat.number(us)) µs p50"
        case .minPeerAdvantage(let a): "≥ \(BenchFormat.number(a))× the same-run peer"
        }
    }

    /// The row's measured value against the target, or nil when the row lacks the figure.
    func check(_ row: BenchRow) -> (met: Bool, measured: String)? {
        switch self {
        case .maxP50(let us):
            guard let p50 = row.stats?.p50 else { return nil }
            return (p50 <= us, "\(BenchFormat.microseconds(p50)) µs")
        case .minThroughput(let n):
            guard let throughput = row.throughput else { return nil }
            return (throughput >= n, "\(BenchFormat.grouped(throughput))/s")
        case .maxRatio(let r):
            guard let ratio = row.ratio else { return nil }
            return (ratio <= r, "\(BenchFormat.number(ratio))×")
        case .minSpeedup(let s):
            guard let ratio = row.ratio, ratio > 0 else { return nil }
            return (1 / ratio >= s, "\(BenchFormat.number(1 / ratio))×")
        case .maxP99(let us):
            guard let p99 = row.stats?.p99 else { return nil }
            return (p99 <= us, us >= 1000 ? "\(BenchFormat.number(p99 / 1000)) ms" : "\(BenchFormat.microseconds(p99)) µs")
        case .minRatio(let r):
            guard let ratio = row.ratio else { return nil }
            return (ratio >= r, "\(BenchFormat.number(ratio))×")
        case .maxValue(let amount, let unit):
            guard let value = row.value else { return nil }
            return (value.amount <= amount, "\(BenchFormat.number(value.amount)) \(unit)")
        case .maxAddedP50(let us):
            guard let p50 = row.stats?.p50, let base = row.baselineStats?.p50 else { return nil }
            return (p50 - base <= us, "\(p50 >= base ? "+" : "")\(BenchFormat.microseconds(p50 - base)) µs")
        case .minPeerAdvantage(let a):
            guard let advantage = row.peer?.advantage(of: row) else { return nil }
            return (advantage >= a, "\(BenchFormat.number(advantage))×")
        }
    }
}

/// Number formatting shared by the table and the targets.
enum BenchFormat {
    /// Two decimals under 10, one under 1000, none above.
    static func microseconds(_ value: Double) -> String {
        value < 10 ? fixed(value, 2) : value < 1000 ? fixed(value, 1) : fixed(value, 0)
    }

    /// A short decimal without trailing zeros: 2, 1.8, 0.55.
    static func number(_ value: Double) -> String {
        var text = fixed(value, value < 1 ? 2 : value < 10 ? 2 : 1)
        while text.contains("."), text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }

    /// A whole number with thousands separators: 100,000.
    static func grouped(_ value: Double) -> String {
        let digits = String(Int64(value.rounded()))
        var out = ""
        for (i, c) in digits.reversed().enumerated() {
            if i > 0, i % 3 == 0, c != "-" { out.append(",") }
            out.append(c)
        }
        return String(out.reversed())
    }

    static func fixed(_ value: Double, _ decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (value * scale).rounded()
        let whole = Int64(scaled / scale)
        guard decimals > 0 else { return String(Int64(scaled)) }
        let fraction = String(Int64(abs(scaled - Double(whole) * scale)))
        let padded = String(repeating: "0", count: max(0, decimals - fraction.count)) + fraction
        return "\(scaled < 0 && whole == 0 ? "-" : "")\(whole).\(padded)"
    }
}
