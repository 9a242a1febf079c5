import CSOPCLISupport
import CSOPCore
import CSOPHost
import CSOPServe
import Crypto
import Foundation
import Glibc
import JWTKit
import Logging
import Synchronization

/// The network gateway (`csop serve`): HTTP dispatch under wrk, WebSocket requests with 64 in
/// flight, fan-out of one broadcast to 1,000 WebSocket subscribers, memory per idle
/// WebSocket, and token verification. Baselines: bare Hummingbird (HTTP route, WebSocket
/// echo) measured the same way in the same run, in-process delivery, one HMAC-SHA256.
struct GatewayBench: BenchSuite {
    let name = "gateway"

    func run(_ context: BenchContext) async throws -> [BenchRow] {
        let fileLimit = Self.raiseFileLimit()
        var rows = await section("token verification") { try await tokenRows(context) }
        printLine("  gateway: in-process fan-out baseline…", to: 2)
        let delivery: Result<LatencyStats, any Error>
        do {
            delivery = .success(try await inProcessFanOut(context, subscribers: 1000))
        } catch {
            delivery = .failure(error)
        }
        rows += await section("gateway in this process") { try await inProcessRows(context, delivery: delivery) }
        rows += await section("10,000 idle WebSockets") { [try await idleRow(context, fileLimit: fileLimit)] }
        return rows
    }

    /// The HTTP, WebSocket and fan-out rows, against one gateway on one host in this process.
    private func inProcessRows(_ context: BenchContext, delivery: Result<LatencyStats, any Error>) async throws -> [BenchRow] {
        let host = try await context.makeHost([
            (library: "libcsop-diag.so", config: JSONObject()), (library: "libcsop-sync.so", config: JSONObject()),
        ])
        let gateway: RunningServer
        do {
            gateway = try await Self.startGateway(host)
        } catch {
            await host.shutdown()
            throw error
        }
        var rows = await section("HTTP POST /v1/dispatch") { try await httpRows(context, host: host, gateway: gateway) }
        rows += await section("WebSocket no-op, 64 in flight") { [try await webSocketRow(context, gateway: gateway)] }
        rows += await section("fan-out to 1,000 WebSocket subscribers") {
            [try await fanOutRow(context, gateway: gateway, baseline: try delivery.get())]
        }
        await gateway.stop()
        await host.shutdown()
        return rows
    }

    private func section(_ title: String, _ body: () async throws -> [BenchRow]) async -> [BenchRow] {
        printLine("  gateway: \(title)…", to: 2)
        do {
            return try await body()
        } catch {
            return [BenchRow(suite: name, name: title, note: "skipped: \(error)")]
        }
    }

    /// Soft RLIMIT_NOFILE raised to the hard limit (children inherit it); returns the limit.
    private static func raiseFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(clamping: limit.rlim_cur)
    }

    static let quietLogger = Logger(label: "csop.bench") { _ in SwiftLogNoOpLogHandler() }

    /// A gateway in this process on a free loopback port: no rate limit (one client here sends
    /// what many would), a short shutdown grace.
    private static func startGateway(_ host: CSOPHost, configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws
        -> RunningServer
    {
        var configuration = GatewayConfiguration()
        configuration.listen = "127.0.0.1:0"
        configuration.rateLimit = 0
        configuration.shutdownGrace = 1
        configure(&configuration)
        let gateway = try await Gateway(host: host, configuration: configuration, logger: quietLogger)
        return try await RunningServer.start { listening in
            try await gateway.run(gracefulShutdownSignals: [], onListening: listening)
        }
    }

    // MARK: - HTTP

    private func httpRows(_ context: BenchContext, host: CSOPHost, gateway: RunningServer) async throws -> [BenchRow] {
        let title = "HTTP POST /v1/dispatch no-op, 64 connections"
        let authTitle = "HTTP POST /v1/dispatch no-op with HS256 token, 64 connections"
        guard let wrkPath = WrkDriver.find() else {
            return [BenchRow(suite: name, name: title, note: "skipped: wrk is not installed (apt-get install wrk)")]
        }
        let wrk = WrkDriver(executable: wrkPath, workDirectory: context.workDirectory)
        let body = #"{"action":"diag.noop"}"#
        let seconds = context.quick ? 2 : 5
        let port = gateway.port
        let sample = try await onThread { try RawWebSocket.post(port: port, path: "/v1/dispatch", body: body) }
        guard sample.status.hasPrefix("HTTP/1.1 200") else {
            throw BenchError(message: "the gateway answered \(sample.status): \(String(decoding: sample.body.prefix(200), as: UTF8.self))")
        }
        let secretFile = "\(context.workDirectory)/hs256.secret"
        try Self.randomSecret().write(toFile: secretFile, atomically: true, encoding: .utf8)
        var authConfiguration = GatewayConfiguration()
        authConfiguration.secretFile = secretFile
        let token = try await Authenticator(configuration: authConfiguration).sign(
            subject: "bench", tenant: nil, actions: ["*"], lifetime: 3600, audience: nil)
        let authHeaders = ["Authorization": "Bearer \(token)"]

        let bare = try await BareServers.http(response: sample.body)
        let authGateway: RunningServer
        do {
            authGateway = try await Self.startGateway(host) { $0.secretFile = secretFile }
        } catch {
            await bare.stop()
            throw error
        }

        func url(_ port: Int) -> String { "http://127.0.0.1:\(port)/v1/dispatch" }
        do {
            _ = try await wrk.run(url: url(bare.port), body: body, seconds: 1)
            _ = try await wrk.run(url: url(gateway.port), body: body, seconds: 1)
            _ = try await wrk.run(url: url(authGateway.port), body: body, headers: authHeaders, seconds: 1)
            // Alternating runs, best of each kind: load from elsewhere only ever slows a run down.
            var bareRuns: [WrkDriver.Result] = []
            var openRuns: [WrkDriver.Result] = []
            var authRuns: [WrkDriver.Result] = []
            for _ in 0..<(context.quick ? 1 : 2) {
                bareRuns.append(try await wrk.run(url: url(bare.port), body: body, seconds: seconds))
                openRuns.append(try await wrk.run(url: url(gateway.port), body: body, seconds: seconds))
                authRuns.append(try await wrk.run(url: url(authGateway.port), body: body, headers: authHeaders, seconds: seconds))
            }
            await authGateway.stop()
            await bare.stop()
            let best = { (runs: [WrkDriver.Result]) in runs.max(by: { $0.throughput < $1.throughput })! }
            let (bareBest, open, authed) = (best(bareRuns), best(openRuns), best(authRuns))
            let all = { (runs: [WrkDriver.Result]) in runs.map { BenchFormat.grouped($0.throughput) }.joined(separator: " and ") }
            let setup =
                "best of \(openRuns.count) alternating wrk -t2 -c64 -d\(seconds)s runs on the same 2 cores; gateway in this process (same event loops as the bare route), rate limit off"
            return [
                BenchRow(
                    suite: name, name: title, stats: open.latency, throughput: open.throughput,
                    baseline: "bare Hummingbird route, same answer bytes", baselineStats: bareBest.latency,
                    baselineThroughput: bareBest.throughput, targets: [.minThroughput(40_000), .minRatio(0.7)],
                    note: [open.problems, "\(setup), auth off; runs: gateway \(all(openRuns))/s, bare \(all(bareRuns))/s"]
                        .compactMap { $0 }.joined(separator: "; ")),
                BenchRow(
                    suite: name, name: authTitle, stats: authed.latency, throughput: authed.throughput,
                    baseline: "the same without auth", baselineStats: open.latency, baselineThroughput: open.throughput,
                    note: [authed.problems, "one token for every request (verified once, then cached); runs: \(all(authRuns))/s"]
                        .compactMap { $0 }.joined(separator: "; ")),
            ]
        } catch {
            await authGateway.stop()
            await bare.stop()
            throw error
        }
    }

    private static func randomSecret() -> String {
        Data((0..<48).map { _ in UInt8.random(in: 0 ... .max) }).base64EncodedString() + "\n"
    }

    // MARK: - WebSocket

    private func webSocketRow(_ context: BenchContext, gateway: RunningServer) async throws -> BenchRow {
        let count = context.iterations(200_000)
        let echo = try await BareServers.webSocketEcho()
        let (port, echoPort) = (gateway.port, echo.port)
        var runs: [WebSocketLoad.InFlightResult] = []
        var bareRuns: [WebSocketLoad.InFlightResult] = []
        do {
            _ = try await onThread { try WebSocketLoad.inFlight(port: port, count: 5000, window: 64, seconds: 10) }
            _ = try await onThread { try WebSocketLoad.inFlight(port: echoPort, count: 5000, window: 64, seconds: 10) }
            // Alternating runs, best of each kind, as for HTTP.
            for _ in 0..<(context.quick ? 1 : 3) {
                runs.append(try await onThread { try WebSocketLoad.inFlight(port: port, count: count, window: 64, seconds: 30) })
                bareRuns.append(try await onThread { try WebSocketLoad.inFlight(port: echoPort, count: count, window: 64, seconds: 30) })
            }
        } catch {
            await echo.stop()
            throw error
        }
        await echo.stop()
        let best = { (runs: [WebSocketLoad.InFlightResult]) in runs.max(by: { $0.throughput < $1.throughput })! }
        let (measured, bare) = (best(runs), best(bareRuns))
        let all = { (runs: [WebSocketLoad.InFlightResult]) in runs.map { BenchFormat.grouped($0.throughput) }.joined(separator: ", ") }
        var notes: [String] = []
        if let errors = runs.map(\.errors).max(), errors > 0 { notes.append("\(errors) error answers!") }
        if let short = runs.first(where: { $0.completed < count }) { notes.append("only \(short.completed) of \(count) within 30 s") }
        notes.append(
            "best of \(runs.count) alternating runs of \(BenchFormat.grouped(Double(count))) requests; runs: gateway \(all(runs))/s, bare \(all(bareRuns))/s; gateway in this process; client: a raw socket on its own thread (one write per batch of frames, no event loop, spins up to 200 µs before it blocks)"
        )
        return BenchRow(
            suite: name, name: "WebSocket no-op, 1 connection, 64 in flight", stats: measured.latency, throughput: measured.throughput,
            baseline: "bare hummingbird-websocket echo, same client", baselineStats: bare.latency, baselineThroughput: bare.throughput,
            targets: [.minThroughput(100_000)], note: notes.joined(separator: "; "))
    }

    // MARK: - Fan-out

    /// Broadcast → the 1,000th event at an in-process listener, for 1,000 subscriptions.
    private func inProcessFanOut(_ context: BenchContext, subscribers: Int) async throws -> LatencyStats {
        let host = try await context.makeHost([(library: "libcsop-sync.so", config: JSONObject())])
        for _ in 0..<subscribers {
            let response = await host.dispatch(Request(action: "sync.subscribe", payload: ["channel": "fan"]))
            guard response.isOK else {
                await host.shutdown()
                throw BenchError(message: "sync.subscribe failed: \(response)")
            }
        }
        let received = Atomic<Int>(0)
        let last = Atomic<UInt64>(0)
        let listener = host.addEventListener { _ in
            if received.add(1, ordering: .relaxed).newValue == subscribers {
                last.store(DispatchTime.now().uptimeNanoseconds, ordering: .releasing)
            }
        }
        let rounds = context.iterations(1000)
        let samples = try await onThread { () -> [UInt64] in
            var samples: [UInt64] = []
            for round in 0..<(rounds + 20) {
                received.store(0, ordering: .relaxed)
                last.store(0, ordering: .relaxed)
                let start = DispatchTime.now().uptimeNanoseconds
                host.dispatch(Request(action: "sync.broadcast", payload: ["channel": "fan", "event": "tick", "data": ["n": .int(Int64(round))]])) { _ in }
                var done = last.load(ordering: .acquiring)
                while done == 0, DispatchTime.now().uptimeNanoseconds - start < 5_000_000_000 { done = last.load(ordering: .acquiring) }
                guard done > 0 else { throw BenchError(message: "an in-process broadcast did not reach every subscriber within 5 s") }
                if round >= 20 { samples.append(done - start) }
            }
            return samples
        }
        host.removeEventListener(listener)
        await host.shutdown()
        return BenchContext.stats(nanoseconds: samples)
    }

    private func fanOutRow(_ context: BenchContext, gateway: RunningServer, baseline: LatencyStats) async throws -> BenchRow {
        let port = gateway.port
        let rounds = context.quick ? 10 : 100
        let result = try await onThread {
            try WebSocketLoad.fanOut(port: port, subscribers: 1000, rounds: rounds, sets: 2, warmup: 5, seconds: 60)
        }
        // Best set by p99, as for the HTTP runs: load from elsewhere only ever slows a set down.
        guard let best = result.sets.indices.min(by: { result.sets[$0].p99 < result.sets[$1].p99 }) else {
            throw BenchError(message: "no broadcast reached all 1,000 subscribers")
        }
        let us = BenchFormat.microseconds
        var notes: [String] = []
        if result.incomplete > 0 { notes.append("\(result.incomplete) broadcasts did not reach all 1,000 within 5 s!") }
        if result.unstamped > 0 { notes.append("\(result.unstamped) events had no kernel stamp and count at their read") }
        let sets = result.sets.map { "p50 \(us($0.p50)), p99 \(us($0.p99))" }.joined(separator: " and ")
        let reads = result.readSets.map { "p50 \(us($0.p50)), p99 \(us($0.p99))" }.joined(separator: " and ")
        notes.append(
            "best of \(result.sets.count) sets of \(result.sets[best].count) broadcasts (after 5 untimed) sent over a WebSocket: \(sets) µs; an event's time is the kernel's receive stamp on its subscriber's socket (SO_TIMESTAMPNS); one client thread on the same 2 cores reads the 1,000 sockets in turn, its read of the last event at \(reads) µs"
        )
        return BenchRow(
            suite: name, name: "broadcast → last of 1,000 WebSocket subscribers", stats: result.sets[best],
            baseline: "in-process broadcast → 1,000th host event", baselineStats: baseline,
            targets: [.maxP99(microseconds: 20_000)], note: notes.joined(separator: "; "))
    }

    // MARK: - Memory

    private func idleRow(_ context: BenchContext, fileLimit: Int) async throws -> BenchRow {
        let title = "resident memory per idle WebSocket (10,000 open)"
        let serve = "\(HostConfiguration.executableDirectory() ?? context.buildDirectory)/csop-serve"
        guard FileManager.default.isExecutableFile(atPath: serve) else {
            return BenchRow(suite: name, name: title, note: "skipped: \(serve) not found (swift build -c release --product csop-serve)")
        }
        let count = min(context.quick ? 2000 : 10_000, fileLimit - 500)
        guard count >= 1000 else { return BenchRow(suite: name, name: title, note: "skipped: the file limit is \(fileLimit)") }
        let plugins = try context.makePluginsDirectory([
            (library: "libcsop-diag.so", config: JSONObject()), (library: "libcsop-sync.so", config: JSONObject()),
        ])
        let gateway = try await onThread { () -> WebSocketLoad.IdleResult in
            let child = try ServerChild(
                executable: serve, arguments: ["serve", "--plugins-dir", plugins, "--listen", "127.0.0.1:0", "--shutdown-grace", "1"])
            defer { child.stop() }
            return try WebSocketLoad.idle(child, count: count, seconds: 60)
        }
        let benchExecutable = "\(context.buildDirectory)/csop-bench"
        let bare = try await onThread { () -> WebSocketLoad.IdleResult in
            let child = try ServerChild(executable: benchExecutable, arguments: ["--bare-websocket-server"])
            defer { child.stop() }
            return try WebSocketLoad.idle(child, count: count, seconds: 60)
        }
        let mib = { (bytes: Double) in BenchFormat.number(bytes / 1_048_576) }
        var notes: [String] = []
        if gateway.opened < count { notes.append("only \(gateway.opened) opened within 60 s!") }
        notes.append(
            "csop-serve child (defaults: --max-connections 16384; upgrades are not rate limited), VmRSS \(mib(gateway.before)) → \(mib(gateway.after)) MiB over \(gateway.opened) connections after 200 warm-up ones; bare: csop-bench's echo server as a child"
        )
        return BenchRow(
            suite: name, name: count == 10_000 ? title : "resident memory per idle WebSocket (\(count) open)",
            baseline: "bare hummingbird-websocket echo server",
            value: BenchValue(amount: gateway.bytesPerConnection / 1024, unit: "KiB/connection"), baselineValue: BenchValue(amount: bare.bytesPerConnection / 1024, unit: "KiB/connection"),
            targets: [.maxValue(20, unit: "KiB/connection")], note: notes.joined(separator: "; "))
    }

    // MARK: - Tokens

    /// The claims of the ES256 tokens (what ``Authenticator`` reads).
    private struct Claims: JWTPayload {
        struct CSOP: Codable, Sendable { var actions: [String] }
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var csop: CSOP

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    private func tokenRows(_ context: BenchContext) async throws -> [BenchRow] {
        let coldCount = context.iterations(2000)
        let secret = Self.randomSecret()
        let secretFile = "\(context.workDirectory)/tokens-hs256.secret"
        try secret.write(toFile: secretFile, atomically: true, encoding: .utf8)
        var hsConfiguration = GatewayConfiguration()
        hsConfiguration.secretFile = secretFile
        let hs = try await Authenticator(configuration: hsConfiguration)
        var hsTokens: [String] = []
        for index in 0..<coldCount {
            hsTokens.append(try await hs.sign(subject: "bench-\(index)", tenant: nil, actions: ["*"], lifetime: 3600, audience: nil))
        }

        let key = try ES256PrivateKey(backing: P256.Signing.PrivateKey())
        guard let parameters = key.parameters else { throw BenchError(message: "the P-256 key has no coordinates") }
        let jwksFile = "\(context.workDirectory)/tokens-jwks.json"
        try #"{"keys":[{"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":"bench","x":"\#(parameters.x)","y":"\#(parameters.y)"}]}"#
            .write(toFile: jwksFile, atomically: true, encoding: .utf8)
        var esConfiguration = GatewayConfiguration()
        esConfiguration.jwksFile = jwksFile
        let es = try await Authenticator(configuration: esConfiguration)
        let signer = JWTKeyCollection()
        await signer.add(ecdsa: key, kid: "bench")
        var esTokens: [String] = []
        let expiry = Date().addingTimeInterval(3600)
        for index in 0..<coldCount {
            let claims = Claims(sub: SubjectClaim(value: "bench-\(index)"), exp: ExpirationClaim(value: expiry), csop: Claims.CSOP(actions: ["*"]))
            esTokens.append(try await signer.sign(claims, kid: "bench"))
        }

        let hmacKey = SymmetricKey(data: Array(secret.trimmingCharacters(in: .whitespacesAndNewlines).utf8))
        var rows: [BenchRow] = []
        for (algorithm, authenticator, tokens) in [("HS256", hs, hsTokens), ("ES256", es, esTokens)] {
            var samples: [UInt64] = []
            for token in tokens {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try await authenticator.verify(token)
                samples.append(DispatchTime.now().uptimeNanoseconds - start)
            }
            let cold = BenchContext.stats(nanoseconds: samples)
            let first = tokens[0]
            let cached = try await context.measure(iterations: context.iterations(100_000), warmup: 1000) {
                _ = try await authenticator.verify(first)
            }
            let bytes = Array(first.utf8)
            let hmac = context.measure(iterations: context.iterations(100_000), warmup: 1000) {
                _ = HMAC<SHA256>.authenticationCode(for: bytes, using: hmacKey)
            }
            let baseline = "one HMAC-SHA256 of the token's \(bytes.count) bytes"
            rows.append(
                BenchRow(
                    suite: name, name: "verify \(algorithm) token, first time", stats: cold, baseline: baseline, baselineStats: hmac,
                    note: "\(coldCount) distinct tokens, each verified once (signature, claims, cache insert)"))
            rows.append(
                BenchRow(suite: name, name: "verify \(algorithm) token, cached", stats: cached, baseline: baseline, baselineStats: hmac))
        }
        return rows
    }
}
