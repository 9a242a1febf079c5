import CSOPCore
import Foundation

/// The Node.js `worker_threads` pool of `scripts/node-pool.mjs`, measured in the same run as
/// the compute rows it is set beside.
struct NodePool: Sendable {
    /// What the script prints.
    struct Figures: Sendable {
        /// `process.version`, e.g. "v20.20.2".
        var version: String
        /// Custom `a+b`, one at a time: p50, microseconds.
        var roundTripP50: Double
        /// Custom `a+b` with 64 in flight, tasks per second.
        var inFlight: Double
        /// 100 CPU-heavy tasks: the pool's p50 and one thread's, microseconds.
        var heavyPool: Double
        var heavyBare: Double

        /// The peer's name in the table: "Node v20.20.2 worker_threads pool (same run)".
        var peer: String { "Node \(version) worker_threads pool (same run)" }
    }

    let node: String
    let script: String

    /// The `node` on PATH and the script (`CSOP_NODE_POOL_SCRIPT`, or `scripts/node-pool.mjs`
    /// of the checkout this binary was built from), or why the peer cannot run.
    static func locate() -> Result<NodePool, BenchError> {
        guard let node = ChildOutput.find("node") ?? ChildOutput.find("nodejs") else {
            return .failure(BenchError(message: "node is not on PATH (apt-get install nodejs)"))
        }
        let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let script = ProcessInfo.processInfo.environment["CSOP_NODE_POOL_SCRIPT"] ?? checkout.appendingPathComponent("scripts/node-pool.mjs").path
        guard FileManager.default.isReadableFile(atPath: script) else {
            return .failure(BenchError(message: "\(script) not found (set CSOP_NODE_POOL_SCRIPT to scripts/node-pool.mjs of a CSOP checkout)"))
        }
        return .success(NodePool(node: node, script: script))
    }

    /// Runs the script (about 15 s; 2 s with `quick`) and reads its figures.
    func measure(quick: Bool) async throws -> Figures {
        let arguments = [script] + (quick ? ["--quick"] : [])
        let node = node
        let text = try await onThread { try ChildOutput.run(node, arguments, limit: 120) }
        guard let line = text.split(separator: "\n").last, let value = try? JSONValue(parsing: Array(line.utf8)),
            let version = value["node"]?.stringValue, let roundTrip = value["roundTrip"],
            let p50 = roundTrip["p50"]?.doubleValue,
            let inFlight = value["inFlight"]?.doubleValue,
            let heavyPool = value["heavy"]?["poolMilliseconds"]?.doubleValue, let heavyBare = value["heavy"]?["bareMilliseconds"]?.doubleValue
        else {
            throw BenchError(message: "\(node) \(script) printed no figures: \(text.suffix(300))")
        }
        return Figures(
            version: version, roundTripP50: p50, inFlight: inFlight,
            heavyPool: heavyPool * 1000, heavyBare: heavyBare * 1000)
    }
}
