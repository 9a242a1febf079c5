import CSOPCore
import CSOPHost
import CSOPServe
import CSOPTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization

/// A plugins.d of the four plugins (storage in `directory`) and an HS256 secret file.
struct ServeSetup {
    let directory: TemporaryDirectory
    let pluginsDirectory: String
    let secretFile: String
    /// Where the host records audit events; none by default.
    var auditLog: AuditLog?
    /// Metrics on, as `csop serve` has them unless --no-metrics.
    var metrics = true

    /// - Parameters: storage, compute, sync: more `[config]` for those plugins (a cold tier,
    ///   shared jobs, cluster mode).
    init(label: String = "csop-gateway", storage: JSONObject = [:], compute: JSONObject = [:], sync: JSONObject = [:]) throws {
        directory = try TemporaryDirectory(label)
        var storageConfig: JSONObject = ["path": .string(directory.file("storage.sqlite"))]
        for member in storage.members { storageConfig[member.key] = member.value }
        var computeConfig: JSONObject = ["workers": 2]
        for member in compute.members { computeConfig[member.key] = member.value }
        pluginsDirectory = try directory.writePlugins([
            PluginEntry("10-diag.conf", library: TestEnvironment.library("diag")),
            PluginEntry("20-storage.conf", library: TestEnvironment.library("storage"), config: storageConfig),
            PluginEntry("30-compute.conf", library: TestEnvironment.library("compute"), config: computeConfig),
            PluginEntry("40-sync.conf", library: TestEnvironment.library("sync"), config: sync),
        ])
        secretFile = directory.file("hs256.secret")
        let secret = (0..<48).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! }
        try (String(secret) + "\n").write(toFile: secretFile, atomically: true, encoding: .utf8)
        chmod(secretFile, 0o600)
    }

    /// A token signed with the secret.
    func token(_ subject: String, actions: [String] = ["*"], tenant: String? = nil, ttl: Double = 3600, audience: String? = nil) async throws -> String {
        var configuration = GatewayConfiguration()
        configuration.secretFile = secretFile
        return try await Authenticator(configuration: configuration).sign(
            subject: subject, tenant: tenant, actions: actions, lifetime: ttl, audience: audience)
    }

    /// Loads the plugins in this process.
    func host() async -> CSOPHost {
        var configuration = HostConfiguration(
            pluginsDirectory: pluginsDirectory, pluginSearchPath: [TestEnvironment.buildDirectory], searchExecutableDirectory: false)
        configuration.auditLog = auditLog
        configuration.metrics = metrics ? HostMetrics() : nil
        return await CSOPHost.load(configuration)
    }
}

/// A gateway served in this process on a free loopback port, for the duration of `body`.
func withGateway<T: Sendable>(
    _ setup: ServeSetup, configure: (inout GatewayConfiguration) -> Void = { _ in },
    _ body: @Sendable (_ port: Int, _ host: CSOPHost) async throws -> T
) async throws -> T {
    let host = await setup.host()
    var configuration = GatewayConfiguration()
    configuration.listen = "127.0.0.1:0"
    // At the suite's start its tasks wait for the two pool threads for seconds between opening
    // a connection and writing the request; the 10 s default would cut them off as slow
    // clients ("I/O on closed channel"). The tests of that timeout set it themselves.
    configuration.headerTimeout = 120
    configure(&configuration)
    let gateway = try await Gateway(host: host, configuration: configuration)
    let (ports, continuation) = AsyncStream<Int>.makeStream()
    let server = Task { try await gateway.run(gracefulShutdownSignals: []) { continuation.yield($0) } }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next() else { throw ServeProcessError(message: "the gateway did not start") }
    do {
        let result = try await body(port, host)
        await gateway.stop()
        _ = await server.result
        await host.shutdown()
        return result
    } catch {
        server.cancel()
        _ = await server.result
        await host.shutdown()
        throw error
    }
}

/// Runs a test client's exchange; the answer it records stands even when the client then
/// fails to close a connection the server already closed (NIO's "I/O on closed channel",
/// seen on loaded machines after a 401 or a TLS close): that is not the server's error.
func answered<T: Sendable>(_ exchange: (_ answer: @escaping @Sendable (T) -> T) async throws -> T) async throws -> T {
    let recorded = LockedBox<T?>(nil)
    do {
        return try await exchange { value in
            recorded.withLock { $0 = value }
            return value
        }
    } catch let error as ChannelError where error == .ioOnClosedChannel {
        guard let value = recorded.withLock({ $0 }) else { throw error }
        return value
    }
}

/// An HTTP/1.1 client for one server (HummingbirdTesting's, over a real socket).
struct HTTP {
    let port: Int

    struct Reply {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        var json: JSONValue { (try? JSONValue(parsing: body)) ?? .null }
        /// The CSOP error code of the body, if any.
        var code: String? {
            guard case .object(let object) = json, case .object(let error)? = object["error"], case .string(let code)? = error["code"] else { return nil }
            return code
        }
        var data: JSONValue? {
            guard case .object(let object) = json else { return nil }
            return object["data"]
        }
    }

    func request(_ method: HTTPRequest.Method, _ path: String, headers: HTTPFields = [:], body: String? = nil, token: String? = nil) async throws -> Reply {
        try await request(method, path, headers: headers, bytes: body.map { Array($0.utf8) }, token: token)
    }

    /// - Parameter readTimeout: how long the client waits for the server's next bytes.
    func request(
        _ method: HTTPRequest.Method, _ path: String, headers: HTTPFields = [:], bytes body: [UInt8]?, token: String? = nil,
        readTimeout: Duration = .seconds(15)
    ) async throws -> Reply {
        var fields = headers
        if let token { fields[.authorization] = "Bearer \(token)" }
        let headers = fields
        return try await answered { answer in
            try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: .init(timeout: readTimeout)) { client in
                let response = try await client.execute(
                    TestClient.Request(path, method: method, headers: headers, body: body.map { ByteBuffer(bytes: $0) }))
                return answer(
                    Reply(status: response.status, headers: response.headers, body: response.body.map { Array($0.readableBytesView) } ?? []))
            }
        }
    }

    func post(_ path: String, _ body: String, token: String? = nil, headers: HTTPFields = [:]) async throws -> Reply {
        try await request(.post, path, headers: headers, body: body, token: token)
    }

    func get(_ path: String, token: String? = nil, headers: HTTPFields = [:]) async throws -> Reply {
        try await request(.get, path, headers: headers, token: token)
    }
}

/// Collects the reports the browser test pages POST (any content type, JSON body).
final class ReportCollector: Sendable {
    let port: Int
    private let reports: LockedBox<[String: JSONValue]>
    private let task: Task<Void, any Error>

    static func start() async throws -> ReportCollector {
        let reports = LockedBox<[String: JSONValue]>([:])
        let router = Router()
        router.post("test-results") { request, _ -> HTTPResponse.Status in
            let body = try await request.body.collect(upTo: 4 << 20)
            if case .object(let object) = try JSONValue(parsing: Array(body.readableBytesView)), case .string(let page)? = object["page"] {
                reports.withLock { $0[page] = .object(object) }
            }
            return .noContent
        }
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) })
        let task = Task { try await app.run() }
        var iterator = ports.makeAsyncIterator()
        let port = await iterator.next() ?? 0
        return ReportCollector(port: port, reports: reports, task: task)
    }

    private init(port: Int, reports: LockedBox<[String: JSONValue]>, task: Task<Void, any Error>) {
        self.port = port
        self.reports = reports
        self.task = task
    }

    var url: String { "http://127.0.0.1:\(port)/test-results" }

    /// The report of `page`, waiting up to `timeout` seconds for it.
    func report(_ page: String, timeout: Double = 120) async throws -> JSONValue? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let report = reports.withLock({ $0[page] }) { return report }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// The failed checks of a page's report, for the test's message.
func failedChecks(_ report: JSONValue?) -> String {
    guard case .object(let object)? = report, case .array(let checks)? = object["checks"] else { return "no report" }
    return checks.compactMap { check -> String? in
        guard case .object(let item) = check, item["ok"] != .bool(true) else { return nil }
        return item.description
    }.joined(separator: "\n")
}

/// The directory of the browser test pages.
let browserPages: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Browser/pages").path
}()
