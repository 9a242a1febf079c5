import CSOPCLISupport
import ArgumentParser
import CSOPCore
import Foundation

@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csop bench",
        abstract: "Measure dispatch, storage, compute and sync with p50/p95/p99 against same-run baselines.",
        discussion: "Build in release mode first: swift build -c release, then .build/release/csop bench.")

    @Flag(help: "Print the rows as JSON.")
    var json = false

    @Flag(help: "Fewer iterations, for a smoke run.")
    var quick = false

    @Option(help: "Only these suites (comma-separated): host, storage, compute, sync, gateway, jobs.")
    var only: String?

    @Option(help: "Also write the table as an HTML page with a chart of each row against its baseline and peer.")
    var html: String?

    @Flag(help: .hidden)
    var bareWebsocketServer = false

    static let suites: [any BenchSuite] = [HostBench(), StorageBench(), StreamBench(), ComputeBench(), SyncBench(), GatewayBench(), JobsBench()]

    func run() async throws {
        if bareWebsocketServer { return try await BareServers.serveWebSocketEchoUntilStdinCloses() }
        signal(SIGPIPE, SIG_IGN)
        #if DEBUG
            printLine("warning: this is a debug build; numbers are not representative (swift build -c release)", to: 2)
        #endif
        // A path that cannot be written is found now, not after the whole run.
        if let html, !FileManager.default.createFile(atPath: html, contents: nil) {
            printLine("cannot write --html \(html): check that its directory exists and is writable", to: 2)
            throw ExitCode(2)
        }
        let context = try BenchContext(quick: quick)
        defer { context.cleanUp() }
        let selected = only.map { Set($0.split(separator: ",").map(String.init)) }
        var rows: [BenchRow] = []
        for suite in Self.suites where selected?.contains(suite.name) ?? true {
            printLine("running \(suite.name)…", to: 2)
            do {
                let suiteRows = try await suite.run(context)
                rows += suiteRows
                if !json { for row in suiteRows { printLine(Self.format(row)) } }
            } catch {
                printLine("\(suite.name) failed: \(error)", to: 2)
                rows.append(BenchRow(suite: suite.name, name: "suite failed", note: "\(error)"))
            }
        }
        if json { writeAll(1, JSONValue.array(rows.map(Self.json)).serialized() + [0x0A]) }
        if let html {
            let page = BenchReport.html(rows, title: "csop bench \(WallClock.iso8601())")
            do {
                try page.write(toFile: html, atomically: true, encoding: .utf8)
                printLine("wrote \(html)", to: 2)
            } catch {
                printLine("cannot write --html \(html): \(error)", to: 2)
                throw ExitCode(1)
            }
        }
    }

    static func format(_ row: BenchRow) -> String {
        let us = BenchFormat.microseconds
        var text = "\(row.suite) | \(row.name)"
        if let stats = row.stats { text += " | p50 \(us(stats.p50)) µs, p95 \(us(stats.p95)) µs, p99 \(us(stats.p99)) µs" }
        if let throughput = row.throughput { text += " | \(BenchFormat.fixed(throughput, 0))/s" }
        if let value = row.value { text += " | \(BenchFormat.number(value.amount)) \(value.unit)" }
        if let baseline = row.baseline {
            text += " | baseline \(baseline):"
            if let stats = row.baselineStats { text += " p50 \(us(stats.p50)) µs" }
            if let throughput = row.baselineThroughput { text += " \(BenchFormat.fixed(throughput, 0))/s" }
            if let value = row.baselineValue { text += " \(BenchFormat.number(value.amount)) \(value.unit)" }
        }
        if let ratio = row.ratio { text += " | ratio \(BenchFormat.fixed(ratio, 2))×" }
        if let comparison = PeerFigure.forRow(row)?.comparison(of: row) { text += " | \(comparison)" }
        for target in row.targets {
            guard let (met, measured) = target.check(row) else { continue }
            text += met ? " | target \(target.text): met" : " | target \(target.text): MISSED (\(measured))"
        }
        if let note = row.note { text += " | \(note)" }
        return text
    }

    static func json(_ row: BenchRow) -> JSONValue {
        var object: JSONObject = ["suite": .string(row.suite), "name": .string(row.name)]
        func stats(_ s: LatencyStats) -> JSONValue {
            ["p50_us": .double(s.p50), "p95_us": .double(s.p95), "p99_us": .double(s.p99), "mean_us": .double(s.mean), "count": .int(Int64(s.count))]
        }
        if let s = row.stats { object["latency"] = stats(s) }
        if let t = row.throughput { object["throughput_per_s"] = .double(t) }
        if let b = row.baseline { object["baseline"] = .string(b) }
        if let s = row.baselineStats { object["baseline_latency"] = stats(s) }
        if let t = row.baselineThroughput { object["baseline_throughput_per_s"] = .double(t) }
        if let v = row.value { object["value"] = ["amount": .double(v.amount), "unit": .string(v.unit)] }
        if let v = row.baselineValue { object["baseline_value"] = ["amount": .double(v.amount), "unit": .string(v.unit)] }
        if let r = row.ratio { object["ratio"] = .double(r) }
        if let peer = PeerFigure.forRow(row), let advantage = peer.advantage(of: row) {
            object["peer"] = .string(peer.peer)
            object["peer_advantage"] = .double(advantage)
        }
        let targets: [JSONValue] = row.targets.compactMap { target in
            target.check(row).map { ["target": .string(target.text), "met": .bool($0.met), "measured": .string($0.measured)] }
        }
        if !targets.isEmpty { object["targets"] = .array(targets) }
        if let n = row.note { object["note"] = .string(n) }
        return .object(object)
    }
}
