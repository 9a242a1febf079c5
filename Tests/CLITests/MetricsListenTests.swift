import CSOPCore
import CSOPTestSupport
import Foundation
import Glibc
import Testing

/// `csop run --metrics-listen`: a real socket answering `GET /metrics`, and refusing the rest.
@Suite struct MetricsListenTests {
    let directory: TemporaryDirectory
    let plugins: String
    let environment = ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory]

    init() throws {
        directory = try TemporaryDirectory("csop-metrics-listen")
        plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
    }

    @Test func runServesItsMetricsAndRefusesEverythingElse() async throws {
        let port = try Self.freePort()
        let run = try RunProcess(pluginsDirectory: plugins, arguments: ["--metrics-listen", "127.0.0.1:\(port)"], environment: environment)
        // Timeouts long enough for a loaded machine: the counts below must not depend on it.
        try run.send(raw: #"{"id":"a","action":"diag.noop","options":{"timeout":600000}}"#)
        try run.send(raw: #"{"id":"b","action":"diag.fail","payload":{"code":"TEAPOT"},"options":{"timeout":600000}}"#)
        #expect(await run.response("a", timeout: 600)?["status"] == "ok")
        #expect(await run.response("b", timeout: 600)?["error"]?["code"] == "TEAPOT")

        let ok = try Self.exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(ok.prefix(200))")
        #expect(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
        #expect(ok.contains("\ncsop_requests_total{action=\"diag.noop\",code=\"OK\"} 1\n"))
        #expect(ok.contains("\ncsop_requests_total{action=\"diag.fail\",code=\"TEAPOT\"} 1\n"))
        let head = try Self.exchange(port, "HEAD /metrics HTTP/1.0\r\n\r\n")
        #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n") && head.hasSuffix("\r\n\r\n"), "\(head)")

        #expect(try Self.exchange(port, "POST /metrics HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 405 "))
        #expect(try Self.exchange(port, "GET /v1/dispatch HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 404 "))
        #expect(try Self.exchange(port, "GET /metrics\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        // A head that never ends: refused at 8 KiB, and the listener goes on.
        #expect(try Self.exchange(port, String(repeating: "A", count: 20_000)).hasPrefix("HTTP/1.1 400 "))
        #expect(try Self.exchange(port, String(repeating: "\u{0}\u{FF}", count: 100) + "\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        #expect(try Self.exchange(port, "GET /metrics HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 200 OK\r\n"))

        #expect(await run.finish() == 0)
        #expect(!run.diedOfSignal)
    }

    @Test func aBadAddressIsRefusedWithAMessage() async throws {
        let result = try await ChildProcess.run(
            TestEnvironment.csopExecutable, ["run", "--plugins-dir", plugins, "--metrics-listen", "localhost:80x"], environment: environment)
        #expect(result.status != 0)
        #expect(result.stderr.contains("--metrics-listen localhost:80x: localhost is not a numeric IPv4 or IPv6 address"), "\(result.stderr)")
    }

    /// A port nothing listens on now (bound and released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Sends `request` on a new connection and reads until the server closes it.
    static func exchange(_ port: Int, _ request: String) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { throw POSIXError(.ECONNREFUSED) }
        let bytes = Array(request.utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            answer += buffer[..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }
}
