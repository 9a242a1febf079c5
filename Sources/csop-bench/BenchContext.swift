import CSOPCore
import CSOPHost
import Foundation
import Synchronization
import Histogram

/// What a suite gets: a scratch directory, hosts built from plugin entries, and timers.
final class BenchContext: Sendable {
    /// Fewer iterations (for smoke runs).
    let quick: Bool
    /// A fresh directory removed when the bench ends.
    let workDirectory: String
    /// The csop binary beside this one (for `csop run` child processes).
    let csopExecutable: String
    /// The directory holding csop-bench, csop and the plugin libraries.
    let buildDirectory: String

    init(quick: Bool) throws {
        self.quick = quick
        let base = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        workDirectory = "\(base)/csop-bench-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        buildDirectory = (executable as NSString).deletingLastPathComponent
        csopExecutable = "\(buildDirectory)/csop"
        guard FileManager.default.isExecutableFile(atPath: csopExecutable) else {
            throw BenchError(message: "\(csopExecutable) not found: build everything first (swift build -c release)")
        }
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: workDirectory) }

    /// `full` scaled down in quick mode.
    func iterations(_ full: Int) -> Int { quick ? max(full / 20, 20) : full }

    /// Writes a plugins.d directory with one entry per `(library, config)` and returns its path.
    func makePluginsDirectory(_ entries: [(library: String, config: JSONObject)]) throws -> String {
        let directory = "\(workDirectory)/plugins-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (index, entry) in entries.enumerated() {
            let text = PluginConfigFile.render(library: entry.library, config: entry.config)
            try text.write(toFile: "\(directory)/\(String(format: "%02d", index))-bench.conf", atomically: true, encoding: .utf8)
        }
        return directory
    }

    /// Loads a host from the given entries. Throws when any entry fails to load.
    /// - Parameter metrics: keep metrics (``HostMetrics``), as `csop serve` does.
    func makeHost(_ entries: [(library: String, config: JSONObject)], metrics: Bool = false) async throws -> CSOPHost {
        let directory = try makePluginsDirectory(entries)
        var configuration = HostConfiguration(pluginsDirectory: directory, pluginSearchPath: [buildDirectory])
        configuration.metrics = metrics ? HostMetrics() : nil
        let host = await CSOPHost.load(configuration)
        if let failure = host.failures.first { throw BenchError(message: failure.description) }
        return host
    }

    /// Loads a host whose one entry runs `library` in a child process (`isolation = "process"`).
    func makeIsolatedHost(library: String) async throws -> CSOPHost {
        let directory = "\(workDirectory)/plugins-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "library = \"\(library)\"\nisolation = \"process\"\n".write(
            toFile: "\(directory)/00-bench.conf", atomically: true, encoding: .utf8)
        let host = await CSOPHost.load(HostConfiguration(pluginsDirectory: directory, pluginSearchPath: [buildDirectory]))
        if let failure = host.failures.first { throw BenchError(message: failure.description) }
        return host
    }

    /// Requests per second with `window` requests kept in flight: each completion lets one
    /// more go. Completions that come inline (a plugin answering inside dispatch) do not
    /// recurse: one thread at a time sends, in a loop, while there is room.
    func throughput(_ host: CSOPHost, _ request: Request, count: Int, window: Int) async -> Double {
        struct Flow {
            var room: Int
            var sent = 0
            var done = 0
            var sending = false
        }
        let start = DispatchTime.now().uptimeNanoseconds
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let flow = Mutex(Flow(room: min(window, count)))
            @Sendable func pump() {
                while flow.withLock({ flow -> Bool in
                    guard flow.room > 0, flow.sent < count else {
                        flow.sending = false
                        return false
                    }
                    flow.room -= 1
                    flow.sent += 1
                    return true
                }) {
                    host.dispatch(request) { _ in
                        let (finished, takeOver) = flow.withLock { flow -> (Bool, Bool) in
                            flow.done += 1
                            flow.room += 1
                            let takeOver = !flow.sending
                            if takeOver { flow.sending = true }
                            return (flow.done == count, takeOver)
                        }
                        if finished { continuation.resume() } else if takeOver { pump() }
                    }
                }
            }
            flow.withLock { $0.sending = true }
            pump()
        }
        return Double(count) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    /// Times `body` `iterations` times after `warmup` untimed runs.
    func measure(iterations: Int, warmup: Int = 100, _ body: () throws -> Void) rethrows -> LatencyStats {
        for _ in 0..<warmup { try body() }
        var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000_000)
        for _ in 0..<iterations {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            _ = histogram.record(DispatchTime.now().uptimeNanoseconds - start)
        }
        return Self.stats(histogram)
    }

    /// Times an async `body` `iterations` times after `warmup` untimed runs.
    func measure(iterations: Int, warmup: Int = 100, _ body: () async throws -> Void) async rethrows -> LatencyStats {
        for _ in 0..<warmup { try await body() }
        var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000_000)
        for _ in 0..<iterations {
            let start = DispatchTime.now().uptimeNanoseconds
            try await body()
            _ = histogram.record(DispatchTime.now().uptimeNanoseconds - start)
        }
        return Self.stats(histogram)
    }

    /// Percentiles of nanosecond samples, in microseconds.
    static func stats(_ histogram: Histogram<UInt64>) -> LatencyStats {
        LatencyStats(
            p50: Double(histogram.valueAtPercentile(50)) / 1000,
            p95: Double(histogram.valueAtPercentile(95)) / 1000,
            p99: Double(histogram.valueAtPercentile(99)) / 1000,
            mean: histogram.mean / 1000,
            count: Int(histogram.totalCount))
    }

    /// Percentiles of nanosecond samples, in microseconds.
    static func stats(nanoseconds samples: [UInt64]) -> LatencyStats {
        var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000_000)
        for sample in samples { _ = histogram.record(sample) }
        return stats(histogram)
    }
}

struct BenchError: Error, Sendable, CustomStringConvertible {
    var message: String
    var description: String { message }
}
