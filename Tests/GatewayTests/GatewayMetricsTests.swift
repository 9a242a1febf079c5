import CSOPCore
import CSOPHost
import CSOPServe
import CSOPTestSupport
import Foundation
import HTTPTypes
import Testing

/// `GET /metrics` through a real gateway: behind the same tokens as the API, with the
/// gateway's own series (connections, refused tokens by reason, rate limiting) beside the
/// host's and every plugin's.
@Suite struct GatewayMetricsTests {
    @Test func metricsNeedATokenThatAllowsThemAndCountRefusals() async throws {
        let setup = try ServeSetup()
        let reader = try await setup.token("prometheus", actions: ["host.metrics"])
        let narrow = try await setup.token("bob", actions: ["diag.*"], tenant: "acme")
        let expired = try await setup.token("alice", ttl: -120)
        try await withGateway(setup, configure: { $0.secretFile = setup.secretFile; $0.rateLimit = 0.0001; $0.rateBurst = 2 }) { port, _ in
            let http = HTTP(port: port)
            #expect(try await http.get("/metrics").status == .unauthorized)
            #expect(try await http.get("/metrics", token: expired).status == .unauthorized)
            let forbidden = try await http.get("/metrics", token: narrow)
            #expect(forbidden.status == .forbidden && forbidden.code == "FORBIDDEN", "\(forbidden.text)")
            #expect(forbidden.text.contains("host.metrics"))
            // bob's bucket holds 2 and refills one every 10,000 s: the third request is rate limited.
            var limited = 0
            for _ in 0..<3 where try await http.post("/v1/dispatch", #"{"action":"diag.noop","options":{"timeout":600000}}"#, token: narrow).status == .tooManyRequests {
                limited += 1
            }
            #expect(limited == 1)

            let reply = try await http.get("/metrics", token: reader)
            #expect(reply.status == .ok)
            #expect(reply.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
            let text = reply.text
            for line in [
                #"csop_gateway_auth_failures_total{reason="missing"} 1"#, #"csop_gateway_auth_failures_total{reason="expired"} 1"#,
                #"csop_gateway_rate_limited_total 1"#, #"csop_requests_total{action="diag.noop",code="OK"} 2"#,
                #"csop_plugin_generation{plugin="storage",version="1.0.0"} 1.0"#, "csop_compute_workers 2.0", "csop_sync_subscriptions 0.0",
            ] {
                #expect(text.contains("\n" + line + "\n"), "\(line) not in:\n\(text.split(separator: "\n").filter { !$0.contains("_bucket") }.joined(separator: "\n"))")
            }
            #expect(text.contains("\ncsop_gateway_connections "))
            #expect(text.contains("\ncsop_gateway_connections_accepted_total "))
            // The tokens never appear.
            for token in [reader, narrow, expired] { #expect(!text.contains(token)) }
        }
    }

    @Test func withoutAuthMetricsAreOpenAndOffWhenTheHostKeepsNone() async throws {
        let setup = try ServeSetup()
        try await withGateway(setup) { port, _ in
            let http = HTTP(port: port)
            _ = try await http.post("/v1/dispatch", #"{"action":"diag.noop","options":{"timeout":600000}}"#)
            let reply = try await http.get("/metrics")
            #expect(reply.status == .ok)
            #expect(reply.text.contains("\ncsop_requests_total{action=\"diag.noop\",code=\"OK\"} 1\n"))
        }
        var off = try ServeSetup()
        off.metrics = false
        try await withGateway(off) { port, _ in
            let reply = try await HTTP(port: port).get("/metrics")
            #expect(reply.status == .notFound)
        }
    }
}
