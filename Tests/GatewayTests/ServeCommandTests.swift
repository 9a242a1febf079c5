import CSOPCore
import CSOPTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import NIOSSL
import Testing

/// `csop serve` and `csop token` as programs: the loopback rule, the config file, SIGTERM,
/// TLS.
@Suite struct ServeCommandTests {
    @Test func withoutAuthOnlyLoopbackUnlessInsecure() async throws {
        let setup = try ServeSetup()
        let refused = try await ChildProcess.run(
            TestEnvironment.csopExecutable, ["serve", "--plugins-dir", setup.pluginsDirectory, "--listen", "0.0.0.0:0"], timeout: 60)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("without auth") && refused.stderr.contains("--insecure-no-auth"), "\(refused.stderr)")
        let insecure = try await ServeProcess(["--plugins-dir", setup.pluginsDirectory, "--listen", "0.0.0.0:0", "--insecure-no-auth"])
        #expect(insecure.stderr.contains("--insecure-no-auth"))
        try await insecure.stop()
        let loopback = try await ServeProcess(["--plugins-dir", setup.pluginsDirectory, "--listen", "127.0.0.1:0"])
        #expect(loopback.stderr.contains("loopback only"), "\(loopback.stderr)")
        try await loopback.stop()
    }

    @Test func configFileSetsOptionsAndFlagsWin() async throws {
        let setup = try ServeSetup()
        let config = setup.directory.file("serve.toml")
        try """
            listen = "127.0.0.1:0"
            [auth]
            secret-file = "\(setup.secretFile)"
            [limits]
            body-bytes = 2048
            rate = 0
            [cors]
            origins = ["https://app.example", "https://other.example"]
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let server = try await ServeProcess(["--plugins-dir", setup.pluginsDirectory, "--config", config, "--max-body-bytes", "3000"])
        let http = HTTP(port: server.port)
        let token = try await setup.token("erin")
        #expect(try await http.post("/v1/diag/noop", "{}").status == .unauthorized, "auth from the file")
        #expect(try await http.post("/v1/diag/noop", "{}", token: token, headers: [.origin: "https://other.example"]).status == .ok)
        let body = #"{"s":""# + String(repeating: "x", count: 2500) + #""}"#
        #expect(try await http.post("/v1/diag/echo", body, token: token).status == .ok, "--max-body-bytes 3000 wins over 2048")
        try await server.stop()

        try "[limits]\nbody-bytes = \"big\"\n".write(toFile: config, atomically: true, encoding: .utf8)
        let bad = try await ChildProcess.run(TestEnvironment.csopExecutable, ["serve", "--plugins-dir", setup.pluginsDirectory, "--config", config])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("body-bytes"), "\(bad.stderr)")
        try "[limits]\nbogus = 1\n".write(toFile: config, atomically: true, encoding: .utf8)
        let unknown = try await ChildProcess.run(TestEnvironment.csopExecutable, ["serve", "--plugins-dir", setup.pluginsDirectory, "--config", config])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("bogus"), "\(unknown.stderr)")
    }

    @Test func sigtermFinishesRunningRequestsAndClosesWebSocketsWith1001() async throws {
        let setup = try ServeSetup()
        let server = try await ServeProcess(["--plugins-dir", setup.pluginsDirectory, "--listen", "127.0.0.1:0", "--shutdown-grace", "10"])
        let port = server.port
        // A request that is running when the signal comes (sent first: the server accepts in
        // order, so it is in by the time the WebSocket below has had an answer).
        let slow = try RawSocket(port: port)
        slow.send("POST /v1/diag/sleep HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"ms\":700}")
        let ready = LockedBox(false)
        let socketClosed = Task {
            try await webSocket(port: port) { out, inbox in
                try await out.send(#"{"id":"n","action":"diag.noop"}"#)
                try await inbox.response("n")
                ready.withLock { $0 = true }
                // Wait (up to 30 s) for the server to close it.
                for _ in 0..<3000 where !inbox.closed { try await Task.sleep(for: .milliseconds(10)) }
            }
        }
        for _ in 0..<3000 where !ready.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
        let (status, killed) = try await server.stop(signal: SIGTERM)
        #expect(!killed && status == 0, "exit \(status): \(server.stderr)")
        let reply = try await slow.read(until: "\"slept\"", timeout: 30)
        #expect(reply.text.contains("200 OK") && reply.text.contains("\"slept\":700"), "the running request was cut: \(reply.text)")
        let closed = try await socketClosed.value
        #expect(closed.closeCode == 1001)
        #expect(server.stderr.contains("stopped accepting"))
    }

    @Test func tokenCommandSignsWhatServeAccepts() async throws {
        let setup = try ServeSetup()
        let signed = try await ChildProcess.run(
            TestEnvironment.csopExecutable,
            ["token", "--secret-file", setup.secretFile, "--sub", "frank", "--actions", "diag.*", "--ttl", "5m"])
        #expect(signed.status == 0, "\(signed.stderr)")
        let token = signed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let server = try await ServeProcess(["--plugins-dir", setup.pluginsDirectory, "--listen", "127.0.0.1:0", "--jwt-secret-file", setup.secretFile])
        let http = HTTP(port: server.port)
        #expect(try await http.post("/v1/diag/noop", "{}", token: token).status == .ok)
        #expect(try await http.post("/v1/storage/get", #"{"key":"k"}"#, token: token).status == .forbidden)
        try await server.stop()
        #expect(!server.stderr.contains(token), "the token reached the log")
        for arguments in [["--ttl", "soon"], ["--actions", "no pattern"], ["--sub", ""]] {
            var base = ["token", "--secret-file", setup.secretFile, "--sub", "x", "--actions", "*"]
            if let index = base.firstIndex(of: arguments[0]) { base[index + 1] = arguments[1] } else { base += arguments }
            let bad = try await ChildProcess.run(TestEnvironment.csopExecutable, base)
            #expect(bad.status != 0, "\(arguments)")
        }
        let short = setup.directory.file("short.secret")
        try "tooshort".write(toFile: short, atomically: true, encoding: .utf8)
        let weak = try await ChildProcess.run(TestEnvironment.csopExecutable, ["token", "--secret-file", short, "--sub", "x", "--actions", "*"])
        #expect(weak.status != 0 && weak.stderr.contains("32"), "\(weak.stderr)")
    }

    @Test func servesHTTPSWithTheGivenCertificate() async throws {
        let setup = try ServeSetup()
        let key = setup.directory.file("key.pem")
        let cert = setup.directory.file("cert.pem")
        let made = try await ChildProcess.run(
            "/usr/bin/openssl",
            ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
             "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        #expect(made.status == 0, "\(made.stderr)")
        let server = try await ServeProcess(["--plugins-dir", setup.pluginsDirectory, "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key])
        #expect(server.stderr.contains("https://"))
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(cert))
        let reply = try await answered { answer in
            try await TestClient.withClient(
                host: "127.0.0.1", port: server.port, configuration: .init(tlsConfiguration: tls, serverName: "localhost")
            ) { client in
                answer(try await client.post("/v1/diag/echo", body: ByteBuffer(string: #"{"over":"tls"}"#)))
            }
        }
        #expect(reply.status == .ok)
        #expect(reply.body.map { String(buffer: $0) }?.contains("tls") == true)
        // WebSocket frames go through TLS too (they are written past NIO's frame encoder, not past TLS).
        let wss = try await webSocket(port: server.port, tls: tls) { out, inbox in
            try await out.send(#"{"id":"t","action":"diag.echo","payload":{"over":"wss"}}"#)
            try await inbox.response("t")
            try await out.close(.normalClosure, reason: nil)
        }
        #expect(wss.frames.first?["status"] == .string("ok") && wss.frames.first?["data"]?["over"] == .string("wss"), "\(wss.frames)")
        // Plain HTTP to the TLS port gets no answer in the clear.
        let plain = try? await HTTP(port: server.port).get("/healthz")
        #expect(plain?.status != .ok)
        try await server.stop()
        let missingKey = try await ChildProcess.run(
            TestEnvironment.csopExecutable, ["serve", "--plugins-dir", setup.pluginsDirectory, "--listen", "127.0.0.1:0", "--tls-cert", cert])
        #expect(missingKey.status != 0 && missingKey.stderr.contains("--tls-key"))
    }
}
