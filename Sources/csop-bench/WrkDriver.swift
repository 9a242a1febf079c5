import Foundation

/// `wrk` posting one JSON body over keep-alive connections for a fixed time; its figures
/// come from a Lua `done` hook (wrk's own histogram, in microseconds).
struct WrkDriver {
    struct Result: Sendable {
        var latency: LatencyStats
        var throughput: Double
        var requests: Int
        /// Non-2xx/3xx answers.
        var statusErrors: Int
        /// Connect, read, write and timeout errors.
        var socketErrors: Int

        var problems: String? {
            var parts: [String] = []
            if statusErrors > 0 { parts.append("\(statusErrors) non-2xx answers") }
            if socketErrors > 0 { parts.append("\(socketErrors) socket errors") }
            return parts.isEmpty ? nil : parts.joined(separator: ", ") + "!"
        }
    }

    let executable: String
    let workDirectory: String

    /// The `wrk` on PATH, or nil.
    static func find() -> String? { ChildOutput.find("wrk") }

    /// Posts `body` to `url` from `connections` connections on `threads` threads for `seconds`.
    func run(url: String, body: String, headers: [String: String] = [:], connections: Int = 64, threads: Int = 2, seconds: Int)
        async throws -> Result
    {
        var script = "wrk.method = \"POST\"\nwrk.body = \(Self.lua(body))\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { script += "wrk.headers[\(Self.lua(name))] = \(Self.lua(value))\n" }
        script += """
            done = function(summary, latency, requests)
              local e = summary.errors
              io.write(string.format("csop-bench %d %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
                latency:percentile(50), latency:percentile(95), latency:percentile(99), math.floor(latency.mean),
                e.status, e.connect + e.read + e.write + e.timeout))
            end

            """
        let scriptPath = "\(workDirectory)/wrk-\(UInt32.random(in: 0 ... .max)).lua"
        try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: scriptPath) }
        let arguments = ["-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--timeout", "2s", "--latency", "-s", scriptPath, url]
        let executable = executable
        let output = try await onThread { try ChildOutput.run(executable, arguments, limit: Double(seconds) + 15) }
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("csop-bench ") }) else {
            throw BenchError(message: "wrk printed no figures: \(output.suffix(300))")
        }
        let numbers = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard numbers.count == 8, numbers[1] > 0 else { throw BenchError(message: "cannot read wrk's figures: \(line)") }
        let requests = Int(numbers[0])
        return Result(
            latency: LatencyStats(p50: numbers[2], p95: numbers[3], p99: numbers[4], mean: numbers[5], count: requests),
            throughput: numbers[0] / (numbers[1] / 1e6), requests: requests, statusErrors: Int(numbers[6]), socketErrors: Int(numbers[7]))
    }

    private static func lua(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
