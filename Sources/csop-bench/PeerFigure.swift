/// A comparable system's figure for a row: measured in the same run (``BenchRow/peer``), or
/// published, measured once on this project's reference machine (2 cores) and not re-measured
/// by `csop bench`, so its ratio is indicative only.
struct PeerFigure: Sendable {
    var peer: String
    /// Peer latency at p50, microseconds.
    var p50: Double?
    /// Peer throughput per second.
    var throughput: Double?

    /// The row against the peer in words: "3.7× faster than …" or "1.25× slower than …".
    func comparison(of row: BenchRow) -> String? {
        guard let advantage = advantage(of: row) else { return nil }
        return advantage >= 1
            ? "\(BenchFormat.number(advantage))× faster than \(peer)"
            : "\(BenchFormat.number(1 / advantage))× slower than \(peer)"
    }

    /// How many times better the row is than the peer (higher is better).
    func advantage(of row: BenchRow) -> Double? {
        if let p50, let stats = row.stats, stats.p50 > 0 { return p50 / stats.p50 }
        if let throughput, let rowThroughput = row.throughput, throughput > 0 { return rowThroughput / throughput }
        return nil
    }

    /// Peers by `suite/row name`.
    static let table: [String: PeerFigure] = [
        "storage/save 1 KB": PeerFigure(peer: "original CSOP in headless Chromium (IndexedDB)", p50: 850),
        "storage/get 1 KB": PeerFigure(peer: "original CSOP in headless Chromium (IndexedDB)", p50: 240),
        "compute/execute custom `return data.a + data.b`": PeerFigure(peer: "Node worker_threads pool", p50: 50),
        "compute/custom a+b, 64 in flight": PeerFigure(peer: "Node worker_threads pool", throughput: 200_000),
        "compute/batch of 100 fibonacci(1000)": PeerFigure(peer: "Node worker_threads pool", p50: 2600),
        "sync/local broadcast → subscriber event": PeerFigure(peer: "original CSOP local mode (published)", p50: 100),
        "sync/cluster broadcast → subscriber in another process": PeerFigure(peer: "original CSOP via Supabase Realtime (published)", p50: 87_000),
    ]

    /// The row's peer: the one measured in its run, else the published one.
    static func forRow(_ row: BenchRow) -> PeerFigure? { row.peer ?? table["\(row.suite)/\(row.name)"] }
}
