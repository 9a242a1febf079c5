import CSOPCore
import CSOPTestSupport
import Foundation
import Testing

/// The browser client (Clients/js/csop.js, served at /v1/csop.js) in headless Chromium
/// against a real `csop serve` process: the pages in Tests/Browser/pages report their checks
/// to a collector. Fails, never skips, when Chromium is missing.
@Suite(.serialized) struct BrowserTests {
    /// Runs `pages` (page name → path and query) against one server and returns their reports.
    private func run(
        _ setup: ServeSetup, server: ServeProcess, collector: ReportCollector, page: String, path: String
    ) async throws -> (JSONValue?, Chromium) {
        let browser = try Chromium(url: "http://127.0.0.1:\(server.port)/\(path)&report=\(collector.url)")
        let report = try await collector.report(page)
        return (report, browser)
    }

    /// Waits (up to a minute) until a page has saved storage key `key`: its way of saying it
    /// is ready for the test's next step.
    private func waitUntilStored(_ key: String, port: Int, token: String, browser: Chromium) async throws {
        let http = HTTP(port: port)
        var ready = false
        for _ in 0..<600 where !ready {
            let reply = try await http.post("/v1/dispatch", #"{"action":"storage.get","payload":{"key":"\#(key)"}}"#, token: token)
            ready = reply.status == .ok
            if !ready { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(ready, "the page never saved \(key):\n\(browser.log.suffix(3000))")
    }

    private func serve(_ setup: ServeSetup, port: Int = 0) async throws -> ServeProcess {
        try await ServeProcess([
            "--plugins-dir", setup.pluginsDirectory, "--listen", "127.0.0.1:\(port)", "--jwt-secret-file", setup.secretFile,
            "--static-dir", browserPages,
        ])
    }

    @Test func basicPage() async throws {
        let setup = try ServeSetup(label: "csop-browser")
        let server = try await serve(setup)
        let collector = try await ReportCollector.start()
        let token = try await setup.token("alice")
        let (report, browser) = try await run(setup, server: server, collector: collector, page: "basic", path: "basic.html?token=\(token)&run=b1")
        await browser.stop()
        #expect(report != nil, "the page did not report; browser log:\n\(browser.log.suffix(4000))\nserver:\n\(server.stderr)")
        if case .object(let object)? = report {
            #expect(object["ok"] == .bool(true), "failed checks:\n\(failedChecks(report))")
        }
        let errors = browser.consoleLines.filter { $0.contains("Uncaught") || $0.contains("ERROR") }
        #expect(errors.isEmpty, "console errors: \(errors)")
        try await server.stop()
        await collector.stop()
    }

    /// Streamed values from the browser (#15): putStream of a Blob, getStream read through its
    /// ReadableStream, over the gateway's PUT and GET /v1/streams/{key}.
    @Test func streamPage() async throws {
        let setup = try ServeSetup(label: "csop-browser")
        let server = try await serve(setup)
        let collector = try await ReportCollector.start()
        let token = try await setup.token("erin", actions: ["storage.*"], tenant: "browser")
        let (report, browser) = try await run(setup, server: server, collector: collector, page: "stream", path: "stream.html?token=\(token)&run=s1")
        await browser.stop()
        #expect(report?["ok"] == .bool(true), "failed checks:\n\(failedChecks(report))\n\(browser.log.suffix(3000))")
        try await server.stop()
        await collector.stop()
    }

    /// The status page at / (#13): charts fed by /metrics while the test page sends requests,
    /// the plugins listed, a token asked for when none is given, no console errors. A
    /// screenshot is saved as a test artifact (.build/test-artifacts/status-page.png).
    @Test func statusPage() async throws {
        let setup = try ServeSetup(label: "csop-browser")
        let server = try await serve(setup)
        let collector = try await ReportCollector.start()
        let token = try await setup.token("operator")
        let (report, browser) = try await run(setup, server: server, collector: collector, page: "status", path: "status.html?token=\(token)")
        await browser.stop()
        #expect(report?["ok"] == .bool(true), "failed checks:\n\(failedChecks(report))\nbrowser log:\n\(browser.log.suffix(3000))")
        // The frame without a token is answered 401 on purpose; anything else is an error.
        let errors = browser.consoleLines.filter {
            ($0.contains("Uncaught") || $0.contains("ERROR")) && !$0.contains("status of 401")
        }
        #expect(errors.isEmpty, "console errors: \(errors)")
        #expect(!browser.log.contains(token), "the token reached the browser's log")

        let artifacts = "\(CCompiler.packageRoot)/.build/test-artifacts"
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let shot = "\(artifacts)/status-page.png"
        try? FileManager.default.removeItem(atPath: shot)
        let load = Task {
            let http = HTTP(port: server.port)
            for i in 0..<400 where !Task.isCancelled {
                _ = try await http.post("/v1/dispatch", #"{"action":"diag.noop"}"#, token: token)
                if i % 4 == 0 { _ = try await http.post("/v1/dispatch", #"{"action":"diag.fail","payload":{"code":"TEAPOT"}}"#, token: token) }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        let log = try await Chromium.screenshot(url: "http://127.0.0.1:\(server.port)/#token=\(token)", to: shot)
        load.cancel()
        _ = await load.result
        let png = FileManager.default.contents(atPath: shot) ?? Data()
        #expect(png.count > 10_000 && png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "no screenshot at \(shot):\n\(log.suffix(2000))")
        try await server.stop()
        await collector.stop()
    }

    @Test func subscribeAndBroadcastBetweenTwoPages() async throws {
        let setup = try ServeSetup(label: "csop-browser")
        let server = try await serve(setup)
        let collector = try await ReportCollector.start()
        let token = try await setup.token("bob", actions: ["storage.*", "sync.*", "host.info"])
        let subscriber = try Chromium(url: "http://127.0.0.1:\(server.port)/pubsub.html?role=sub&token=\(token)&run=p1&report=\(collector.url)")
        let publisher = try Chromium(url: "http://127.0.0.1:\(server.port)/pubsub.html?role=pub&token=\(token)&run=p1&report=\(collector.url)")
        let subReport = try await collector.report("pubsub-sub")
        let pubReport = try await collector.report("pubsub-pub")
        await subscriber.stop()
        await publisher.stop()
        #expect(subReport?["ok"] == .bool(true), "subscriber:\n\(failedChecks(subReport))\n\(subscriber.log.suffix(3000))")
        #expect(pubReport?["ok"] == .bool(true), "publisher:\n\(failedChecks(pubReport))")
        try await server.stop()
        await collector.stop()
    }

    @Test func reconnectAndResubscribeAfterServerRestart() async throws {
        let setup = try ServeSetup(label: "csop-browser")
        var server = try await serve(setup)
        let port = server.port
        let collector = try await ReportCollector.start()
        let token = try await setup.token("carol")
        let browser = try Chromium(url: "http://127.0.0.1:\(port)/reconnect.html?token=\(token)&run=r1&broadcaster=self&report=\(collector.url)")
        // Wait until the page has subscribed (it saves this key), then restart on the same port.
        try await waitUntilStored("reconnect:r1:ready", port: port, token: token, browser: browser)
        try await server.stop()
        server = try await serve(setup, port: port)
        let report = try await collector.report("reconnect")
        await browser.stop()
        #expect(report?["ok"] == .bool(true), "failed checks:\n\(failedChecks(report))\n\(browser.log.suffix(3000))")
        try await server.stop()
        await collector.stop()
    }

    /// Issue 15: the client re-subscribes from the last offset it delivered. The server runs
    /// sync in cluster mode with history; while it restarts, another process publishes on the
    /// page's channel; the page ends with every message once, in order.
    @Test func resubscribeFromTheLastOffsetAcrossAServerRestart() async throws {
        let sync: JSONObject = [
            "postgresUrl": .string(TestEnvironment.postgresURL), "clusterChannel": .string("browser_\(UInt32.random(in: 0 ... .max))"),
            "history": ["size": 1000],
        ]
        let setup = try ServeSetup(label: "csop-browser", sync: sync)
        var server = try await serve(setup)
        let port = server.port
        let collector = try await ReportCollector.start()
        let token = try await setup.token("dana", actions: ["storage.*", "sync.*", "host.info"])
        let browser = try Chromium(url: "http://127.0.0.1:\(port)/recover.html?token=\(token)&run=h1&count=20&wait=60000&report=\(collector.url)")
        try await waitUntilStored("recover:h1:ready", port: port, token: token, browser: browser)
        let http = HTTP(port: port)
        func broadcast(_ i: Int) async throws {
            let reply = try await http.post(
                "/v1/dispatch", #"{"action":"sync.broadcast","payload":{"channel":"recover-h1","event":"n","data":\#(i)}}"#, token: token)
            #expect(reply.status == .ok, "broadcast \(i)")
        }
        for i in 0..<5 { try await broadcast(i) }
        try await server.stop()
        // Published through another server of the cluster while the page has none: only the
        // history can bring these to it.
        let other = try await serve(setup)
        let otherHTTP = HTTP(port: other.port)
        for i in 5..<15 {
            let reply = try await otherHTTP.post(
                "/v1/dispatch", #"{"action":"sync.broadcast","payload":{"channel":"recover-h1","event":"n","data":\#(i)}}"#, token: token)
            #expect(reply.status == .ok, "broadcast \(i) through the other server")
        }
        try await other.stop()
        server = try await serve(setup, port: port)
        for i in 15..<20 { try await broadcast(i) }
        let report = try await collector.report("recover")
        await browser.stop()
        #expect(report?["ok"] == .bool(true), "failed checks:\n\(failedChecks(report))\n\(browser.log.suffix(3000))")
        try await server.stop()
        await collector.stop()
    }
}
